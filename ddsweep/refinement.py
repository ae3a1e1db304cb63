"""Adaptive refinement of one axis of a sweep: find the peak (or the threshold) with few runs.

Three layers, each usable on its own:

1. **Proposal logic** (pure; no database, no Optuna): `locate` reads the current
   estimate off the finished cells -- the double-descent peak (the most prominent
   interior local maximum of the seed-mean test error, exactly as `ddsweep summary`
   finds it) or the interpolation threshold (the smallest axis value whose seed-mean
   train error is <= epsilon) -- together with the open interval that must hold the
   true one: the peak's two grid neighbours, or the last unfitted and first fitted
   value. `propose` splits the widest gap inside that bracket (gaps between finished
   and pending values; in log space on a log axis) at its midpoint, rounded to the
   axis's resolution (integers; 3 significant digits on float axes), and repeats for
   a batch. Nothing already run, pending or failed is proposed again. `simulate`
   drives it with a function you evaluate directly.
2. **Optuna layer**: the proposals come from an Optuna sampler (`RefineSampler`,
   whose `sample_independent` calls `propose`) through ask/tell on a study kept in
   Optuna's journal file storage beside the database
   (`results.duckdb.optuna/<sweep>-<axis>-<target>.log`). Each refine first re-syncs
   every cell of the database into the study (finished: COMPLETE with its value;
   pending: RUNNING; failed: FAIL; RUNNING trials whose jobs finished are told their
   value) and rebuilds the study from the database when the two disagree, so the
   file can be deleted at any time.
3. **Database wiring** (`refine`): reads the sweep's stored grid and results under
   the write lock, asks the study, and plans each proposal as the jobs `ddsweep plan`
   would make for the stored grid with the axis replaced by the proposed values.

Imports Optuna lazily and never torch (this process opens the database).
"""

from __future__ import annotations

import math
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ddsweep.errors import UserError

TARGETS = ("peak", "threshold")
EPSILON = 0.1
FLOAT_DIGITS = 3  # resolution of proposals on a float axis: significant digits
# Axes refine may move: numeric job columns (seed and epochs are no cell axes to refine).
REFINABLE = ("width", "n_train", "label_noise", "lr", "momentum", "weight_decay", "batch_size", "depth")


# ============================================================================ 1. proposal logic (pure)


@dataclass(frozen=True)
class Axis:
    """The axis being refined: integer or float, log-scaled or linear, its range."""

    name: str
    integer: bool
    log: bool
    low: float
    high: float

    def u(self, x) -> float:
        """Position on the axis as proposals measure it (log x on a log axis)."""
        return math.log(x) if self.log else float(x)

    def x(self, u: float) -> float:
        return math.exp(u) if self.log else u

    def snap(self, x):
        """A value at the axis's resolution: an int, or a float with FLOAT_DIGITS significant digits."""
        if self.integer:
            return int(round(x))
        return float(f"{x:.{FLOAT_DIGITS}g}")

    def between(self, a, b):
        """The free value nearest (in u) to the midpoint of the open gap (a, b), or None if none fits."""
        mid = (self.u(a) + self.u(b)) / 2
        m = self.x(mid)
        if self.integer:
            lo, hi = math.floor(a) + 1, math.ceil(b) - 1
            if lo > hi:
                return None
            options = {min(max(c, lo), hi) for c in (math.floor(m), math.ceil(m))}
            return min(sorted(options), key=lambda c: abs(self.u(c) - mid))
        c = self.snap(m)
        return c if a < c < b else None


@dataclass
class Estimate:
    """Where the peak (or threshold) is now, and the open interval that must hold the true one."""

    target: str
    at: float | None = None          # the peak's / threshold's axis value among the finished cells
    value: float | None = None       # its objective (test error at the peak, train error at the threshold)
    bracket: tuple | None = None     # (a, b): the true optimum lies strictly between a and b
    converged: bool = False          # no value left to try inside the bracket (and none pending there)
    note: str = ""


def locate(observed: dict, axis: Axis, target: str = "peak", epsilon: float = EPSILON,
           pending: Iterable = ()) -> Estimate:
    """The current estimate from finished cells {axis value: objective}.

    peak: the most prominent interior local maximum (as `ddsweep summary`), bracketed
    by its grid neighbours. threshold: the smallest value with objective <= epsilon,
    bracketed by it and the largest smaller value.
    """
    from ddsweep.analysis.peaks import find_peak

    xs = sorted(v for v, y in observed.items() if y is not None and np.isfinite(y))
    ys = np.array([observed[v] for v in xs], dtype=float)
    est = Estimate(target)
    if target == "peak":
        if len(xs) < 3:
            est.note = f"need at least 3 finished values of {axis.name} to find a peak (have {len(xs)})"
            return est
        p, _ = find_peak(ys)
        if p is None:
            est.note = "no interior peak among the finished values: splitting the widest gap"
            return est
        est.at, est.value, est.bracket = xs[p], float(ys[p]), (xs[p - 1], xs[p + 1])
    elif target == "threshold":
        if not xs:
            est.note = f"no finished value of {axis.name} yet"
            return est
        fits = np.flatnonzero(ys <= epsilon)
        if fits.size == 0:
            est.note = (f"no {axis.name} up to {_fmt(xs[-1])} reaches train error <= {epsilon:g}: "
                        "the crossing lies beyond the range; extend the grid")
            return est
        k = int(fits[0])
        est.at, est.value = xs[k], float(ys[k])
        if k == 0:
            est.note = (f"already the smallest {axis.name} ({_fmt(xs[0])}) reaches train error <= {epsilon:g}: "
                        "the crossing lies below the range; extend the grid")
            return est
        est.bracket = (xs[k - 1], xs[k])
    else:
        raise UserError(f"--target {target}: unknown target (use {' or '.join(TARGETS)})")
    a, b = est.bracket
    waiting = {v for v in pending if a < v < b}
    inside = sorted(waiting | {a, b} | ({est.at} if target == "peak" else set()))
    free = any(axis.between(lo, hi) is not None for lo, hi in zip(inside, inside[1:]))
    est.converged = not free and not waiting
    return est


def propose(observed: dict, taken: Iterable, axis: Axis, target: str = "peak", n: int = 1,
            epsilon: float = EPSILON) -> tuple[list, Estimate]:
    """Up to n new axis values to run next, and the estimate they refine.

    observed: {value: objective} of finished cells; taken: every value already
    planned (finished, pending or failed), never proposed again. Inside the bracket
    (or over the whole range while there is no peak yet) the widest gap between taken
    values is split at its (log-)midpoint, rounded to the axis's resolution; a batch
    repeats this with the earlier picks counted as taken. Fewer than n (or none) come
    back when the bracket has no free value left.
    """
    taken = {axis.snap(v) for v in taken} | {axis.snap(v) for v in observed}
    pending = taken - {axis.snap(v) for v, y in observed.items() if y is not None and np.isfinite(y)}
    est = locate(observed, axis, target, epsilon, pending)
    if est.bracket is not None:
        lo, hi = est.bracket
    elif target == "peak" and len(observed) >= 3:
        lo, hi = min(taken), max(taken)  # no interior peak: explore the widest gap anywhere
    else:
        return [], est
    points = sorted({v for v in taken if lo <= v <= hi} | {lo, hi})
    picks: list = []
    for _ in range(max(0, int(n))):
        best, best_gap = None, -1.0
        for a, b in zip(points, points[1:]):
            c = axis.between(a, b)
            gap = axis.u(b) - axis.u(a)
            if c is not None and gap > best_gap + 1e-12:
                best, best_gap = c, gap
        if best is None:
            break
        picks.append(best)
        points = sorted(set(points) | {best})
    return picks, est


def simulate(evaluate: Callable[[float], float], initial: Iterable, axis: Axis, target: str = "peak",
             budget: int = 8, batch: int = 2, epsilon: float = EPSILON) -> tuple[dict, Estimate, list[list]]:
    """Run the refinement against a function evaluated directly (no training).

    Returns (every evaluated cell, the final estimate, the batches proposed).
    """
    observed = {axis.snap(v): float(evaluate(axis.snap(v))) for v in initial}
    batches: list[list] = []
    used = 0
    while used < budget:
        picks, _ = propose(observed, observed, axis, target, min(batch, budget - used), epsilon)
        if not picks:
            break
        batches.append(picks)
        used += len(picks)
        for v in picks:
            observed[v] = float(evaluate(v))
    return observed, locate(observed, axis, target, epsilon), batches


def is_geometric(values) -> bool:
    """Spaced more evenly in ratio than in difference (the rule the maps use for log axes)."""
    v = np.sort(np.unique(np.asarray(values, dtype=float)))
    if len(v) < 3 or v[0] <= 0:
        return len(v) == 2 and v[0] > 0 and v[1] / v[0] >= 10
    ratios, diffs = v[1:] / v[:-1], np.diff(v)
    return bool(ratios.max() / ratios.min() < diffs.max() / diffs.min())


def _fmt(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float, np.integer, np.floating)) else str(v)


# ============================================================================ 2. Optuna layer


class NoProposal(Exception):
    """The sampler found no free value to propose."""


_SAMPLER_CLASS = None


def make_sampler(axis: Axis, target: str, epsilon: float = EPSILON):
    """An Optuna sampler for one axis whose proposals are `propose`'s (built on first use: lazy import)."""
    global _SAMPLER_CLASS
    if _SAMPLER_CLASS is None:
        from optuna.samplers import BaseSampler
        from optuna.trial import TrialState

        class RefineSampler(BaseSampler):
            """Brackets the peak (or threshold) and splits the widest gap in it; see ddsweep.refinement."""

            def __init__(self, axis: Axis, target: str, epsilon: float):
                self.axis, self.target, self.epsilon = axis, target, epsilon

            def infer_relative_search_space(self, study, trial):
                return {}

            def sample_relative(self, study, trial, search_space):
                return {}

            def sample_independent(self, study, trial, param_name, param_distribution):
                observed, taken = {}, set()
                for t in study.get_trials(deepcopy=False):
                    if t.number == trial.number or param_name not in t.params:
                        continue
                    taken.add(t.params[param_name])
                    if t.state == TrialState.COMPLETE:
                        observed[t.params[param_name]] = t.value
                picks, _ = propose(observed, taken, self.axis, self.target, 1, self.epsilon)
                if not picks:
                    raise NoProposal(f"no free value of {param_name} left to propose")
                return picks[0]

        _SAMPLER_CLASS = RefineSampler
    return _SAMPLER_CLASS(axis, target, epsilon)


@dataclass
class Cell:
    """One value of the refined axis as the database has it."""

    value: float
    status: str                 # done | pending | failed
    objective: float | None = None
    jobs: int = 0
    seeds: int = 0
    source: str = "grid"        # grid | refine


def study_name(sweep: str, axis: str, target: str, early_stopped: bool = False, where: dict | None = None) -> str:
    parts = [sweep, axis, target] + (["early-stopped"] if early_stopped and target == "peak" else [])
    for k, vs in sorted((where or {}).items()):
        parts.append(f"{k}={','.join(map(str, vs if isinstance(vs, (list, tuple)) else [vs]))}")
    return re.sub(r"[^A-Za-z0-9_.=,\-]", "_", "-".join(parts))


def study_dir(db: str | Path) -> Path:
    db = Path(db)
    return db.with_name(db.name + ".optuna")


def _distribution(axis: Axis):
    from optuna.distributions import FloatDistribution, IntDistribution

    if axis.integer:
        return IntDistribution(int(axis.low), int(axis.high), log=axis.log)
    return FloatDistribution(float(axis.low), float(axis.high), log=axis.log)


def _open_study(path: Path, name: str, direction: str, sampler=None, fresh: bool = False):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fresh:
        for p in (path, path.with_name(path.name + ".lock")):
            p.unlink(missing_ok=True)
    storage = JournalStorage(JournalFileBackend(str(path)))
    return optuna.create_study(study_name=name, storage=storage, direction=direction, sampler=sampler,
                               load_if_exists=True)


def sync_study(path: Path, name: str, axis: Axis, target: str, cells: dict, epsilon: float = EPSILON):
    """Bring the study in line with the database's cells; rebuild it when they disagree.

    Returns (study with a RefineSampler, note: '' or why it was rebuilt/created).
    """
    from optuna.trial import TrialState, create_trial

    direction = "maximize" if target == "peak" else "minimize"
    sampler = make_sampler(axis, target, epsilon)
    dist = _distribution(axis)
    note = "" if path.exists() else "created"
    try:
        study = _open_study(path, name, direction, sampler)
        reason = _disagreement(study, axis, cells, dist, direction)
    except Exception as e:  # an unreadable or foreign journal: the database is the truth
        reason = f"unreadable ({type(e).__name__})"
    if reason:
        study = _open_study(path, name, direction, sampler, fresh=True)
        note = f"rebuilt from the database ({reason})"
    by_value = {t.params[axis.name]: t for t in study.get_trials(deepcopy=False) if axis.name in t.params}
    for v, cell in sorted(cells.items()):
        t = by_value.get(v)
        attrs = {"source": cell.source, "jobs": cell.jobs, "seeds": cell.seeds}
        if t is None:
            state = {"done": TrialState.COMPLETE, "pending": TrialState.RUNNING, "failed": TrialState.FAIL}[cell.status]
            study.add_trial(create_trial(state=state, params={axis.name: v}, distributions={axis.name: dist},
                                         value=cell.objective if cell.status == "done" else None,
                                         user_attrs=attrs))
        elif t.state == TrialState.RUNNING and cell.status == "done":
            study.tell(t.number, cell.objective)
        elif t.state == TrialState.RUNNING and cell.status == "failed":
            study.tell(t.number, state=TrialState.FAIL)
    return study, note


def _disagreement(study, axis: Axis, cells: dict, dist, direction: str) -> str:
    """Why the study cannot be continued as it is ('' when it can)."""
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    want = StudyDirection.MAXIMIZE if direction == "maximize" else StudyDirection.MINIMIZE
    if study.direction != want:
        return "direction changed"
    seen = set()
    for t in study.get_trials(deepcopy=False):
        if axis.name not in t.params:
            if t.state == TrialState.RUNNING:
                return f"trial {t.number} was never given a value of {axis.name}"
            continue
        v = t.params[axis.name]
        if v in seen:
            return f"two trials for {axis.name} = {_fmt(v)}"
        seen.add(v)
        if t.distributions.get(axis.name) != dist:
            return f"the range of {axis.name} changed"
        cell = cells.get(v)
        if cell is None:
            return f"{axis.name} = {_fmt(v)} is not in the database"
        if t.state == TrialState.COMPLETE:
            if cell.status != "done" or not math.isclose(t.value, cell.objective, rel_tol=1e-9, abs_tol=1e-12):
                return f"the result at {axis.name} = {_fmt(v)} changed"
        elif t.state == TrialState.FAIL and cell.status != "failed":
            return f"{axis.name} = {_fmt(v)} is no longer failed"
        elif t.state == TrialState.RUNNING and cell.status not in ("pending", "done", "failed"):
            return f"{axis.name} = {_fmt(v)}: unknown state"
    return ""


def ask(study, axis: Axis, n: int) -> list:
    """Ask the study for up to n new values (its RefineSampler picks them); they stay RUNNING trials."""
    from optuna.trial import TrialState

    dist = _distribution(axis)
    values = []
    for _ in range(n):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = study.ask()
            try:
                v = trial.suggest_int(axis.name, dist.low, dist.high, log=dist.log) if axis.integer else \
                    trial.suggest_float(axis.name, dist.low, dist.high, log=dist.log)
            except NoProposal:
                study.tell(trial, state=TrialState.FAIL)
                break
        trial.set_user_attr("source", "refine")
        values.append(v)
    return values


# ============================================================================ 3. database wiring


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
        raise UserError(f"--sweep {sweep}: no such sweep in {db} (sweeps: {', '.join(names) or 'none'})")
    grid_path, grid_yaml = row
    if not grid_yaml:
        raise UserError(f"sweep {sweep} in {db} has no stored grid (imported results?); refine needs a planned sweep")
    try:
        spec = parse_grid(yaml.safe_load(grid_yaml), grid_path or "<stored grid>")
    except yaml.YAMLError as e:
        raise UserError(f"sweep {sweep}: its stored grid is not readable YAML ({str(e).splitlines()[0]})") from None
    return grid_path or "<stored grid>", grid_yaml, spec


def _axis_of(spec, grid_path, axis: str, log: bool | None, db_values) -> tuple[Axis, list]:
    from ddsweep.grid import INT_AXES, axis_values

    if axis not in spec.grid:
        raise UserError(f"--axis {axis}: not an axis of sweep {spec.name}'s grid (axes: {', '.join(spec.grid)})")
    if axis not in REFINABLE:
        raise UserError(f"--axis {axis}: cannot be refined (numeric cell axes only: {', '.join(REFINABLE)})")
    values = axis_values(axis, spec.grid[axis], grid_path)
    if len(values) < 2:
        raise UserError(f"--axis {axis}: sweep {spec.name}'s grid has only {_fmt(values[0])}; "
                        "refine needs an axis with at least 2 values (3 for a peak)")
    every = sorted({*map(float, values), *map(float, db_values)})
    raw = spec.grid[axis]
    if log is None:
        if isinstance(raw, dict):
            log = "geom" in raw
        else:
            log = is_geometric(values)
    if log and every[0] <= 0:
        raise UserError(f"--log: {axis} takes values <= 0 ({_fmt(every[0])}); it cannot be log-scaled")
    integer = axis in INT_AXES
    lo, hi = every[0], every[-1]
    return Axis(axis, integer, bool(log), int(lo) if integer else lo, int(hi) if integer else hi), values


def _cells(conn, sweep: str, axis: Axis, grid_values, target: str, early_stopped: bool,
           where) -> tuple[dict, set]:
    """{value: Cell} of the selected curve, and every value of the axis in the sweep."""
    import pandas as pd

    from ddsweep.analysis.frames import CELL_AXES, apply_where, early_stopped as es, final_means

    cols = ["job_id", "status", "seed", *CELL_AXES]
    res = conn.exec_driver_sql(f"SELECT {', '.join(cols)} FROM jobs WHERE sweep = ?", (sweep,))
    jobs = pd.DataFrame(res.fetchall(), columns=list(res.keys()))
    every = {axis.snap(v) for v in jobs[axis.name].dropna()}
    jobs = apply_where(jobs, where)
    other = [c for c in CELL_AXES if c != axis.name and c in jobs.columns and jobs[c].nunique(dropna=False) > 1]
    if other:
        c = other[0]
        vals = ", ".join(_fmt(v) for v in sorted(jobs[c].dropna().unique()))
        raise UserError(f"refine follows one curve, but {c} takes several values ({vals}); "
                        f"choose one with --where {c}=VALUE")
    res = conn.exec_driver_sql(
        "SELECT m.job_id, m.epoch, m.test_error, m.train_error FROM metrics m JOIN jobs j USING (job_id) "
        "WHERE j.sweep = ? AND j.status = 'done'", (sweep,))
    metrics = pd.DataFrame(res.fetchall(), columns=list(res.keys()))
    done = jobs[jobs["status"] == "done"][["job_id", axis.name, "seed"]].merge(metrics, on="job_id")
    objective: dict = {}
    if not done.empty:
        done = done.astype({"test_error": float, "train_error": float})
        if target == "peak" and early_stopped:
            table = es(done, [axis.name], "test_error")
            col = "test_error"
        else:
            table = final_means(done, [axis.name], ["test_error", "train_error"])
            col = "test_error" if target == "peak" else "train_error"
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
           where: dict | None = None) -> RefineResult:
    """One refinement step: sync the study with the database, propose, plan the new jobs."""
    from ddsweep.grid import expand
    from ddsweep.store import Store
    from ddsweep.store import jobs as store_jobs

    check_args(target, budget, batch, epsilon, early_stopped)
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise UserError("refine needs Optuna: pip install 'optuna>=4.0'") from None
    store = Store(db)
    if not store.exists():
        raise UserError(f"{db}: no such database; plan a grid first: ddsweep plan GRID.yaml --db {db}")
    with store.write() as conn:
        grid_path, grid_yaml, spec = _stored_grid(conn, db, sweep)
        db_values = [r[0] for r in conn.exec_driver_sql(
            f"SELECT DISTINCT {axis} FROM jobs WHERE sweep = ?", (sweep,))] if axis in REFINABLE else []
        ax, grid_values = _axis_of(spec, grid_path, axis, log, [v for v in db_values if v is not None])
        if target == "peak" and len(grid_values) < 3:
            raise UserError(f"--axis {axis}: sweep {sweep}'s grid has {len(grid_values)} values; "
                            "finding a peak needs at least 3")
        cells, every = _cells(conn, sweep, ax, grid_values, target, early_stopped, where)
        name = study_name(sweep, axis, target, early_stopped, where)
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
                        sorted(grid_values), cells, proposed, new_jobs, est, name, path, "; ".join(notes))


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
    what = (f"peak of {r.measure} test error" if r.target == "peak"
            else f"threshold: smallest {r.axis} with train error <= {r.epsilon:g}")
    lines = [f"sweep {r.sweep}, {r.axis} ({scale}), {what}: {r.finished} value(s) finished, "
             f"{len(r.pending)} pending; {r.used} of {r.budget} new value(s) used"]
    e = r.estimate
    if e.at is not None:
        val = f"{e.value:.4f} at " if e.value is not None else ""
        where = f"{short} = {_fmt(e.at)}"
        if e.bracket:
            where += f" (bracketed by {_fmt(e.bracket[0])} and {_fmt(e.bracket[1])})"
        lines.append(f"{'peak' if r.target == 'peak' else 'threshold'} so far: {val}{where}"
                     + (": resolved to one step" if e.converged and r.integer else ""))
    if r.proposed:
        lines.append(f"proposed {r.axis} = {', '.join(_fmt(v) for v in sorted(r.proposed))}: "
                     f"{r.new_jobs} new job(s) planned")
    if r.note:
        lines.append(r.note)
    return lines
