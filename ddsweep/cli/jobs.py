"""Commands that plan, train and inspect jobs: plan, work, status, query, retry, extend, upgrade."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from ddsweep import env
from ddsweep.cli.common import DB, FORMAT, SWEEP, app, out, show, user_errors
from ddsweep.errors import UserError
from ddsweep.tables import Format
from ddsweep.workers.events import JobStatus


@app.command()
@user_errors
def plan(grid: str = typer.Argument(..., help="Grid file (YAML), a preset's name (e.g. mnist1d-mlp: the package's "
                                        "sweeps/mnist1d-mlp.yaml), or - for standard input."),
         overrides: Optional[List[str]] = typer.Argument(None, metavar="[KEY=VALUE]...", show_default=False,
                                                         help="Set keys of the grid file, its YAML syntax, e.g. "
                                                         "grid.width=[8,16] train.lr=0.05 (validated as the file)."),
         db: Path = DB,
         dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be planned; write nothing.")):
    """Expand a grid file into jobs in the database (idempotent).

    Examples:

      ddsweep plan mnist1d-mlp --db results.duckdb

      ddsweep plan sweeps/mnist1d-mlp.yaml grid.width=[8,16,32] train.epochs=100 --dry-run

      ddsweep plan grid.yaml 'grid.width={geom: [2, 300, 19]}' train.lr=0.05
    """
    from ddsweep import api

    r = api.plan(grid, db, dry_run=dry_run, overrides=overrides or ())
    table = Table(title=f"{'dry run: ' if dry_run else ''}sweep {r.sweep} in {db}")
    for col in ("new", "already planned", "extended", "total jobs", "total epochs"):
        table.add_column(col, justify="right")
    table.add_row(str(r.new), str(r.existing), str(r.extended), str(r.total), str(r.total_epochs))
    out.print(table)


@app.command(epilog="Environment variables (read once at the start; an option given wins):\n\n" + env.help_text())
@user_errors
def work(db: Path = DB,
         cpus: Optional[int] = typer.Option(None, "--cpus", help="CPU worker processes (default: one per core)."),
         gpus: Optional[str] = typer.Option(None, "--gpus", help="GPU ids, e.g. 0,1: one worker per GPU (x --jobs-per-device)."),
         jobs_per_device: int = typer.Option(1, "--jobs-per-device", help="Worker processes per CPU slot or GPU."),
         sweep: Optional[str] = SWEEP,
         threads: int = typer.Option(1, "--threads", help="torch threads per worker."),
         pack_size: Optional[int] = typer.Option(None, "--pack-size", help="Jobs trained together per step (default: automatic)."),
         checkpoint_every: float = typer.Option(30.0, "--checkpoint-every", help="Seconds between checkpoints (0: every epoch)."),
         flush_every: float = typer.Option(5.0, "--flush-every", help="Seconds between writes of results to the database (and at each job's end); readers get in between."),
         lease: float = typer.Option(120.0, "--lease", help="Seconds a job stays leased without a heartbeat; then another `work` may reclaim it."),
         retries: int = typer.Option(2, "--retries", help="Times a job is tried again after a failed attempt (exception, or its worker died)."),
         no_progress: bool = typer.Option(False, "--no-progress", help="No live progress display."),
         ray: Optional[str] = typer.Option(None, "--ray", metavar="ADDRESS", help="Train on a Ray cluster: its address (e.g. 10.0.0.1:6379, or auto), or 'local' to start one here. --cpus then caps the number of Ray workers."),
         gpus_per_job: float = typer.Option(0.0, "--gpus-per-job", help="With --ray: GPUs per Ray worker (fractions share a GPU)."),
         cpus_per_job: float = typer.Option(1.0, "--cpus-per-job", help="With --ray: CPUs per Ray worker."),
         checkpoint_dir: Optional[Path] = typer.Option(None, "--checkpoint-dir", help="Where checkpoints go (default <db>.ckpt); with --ray, a path every node can reach."),
         compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="Conv packs on a GPU run through torch.compile (about 30 s per shape; pays in long runs) (default: $DDSWEEP_COMPILE, else no)."),
         cuda_graphs: Optional[bool] = typer.Option(None, "--cuda-graphs/--no-cuda-graphs", help="Conv packs on a GPU replay a CUDA graph per step (default: $DDSWEEP_CUDA_GRAPHS, else yes)."),
         dense_members: Optional[bool] = typer.Option(None, "--dense-members/--grouped-members", help="Wide conv members run one after another as dense networks / together as one grouped network (default: $DDSWEEP_DENSE_MEMBERS, else automatic)."),
         pack_memory_gb: Optional[float] = typer.Option(None, "--pack-memory-gb", help="GiB one pack of conv models may use (default: $DDSWEEP_PACK_MEMORY_GB, else estimated from the device).")):
    """Train pending jobs with local worker processes (or Ray actors: --ray) until none is left.

    Each finished job records how it was trained (device, threads, the speed settings) in
    its `run_options` column.

    Examples:

      ddsweep work --db results.duckdb --cpus 2

      ddsweep work --gpus 0,1 --jobs-per-device 2
    """
    from ddsweep import api

    r = api.work(db, cpus=cpus, gpus=gpus, jobs_per_device=jobs_per_device, sweep=sweep, threads=threads,
                 pack_size=pack_size, checkpoint_every=checkpoint_every, flush_every=flush_every,
                 lease_seconds=lease, retries=retries,
                 show_progress=not no_progress and sys.stderr.isatty(), ray=ray, gpus_per_job=gpus_per_job,
                 cpus_per_job=cpus_per_job, checkpoint_dir=checkpoint_dir, compile=compile,
                 cuda_graphs=cuda_graphs, dense_members=dense_members, pack_memory_gb=pack_memory_gb)
    out.print(f"done {r.done}, failed {r.failed}, diverged {r.diverged}, handed back {r.released} "
              f"in {r.seconds:.1f}s" + (f" ({r.retried} failed attempt(s) retried)" if r.retried else ""))
    scope = r.scope or {}
    failed = scope.get(JobStatus.FAILED, r.failed)
    if failed:
        out.print(f"{failed} job(s) failed; see errors: ddsweep query \"select job_id, error "
                  f"from jobs where status = {JobStatus.FAILED.sql}\" --db {db}; requeue them: ddsweep retry --db {db}")
    elif r.signal is None and (scope.get(JobStatus.PENDING) or scope.get(JobStatus.RUNNING)):
        out.print(f"{scope.get(JobStatus.PENDING, 0)} job(s) pending and {scope.get(JobStatus.RUNNING, 0)} running "
                  "elsewhere are not finished yet")
    raise typer.Exit(r.exit_code)


@app.command()
@user_errors
def status(db: Path = DB, sweep: Optional[str] = SWEEP, fmt: Optional[Format] = FORMAT):
    """Jobs per sweep and status; safe while `ddsweep work` runs.

    Examples:

      ddsweep status --db results.duckdb

      DDSWEEP_DB=results.duckdb ddsweep status --format markdown
    """
    from ddsweep import api

    show([(str(db), api.status(db, sweep))], fmt)


@app.command()
@user_errors
def query(sql: str = typer.Argument(..., help="SQL to run (read-only); several statements (select 1; select 2) "
                                         "print each result."), db: Path = DB,
          fmt: Optional[Format] = FORMAT,
          csv: bool = typer.Option(False, "--csv", help="Same as --format csv."),
          allow_external: bool = typer.Option(False, "--allow-external", help="Let the SQL read and write other files "
                                              "(COPY ... TO, read_csv, ATTACH) and install extensions.")):
    """Run read-only SQL on the database; safe while `ddsweep work` runs.

    Examples:

      ddsweep query "select width, test_error from final_metrics order by width"

      ddsweep query "select count(*) from jobs; select * from curves limit 5" --format csv > out.csv
    """
    from ddsweep import api

    if csv and fmt not in (None, Format.csv):
        raise UserError(f"--csv and --format {fmt.value}: choose one")
    found = api.queries(sql, db, allow_external=allow_external)
    several = len(found) > 1
    show([(text if several else None, df) for text, df in found], Format.csv if csv else fmt)


@app.command()
@user_errors
def retry(db: Path = DB, sweep: Optional[str] = SWEEP,
          failed: bool = typer.Option(False, "--failed", help="Requeue failed jobs (the default)."),
          diverged: bool = typer.Option(False, "--diverged", help="Requeue diverged jobs.")):
    """Requeue failed (and/or diverged) jobs; the next `ddsweep work` resumes them from their checkpoints.

    Examples:

      ddsweep retry --diverged && ddsweep work --cpus 2
    """
    from ddsweep import api

    statuses = tuple(s for s, on in ((JobStatus.FAILED, failed or not diverged), (JobStatus.DIVERGED, diverged)) if on)
    n = api.retry(db, sweep=sweep, statuses=statuses)
    out.print(f"requeued {n} {' or '.join(statuses)} job(s); run `ddsweep work --db {db}` to train them")


@app.command()
@user_errors
def extend(db: Path = DB, sweep: Optional[str] = SWEEP,
           epochs: int = typer.Option(..., "--epochs", help="The longer horizon to train to.")):
    """Train jobs to a longer horizon: finished ones continue from their final checkpoints.

    Examples:

      ddsweep extend --epochs 1000 && ddsweep work --cpus 2
    """
    from ddsweep import api

    n = api.extend(db, epochs, sweep=sweep)
    out.print(f"extended {n} job(s) to {epochs} epochs; run `ddsweep work --db {db}` to train them")


@app.command()
@user_errors
def upgrade(db: Path = DB):
    """Bring a database made by an older ddsweep to this version's schema (every row kept).

    The read commands (status, query, plot, ...) never write, so they ask for this first;
    plan and work upgrade the file themselves.

    Examples:

      ddsweep upgrade --db results.duckdb
    """
    from ddsweep import api

    before, now = api.upgrade(db)
    if before == now:
        out.print(f"{db}: schema {now} already, nothing to do")
    else:
        out.print(f"{db}: upgraded the schema from {before} to {now}")
