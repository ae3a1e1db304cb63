"""Layer 1 of refinement, pure (no database, no Optuna): locate the peak or threshold, propose values."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from ddsweep.errors import UserError

TARGETS = ("peak", "threshold")
EPSILON = 0.1
FLOAT_DIGITS = 3  # resolution of proposals on a float axis: significant digits


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
            est.note = (f"no {axis.name} up to {fmt_value(xs[-1])} reaches train error <= {epsilon:g}: "
                        "the crossing lies beyond the range; extend the grid")
            return est
        k = int(fits[0])
        est.at, est.value = xs[k], float(ys[k])
        if k == 0:
            est.note = (f"already the smallest {axis.name} ({fmt_value(xs[0])}) reaches train error <= {epsilon:g}: "
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


def fmt_value(v) -> str:
    return f"{v:g}" if isinstance(v, (int, float, np.integer, np.floating)) else str(v)
