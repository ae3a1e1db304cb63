"""The `ddsweep` command line: parses arguments, calls the library, prints results.

Every command is a thin wrapper over a function in ddsweep.api / ddsweep.plot;
errors the user can fix reach them as one line on stderr with exit code 2.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from ddsweep import env
from ddsweep.errors import EXIT_USAGE, UserError, storage_fault
from ddsweep.workers.events import JobStatus

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
            _error_line(str(e))
            raise typer.Exit(e.exit_code) from None
        except Exception as e:  # a full disk or an unwritable folder anywhere is one line too
            fault = storage_fault(e)
            if fault is None:
                raise
            _error_line(f"cannot write {fault}")
            raise typer.Exit(EXIT_USAGE) from None

    return wrapper


def _error_line(message: str) -> None:
    Console(stderr=True, soft_wrap=True).print(f"ddsweep: error: {' '.join(message.split())}", highlight=False,
                                               markup=False)


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
def plan(grid: Path = typer.Argument(..., help="Grid file (YAML); - reads standard input."), db: Path = DB,
         dry_run: bool = typer.Option(False, "--dry-run", help="Show what would be planned; write nothing.")):
    """Expand a grid file into jobs in the database (idempotent)."""
    from ddsweep import api

    r = api.plan(grid, db, dry_run=dry_run)
    table = Table(title=f"{'dry run: ' if dry_run else ''}sweep {r.sweep} in {db}")
    for col in ("new", "already planned", "extended", "total jobs", "total epochs"):
        table.add_column(col, justify="right")
    table.add_row(str(r.new), str(r.existing), str(r.extended), str(r.total), str(r.total_epochs))
    out.print(table)


@app.command(epilog="Environment variables (read once at the start; an option given wins):\n\n" + env.help_text())
@_user_errors
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
    its `run_options` column."""
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
@_user_errors
def status(db: Path = DB, sweep: Optional[str] = SWEEP):
    """Jobs per sweep and status; safe while `ddsweep work` runs."""
    from ddsweep import api

    out.print(_frame_table(api.status(db, sweep), title=str(db)))


@app.command()
@_user_errors
def query(sql: str = typer.Argument(..., help="SQL to run (read-only)."), db: Path = DB,
          csv: bool = typer.Option(False, "--csv", help="Print CSV instead of a table."),
          allow_external: bool = typer.Option(False, "--allow-external", help="Let the SQL read and write other files "
                                              "(COPY ... TO, read_csv, ATTACH) and install extensions.")):
    """Run read-only SQL on the database; safe while `ddsweep work` runs."""
    from ddsweep import api

    df = api.query(sql, db, allow_external=allow_external)
    if csv:
        sys.stdout.write(df.to_csv(index=False))
        return
    if len(df) > TABLE_ROWS:
        Console(stderr=True, soft_wrap=True).print(
            f"ddsweep: warning: {len(df):,} rows; showing the first {TABLE_ROWS:,} as a table (all of them: --csv)",
            highlight=False, markup=False)
        df = df.head(TABLE_ROWS)
    out.print(_frame_table(df))


TABLE_ROWS = 1000  # more rows than this are not drawn as a table (slow and unreadable): --csv prints them


WHERE = typer.Option(None, "--where", help="Only rows with AXIS=VALUE[,VALUE...] (repeatable), e.g. --where n_train=4000.")
SELECT_ON = typer.Option("test", "--select-on", help="Set whose error chooses the early-stopping epoch: test, or val "
                         "(the validation split of a dataset with val: N).")


@app.command()
@_user_errors
def retry(db: Path = DB, sweep: Optional[str] = SWEEP,
          failed: bool = typer.Option(False, "--failed", help="Requeue failed jobs (the default)."),
          diverged: bool = typer.Option(False, "--diverged", help="Requeue diverged jobs.")):
    """Requeue failed (and/or diverged) jobs; the next `ddsweep work` resumes them from their checkpoints."""
    from ddsweep import api

    statuses = tuple(s for s, on in ((JobStatus.FAILED, failed or not diverged), (JobStatus.DIVERGED, diverged)) if on)
    n = api.retry(db, sweep=sweep, statuses=statuses)
    out.print(f"requeued {n} {' or '.join(statuses)} job(s); run `ddsweep work --db {db}` to train them")


@app.command()
@_user_errors
def extend(db: Path = DB, sweep: Optional[str] = SWEEP,
           epochs: int = typer.Option(..., "--epochs", help="The longer horizon to train to.")):
    """Train jobs to a longer horizon: finished ones continue from their final checkpoints."""
    from ddsweep import api

    n = api.extend(db, epochs, sweep=sweep)
    out.print(f"extended {n} job(s) to {epochs} epochs; run `ddsweep work --db {db}` to train them")


@plot_app.command("heatmap")
@_user_errors
def plot_heatmap(db: Path = DB, sweep: Optional[str] = SWEEP,
                 x: str = typer.Option("width", "--x", help="Axis across (width, n_train, epoch or another job column)."),
                 y: str = typer.Option("epoch", "--y", help="Axis up (epoch, n_train or another job column)."),
                 metric: str = typer.Option("test_error", "--metric", help="Metric column coloured (any metric column)."),
                 contour: Optional[List[float]] = typer.Option(None, "--contour", help="Train-error level drawn as a contour; repeat for several (default 0.1; 0: none)."),
                 epoch: Optional[int] = typer.Option(None, "--epoch", help="Epoch read when neither axis is epoch (default: each job's last)."),
                 facet: str = typer.Option("label_noise", "--facet", help="One panel per value of this axis."),
                 row: Optional[str] = typer.Option(None, "--row", help="One panel row per value of this axis (default: the one other axis that varies)."),
                 log_color: bool = typer.Option(False, "--log-color", help="Logarithmic colour scale."),
                 no_emc: bool = typer.Option(False, "--no-emc", help="Leave out the EMC = n line (maps with an n_train axis)."),
                 where: Optional[List[str]] = WHERE,
                 out_path: Path = typer.Option(Path("heatmap.png"), "--out", help="Output file (.png, .svg, .pdf).")):
    """Heatmap of a metric over two axes, mean over seeds, one panel per label-noise level."""
    from ddsweep.analysis.frames import parse_where
    from ddsweep.plot import heatmap

    levels = [0.1] if not contour else [c for c in contour if c > 0]
    path = heatmap(db, sweep=sweep, x=x, y=y, metric=metric, contour=levels, facet=facet, row=row, epoch=epoch,
                   log_color=log_color, emc_line=not no_emc, where=parse_where(where), out=out_path)
    out.print(f"wrote {path}")


@plot_app.command("curve")
@_user_errors
def plot_curve(db: Path = DB, sweep: Optional[str] = SWEEP,
               x: str = typer.Option("width", "--x", help="Axis (width, n_train, or epoch)."),
               epoch: Optional[int] = typer.Option(None, "--epoch", help="Epoch to read (default: the last)."),
               hue: str = typer.Option("label_noise", "--hue", help="One line per value of this axis."),
               facet: Optional[str] = typer.Option(None, "--facet", help="One panel per value of this axis."),
               noisy_test: bool = typer.Option(False, "--noisy-test", help="Test error on the noisy test distribution: p + e(1 - pC/(C-1))."),
               classes: Optional[int] = typer.Option(None, "--classes", help="Classes C for --noisy-test (default: from the dataset)."),
               no_early_stopping: bool = typer.Option(False, "--no-early-stopping", help="Leave out the optimal-early-stopping curve."),
               select_on: str = SELECT_ON,
               where: Optional[List[str]] = WHERE,
               metric: str = typer.Option("test_error", "--metric", help="Drawn instead of the test error, with its train twin (test_loss: train_loss)."),
               out_path: Path = typer.Option(Path("curve.png"), "--out", help="Output file (.png, .svg, .pdf).")):
    """Test and train error against an axis at the final (or a chosen) epoch, one line per noise level."""
    from ddsweep.analysis.frames import parse_where
    from ddsweep.plot import curve

    path = curve(db, sweep=sweep, x=x, epoch=epoch, hue=hue, facet=facet, noisy_test=noisy_test, classes=classes,
                 early_stopping=not no_early_stopping, where=parse_where(where), out=out_path, select_on=select_on,
                 metric=metric)
    out.print(f"wrote {path}" + (" (test error on the noisy test distribution)" if noisy_test else ""))


@plot_app.command("bootstrap")
@_user_errors
def plot_bootstrap(db: Path = DB, sweep: Optional[str] = SWEEP,
                   facet: Optional[str] = typer.Option(None, "--facet", help="One panel per value of this axis (default: the one other axis that varies, e.g. width)."),
                   where: Optional[List[str]] = WHERE,
                   metric: str = typer.Option("test_error", "--metric", help="Test metric drawn (any metric column, e.g. test_soft_error, the paper's)."),
                   out_path: Path = typer.Option(Path("bootstrap.png"), "--out", help="Output file (.png, .svg, .pdf).")):
    """Deep Bootstrap: real- vs ideal-world test error (and real train error) against steps, with the gap."""
    from ddsweep.analysis.frames import parse_where
    from ddsweep.plot import bootstrap

    path = bootstrap(db, sweep=sweep, facet=facet, where=parse_where(where), out=out_path, metric=metric)
    out.print(f"wrote {path}")


@app.command()
@_user_errors
def emc(db: Path = DB, sweep: Optional[str] = SWEEP,
        epsilon: float = typer.Option(0.1, "--epsilon", help="Train-error level that counts as fitted."),
        factor: float = typer.Option(2.0, "--factor", help="Critical regime: n within this factor of EMC."),
        epoch: Optional[List[int]] = typer.Option(None, "--epoch", help="Epochs to show (repeatable; default: see below)."),
        all_epochs: bool = typer.Option(False, "--all-epochs", help="Every evaluated epoch."),
        where: Optional[List[str]] = WHERE,
        metric: str = typer.Option("train_error", "--metric", help="What counts as fitted: this metric <= epsilon (any stored metric, e.g. train_loss).")):
    """Effective model complexity per width and epoch (with several n_train), else the interpolation threshold.

    Default epochs: the last one with a sample axis; without one, every epoch at
    which the threshold width changes.
    """
    from ddsweep import api
    from ddsweep.analysis.frames import parse_where

    r = api.emc(db, sweep, epsilon=epsilon, factor=factor, epochs=epoch, all_epochs=all_epochs,
                where=parse_where(where), metric=metric)
    shown = r.table.drop(columns=[c for c in ("emc", "bound", "threshold") if c in r.table.columns])
    out.print(_frame_table(shown, title=r.title))
    for note in r.notes:
        out.print(f"note: {note}", highlight=False)
    if r.folded:
        out.print(f"{r.folded} epochs with an unchanged threshold folded into the row before (--all-epochs lists each)",
                  highlight=False)


@app.command()
@_user_errors
def summary(db: Path = DB, sweep: Optional[str] = SWEEP,
            epsilon: float = typer.Option(0.1, "--epsilon", help="Train-error level for the interpolation threshold."),
            epoch: Optional[int] = typer.Option(None, "--epoch", help="Epoch to read (default: each job's last)."),
            select_on: str = SELECT_ON,
            where: Optional[List[str]] = WHERE,
            metric: str = typer.Option("test_error", "--metric", help="The curve's metric: any stored metric, e.g. test_loss."),
            fit: float = typer.Option(0.01, "--fit", help="Deep Bootstrap: the real world has fitted its samples once its train error is below this.")):
    """First minimum, peak and second descent of each model-/sample-wise curve, vs the interpolation threshold;
    on a sweep with both worlds, the Deep Bootstrap numbers of each real/ideal pair."""
    from ddsweep import api
    from ddsweep.analysis.bootstrap import NoWorldPairs, describe_all
    from ddsweep.analysis.frames import parse_where
    from ddsweep.analysis.peaks import describe_lines

    chosen = parse_where(where)
    try:
        boot = api.bootstrap_summary(db, sweep, where=chosen, fit=fit)
    except NoWorldPairs:
        boot = None
    try:
        peaks = api.summary(db, sweep, epsilon=epsilon, epoch=epoch, where=chosen, select_on=select_on,
                            metric=metric)
    except UserError:
        if boot is None:
            raise
        peaks = None  # (no model-/sample-wise curve: a bootstrap sweep over a few widths)
    for _, r in peaks.iterrows() if peaks is not None else ():
        for line in describe_lines(r):
            out.print(line, highlight=False, markup=False, soft_wrap=True)
    if boot is not None:
        out.print("Deep Bootstrap (real world - ideal world, seed means):", highlight=False, markup=False)
        for line in describe_all(boot):
            out.print(line, highlight=False, markup=False, soft_wrap=True)


@app.command()
@_user_errors
def export(db: Path = DB, sweep: Optional[str] = SWEEP,
           fmt: str = typer.Option("parquet", "--format", help="parquet or csv."),
           table: str = typer.Option("metrics", "--table", help="metrics (long: one row per run and epoch, re-importable), curves, final_metrics or jobs."),
           out_path: Optional[Path] = typer.Option(None, "--out", help="Output file (default: <db>-<table>.<format>).")):
    """Write results to Parquet or CSV."""
    from ddsweep import api

    path, rows = api.export(db, fmt=fmt, out=out_path, sweep=sweep, table=table)
    out.print(f"wrote {rows:,} rows to {path}")


@app.command("import")
@_user_errors
def import_(file: Path = typer.Argument(..., help="CSV or Parquet, long format: one row per run and epoch."),
            db: Path = DB,
            sweep: Optional[str] = typer.Option(None, "--sweep", help="Sweep to create (default: the file's sweep column or name)."),
            mapping: Optional[List[str]] = typer.Option(None, "--map", help="Rename a column: OLD=NEW (repeatable); OLD= drops it."),
            constants: Optional[List[str]] = typer.Option(None, "--set", help="An axis missing from the file: AXIS=VALUE, e.g. --set seed=0."),
            replace: bool = typer.Option(False, "--replace", help="Replace an imported sweep of the same name.")):
    """Import per-epoch results produced elsewhere as a sweep of finished jobs."""
    from ddsweep import api
    from ddsweep.exchange import parse_pairs

    r = api.import_results(file, db, sweep=sweep, mapping=parse_pairs(mapping, "--map"),
                           constants=parse_pairs(constants, "--set"), replace=replace)
    out.print(f"imported {r.jobs} runs, {r.rows:,} rows into sweep {r.sweep} of {r.db} "
              f"(axes: {', '.join(r.axes)}; metrics: {', '.join(r.metrics)})", highlight=False)


@app.command()
@_user_errors
def report(db: Path = DB, sweep: Optional[str] = SWEEP,
           out_path: Path = typer.Option(Path("report.html"), "--out", help="Output file (.html)."),
           epsilon: float = typer.Option(0.1, "--epsilon", help="Train-error level for contours, EMC and thresholds."),
           figures: Optional[Path] = typer.Option(None, "--figures", help="Also write each figure as PNG into this folder.")):
    """One self-contained HTML page: grid, job status, maps, curves, EMC table and peak summary."""
    from ddsweep import api

    path = api.report(db, sweep=sweep, out=out_path, epsilon=epsilon, figures_dir=figures)
    out.print(f"wrote {path}")


@app.command()
@_user_errors
def refine(db: Path = DB, sweep: Optional[str] = SWEEP,
           axis: str = typer.Option("width", "--axis", help="Grid axis to refine (width, n_train, lr, ...)."),
           target: str = typer.Option("peak", "--target", help="peak: the test-error peak; threshold: the smallest value with train error <= epsilon."),
           budget: int = typer.Option(8, "--budget", help="New axis values in total (over all refine calls)."),
           batch: int = typer.Option(2, "--batch", help="New values proposed per round (at most this many pending at a time)."),
           early_stopped: bool = typer.Option(False, "--early-stopped", help="Peak of the early-stopped test error (minimum over epochs) instead of the final one."),
           epsilon: float = typer.Option(0.1, "--epsilon", help="Train-error level of the threshold."),
           log: Optional[bool] = typer.Option(None, "--log/--linear", help="Sample the axis in log / linear space (default: log when the grid is geometric)."),
           where: Optional[List[str]] = WHERE,
           metric: str = typer.Option("test_error", "--metric", help="The peak of this metric (any stored metric, e.g. test_loss)."),
           auto: bool = typer.Option(False, "--auto", help="Alternate refine and work until the budget is spent."),
           cpus: Optional[int] = typer.Option(None, "--cpus", help="With --auto: CPU worker processes."),
           gpus: Optional[str] = typer.Option(None, "--gpus", help="With --auto: GPU ids, e.g. 0,1.")):
    """Propose new axis values near the peak (or threshold) from the finished results; plan them as jobs."""
    from ddsweep import api
    from ddsweep.analysis.frames import parse_where
    from ddsweep.refinement import describe

    extra = {k: v for k, v in (("cpus", cpus), ("gpus", gpus)) if v is not None}
    if extra and not auto:
        raise UserError(f"--{' and --'.join(extra)}: only with --auto (otherwise run `ddsweep work`)")

    def show(r):
        for line in describe(r):
            out.print(line, highlight=False, markup=False, soft_wrap=True)

    done_rounds = []

    def on_round(r):
        done_rounds.append(r)
        out.print(f"-- round {len(done_rounds)}", highlight=False)
        show(r)

    r = api.refine(db, sweep, axis=axis, target=target, budget=budget, batch=batch, early_stopped=early_stopped,
                   epsilon=epsilon, log=log, where=parse_where(where), auto=auto, metric=metric,
                   on_round=on_round if auto else None, **extra)
    if auto:
        short = {"width": "h", "n_train": "n"}.get(r.axis, r.axis)
        at = f"{short} = {r.estimate.at:g}" if r.estimate.at is not None else "not found"
        out.print(f"refined {r.used} new value(s) of {r.axis} in {len(r.rounds)} round(s), {r.trained} job(s) "
                  f"trained in {r.seconds:.1f}s; {r.target}: {at}", highlight=False, soft_wrap=True)
    else:
        show(r)
        if r.proposed:
            out.print(f"next: ddsweep work --db {db}, then ddsweep refine again", highlight=False)
    out.print(f"study: {r.storage}", highlight=False, soft_wrap=True)


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
