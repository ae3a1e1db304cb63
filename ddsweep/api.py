"""The Python twins of the CLI commands: everything `ddsweep ...` does, callable from code."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ddsweep.analysis.frames import check_metric
from ddsweep.errors import GridError, UserError
from ddsweep.grid import Job, expand, read_grid_text
from ddsweep.grid.load import load_grid_text
from ddsweep.grid.overrides import blame as blame_override, resolve as resolve_preset
from ddsweep.paths import output_file, output_folder, output_parent
from ddsweep.store import Store
from ddsweep.store import jobs as store_jobs
from ddsweep.store import results
from ddsweep.workers import WorkResult, work
from ddsweep.workers.events import RETRYABLE, JobStatus

__all__ = ["plan", "work", "status", "query", "queries", "load_metrics", "retry", "extend", "upgrade", "PlanResult",
           "WorkResult",
           "emc", "summary", "bootstrap_summary", "export", "import_results", "report", "refine"]


@dataclass
class PlanResult:
    sweep: str
    jobs: list[Job]
    new: int
    existing: int
    extended: int
    total: int
    total_epochs: int
    dry_run: bool


def plan(grid: str | Path, db: str | Path = "results.duckdb", dry_run: bool = False,
         overrides: list[str] | tuple[str, ...] = ()) -> PlanResult:
    """Expand a grid file into jobs in the database (idempotent); dry_run writes nothing.

    `grid`: a YAML file, `-` (standard input), or the name of a preset shipped with the
    package (`mnist1d-mlp`: sweeps/mnist1d-mlp.yaml). `overrides`: KEY=VALUE strings
    (`grid.width=[8,16]`, `train.lr=0.05`) set on the loaded file before it is validated,
    exactly as if the file said so (ddsweep.grid.overrides).

    The file is read once, before the database is opened, and exactly the text parsed is
    stored with the sweep (`report` and `refine` read it; with overrides, the overridden
    document), so `-` (standard input), a FIFO or a shell's process substitution work as a
    grid file."""
    grid = resolve_preset(grid)
    text = read_grid_text(grid)
    grid = Path("<stdin>") if str(grid) == "-" else grid
    spec, text = load_grid_text(grid, text, overrides)
    try:
        jobs = expand(spec, grid)
    except GridError as e:
        raise blame_override(e, overrides) from None
    store = Store(db)
    if dry_run:
        known = results.job_epochs(db, spec.name) if store.exists() else {}
        new = sum(j.job_id not in known for j in jobs)
        extended = sum(j.job_id in known and j.epochs > known[j.job_id] for j in jobs)
        total = len(set(known) | {j.job_id for j in jobs})
        epochs = sum(known.values()) + sum(j.epochs - known.get(j.job_id, 0) if j.epochs > known.get(j.job_id, 0)
                                           else 0 for j in jobs)
        return PlanResult(spec.name, jobs, new, len(jobs) - new, extended, total, epochs, True)
    with store.write() as conn:
        counts = store_jobs.add_jobs(conn, spec.name, str(grid), text, jobs)
    return PlanResult(spec.name, jobs, counts.new, counts.existing, counts.extended, counts.total,
                      counts.total_epochs, False)


def status(db: str | Path = "results.duckdb", sweep: str | None = None, wait: float = 30.0) -> pd.DataFrame:
    """Jobs per sweep and status (pending/running/done/failed/diverged), epochs done and planned."""
    return results.status(db, sweep, wait)  # (an unknown sweep is bad input, exit 2: not an empty table)


def query(sql: str, db: str | Path = "results.duckdb", wait: float = 30.0,
          allow_external: bool = False) -> pd.DataFrame:
    """Run read-only SQL on the database (waits while a writer holds it).

    The SQL sees this database only: DuckDB's external access is off (no COPY ... TO,
    EXPORT DATABASE, read_csv of other files, ATTACH, INSTALL), and cannot be turned back on
    from the SQL, unless `allow_external`."""
    return results.query(db, sql, wait, allow_external=allow_external)


def queries(sql: str, db: str | Path = "results.duckdb", wait: float = 30.0,
            allow_external: bool = False) -> list[tuple[str, pd.DataFrame]]:
    """Each statement of `sql` (`select 1; select 2`), run in order as `query` runs one:
    (statement, DataFrame) for each that returns rows (`query` returns only the last)."""
    return results.queries(db, sql, wait, allow_external=allow_external)


def load_metrics(db: str | Path = "results.duckdb", sweep: str | None = None, wait: float = 30.0,
                 where: dict | None = None, epochs=None, final: bool = False, columns=None, output: str = "pandas"):
    """Every metric row joined with its job's axes: one row per (job, evaluated epoch).

    The columns are the long exchange format (ddsweep.axes.RESULT_COLUMNS), the same as
    `export`: the job's `lr` and the per-epoch `epoch_lr` side by side, floats as float64.
    The filters run in DuckDB (see ddsweep.store.results.load_metrics): `where`
    ({column: values}), `epochs`, `final` (each job's last epoch), `columns`; `output`
    "arrow" or "polars" returns that instead of a pandas DataFrame.
    """
    return results.load_metrics(db, sweep, where=where, epochs=epochs, final=final, columns=columns, wait=wait,
                                output=output)


def retry(db: str | Path = "results.duckdb", sweep: str | None = None,
          statuses: tuple[str, ...] = (JobStatus.FAILED,)) -> int:
    """Requeue failed (and/or diverged) jobs, their failure count reset; returns how many.

    The next `work` resumes each from its last checkpoint (a job without one starts over).
    """
    if not statuses or set(statuses) - set(RETRYABLE):
        raise UserError(f"retry: statuses must be failed and/or diverged, not {list(statuses)}")
    with _write_sweep(db, sweep) as conn:
        return store_jobs.requeue(conn, tuple(statuses), sweep)


def extend(db: str | Path = "results.duckdb", epochs: int = 0, sweep: str | None = None) -> int:
    """Add the horizon `epochs` to every job (of `sweep`) planned with fewer; returns how many changed.

    Finished jobs reopen and continue from their final checkpoint, so their metrics equal
    those of a run planned to `epochs` from the start.
    """
    _check_epochs(epochs)
    with _write_sweep(db, sweep) as conn:
        return store_jobs.extend(conn, int(epochs), sweep)


def upgrade(db: str | Path = "results.duckdb") -> tuple[str | None, str]:
    """Bring a database made by an older ddsweep to this one's schema; returns (revision before, now).

    The read commands never write, so they refuse an older file with one line saying this;
    `plan` and `work` upgrade it as they open it to write. Every stored row is kept
    (tests/test_upgrade_assets.py reads back frozen databases of each earlier revision).
    """
    from ddsweep.store.connection import head_revision

    before = Store(db).upgrade()
    return before, head_revision()


@contextmanager
def _write_sweep(db: str | Path, sweep: str | None):
    """The write connection of an existing database whose `sweep` (None: its only one) exists."""
    store = Store(db)
    if not store.exists():
        raise UserError(f"{db}: no such database; plan a grid first: ddsweep plan GRID.yaml --db {db}")
    with store.write() as conn:
        store_jobs.require_sweep(conn, sweep, db)
        yield conn


def _check_epochs(epochs) -> None:
    """`extend`'s horizon obeys the grid's rule for `train.epochs` (one definition: TrainSpec)."""
    from pydantic import ValidationError

    from ddsweep.grid import TrainSpec

    try:
        TrainSpec(epochs=epochs)
    except ValidationError as e:
        raise UserError(f"extend: --epochs = {epochs}: {e.errors()[0]['msg']}") from None


def sweeps(db: str | Path = "results.duckdb") -> list[str]:
    return results.sweeps(db)


# ----------------------------------------------------------------------------- maps, EMC, peaks, exchange
# Thin wrappers: read the sweep's metric rows, hand them to the pure functions in
# ddsweep.analysis / ddsweep.plot / ddsweep.html_report / ddsweep.exchange.


def load_sweep(db: str | Path = "results.duckdb", sweep: str | None = None, where: dict | None = None):
    """(sweep name, its metric rows): the sweep named, or the only one in the database."""
    return results.load_sweep(db, sweep, where)


def emc(db: str | Path = "results.duckdb", sweep: str | None = None, epsilon: float = 0.1, factor: float = 2.0,
        epochs: list[int] | None = None, all_epochs: bool = False, where: dict | None = None,
        metric: str = "train_error"):
    """EMC per (width, epoch) with a sample axis, else the interpolation threshold per epoch (EmcTable);
    fitted means seed-mean `metric` (default the train error; any stored metric) <= epsilon.

    Reads each job's last row, and the seed-mean train-error curves where the table needs
    other epochs, reduced in DuckDB (ddsweep.store.results.reduce), not every row.
    """
    from ddsweep.analysis.emc import emc_table
    from ddsweep.analysis.frames import Reduced

    def needs_curves(rows) -> bool:  # a sample axis at the last epoch reads the last rows only
        return bool(epochs) or all_epochs or "n_train" not in rows or rows["n_train"].nunique() <= 1

    check_metric(metric)
    red = results.reduce(db, sweep, where, metrics=(metric,), curves=needs_curves)
    return emc_table(Reduced(red["rows"], red["curves"]), epsilon=epsilon, factor=factor, epochs=epochs,
                     all_epochs=all_epochs, metric=metric)


def summary(db: str | Path = "results.duckdb", sweep: str | None = None, epsilon: float = 0.1,
            epoch: int | None = None, where: dict | None = None, select_on: str = "test",
            metric: str = "test_error") -> pd.DataFrame:
    """First minimum, peak, second descent and interpolation threshold of every model-/sample-wise curve
    of `metric` (any stored metric: test_error, test_loss, ...).

    select_on="val": the early-stopped curves stop at the epoch of least validation error
    (a dataset with `val: N`), not of least test error.

    Reads each job's row at the epoch (its last, or `epoch`) and the early-stopped `metric`
    per cell, reduced in DuckDB (ddsweep.store.results.reduce), not every row.
    """
    from ddsweep.analysis.frames import Reduced, selector
    from ddsweep.analysis.peaks import summarize

    check_metric(metric)
    select = selector(select_on)
    red = results.reduce(db, sweep, where, epoch=epoch, metrics=(metric, "train_error"), best=metric,
                         best_until=epoch, best_select=select)
    return summarize(Reduced(red["rows"], best=red["best"], best_metric=metric, best_until=epoch, best_select=select),
                     epsilon=epsilon, epoch=epoch, select_on=select_on, metric=metric)


def bootstrap_summary(db: str | Path = "results.duckdb", sweep: str | None = None, where: dict | None = None,
                      fit: float = 0.01) -> pd.DataFrame:
    """Per real/ideal pair and test metric: the step the real world fits its train set (train error < fit),
    the largest real - ideal gap before it, the gap at the end (ddsweep.analysis.bootstrap)."""
    from ddsweep.analysis.bootstrap import METRICS, bootstrap_summary as _bootstrap_summary

    if not 0 < fit <= 1:
        raise UserError(f"--fit {fit:g}: must be a train error in (0, 1]")

    _, df = results.sweep_frame(db, sweep, where, metrics=("step", "train_error", *METRICS))
    return _bootstrap_summary(df, fit=fit)


def export(db: str | Path = "results.duckdb", fmt: str = "parquet", out: str | Path | None = None,
           sweep: str | None = None, table: str = "metrics"):
    """Write the long metrics table (or curves / final_metrics / jobs) to Parquet or CSV: (path, rows)."""
    from ddsweep.exchange import export as _export

    if out is not None:
        output_parent(out, "--out")
    return _export(db, fmt=fmt, out=out, sweep=sweep, table=table)


def import_results(file: str | Path, db: str | Path = "results.duckdb", sweep: str | None = None,
                   mapping: dict | None = None, constants: dict | None = None, replace: bool = False):
    """Import per-epoch results made elsewhere (CSV/Parquet, long format) as a sweep of finished jobs."""
    from ddsweep.exchange import import_file

    return import_file(file, db, sweep=sweep, mapping=mapping, constants=constants, replace=replace)


def report(db: str | Path = "results.duckdb", sweep: str | None = None, out: str | Path = "report.html",
           epsilon: float = 0.1, figures_dir: str | Path | None = None) -> Path:
    """One self-contained HTML page: grid, job status, maps, curves, EMC table, peak summary.

    With figures_dir, each figure is also written there as PNG.
    """
    from ddsweep.html_report import build_report

    output_file(out, "--out")
    if figures_dir is not None:
        output_folder(figures_dir, "--figures")
    return build_report(db, sweep=sweep, out=out, epsilon=epsilon, figures_dir=figures_dir)


def refine(db: str | Path = "results.duckdb", sweep: str | None = None, axis: str = "width", target: str = "peak",
           budget: int = 8, batch: int = 2, early_stopped: bool = False, epsilon: float = 0.1,
           log: bool | None = None, where: dict | None = None, auto: bool = False, on_round=None,
           metric: str = "test_error", select_on: str = "test", **work_kwargs):
    """Propose new values of one axis near the peak (or threshold) and plan them as jobs of the sweep.

    Reads the sweep's finished cells, syncs them into an Optuna study beside the database
    (results.duckdb.optuna/), asks it for up to `batch` new values (at most `batch` pending
    at a time, `budget` new values in total) and plans them with the sweep's stored grid,
    the axis replaced. With auto=True it alternates with `work(db, sweep=..., **work_kwargs)`
    until the budget is spent or the bracket is resolved. Returns a RefineResult
    (ddsweep.refinement): the estimate, its bracket, what was proposed. select_on="val": the peak
    of the validation split's error (or loss) instead of the test set's, so that the test set does
    not choose the points.
    """
    from ddsweep.refinement import check_args, refine as _refine, refine_auto

    check_args(target, budget, batch, epsilon, early_stopped)
    store = Store(db)
    if not store.exists():
        raise UserError(f"{db}: no such database; plan a grid first: ddsweep plan GRID.yaml --db {db}")
    store.upgrade()  # (refine writes: like plan and work, it upgrades an older schema before reading it)
    name = results.pick_sweep(db, sweep)
    kwargs = dict(axis=axis, target=target, budget=budget, batch=batch, early_stopped=early_stopped,
                  epsilon=epsilon, log=log, where=where, metric=metric, select_on=select_on)
    if not auto:
        if work_kwargs:
            raise UserError(f"refine: {', '.join(sorted(work_kwargs))} only apply with auto=True (--auto)")
        return _refine(db, name, **kwargs)
    work_kwargs.setdefault("show_progress", False)
    return refine_auto(db, name, lambda: work(db, sweep=name, **work_kwargs), on_round=on_round, **kwargs)
