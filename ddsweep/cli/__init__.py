"""The `ddsweep` command line: parses arguments, calls the library, prints results.

Every command is a thin wrapper over a function in ddsweep.api / ddsweep.plot;
errors the user can fix reach them as one line on stderr with exit code 2. One
module per command group; each registers its commands on `app` when imported.
"""

from __future__ import annotations

# Importing a group's module registers its commands; `--help` lists them in this order.
from ddsweep.cli import jobs  # noqa: F401,I001
from ddsweep.cli import analysis, exchange, plots  # noqa: F401
from ddsweep.cli.common import app, plot_app

__all__ = ["app", "plot_app", "main"]


def main() -> None:
    """Console entry point."""
    app()
