"""The `ddsweep` command line: parses arguments, calls the library, prints results.

Every command is a thin wrapper over a function in ddsweep.api / ddsweep.plot;
errors the user can fix reach them as one line on stderr with exit code 2.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ddsweep.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Map deep double descent: plan a grid, train it, keep every epoch in DuckDB, draw the maps.")
plot_app = typer.Typer(no_args_is_help=True, help="Draw maps and curves from the database.")
app.add_typer(plot_app, name="plot")
out = Console()

DB = typer.Option("results.duckdb", "--db", help="Results database (DuckDB file).")
SWEEP = typer.Option(None, "--sweep", help="Only this sweep (default: the only one, or all).")


def _user_errors(fn):
    """Print a UserError as one line on stderr and exit 2 (also under a test runner)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as e:
            Console(stderr=True, soft_wrap=True).print(f"ddsweep: error: {e}", highlight=False, markup=False)
            raise typer.Exit(e.exit_code) from None

    return wrapper


def _frame_table(df, title: str | None = None) -> Table:
    table = Table(title=title)
    for col in df.columns:
        table.add_column(str(col), justify="right" if df[col].dtype.kind in "iuf" else "left")
    for row in df.itertuples(index=False):
        table.add_row(*[_fmt(v) for v in row])
    return table


def _fmt(v) -> str:
    if isinstance(v, float):
        return "" if v != v else f"{v:.4g}"
    return "" if v is None else str(v)


@app.command()
@_user_errors
def plan(grid: Path = typer.Argument(..., help="Grid file (YAML)."), db: Path = DB,
         dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be planned; write nothing.")):
    """Expand a grid file into jobs in the database (idempotent)."""
    from ddsweep import api

    r = api.plan(grid, db, dry_run=dry_run)
    table = Table(title=f"{'dry run: ' if dry_run else ''}sweep {r.sweep} in {db}")
    for col in ("new", "already planned", "extended", "total jobs", "total epochs"):
        table.add_column(col, justify="right")
    table.add_row(str(r.new), str(r.existing), str(r.extended), str(r.total), str(r.total_epochs))
    out.print(table)


@app.command()
@_user_errors
def work(db: Path = DB,
         cpus: Optional[int] = typer.Option(None, "--cpus", help="CPU worker processes (default: one per core)."),
         gpus: Optional[str] = typer.Option(None, "--gpus", help="GPU ids, e.g. 0,1: one worker per GPU (x --jobs-per-device)."),
         jobs_per_device: int = typer.Option(1, "--jobs-per-device", help="Worker processes per CPU slot or GPU."),
         sweep: Optional[str] = SWEEP,
         threads: int = typer.Option(1, "--threads", help="torch threads per worker."),
         pack_size: Optional[int] = typer.Option(None, "--pack-size", help="Jobs trained together per step (default: automatic)."),
         checkpoint_every: float = typer.Option(30.0, "--checkpoint-every", help="Seconds between checkpoints (0: every epoch)."),
         no_progress: bool = typer.Option(False, "--no-progress", help="No live progress display.")):
    """Train pending jobs with local worker processes until none is left."""
    from ddsweep import api

    if pack_size is not None and pack_size < 1:
        raise UserError(f"--pack-size = {pack_size}: must be at least 1")
    r = api.work(db, cpus=cpus, gpus=gpus, jobs_per_device=jobs_per_device, sweep=sweep, threads=threads,
                 pack_size=pack_size, checkpoint_every=checkpoint_every,
                 show_progress=not no_progress and sys.stderr.isatty())
    out.print(f"done {r.done}, failed {r.failed}, diverged {r.diverged}, handed back {r.released} "
              f"in {r.seconds:.1f}s")
    if r.failed:
        out.print(f"see errors: ddsweep query \"select job_id, error from jobs where status = 'failed'\" --db {db}")


@app.command()
@_user_errors
def status(db: Path = DB, sweep: Optional[str] = SWEEP):
    """Jobs per sweep and status; safe while `ddsweep work` runs."""
    from ddsweep import api

    out.print(_frame_table(api.status(db, sweep), title=str(db)))


@app.command()
@_user_errors
def query(sql: str = typer.Argument(..., help="SQL to run (read-only)."), db: Path = DB,
          csv: bool = typer.Option(False, "--csv", help="Print CSV instead of a table.")):
    """Run read-only SQL on the database; safe while `ddsweep work` runs."""
    from ddsweep import api

    df = api.query(sql, db)
    if csv:
        sys.stdout.write(df.to_csv(index=False))
    else:
        out.print(_frame_table(df))


@plot_app.command("heatmap")
@_user_errors
def plot_heatmap(db: Path = DB, sweep: Optional[str] = SWEEP,
                 x: str = typer.Option("width", "--x", help="Axis across (a job column, e.g. width or n_train)."),
                 y: str = typer.Option("epoch", "--y", help="Axis up (epoch, or a job column)."),
                 metric: str = typer.Option("test_error", "--metric", help="Metric column coloured."),
                 contour: float = typer.Option(0.1, "--contour", help="Train-error level drawn as a contour (0: none)."),
                 out_path: Path = typer.Option(Path("heatmap.png"), "--out", help="Output file (.png, .svg, .pdf).")):
    """Heatmap of a metric over two axes, mean over seeds, one panel per label-noise level."""
    from ddsweep.plot import heatmap

    path = heatmap(db, sweep=sweep, x=x, y=y, metric=metric, contour=contour or None, out=out_path)
    out.print(f"wrote {path}")


@plot_app.command("curve")
@_user_errors
def plot_curve(db: Path = DB, sweep: Optional[str] = SWEEP,
               x: str = typer.Option("width", "--x", help="Axis (width, n_train, or epoch)."),
               epoch: Optional[int] = typer.Option(None, "--epoch", help="Epoch to read (default: the last)."),
               out_path: Path = typer.Option(Path("curve.png"), "--out", help="Output file (.png, .svg, .pdf).")):
    """Test and train error against an axis at the final (or a chosen) epoch, one line per noise level."""
    from ddsweep.plot import curve

    path = curve(db, sweep=sweep, x=x, epoch=epoch, out=out_path)
    out.print(f"wrote {path}")


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
