"""The Python twins (`ddsweep.plan`, `ddsweep.report`, ...) stay callable whatever has been imported.

ddsweep's top level serves them lazily (no torch for `ddsweep --help`). A submodule of
the same name would take the attribute over the moment it is imported: with
ddsweep/report.py, `ddsweep.report(...)` worked once and then was a module.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import ddsweep

PACKAGE = Path(ddsweep.__file__).parent
TWINS = [n for n in ddsweep.__all__ if n != "__version__"]


def test_no_module_is_named_like_a_public_function():
    clash = [n for n in TWINS if (PACKAGE / n).is_dir() or (PACKAGE / f"{n}.py").exists()]
    assert not clash, f"modules named like the functions ddsweep.{', ddsweep.'.join(clash)}: rename them"


def test_the_twins_are_functions_after_every_module_is_loaded():
    for m in pkgutil.walk_packages(ddsweep.__path__, "ddsweep."):
        if m.name.rpartition(".")[2] == "__main__" or m.name.startswith("ddsweep.store.migrations."):
            continue  # running these would start a command, or an Alembic migration
        try:
            importlib.import_module(m.name)
        except ImportError as e:  # an optional extra (ray, torchvision) that is not installed
            if not e.name or e.name.split(".")[0] == "ddsweep":
                raise
    assert [n for n in TWINS if not callable(getattr(ddsweep, n))] == []
