"""Commands that move results in and out of the database: export, import."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ddsweep.cli.common import DB, SWEEP, app, choices, out, user_errors
from ddsweep.errors import UserError
from ddsweep.exchange import TABLES

Table = choices("Table", TABLES)


@app.command()
@user_errors
def export(db: Path = DB, sweep: Optional[str] = SWEEP,
           fmt: str = typer.Option("parquet", "--format", help="parquet, csv, or tensorboard (a folder: one run per job, every metric per evaluated epoch)."),
           table: Table = typer.Option("metrics", "--table", help="metrics (long: one row per run and epoch, re-importable), curves, final_metrics or jobs."),
           out_path: Optional[Path] = typer.Option(None, "--out", help="Output file (default: <db>-<table>.<format>; tensorboard: a new folder, <db>-tensorboard)."),
           out_dir: Optional[Path] = typer.Argument(None, help="Output (as --out), e.g. ddsweep export --format tensorboard runs/", show_default=False)):
    """Write results to Parquet or CSV, or as TensorBoard runs.

    Examples:

      ddsweep export --format csv --table curves --out curves.csv

      ddsweep export --format tensorboard runs/
    """
    from ddsweep import api

    if out_dir is not None and out_path is not None and out_dir != out_path:
        raise UserError(f"export: two outputs ({out_dir} and --out {out_path}); give one")
    path, rows = api.export(db, fmt=fmt, out=out_path or out_dir, sweep=sweep, table=table)
    out.print(f"wrote {rows:,} rows to {path}")


@app.command("import")
@user_errors
def import_(file: Path = typer.Argument(..., help="CSV or Parquet, long format: one row per run and epoch."),
            db: Path = DB,
            sweep: Optional[str] = typer.Option(None, "--sweep", help="Sweep to create (default: the file's sweep column or name)."),
            mapping: Optional[List[str]] = typer.Option(None, "--map", help="Rename a column: OLD=NEW (repeatable); OLD= drops it."),
            constants: Optional[List[str]] = typer.Option(None, "--set", help="An axis missing from the file: AXIS=VALUE, e.g. --set seed=0."),
            replace: bool = typer.Option(False, "--replace", help="Replace an imported sweep of the same name.")):
    """Import per-epoch results produced elsewhere as a sweep of finished jobs.

    Examples:

      ddsweep import published.csv --sweep paper --map k=width --map ep=epoch --set seed=0
    """
    from ddsweep import api
    from ddsweep.exchange import parse_pairs

    r = api.import_results(file, db, sweep=sweep, mapping=parse_pairs(mapping, "--map"),
                           constants=parse_pairs(constants, "--set"), replace=replace)
    out.print(f"imported {r.jobs} runs, {r.rows:,} rows into sweep {r.sweep} of {r.db} "
              f"(axes: {', '.join(r.axes)}; metrics: {', '.join(r.metrics)})", highlight=False)
