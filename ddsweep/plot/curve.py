"""Curves: test and train error (or any metric: `metric`) against an axis, seed mean with a 95% band,
one colour per noise level.

Against width or n_train the curves are read at the last (or a chosen) epoch, next
to the "optimal early stopping" curve (per cell, the minimum over epochs of the
seed-mean test error); against epoch they are whole runs. With `noisy_test`, test
errors are shown on the noisy test distribution (p + e(1 - pC/(C-1))).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ddsweep.analysis import at_epoch, early_stopped, free_axes, linked_axes, seed_mean
from ddsweep.analysis.frames import Reduced, apply_where, check_columns, classes_of, rows_of, selector, t975
from ddsweep.errors import UserError
from ddsweep.plot.style import check_out, fmt_level, is_log_axis, label, plain_log_ticks, save, setup
from ddsweep.store import results

__all__ = ["curve", "curve_figure"]

MAX_LEGEND_LEVELS = 5
MAX_PANELS = 12


def curve(db="results.duckdb", sweep: str | None = None, x: str = "width", epoch: int | None = None,
          hue: str = "label_noise", out="curve.png", where: dict | None = None, facet: str | None = None,
          noisy_test: bool = False, classes: int | None = None, early_stopping: bool = True,
          select_on: str = "test", metric: str = "test_error") -> Path:
    """Final-epoch (or `epoch`) test and train error (or `metric`, e.g. test_loss, with its train twin)
    against x; against epoch it plots whole runs. select_on="val": the early-stopped curve stops where
    the validation error is least."""
    from ddsweep.analysis.frames import check_metric

    out = check_out(out)
    check_metric(metric)
    name, df = _read(db, sweep, where, x, epoch, hue, facet, early_stopping, selector(select_on), metric)
    fig = curve_figure(df, name, x=x, epoch=epoch, hue=hue, facet=facet, noisy_test=noisy_test,
                       classes=classes, early_stopping=early_stopping, select_on=select_on, metric=metric)
    return save(fig, out)


def _read(db, sweep, where, x, epoch, hue, facet, early_stopping, select=None, metric="test_error"):
    """What the figure draws, reduced in DuckDB where the axes allow (cell axes and epoch), else the rows."""
    metrics = _columns(metric)
    from ddsweep.axes import CELL_AXES

    if all(c is None or c in CELL_AXES or c == "epoch" for c in (x, hue, facet)):
        red = results.reduce(db, sweep, where, epoch=None if x == "epoch" else epoch, metrics=metrics,
                             curves=x == "epoch", best=metric if early_stopping and x != "epoch" else None,
                             best_until=epoch, best_select=select if early_stopping and x != "epoch" else None)
        return red["sweep"], Reduced(red["rows"], red["curves"], red["best"], best_metric=metric, best_until=epoch,
                                     best_select=select)
    return results.sweep_frame(db, sweep, where, metrics=(*metrics, x, hue, facet, select))


def curve_figure(df: pd.DataFrame | Reduced, name: str = "", x: str = "width", epoch: int | None = None,
                 hue: str | None = "label_noise", where: dict | None = None, facet: str | None = None,
                 noisy_test: bool = False, classes: int | None = None, early_stopping: bool = True,
                 threshold_eps: float | None = 0.1, select_on: str = "test", metric: str = "test_error"):
    """The figure behind `curve`, from a metric frame (as `load_metrics` returns), or a Reduced
    (ddsweep.store.results.reduce: the rows at the epoch, the early-stopped test error per
    cell and, against epoch, the seed-mean curves) that draws the same.

    With threshold_eps, a vertical line marks the interpolation threshold (train error
    <= eps: the smallest such width, or EMC = n over n_train). select_on="val": the
    early-stopped curve stops at each cell's epoch of least validation error (the title says so).
    `metric` replaces the test error (solid) and its train twin, where there is one (test_loss:
    train_loss), the train error (dashed).
    """
    select = selector(select_on)
    plt = setup()
    import seaborn as sns

    red = df if isinstance(df, Reduced) else None  # reduced in the database: rows at the epoch, means per cell
    df = rows_of(df)
    check_columns(df, x=x, hue=hue, facet=facet, metric=metric)
    if noisy_test and metric != "test_error":
        raise UserError(f"--noisy-test transforms the test error, not {metric}")
    twin = _train_twin(metric)
    if twin is not None and twin not in df.columns:
        twin = None
    from ddsweep.axes import METRIC

    fraction = METRIC[metric].fraction if metric in METRIC else False
    if red is not None and where:
        raise ValueError("a Reduced is filtered when it is made (ddsweep.store.results.reduce(where=...))")
    df = apply_where(df, where)
    if df[x].dtype.kind not in "iuf":
        raise UserError(f"--x {x}: not numeric")
    C = classes_of(df, classes) if noisy_test else None
    hue = None if hue == x else hue
    rest = free_axes(df, (x, hue, facet))  # (axes linked with x, e.g. lr with batch_size, move with it)
    if rest and x == "epoch" and (hue is None or df[hue].nunique() <= 1):
        hue = "width" if "width" in rest else rest[0]  # runs over epochs: one line per width
        rest.remove(hue)
    if rest and facet is None and len(rest) == 1:
        facet = rest.pop()
    if rest:
        raise UserError(f"{', '.join(rest)} also varies: choose panels with --facet AXIS or fix it with "
                        f"--where {rest[0]}=VALUE")
    if x == "epoch":
        final = (df if red is None else red.curves)
        final = final[final["epoch"] > 0]
    else:
        final = at_epoch(df, epoch) if red is None else red.rows
    panels = sorted(df[facet].dropna().unique()) if facet else [None]
    if len(panels) > MAX_PANELS:
        raise UserError(f"{len(panels)} panels ({facet}): too many; fix it with --where {facet}=VALUE")
    levels = sorted(final[hue].dropna().unique()) if hue else [None]
    many = len(levels) > MAX_LEGEND_LEVELS
    if many:
        from matplotlib.colors import LogNorm, Normalize

        lv = np.asarray(levels, dtype=float)
        cnorm = LogNorm(lv.min(), lv.max()) if is_log_axis(hue, lv) else Normalize(lv.min(), lv.max())
        cmap = plt.get_cmap("viridis")
        colors = [cmap(cnorm(v)) for v in lv]
    else:
        colors = sns.color_palette("colorblind", max(len(levels), 1))
    show_es = early_stopping and x != "epoch"
    solid = "test" if metric.startswith("test_") else label(metric)
    es_label = f"{solid}, early-stopped" + ("" if select is None else f" on {select_on}")
    linked = linked_axes(df, x)

    drawn = []  # the lines' values: the y range follows them, not the (with few seeds, wide) bands
    ncols = min(len(panels), 3)
    nrows = -(-len(panels) // ncols)
    size = (6.2, 4.1) if len(panels) == 1 else (4.6 * ncols + 1.6, 3.5 * nrows + 0.9)
    fig, grid = plt.subplots(nrows, ncols, figsize=size, squeeze=False, sharey=True, constrained_layout=True)
    axes = grid.ravel()
    for ax in axes[len(panels):]:
        ax.set_axis_off()
    for ax, panel in zip(axes, panels):
        sub_f = final if facet is None else final[final[facet] == panel]
        every = df if red is None or not show_es else red.best  # (per cell: the early-stopped epoch)
        sub_all = every if facet is None else every[every[facet] == panel]
        for color, level in zip(colors, levels):
            f = sub_f if hue is None else sub_f[sub_f[hue] == level]
            if f.empty:
                continue
            if red is not None and x == "epoch":  # already the seed means of each cell and epoch
                m = f.sort_values(x)
            else:
                m = seed_mean(f, [x], [c for c in _columns(metric) if c in f.columns]).sort_values(x)
            p = _noise_of(f) if noisy_test else None
            tag = "" if hue is None or many else f" ({fmt_level(hue, level)})"
            lines = [(solid, m[metric], m[f"{metric}_sem"], m["seeds"], "-", "o", True)]
            if twin is not None:
                lines.append(("train", m[twin], m[f"{twin}_sem"], m["seeds"], "--", None, False))
            if show_es:
                a = sub_all if hue is None else sub_all[sub_all[hue] == level]
                es = (early_stopped(a, [x], metric, epoch, select) if red is None else a).sort_values(x)
                lines.append((es_label, es[metric], es[f"{metric}_sem"], es["seeds"], ":", "v",
                              True, es[x]))
            if threshold_eps and x in ("width", "n_train") and "train_error" in m.columns:
                thr = _threshold(m, x, threshold_eps)
                if thr is not None:
                    ax.axvline(thr, color=color, ls="-.", lw=1, alpha=0.7,
                               label=None if many else f"threshold: train error <= {threshold_eps:g}{tag}")
            for item in lines:
                what, y, sem, seeds, ls, mk, is_test = item[:7]
                xs = item[7] if len(item) > 7 else m[x]
                y = y.to_numpy(dtype=float)
                band = sem.to_numpy(dtype=float) * t975(seeds.to_numpy())
                if noisy_test and is_test:
                    slope = 1 - p * C / (C - 1)
                    y, band = p + y * slope, band * abs(slope)
                xs = xs.to_numpy(dtype=float)
                ax.plot(xs, y, ls=ls, color=color, marker=mk if x != "epoch" else None, ms=3.5, lw=1.4,
                        label=None if many else f"{what}{tag}")
                drawn.append(y[np.isfinite(y)])
                ok = np.isfinite(band)
                if ok.any() and what != es_label:  # errors live in [0, 1]: so do their bands
                    lo, hi = np.where(ok, y - band, y), np.where(ok, y + band, y)
                    if fraction:
                        lo, hi = np.clip(lo, 0, 1), np.clip(hi, 0, 1)
                    ax.fill_between(xs, lo, hi, color=color, alpha=0.15, lw=0)
        if is_log_axis(x, final[x].unique()):
            ax.set_xscale("log")
            plain_log_ticks(ax.xaxis)
        ax.set_xlabel(label(x) + (f" (with {', '.join(map(label, linked))})" if linked else ""))
        if facet:
            ax.set_title(fmt_level(facet, panel), fontsize=10)
        ax.grid(alpha=0.3)
    if many:
        from matplotlib.lines import Line2D

        styles = [(solid, "-")] + ([("train", "--")] if twin else []) + ([(es_label, ":")] if show_es else [])
        if threshold_eps and x in ("width", "n_train"):
            styles.append((f"threshold: train error <= {threshold_eps:g}", "-."))
        handles, labels = [Line2D([], [], color="0.2", ls=s) for _, s in styles], [w for w, _ in styles]
    else:
        seen = {}
        for ax in axes[:len(panels)]:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                seen.setdefault(lab, h)
        handles, labels = list(seen.values()), list(seen)
    if handles and len(panels) == 1:
        axes[0].legend(handles, labels, fontsize=7.5 if not many else 8)
    elif handles:  # one legend for all panels, beside them
        fig.legend(handles, labels, loc="outside right upper", fontsize=8)
    if many:
        from matplotlib.cm import ScalarMappable

        cb = fig.colorbar(ScalarMappable(norm=cnorm, cmap=cmap), ax=list(axes), label=label(hue))
        if isinstance(cnorm, LogNorm):
            plain_log_ticks(cb.ax.yaxis)
    for row in grid:
        row[0].set_ylabel("error" if metric == "test_error" else label(metric).removeprefix("test "))
    values = np.concatenate(drawn) if drawn else np.array([])
    if values.size:
        lo, hi = float(values.min()), float(values.max())
        pad = 0.08 * max(hi - lo, 0.02)
        axes[0].set_ylim(max(lo - pad, -0.02), min(hi + pad, 1.02)) if fraction else axes[0].set_ylim(lo - pad, hi + pad)
    when = "" if x == "epoch" else (" at the last epoch" if epoch is None else f" at epoch {epoch}")
    if metric != "test_error":
        what = f"{label(metric)}" + (f" (solid) and {label(twin)} (dashed)" if twin else "")
        fig.suptitle(f"{name + ': ' if name else ''}{label(metric).removeprefix('test ')} vs {label(x)}{when}\n"
                     f"{what}; bands: 95% CI over seeds", fontsize=9.5)
        return fig
    if noisy_test:
        shows = f"test error on the NOISY test distribution: p + e(1 - pC/(C-1)), C = {C}"
    else:
        shows = "test error on clean test labels"
    if show_es:
        shows += ("; early stopping chosen on the test set" if select is None
                  else f"; early stopping chosen on the validation split ({select})")
    fig.suptitle(f"{name + ': ' if name else ''}error vs {label(x)}{when}\n{shows}\n"
                 "train error on the noisy labels trained on; bands: 95% CI over seeds", fontsize=9.5)
    return fig


def _train_twin(metric: str) -> str | None:
    """The train-set twin of a test metric (test_loss: train_loss), drawn dashed beside it."""
    from ddsweep.axes import METRIC

    twin = "train_" + metric.removeprefix("test_") if metric.startswith("test_") else None
    return twin if twin in METRIC else None


def _columns(metric: str) -> tuple[str, ...]:
    """The metric columns a curve of `metric` reads: it, its train twin, the train error (the threshold)."""
    return tuple(dict.fromkeys(c for c in (metric, _train_twin(metric), "train_error") if c))


def _threshold(m: pd.DataFrame, x: str, eps: float):
    from ddsweep.analysis.emc import emc_over_n, threshold_over_width

    fn = threshold_over_width if x == "width" else emc_over_n
    value, bound = fn(m[x], m["train_error"], eps)
    return value if not bound and np.isfinite(value) else None


def _noise_of(f: pd.DataFrame) -> float:
    p = f["label_noise"].unique()
    if len(p) != 1:
        raise UserError("--noisy-test needs one label-noise level per line (use --hue label_noise or --facet label_noise)")
    return float(p[0])
