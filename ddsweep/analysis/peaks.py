"""Double-descent peaks: first minimum, peak and second descent of a test-error curve.

A curve is the seed-mean test error against one axis (width: model-wise; n_train:
sample-wise) with every other axis fixed, at the last (or a chosen) epoch, or its
"optimal early stopping" version (per cell, the minimum over epochs of the seed
mean). On each curve:

- the **peak** is the interior local maximum with the largest prominence (how far
  it stands above the higher of the two lowest points that separate it from
  anything taller on either side, as in topography), so a wiggle on the way down
  does not count as the peak; ties go to the higher, then the leftmost point;
- the **first minimum** is the lowest point before the peak (the bottom of the
  classical U), the **best after the peak** the lowest point after it (the second
  descent), which ends below or above the first minimum;
- the **interpolation threshold** at epsilon is where the seed-mean train error
  first reaches <= eps: the smallest such width (model-wise) or the largest such
  n (sample-wise, EMC = n at grid resolution); the peak is "at the threshold" when
  it lies within one grid step of it;
- **noise**: the peak is within noise when peak - first minimum < 2 x the pooled
  standard error of that difference, sqrt(s^2 (1/k_peak + 1/k_min)), where s^2 is
  the curve's pooled within-cell variance over seeds and k the seeds per cell
  (unknown with one seed per cell).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ddsweep.analysis.emc import EPSILON, emc_over_n, threshold_over_width
from ddsweep.analysis.frames import (Reduced, early_stopped, final_means, linked_axes, rows_of, selector,
                                     varying_axes)
from ddsweep.axes import KNOB_COLUMNS, KNOB_DEFAULTS as AXIS_DEFAULTS
from ddsweep.errors import UserError

NOISE_Z = 2.0  # a peak counts as real when it stands NOISE_Z pooled standard errors above the first minimum


def find_peak(y) -> tuple[int | None, float]:
    """Index of the most prominent interior local maximum of y, and its prominence (None, nan if none)."""
    y = np.asarray(y, dtype=float)
    best, best_key = None, None
    for i in range(1, len(y) - 1):
        if not (y[i] > y[i - 1] and y[i] >= y[i + 1]):
            continue
        left = y[:i]  # the lowest point between i and the nearest taller point (or the edge) on each side
        taller = np.flatnonzero(left > y[i])
        left_base = left[taller[-1] + 1:].min() if taller.size else left.min()
        right = y[i + 1:]
        taller = np.flatnonzero(right > y[i])
        right_base = right[:taller[0]].min() if taller.size else right.min()
        prominence = y[i] - max(left_base, right_base)
        key = (prominence, y[i], -i)
        if best_key is None or key > best_key:
            best, best_key = i, key
    return (best, float(best_key[0])) if best is not None else (None, math.nan)


def extremes(y) -> dict:
    """Indices of first minimum, peak and best point after the peak (None where undefined)."""
    y = np.asarray(y, dtype=float)
    peak, prominence = find_peak(y)
    if peak is None:
        return {"first_min": int(np.argmin(y)) if len(y) else None, "peak": None, "best_after": None,
                "prominence": math.nan}
    first = int(np.argmin(y[:peak]))
    after = peak + 1 + int(np.argmin(y[peak + 1:]))
    return {"first_min": first, "peak": peak, "best_after": after, "prominence": prominence}


def pooled_se(sem, seeds, i: int, j: int) -> float:
    """Standard error of y[i] - y[j] from the curve's pooled within-cell variance (nan with one seed)."""
    sem = np.asarray(sem, dtype=float)
    k = np.asarray(seeds, dtype=float)
    ok = (k >= 2) & np.isfinite(sem)
    if not ok.any() or k[i] < 1 or k[j] < 1:
        return math.nan
    var = sem[ok] ** 2 * k[ok]  # the cell's sample variance over seeds
    pooled = float(np.sum((k[ok] - 1) * var) / np.sum(k[ok] - 1))
    return math.sqrt(pooled * (1 / k[i] + 1 / k[j]))


def analyse_curve(x, y, sem, seeds, threshold: float, bound: str, noise_z: float = NOISE_Z) -> dict:
    """Everything `ddsweep summary` says about one curve (x sorted ascending)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    e = extremes(y)
    out = {"points": len(x), "first_min_at": math.nan, "first_min": math.nan, "peak_at": math.nan,
           "peak": math.nan, "best_after_at": math.nan, "best_after": math.nan, "prominence": e["prominence"],
           "second_descent": "", "threshold_at": threshold, "threshold_bound": bound,
           "peak_near_threshold": None, "gap": math.nan, "se_gap": math.nan, "within_noise": None,
           "seeds": int(np.min(seeds)) if len(x) else 0}
    if e["first_min"] is not None:
        out["first_min_at"], out["first_min"] = x[e["first_min"]], y[e["first_min"]]
    if e["peak"] is None:
        return out
    p, f, a = e["peak"], e["first_min"], e["best_after"]
    out.update(peak_at=x[p], peak=y[p], best_after_at=x[a], best_after=y[a],
               second_descent="below" if y[a] < y[f] else "above" if y[a] > y[f] else "equal")
    if np.isfinite(threshold) and not bound:
        t = int(np.flatnonzero(np.isclose(x, threshold))[0])
        out["peak_near_threshold"] = bool(abs(p - t) <= 1)
    out["gap"] = y[p] - y[f]
    se = pooled_se(sem, seeds, p, f)
    out["se_gap"] = se
    out["within_noise"] = None if not np.isfinite(se) else bool(out["gap"] < noise_z * se)
    return out


CURVES = {"width": "model-wise", "n_train": "sample-wise"}


def summarize(df: pd.DataFrame | Reduced, epsilon: float = EPSILON, epoch: int | None = None,
              noise_z: float = NOISE_Z, select_on: str = "test", metric: str = "test_error") -> pd.DataFrame:
    """One row per curve (model-wise over width, sample-wise over n_train) and measure.

    Measures: "final" (`metric`, default the test error, at the last or `epoch`-th epoch) and
    "early-stopped" (minimum over epochs <= epoch of the seed-mean `metric`). Any stored
    metric works, e.g. test_loss (the Transformer figures'); the interpolation threshold is
    always read from the train error.
    Axes with fewer than 3 values make no curve. `df`: all rows, or a Reduced with the
    rows at `epoch` and the early-stopped test error up to it. select_on="val": the
    early-stopping epoch is chosen on the validation split's error (measure "early-stopped
    on val"), and the test error is read there.
    """
    select = selector(select_on)
    es_measure = "early-stopped" if select is None else f"early-stopped on {select_on}"
    table = rows_of(df)
    if table.empty:
        raise UserError("no metric rows")
    if metric not in table.columns:
        raise UserError(f"--metric {metric}: no such metric column (metrics: {', '.join(_metric_columns(table))})")
    rows = []
    for axis, kind in CURVES.items():
        if axis not in table.columns or table[axis].nunique() < 3:
            continue
        linked = linked_axes(table, axis)  # a linked group (grid.zip) is one axis: its others move with it
        keys = [a for a in ("label_noise", "n_train", "width") if a in table.columns and a != axis and a not in linked]
        keys += [a for a in varying_axes(table) if a not in keys and a != axis and a not in linked]
        final = final_means(df, keys + [axis], list(dict.fromkeys([metric, "train_error"])), epoch)
        stopped = early_stopped(df, keys + [axis], metric, epoch, select).rename(
            columns={metric: "es_error", f"{metric}_sem": "es_sem", "seeds": "es_seeds"})
        both = final.merge(stopped[keys + [axis, "es_error", "es_sem", "es_seeds"]], on=keys + [axis], how="left")
        for key, g in both.groupby(keys, dropna=False, sort=True):
            g = g[g[metric].notna()].sort_values(axis)
            if len(g) < 3:
                continue
            ctx = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
            if axis == "width":
                thr, bound = threshold_over_width(g[axis], g["train_error"], epsilon)
            else:
                thr, bound = emc_over_n(g[axis], g["train_error"], epsilon)
                if not bound:  # the grid point on the fitted side of EMC = n
                    thr = float(g[axis][g["train_error"] <= epsilon].max())
            read = int(g["epoch"].max())
            for measure, cols in (("final", (metric, f"{metric}_sem", "seeds")),
                                  (es_measure, ("es_error", "es_sem", "es_seeds"))):
                y, sem, seeds = (g[c] for c in cols)
                res = analyse_curve(g[axis], y, sem, seeds, thr, bound, noise_z)
                rows.append({"curve": kind, "measure": measure, "metric": metric, **ctx, "axis": axis,
                             "epoch": read, "epsilon": epsilon, **res})
    if not rows:
        raise UserError("no curve to summarise: need width or n_train with at least 3 values")
    out = pd.DataFrame(rows)
    for col in ("peak_near_threshold", "within_noise"):  # True / False / None, as Python objects
        out[col] = pd.Series([_tri(v) for v in out[col]], index=out.index, dtype=object)
    return out


def _metric_columns(table: pd.DataFrame) -> list[str]:
    from ddsweep.axes import METRIC

    return [m.column for m in METRIC.values() if m.column in table.columns and m.name not in ("step",)]


def _metric_label(r: dict) -> str:
    from ddsweep.axes import label

    return label(r.get("metric") or "test_error")


def _tri(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else bool(v)


def _fmt(v, digits: int = 3) -> str:
    return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}"


def _at(axis: str, v) -> str:
    name = {"width": "h", "n_train": "n"}.get(axis, axis)
    return f"{name} = {v:g}" if np.isfinite(v) else ""


def describe(row) -> str:
    """A sentence (or three) for one row of `summarize`."""
    r = row if isinstance(row, dict) else row.to_dict()
    axis = r["axis"]
    fixed = [_fmt_level(k, r[k]) for k in ("label_noise", "n_train", "width", "lr", "batch_size", "optimizer",
                                            "depth", "momentum", "weight_decay", "dataset", "model", "loss")
             if k in r and k != axis and not _isnan(r[k])] + _knob_levels(r, axis)
    head = f"{r['curve']} {r['measure']} {_metric_label(r)} ({', '.join(fixed)}; epoch {r['epoch']})"
    if _isnan(r["peak"]):
        return (f"{head}: no peak; lowest {_fmt(r['first_min'])} at {_at(axis, r['first_min_at'])}; "
                + _threshold_text(r))
    text = (f"{head}: first minimum {_fmt(r['first_min'])} at {_at(axis, r['first_min_at'])}, "
            f"peak {_fmt(r['peak'])} at {_at(axis, r['peak_at'])}, best after the peak {_fmt(r['best_after'])} "
            f"at {_at(axis, r['best_after_at'])} ({r['second_descent']} the first minimum). "
            + _threshold_text(r))
    near = _tri(r["peak_near_threshold"])
    if near is True:
        text += "; the peak is within one grid step of it"
    elif near is False:
        text += "; the peak is NOT within one grid step of it"
    if _tri(r["within_noise"]) is None:
        text += ". Noise: unknown (one seed per cell)"
    else:
        text += (f". Peak - first minimum = {_fmt(r['gap'])} vs 2 x pooled s.e. {_fmt(2 * r['se_gap'])}: "
                 + ("WITHIN NOISE" if r["within_noise"] else "above noise"))
    return text + "."


def _threshold_text(r) -> str:
    axis, t, b, eps = r["axis"], r["threshold_at"], r["threshold_bound"], r["epsilon"]
    name = {"width": "h", "n_train": "n"}[axis]
    if _isnan(t):
        return "interpolation threshold unknown"
    if axis == "width":
        where = {"": f"{name} = {t:g}", "<": f"{name} <= {t:g} (the smallest width fits)",
                 ">": f"{name} > {t:g} (no width fits)"}[b]
        return f"interpolation threshold (train error <= {eps:g}) at {where}"
    where = {"": f"{name} = {t:g} (largest n fitted)", "<": f"EMC < {t:g} (no n fitted)",
             ">": f"EMC > {t:g} (every n fitted)"}[b]
    return f"interpolation threshold (EMC = n at train error {eps:g}) at {where}"


def _isnan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


KNOB_DEFAULTS = {k: AXIS_DEFAULTS[k] for k in KNOB_COLUMNS}  # the knobs a metric frame holds as columns


def _knob_levels(r: dict, axis: str) -> list[str]:
    """The training knobs (issue 7) of a curve that are not at their defaults, e.g. 'flood = 0.25'."""
    return [_fmt_level(k, r[k]) for k, d in KNOB_DEFAULTS.items()
            if k in r and k != axis and not _isnan(r[k]) and r[k] != d]


def _fmt_level(k, v) -> str:
    if k == "label_noise":
        return f"noise {v:.0%}"
    name = {"width": "h", "n_train": "n"}.get(k, k)
    return f"{name} = {v:g}" if isinstance(v, (int, float, np.integer, np.floating)) else f"{name} = {v}"


def describe_lines(row) -> list[str]:
    """One curve of `summarize` as a short block of lines (for the terminal)."""
    r = row if isinstance(row, dict) else row.to_dict()
    axis = r["axis"]
    fixed = [_fmt_level(k, r[k]) for k in ("label_noise", "n_train", "width", "lr", "batch_size", "optimizer",
                                            "depth", "momentum", "weight_decay", "dataset", "model", "loss")
             if k in r and k != axis and not _isnan(r[k])] + _knob_levels(r, axis)
    lines = [f"{r['curve']}, {r['measure']} {_metric_label(r)} ({', '.join(fixed)}; epoch {r['epoch']}):"]
    if _isnan(r["peak"]):
        lines.append(f"  no peak; lowest {_fmt(r['first_min'])} at {_at(axis, r['first_min_at'])}")
    else:
        lines += [f"  first minimum    {_fmt(r['first_min'])} at {_at(axis, r['first_min_at'])}",
                  f"  peak             {_fmt(r['peak'])} at {_at(axis, r['peak_at'])}",
                  f"  best after peak  {_fmt(r['best_after'])} at {_at(axis, r['best_after_at'])} "
                  f"({r['second_descent']} the first minimum)"]
    near = {True: ": the peak is within one grid step of it", False: ": the peak is NOT within one grid step of it",
            None: ""}[_tri(r["peak_near_threshold"])]
    lines.append(f"  {_threshold_text(r)}{near}")
    if not _isnan(r["peak"]):
        if _tri(r["within_noise"]) is None:
            lines.append("  noise            unknown (one seed per cell)")
        else:
            verdict = "WITHIN NOISE" if r["within_noise"] else "above noise"
            lines.append(f"  noise            {verdict}: peak - first minimum = {_fmt(r['gap'])}, "
                         f"2 x pooled s.e. = {_fmt(2 * r['se_gap'])}")
    return lines
