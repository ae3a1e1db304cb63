"""Layer 3 of refinement: read the sweep from the database, ask the study, plan the proposals as jobs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ddsweep.errors import UserError
from ddsweep.refinement.propose import EPSILON, TARGETS, Axis, Estimate, fmt_value, is_geometric, locate
from ddsweep.refinement.study import Cell, ask, study_dir, study_name, sync_study
from ddsweep.suggest import no_such_sweep

# Axes refine may move: numeric job columns (seed and epochs are no cell axes to refine).
REFINABLE = ("width", "n_train", "label_noise", "lr", "momentum", "weight_decay", "batch_size", "depth")


@dataclass
class RefineResult:
    """What one `refine` call found and planned (with --auto: the last round; `rounds` has each)."""

    sweep: str
    axis: str
    target: str
    measure: str               # final | early-stopped | train error
    log: bool
    integer: bool
    epsilon: float
    budget: int
    batch: int
    grid_values: list
    cells: dict                # value -> Cell
    proposed: list             # new axis values planned by this call (this round)
    new_jobs: int
    estimate: Estimate
    study: str
    storage: Path
    note: str = ""
    rounds: list = field(default_factory=list)
    trained: int = 0           # jobs trained by --auto
    seconds: float = 0.0
    metric: str = "test_error"  # the metric whose peak is located (val_error with select_on="val")

    @property
    def refined(self) -> list:
        return sorted(v for v, c in self.cells.items() if c.source == "refine")

    @property
    def used(self) -> int:
        return len(self.refined)

    @property
    def finished(self) -> int:
        return sum(c.status == "done" for c in self.cells.values())

    @property
    def pending(self) -> list:
        return sorted(v for v, c in self.cells.items() if c.status == "pending")

    @property
    def runs(self) -> int:
        """Distinct values of the axis in the sweep (grid + refined)."""
        return len(self.cells)


# --select-on val: the peak is located on the validation split's counterpart of the metric
VALIDATION_OF = {"test_error": "val_error", "test_loss": "val_loss"}


def objective_metric(metric: str, select_on: str, target: str) -> str:
    """The metric whose peak refine locates: `metric`, or with select_on="val" its validation counterpart,
    so that the test set plays no part in choosing the next points."""
    from ddsweep.analysis.frames import selector

    if selector(select_on) is None:
        return metric
    if target != "peak":
        raise UserError("--select-on val applies to --target peak only (the threshold is read from the train error)")
    if metric not in VALIDATION_OF:
        raise UserError(f"--select-on val: --metric {metric} has no validation counterpart "
                        f"(use {' or '.join(VALIDATION_OF)})")
    return VALIDATION_OF[metric]


def check_args(target: str, budget: int, batch: int, epsilon: float, early_stopped: bool) -> None:
    if target not in TARGETS:
        raise UserError(f"--target {target}: unknown target (use {' or '.join(TARGETS)})")
    if int(budget) < 1:
        raise UserError(f"--budget = {budget}: must be at least 1 (new axis values in total)")
    if int(batch) < 1:
        raise UserError(f"--batch = {batch}: must be at least 1 (new axis values per round)")
    if not (0 <= float(epsilon) < 1):
        raise UserError(f"--epsilon = {epsilon}: must be in [0, 1) (a train error)")
    if early_stopped and target != "peak":
        raise UserError("--early-stopped applies to --target peak only")


def _stored_grid(conn, db, sweep: str):
    import yaml

    from ddsweep.grid import parse_grid

    row = conn.exec_driver_sql("SELECT grid_path, grid_yaml FROM sweeps WHERE name = ?", (sweep,)).fetchone()
    if row is None:
        names = [r[0] for r in conn.exec_driver_sql("SELECT name FROM sweeps ORDER BY name")]
        raise UserError(no_such_sweep(sweep, db, names))
    grid_path, grid_yaml = row
    if not grid_yaml:
        raise UserError(f"sweep {sweep} in {db} has no stored grid (imported results?); refine needs a planned sweep")
    try:
        spec = parse_grid(yaml.safe_load(grid_yaml), grid_path or "<stored grid>")
    except yaml.YAMLError as e:
        raise UserError(f"sweep {sweep}: its stored grid is not readable YAML ({str(e).splitlines()[0]})") from None
    return grid_path or "<stored grid>", grid_yaml, spec


def _axis_of(spec, grid_path, axis: str, log: bool | None, db_values) -> tuple[Axis, list]:
    from ddsweep.grid import INT_AXES, axis_key, axis_values

    if axis != "zip" and axis_key(spec.grid, axis) != f"grid.{axis}":
        raise UserError(f"--axis {axis}: linked with other axes in {axis_key(spec.grid, axis).rsplit('.', 1)[0]}; "
                        "refine adds values to one plain axis")
    if axis not in spec.grid:
        raise UserError(f"--axis {axis}: not an axis of sweep {spec.name}'s grid (axes: {', '.join(spec.grid)})")
    if axis not in REFINABLE:
        raise UserError(f"--axis {axis}: cannot be refined (numeric cell axes only: {', '.join(REFINABLE)})")
    values = axis_values(axis, spec.grid[axis], grid_path)
    if len(values) < 2:
        raise UserError(f"--axis {axis}: sweep {spec.name}'s grid has only {fmt_value(values[0])}; "
                        "refine needs an axis with at least 2 values (3 for a peak)")
    every = sorted({*map(float, values), *map(float, db_values)})
    raw = spec.grid[axis]
    if log is None:
        if isinstance(raw, dict):
            log = "geom" in raw
        else:
            log = is_geometric(values)
    if log and every[0] <= 0:
        raise UserError(f"--log: {axis} takes values <= 0 ({fmt_value(every[0])}); it cannot be log-scaled")
    integer = axis in INT_AXES
    lo, hi = every[0], every[-1]
    return Axis(axis, integer, bool(log), int(lo) if integer else lo, int(hi) if integer else hi), values


def _cells(conn, sweep: str, axis: Axis, grid_values, target: str, early_stopped: bool, metric: str,
           where) -> tuple[dict, set]:
    """{value: Cell} of the selected curve, and every value of the axis in the sweep."""
    import pandas as pd

    from ddsweep.analysis.frames import apply_where, early_stopped as es, final_means
    from ddsweep.axes import CELL_AXES

    cols = ["job_id", "status", "seed", *CELL_AXES]
    res = conn.exec_driver_sql(f"SELECT {', '.join(cols)} FROM jobs WHERE sweep = ?", (sweep,))
    jobs = pd.DataFrame(res.fetchall(), columns=list(res.keys()))
    every = {axis.snap(v) for v in jobs[axis.name].dropna()}
    jobs = apply_where(jobs, where)
    other = [c for c in CELL_AXES if c != axis.name and c in jobs.columns and jobs[c].nunique(dropna=False) > 1]
    if other:
        c = other[0]
        vals = ", ".join(fmt_value(v) for v in sorted(jobs[c].dropna().unique()))
        raise UserError(f"refine follows one curve, but {c} takes several values ({vals}); "
                        f"choose one with --where {c}=VALUE")
    # (in refine's write transaction, so what it plans matches what it read; as a frame, not tuples)
    metrics = conn.connection.driver_connection.execute(
        f"SELECT m.job_id, m.epoch, {', '.join('m.' + c for c in dict.fromkeys([metric, 'train_error']))} "
        "FROM metrics m JOIN jobs j USING (job_id) "
        "WHERE j.sweep = ? AND j.status = 'done'", [sweep]).df()
    done = jobs[jobs["status"] == "done"][["job_id", axis.name, "seed"]].merge(metrics, on="job_id")
    objective: dict = {}
    if not done.empty:
        done = done.astype({metric: float, "train_error": float})
        if target == "peak" and early_stopped:
            table = es(done, [axis.name], metric)
            col = metric
        else:
            table = final_means(done, [axis.name], list(dict.fromkeys([metric, "train_error"])))
            col = metric if target == "peak" else "train_error"
        objective = {axis.snap(r[axis.name]): float(r[col]) for _, r in table.iterrows()}
    grid = {axis.snap(v) for v in grid_values}
    cells = {}
    for v, g in jobs.groupby(axis.name):
        v = axis.snap(v)
        status = set(g["status"])
        if status <= {"done"} and v in objective and np.isfinite(objective[v]):
            state, obj = "done", objective[v]
        elif status & {"pending", "running"}:
            state, obj = "pending", None
        else:
            state, obj = "failed", None
        cells[v] = Cell(v, state, obj, len(g), int(g["seed"].nunique()), "grid" if v in grid else "refine")
    return cells, every


def _job_value(job, axis: str):
    c = job.config
    return c[axis] if axis in c else c["train"].get(axis, c["model"].get(axis))


def refine(db: str | Path, sweep: str, axis: str = "width", target: str = "peak", budget: int = 8,
           batch: int = 2, early_stopped: bool = False, epsilon: float = EPSILON, log: bool | None = None,
           where: dict | None = None, metric: str = "test_error", select_on: str = "test") -> RefineResult:
    """One refinement step: sync the study with the database, propose, plan the new jobs. The peak
    is that of `metric` (default the test error; any stored metric, e.g. test_loss); with
    select_on="val" that of its validation counterpart (val_error, val_loss: the sweep needs a
    validation split), final or early-stopped (the minimum over epochs of the seed mean)."""
    from ddsweep.analysis.frames import check_metric

    from ddsweep.grid import expand
    from ddsweep.store import Store
    from ddsweep.store import jobs as store_jobs

    check_args(target, budget, batch, epsilon, early_stopped)
    check_metric(metric)
    metric = objective_metric(metric, select_on, target)
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise UserError("refine needs Optuna: pip install 'optuna>=4.0'") from None
    store = Store(db)
    if not store.exists():
        raise UserError(f"{db}: no such database; plan a grid first: ddsweep plan GRID.yaml --db {db}")
    with store.write() as conn:
        grid_path, grid_yaml, spec = _stored_grid(conn, db, sweep)
        if metric in VALIDATION_OF.values() and not spec.dataset.val:
            raise UserError(f"--select-on val: sweep {sweep} has no validation split; give its dataset one "
                            "(dataset: {val: N}) to choose points on it")
        db_values = [r[0] for r in conn.exec_driver_sql(
            f"SELECT DISTINCT {axis} FROM jobs WHERE sweep = ?", (sweep,))] if axis in REFINABLE else []
        ax, grid_values = _axis_of(spec, grid_path, axis, log, [v for v in db_values if v is not None])
        if target == "peak" and len(grid_values) < 3:
            raise UserError(f"--axis {axis}: sweep {sweep}'s grid has {len(grid_values)} values; "
                            "finding a peak needs at least 3")
        cells, every = _cells(conn, sweep, ax, grid_values, target, early_stopped, metric, where)
        name = study_name(sweep, axis, target, early_stopped, where, metric)
        path = study_dir(db) / f"{name}.log"
        study, note = sync_study(path, name, ax, target, cells, epsilon)
        observed = {v: c.objective for v, c in cells.items() if c.status == "done"}
        pending = [v for v, c in cells.items() if c.status == "pending"]
        used = sum(c.source == "refine" for c in cells.values())
        n = max(0, min(int(batch) - len(pending), int(budget) - used))
        proposed = ask(study, ax, n) if n else []
        if proposed:
            proposed = [v for v in proposed if ax.snap(v) not in every]  # (never happens: the sampler avoids them)
        new_jobs = 0
        if proposed:
            values = sorted(int(v) if ax.integer else float(v) for v in proposed)
            spec2 = spec.model_copy(update={"grid": {**spec.grid, axis: values}})
            jobs = expand(spec2, grid_path)
            counts = store_jobs.add_jobs(conn, sweep, grid_path, grid_yaml, jobs)
            new_jobs = counts.new
            for v in values:
                cells[v] = Cell(v, "pending", None, sum(_job_value(j, axis) == v for j in jobs), 0, "refine")
        est = locate(observed, ax, target, epsilon, [v for v, c in cells.items() if c.status == "pending"])
    notes = [note] if note and note != "created" else []
    if not proposed:
        if est.converged:
            notes.append(f"converged: no untried value of {axis} left inside the bracket")
        elif used >= budget:
            notes.append(f"budget spent ({used} of {budget} new values of {axis}); raise --budget to go on")
        if pending:
            notes.append(f"{len(pending)} value(s) of {axis} pending: run `ddsweep work --db {db}`, then refine again")
    if est.note:
        notes.append(est.note)
    measure = "train error" if target == "threshold" else ("early-stopped" if early_stopped else "final")
    return RefineResult(sweep, axis, target, measure, ax.log, ax.integer, float(epsilon), int(budget), int(batch),
                        sorted(grid_values), cells, proposed, new_jobs, est, name, path, "; ".join(notes),
                        metric=metric)


def refine_auto(db: str | Path, sweep: str, work: Callable[[], object], on_round: Callable | None = None,
                **kwargs) -> RefineResult:
    """Alternate `refine` and `work()` until the budget is spent (or nothing is left to try)."""
    t0 = time.perf_counter()
    rounds, trained = [], 0
    budget = int(kwargs.get("budget", 8))
    for _ in range(2 * budget + 4):  # each round proposes >= 1 value or trains the pending ones
        r = refine(db, sweep, **kwargs)
        rounds.append(r)
        if on_round is not None:
            on_round(r)
        if not r.pending:
            break
        w = work()
        done = int(getattr(w, "done", 0) or 0) + int(getattr(w, "failed", 0) or 0) + int(getattr(w, "diverged", 0) or 0)
        trained += done
        if done == 0 and not r.proposed:
            break  # nothing trained (jobs leased by another coordinator?): stop rather than spin
    final = rounds[-1]
    final.rounds, final.trained, final.seconds = rounds, trained, time.perf_counter() - t0
    return final


def describe(r: RefineResult) -> list[str]:
    """Lines for the CLI."""
    short = {"width": "h", "n_train": "n"}.get(r.axis, r.axis)
    scale = ("log" if r.log else "linear") + (", integer" if r.integer else "")
    from ddsweep.axes import METRIC

    label = METRIC[r.metric].label if r.metric in METRIC and METRIC[r.metric].label else r.metric
    what = (f"peak of {r.measure} {label}" if r.target == "peak"
            else f"threshold: smallest {r.axis} with train error <= {r.epsilon:g}")
    lines = [f"sweep {r.sweep}, {r.axis} ({scale}), {what}: {r.finished} value(s) finished, "
             f"{len(r.pending)} pending; {r.used} of {r.budget} new value(s) used"]
    e = r.estimate
    if e.at is not None:
        val = f"{e.value:.4f} at " if e.value is not None else ""
        where = f"{short} = {fmt_value(e.at)}"
        if e.bracket:
            where += f" (bracketed by {fmt_value(e.bracket[0])} and {fmt_value(e.bracket[1])})"
        lines.append(f"{'peak' if r.target == 'peak' else 'threshold'} so far: {val}{where}"
                     + (": resolved to one step" if e.converged and r.integer else ""))
    if r.proposed:
        lines.append(f"proposed {r.axis} = {', '.join(fmt_value(v) for v in sorted(r.proposed))}: "
                     f"{r.new_jobs} new job(s) planned")
    if r.note:
        lines.append(r.note)
    return lines
