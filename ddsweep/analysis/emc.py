"""Effective model complexity (EMC) and the interpolation threshold.

Deep Double Descent defines EMC_eps(T) as the largest number of samples n on which
training procedure T reaches (expected) train error <= eps on its noisy labels.

- With a sample axis (several n_train), EMC(width, epoch) is read off the seed-mean
  train error over n: the largest grid n with error <= eps, interpolated in log n
  towards the next grid n (whose error is above eps). Outside the grid it is a bound:
  "> max n" (every n is fitted) or "< min n" (none is).
- With a single n, EMC is only known relative to n: EMC >= n exactly where the run
  fits its training set to eps. The interpolation threshold is then, per epoch, the
  smallest width whose seed-mean train error <= eps; EMC = n is crossed between the
  previous grid width and it.

The critical regime is EMC within a factor F of n (n/F <= EMC <= nF).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ddsweep.analysis.frames import Reduced, epoch_curves, final_means, linked_axes, rows_of, varying_axes
from ddsweep.axes import METRIC, label
from ddsweep.errors import UserError
from ddsweep.suggest import not_evaluated

EPSILON = 0.1  # the paper's eps
FACTOR = 2.0   # default width of the critical regime: EMC within a factor 2 of n


def _finite_sorted(x, err) -> tuple[np.ndarray, np.ndarray]:
    """(x, err) as float arrays without NaN errors, in increasing x."""
    x, err = np.asarray(x, dtype=float), np.asarray(err, dtype=float)
    ok = np.isfinite(err)
    x, err = x[ok], err[ok]
    order = np.argsort(x)
    return x[order], err[order]


def emc_over_n(n, err, epsilon: float = EPSILON) -> tuple[float, str]:
    """EMC from train errors at sample sizes n: (value, bound) with bound '', '>' or '<'.

    '>' : every n fits (EMC > max n; value = max n); '<' : none does (EMC < min n;
    value = min n). Otherwise the largest fitted n, interpolated in log n towards the
    next grid point. NaN errors are ignored.
    """
    n, err = _finite_sorted(n, err)
    if n.size == 0:
        return math.nan, ""
    fits = err <= epsilon
    if not fits.any():
        return float(n[0]), "<"
    k = int(np.flatnonzero(fits)[-1])
    if k == len(n) - 1:
        return float(n[-1]), ">"
    e0, e1 = err[k], err[k + 1]
    t = (epsilon - e0) / (e1 - e0)  # e0 <= eps < e1, so 0 <= t < 1
    if t == 0:
        return float(n[k]), ""
    return float(np.exp(np.log(n[k]) + t * (np.log(n[k + 1]) - np.log(n[k])))), ""


def threshold_over_width(width, err, epsilon: float = EPSILON) -> tuple[float, str]:
    """Interpolation threshold: the smallest width whose train error <= eps.

    Returns (width, bound): bound '' when a smaller grid width does not fit,
    '<' when already the smallest width fits (threshold at or below it), '>' with
    value = the largest width when none fits.
    """
    w, err = _finite_sorted(width, err)
    if w.size == 0:
        return math.nan, ""
    fits = np.flatnonzero(err <= epsilon)
    if fits.size == 0:
        return float(w[-1]), ">"
    k = int(fits[0])
    return float(w[k]), "<" if k == 0 else ""


def critical_n(emc: float, bound: str, ns, factor: float = FACTOR) -> list[float]:
    """The grid sample sizes in the critical regime: n/F <= EMC <= nF (in-grid EMC only)."""
    if bound or not np.isfinite(emc):
        return []
    return [float(n) for n in sorted(set(ns)) if max(n / emc, emc / n) <= factor]


def fmt_n(v: float, bound: str = "") -> str:
    if not np.isfinite(v):
        return ""
    s = f"{v:,.0f}" if v >= 100 else f"{v:.3g}"
    return {"": s, ">": f"> {s}", "<": f"< {s}"}[bound]


@dataclass
class EmcTable:
    """`ddsweep emc`: the table and how to read it."""

    mode: str  # "sample": EMC over n_train; "threshold": smallest fitting width per epoch
    epsilon: float
    factor: float
    table: pd.DataFrame
    folded: int = 0  # epochs folded into the previous row (same threshold)
    notes: list[str] = field(default_factory=list)
    metric: str = "train_error"  # what counts as fitted: seed-mean metric <= epsilon

    @property
    def title(self) -> str:
        what = label(self.metric)
        if self.mode == "sample":
            return (f"EMC (largest n with seed-mean {what} <= {self.epsilon:g}, interpolated in log n); "
                    f"critical regime: n within a factor {self.factor:g} of EMC")
        return (f"interpolation threshold: smallest width with seed-mean {what} <= {self.epsilon:g} "
                "(EMC = n is crossed between the previous grid width and it)")


def _context(df: pd.DataFrame | Reduced, drop: str) -> list[str]:
    """Columns that name a curve: label noise and n (always), plus every other varying axis."""
    df = rows_of(df)
    linked = linked_axes(df, drop)  # a linked group (grid.zip) is one axis: its others move with `drop`
    keys = [a for a in ("label_noise", "n_train", "width") if a in df.columns and a != drop and a not in linked]
    keys += [a for a in varying_axes(df) if a not in keys and a != drop and a not in linked]
    return keys


def _means(df: pd.DataFrame, keys: list[str], epochs, all_epochs: bool, metric: str) -> pd.DataFrame:
    if all_epochs:
        return epoch_curves(df, keys, [metric])
    if epochs:
        every = df.curves if isinstance(df, Reduced) else df
        missing = sorted(set(int(e) for e in epochs) - set(every["epoch"].unique()))
        if missing:
            raise UserError(not_evaluated(missing[0], every["epoch"].unique()))
        if isinstance(df, Reduced):
            m = epoch_curves(df, keys, [metric])
            return m[m["epoch"].isin([int(e) for e in epochs])]
        return epoch_curves(df[df["epoch"].isin([int(e) for e in epochs])], keys, [metric])
    return final_means(df, keys, [metric])


def emc_table(df: pd.DataFrame | Reduced, epsilon: float = EPSILON, factor: float = FACTOR, epochs=None,
              all_epochs: bool = False, metric: str = "train_error") -> EmcTable:
    """EMC per (width, epoch) with a sample axis, else the interpolation threshold per epoch.

    Default epochs: the last one with a sample axis; every epoch at which the
    threshold changes (and the last) without one. `df`: all rows, or a Reduced with each
    job's last row and (except for a sample axis at the last epoch) the train-error curves.
    `metric`: what counts as fitted (seed mean <= epsilon), default the train error; any stored
    metric works, e.g. train_loss with an epsilon in nats.
    """
    fraction = METRIC[metric].fraction if metric in METRIC else True
    if not 0 <= epsilon < 1 and fraction or epsilon < 0:
        raise UserError(f"--epsilon {epsilon}: must be in [0, 1)" if fraction else f"--epsilon {epsilon}: must be >= 0")
    if factor < 1:
        raise UserError(f"--factor {factor}: must be at least 1")
    rows = rows_of(df)
    if rows.empty:
        raise UserError("no metric rows")
    if metric not in rows.columns or rows[metric].isna().all():
        raise UserError(f"no {label(metric)} in the metric rows (every value is empty): EMC and thresholds need it")
    if "n_train" in rows.columns and rows["n_train"].nunique() > 1:
        return _sample_mode(df, epsilon, factor, epochs, all_epochs, metric)
    if "width" not in rows.columns or rows["width"].nunique() < 2:
        raise UserError("emc needs a sample axis (several n_train) or a width axis (several widths)")
    return _threshold_mode(df, epsilon, factor, epochs, all_epochs, metric)


def _sample_mode(df, epsilon, factor, epochs, all_epochs, metric) -> EmcTable:
    keys = _context(df, drop="n_train")
    m = _means(df, keys + ["n_train"], epochs, all_epochs, metric)
    ns = sorted(m["n_train"].unique())
    rows = []
    for key, g in m.groupby(keys + ["epoch"], dropna=False, sort=True):
        value, bound = emc_over_n(g["n_train"], g[metric], epsilon)
        crit = critical_n(value, bound, ns, factor)
        rows.append({**dict(zip(keys + ["epoch"], key)), "emc": value, "bound": bound,
                     "EMC": fmt_n(value, bound), "critical n": ", ".join(fmt_n(n) for n in crit),
                     "seeds": int(g["seeds"].min())})
    table = pd.DataFrame(rows)
    notes = [f"sample axis n = {', '.join(fmt_n(n) for n in ns)}"]
    return EmcTable("sample", epsilon, factor, table, 0, notes, metric)


def _threshold_mode(df, epsilon, factor, epochs, all_epochs, metric) -> EmcTable:
    keys = _context(df, drop="width")
    fold = not epochs and not all_epochs
    m = _means(df, keys + ["width"], epochs, all_epochs or fold, metric)
    rows = []
    for key, g in m.groupby(keys + ["epoch"], dropna=False, sort=True):
        g = g[g[metric].notna()].sort_values("width")
        if g.empty:  # (no value of the metric at this epoch)
            continue
        value, bound = threshold_over_width(g["width"], g[metric], epsilon)
        at = g[np.isclose(g["width"].to_numpy(dtype=float), value)] if np.isfinite(value) else g.iloc[:0]
        err = float(at[metric].iloc[0]) if len(at) and bound != ">" else math.nan
        rows.append({**dict(zip(keys + ["epoch"], key)), "threshold": value, "bound": bound,
                     "threshold width": _fmt_width(value, bound), metric: err,
                     "crossing": _crossing(value, bound, g["width"].to_list()), "seeds": int(g["seeds"].min())})
    table = pd.DataFrame(rows)
    folded = 0
    if fold and not table.empty:
        parts = []
        for _, g in table.groupby(keys, dropna=False, sort=False):
            g = g.sort_values("epoch").reset_index(drop=True)
            changed = g["threshold"].ne(g["threshold"].shift()) | g["bound"].ne(g["bound"].shift())
            run = changed.cumsum()
            kept = g[changed].copy()
            kept["last_epoch"] = g.groupby(run)["epoch"].max().to_numpy()
            folded += len(g) - len(kept)
            parts.append(kept)
        table = pd.concat(parts, ignore_index=True)
        cols = list(table.columns)
        cols.insert(cols.index("epoch") + 1, cols.pop(cols.index("last_epoch")))
        table = table[cols]
    rows = rows_of(df)
    notes = [f"one sample size (n = {', '.join(fmt_n(n) for n in sorted(rows['n_train'].unique()))}): "
             f"EMC >= n exactly where the {label(metric)} is <= eps, so only the crossing is known; "
             "a sample axis (several n_train) gives EMC itself"] if "n_train" in rows.columns else []
    return EmcTable("threshold", epsilon, factor, table, folded, notes, metric)


def _fmt_width(value: float, bound: str) -> str:
    if not np.isfinite(value):
        return ""
    return {"": f"{value:g}", "<": f"<= {value:g}", ">": f"> {value:g}"}[bound]


def _crossing(value: float, bound: str, widths) -> str:
    if not np.isfinite(value):
        return ""
    if bound == ">":
        return f"> {value:g}"
    if bound == "<":
        return f"<= {value:g}"
    i = [float(w) for w in widths].index(value)
    return f"{widths[i - 1]:g}-{value:g}"
