"""Layer 2 of refinement: an Optuna study (journal file beside the database) kept in line with the database."""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from ddsweep.refinement.propose import EPSILON, Axis, fmt_value, propose


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


def study_name(sweep: str, axis: str, target: str, early_stopped: bool = False, where: dict | None = None,
               metric: str = "test_error") -> str:
    parts = [sweep, axis, target] + (["early-stopped"] if early_stopped and target == "peak" else [])
    parts += [metric] if metric != "test_error" and target == "peak" else []  # (test error: the names as before)
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
            return f"two trials for {axis.name} = {fmt_value(v)}"
        seen.add(v)
        if t.distributions.get(axis.name) != dist:
            return f"the range of {axis.name} changed"
        cell = cells.get(v)
        if cell is None:
            return f"{axis.name} = {fmt_value(v)} is not in the database"
        if t.state == TrialState.COMPLETE:
            if cell.status != "done" or not math.isclose(t.value, cell.objective, rel_tol=1e-9, abs_tol=1e-12):
                return f"the result at {axis.name} = {fmt_value(v)} changed"
        elif t.state == TrialState.FAIL and cell.status != "failed":
            return f"{axis.name} = {fmt_value(v)} is no longer failed"
        elif t.state == TrialState.RUNNING and cell.status not in ("pending", "done", "failed"):
            return f"{axis.name} = {fmt_value(v)}: unknown state"
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
