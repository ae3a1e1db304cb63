"""What every command shares: the app and its groups, the common options, one-line errors, tables."""

from __future__ import annotations

import functools
import sys
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from typer.core import TyperGroup

from ddsweep import env, tables
from ddsweep.errors import EXIT_USAGE, UserError, storage_fault
from ddsweep.tables import Format

try:  # Typer vendors the Click it runs on (typer._click); its exceptions are that Click's
    from typer import _click as click
except ImportError:  # an older Typer on the installed Click
    import click


class OneLineErrors(TyperGroup):
    """Click's usage errors (a misspelt option or command, a bad choice) as one line on stderr, exit 2,
    like every other error: not Typer's boxed panel with a usage block."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as e:  # `ddsweep` or `ddsweep plot` alone: the help
            click.echo(e.ctx.get_help())
            sys.exit(e.exit_code)
        except click.ClickException as e:
            ctx = getattr(e, "ctx", None)
            see = f" (see {ctx.command_path} --help)" if ctx is not None else ""
            error_line(e.format_message().strip().rstrip(".") + see)
            sys.exit(e.exit_code)
        except typer.Abort:
            error_line("aborted")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


class Choice(str, Enum):
    """A fixed set of words for an option: Typer lists them in --help and refuses others in one line.
    A member is its word (a str, printed and compared as the word), so the library gets plain text."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


def choices(name: str, words) -> type[Choice]:
    """A Choice type of these words (each member named as its word)."""
    return Choice(name, [(w, w) for w in words])


HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(cls=OneLineErrors, no_args_is_help=True, pretty_exceptions_enable=False, context_settings=HELP_OPTIONS,
                  help="Map deep double descent: plan a grid, train it, keep every epoch in DuckDB, draw the maps.\n\n"
                  "Examples:\n\n"
                  "  ddsweep plan mnist1d-mlp --db results.duckdb\n\n"
                  "  ddsweep work --db results.duckdb --cpus 2\n\n"
                  "  ddsweep plot heatmap --db results.duckdb --out heatmap.png\n\n"
                  "  export DDSWEEP_DB=results.duckdb; ddsweep summary\n\n"
                  "Shell completion: ddsweep --install-completion.")
plot_app = typer.Typer(no_args_is_help=True, context_settings=HELP_OPTIONS, help="Draw maps and curves from the database.")
app.add_typer(plot_app, name="plot")
out = Console()


def _version(value: bool) -> None:
    if value:
        from ddsweep import __version__

        typer.echo(f"ddsweep {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                       help="Print the version and exit.")):
    """Map deep double descent: plan a grid, train it, keep every epoch in DuckDB, draw the maps."""

DEFAULT_DB = "results.duckdb"


def _database(value):
    """--db, else $DDSWEEP_DB, else results.duckdb (a bad $DDSWEEP_DB is one line: Click's bad-parameter error)."""
    if value is not None:
        return value
    try:
        from_env = env.value("DDSWEEP_DB")
    except UserError as e:
        raise typer.BadParameter(str(e)) from None
    return Path(from_env or DEFAULT_DB)


DB = typer.Option(None, "--db", callback=_database, show_default=f"$DDSWEEP_DB, else {DEFAULT_DB}",
                  help="Results database (DuckDB file).")
SWEEP = typer.Option(None, "--sweep", help="Only this sweep (default: the only one, or all).")
WHERE = typer.Option(None, "--where", help="Only rows with AXIS=VALUE[,VALUE...], AXIS>=V (also <=, >, <, !=) or "
                     "AXIS=LO..HI (repeatable; all must hold), e.g. --where n_train=4000 --where width=8..64.")
AXIS_METAVAR = "<width|n_train|epoch|AXIS>"  # (any job column; a misspelt one gets a did-you-mean)
FORMAT = typer.Option(None, "--format", case_sensitive=False, help=tables.FORMAT_HELP, show_default=False)
SelectOn = choices("SelectOn", ["test", "val"])
SELECT_ON = typer.Option("test", "--select-on", help="Set whose error chooses the early-stopping epoch: test, or val "
                         "(the validation split of a dataset with val: N).")


def user_errors(fn):
    """Print a UserError as one line on stderr and exit 2 (also under a test runner)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            error_line(str(e))
            raise typer.Exit(e.exit_code) from None
        except Exception as e:  # a full disk or an unwritable folder anywhere is one line too
            fault = storage_fault(e)
            if fault is None:
                raise
            error_line(f"cannot write {fault}")
            raise typer.Exit(EXIT_USAGE) from None

    return wrapper


def error_line(message: str) -> None:
    Console(stderr=True, soft_wrap=True).print(f"ddsweep: error: {' '.join(message.split())}", highlight=False,
                                               markup=False)


def warning_line(message: str) -> None:
    Console(stderr=True, soft_wrap=True).print(f"ddsweep: warning: {' '.join(message.split())}", highlight=False,
                                               markup=False)


def show(results, fmt: Format | None) -> Format:
    """Print (title, frame) results in `fmt` (None: a table on a terminal, else tsv); see ddsweep.tables."""
    return tables.render(results, fmt, warn=warning_line)


def note(text: str, fmt: Format) -> None:
    """A line about a table: under it on a terminal, on stderr beside a machine format (which stays parseable)."""
    if fmt is Format.table:
        out.print(text, highlight=False, markup=False, soft_wrap=True)
    else:
        Console(stderr=True, soft_wrap=True).print(text, highlight=False, markup=False)
