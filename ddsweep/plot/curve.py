"""Curves: test and train error (or any metric: `metric`) against an axis, seed mean with a 95% band,
one colour per noise level.

Against width or n_train the curves are read at the last (or a chosen) epoch, next
to the "optimal early stopping" curve (per cell, the minimum over epochs of the
seed-mean test error); against epoch they are whole runs (epoch 0 included, on a
symlog axis). With `noisy_test`, test errors are shown on the noisy test distribution
(p + e(1 - pC/(C-1))).

`curve_data` computes the lines (a CurveData, testable without drawing);
`curve_figure` draws them; `curve` reads a database (or takes a frame) and writes a
file when `out` is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ddsweep.analysis import at_epoch, early_stopped, free_axes, linked_axes, seed_mean
from ddsweep.analysis.frames import Reduced, apply_where, check_columns, classes_of, rows_of, selector, t975
from ddsweep.errors import UserError
from ddsweep.plot.style import (axes_key, axis_scale, caption_text, check_out, check_varies, finish, fmt_level, frame_or_db,
                                label, new_figure, one_axes, options, plain_log_ticks, set_scale, styled,
                                title_text, title_with, where_text)
from ddsweep.store import results

__all__ = ["curve", "curve_figure", "curve_data", "CurveData", "Line"]

MAX_LEGEND_LEVELS = 5
MAX_PANELS = 12
STYLES = {"test": ("-", "o"), "train": ("--", None), "early": (":", "v"), "threshold": ("-.", None)}


def curve(data="results.duckdb", sweep: str | None = None, x: str = "width", epoch: int | None = None,
          hue: str = "label_noise", out=None, where: dict | None = None, facet: str | None = None,
          noisy_test: bool = False, classes: int | None = None, early_stopping: bool = True,
          select_on: str = "test", metric: str = "test_error", ax=None, dpi: int | None = None, size=None,
          title=None, style: str | None = None):
    """Final-epoch (or `epoch`) test and train error (or `metric`, e.g. test_loss, with its train twin)
    against x; against epoch it plots whole runs. select_on="val": the early-stopped curve stops where
    the validation error is least. `data`: a database path or a metric frame (as `load_metrics`
    returns). Returns the matplotlib Figure; writes it to `out` only when given; `ax`: draw into this
    Axes (one panel). dpi, size (inches), title (text, or False for none), style (lab, paper, talk)."""
    from ddsweep.analysis.frames import check_metric

    opts = options(dpi, size, title, style)
    if out is not None:
        check_out(out)
    check_metric(metric)
    if frame_or_db(data):
        name, df, shown = "", data, None
    else:
        name, df = _read(data, sweep, where, x, epoch, hue, facet, early_stopping, selector(select_on), metric)
        shown, where = where, None  # (applied in the database; still said in the title)
    fig = curve_figure(df, name, x=x, epoch=epoch, hue=hue, facet=facet, noisy_test=noisy_test, classes=classes,
                       early_stopping=early_stopping, select_on=select_on, metric=metric, where=where, ax=ax,
                       opts=opts, where_shown=shown)
    return finish(fig, out, opts)


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


@dataclass
class Line:
    """One drawn line: kind (test, train, early, threshold), its hue level, x and y, and the 95% band
    (lo, hi; None where there is none). A threshold is a vertical line at x[0]."""

    kind: str
    level: object
    x: np.ndarray
    y: np.ndarray
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None


@dataclass
class CurveData:
    """What a curve figure draws: per panel (a value of `facet`, or None) its lines."""

    x: str
    metric: str
    hue: str | None
    facet: str | None
    levels: list
    panels: dict  # panel value -> list[Line]
    xscale: str
    labels: dict  # kind -> what the key calls it ("test", "train", "test, early-stopped", ...)
    ylabel: str
    ylim: tuple | None
    linked: list = field(default_factory=list)
    epoch: int | None = None
    seeds: int = 1  # the most seeds in one cell
    fixed: dict = field(default_factory=dict)  # axes with one value worth saying (label noise)
    notes: list = field(default_factory=list)  # what the lines show (the lab style's caption)
    shows: str = ""  # what the title must say whatever the style (test error on the noisy test distribution)


def curve_data(df: pd.DataFrame | Reduced, x: str = "width", epoch: int | None = None,
               hue: str | None = "label_noise", where: dict | None = None, facet: str | None = None,
               noisy_test: bool = False, classes: int | None = None, early_stopping: bool = True,
               threshold_eps: float | None = 0.1, select_on: str = "test", metric: str = "test_error") -> CurveData:
    """The lines of a curve figure, from a metric frame or a Reduced (see curve_figure)."""
    select = selector(select_on)
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
    if x != "epoch":
        check_varies(df, "x", x)
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
    final = (df if red is None else red.curves) if x == "epoch" else (at_epoch(df, epoch) if red is None else red.rows)
    if x == "epoch":
        check_varies(final, "x", "epoch")
    panels_at = sorted(df[facet].dropna().unique()) if facet else [None]
    if len(panels_at) > MAX_PANELS:
        raise UserError(f"{len(panels_at)} panels ({facet}): too many; fix it with --where {facet}=VALUE")
    fixed = {}
    if facet is not None and len(panels_at) == 1:
        fixed[facet], facet, panels_at = panels_at[0], None, [None]
    levels = sorted(final[hue].dropna().unique()) if hue else [None]
    if hue is not None and len(levels) == 1:  # one line per kind: its level goes into the title
        fixed[hue] = levels[0]
    if "label_noise" not in (x, hue, facet) and "label_noise" in df.columns and df["label_noise"].nunique() == 1:
        fixed.setdefault("label_noise", df["label_noise"].iloc[0])
    show_es = early_stopping and x != "epoch"
    solid = "test" if metric.startswith("test_") else label(metric)
    labels = {"test": solid, "train": "train", "early": f"{solid}, early-stopped" + ("" if select is None
                                                                                    else f" on {select_on}"),
              "threshold": f"threshold: train error <= {threshold_eps:g}" if threshold_eps else ""}

    panels, seeds = {}, 1
    for panel in panels_at:
        sub_f = final if facet is None else final[final[facet] == panel]
        every = df if red is None or not show_es else red.best  # (per cell: the early-stopped epoch)
        sub_all = every if facet is None else every[every[facet] == panel]
        lines = []
        for level in levels:
            f = sub_f if hue is None else sub_f[sub_f[hue] == level]
            if f.empty:
                continue
            if red is not None and x == "epoch":  # already the seed means of each cell and epoch
                m = f.sort_values(x)
            else:
                m = seed_mean(f, [x], [c for c in _columns(metric) if c in f.columns]).sort_values(x)
            seeds = max(seeds, int(m["seeds"].max()))
            p = _noise_of(f) if noisy_test else None
            parts = [("test", m[x], m[metric], m[f"{metric}_sem"], m["seeds"])]
            if twin is not None:
                parts.append(("train", m[x], m[twin], m[f"{twin}_sem"], m["seeds"]))
            if show_es:
                a = sub_all if hue is None else sub_all[sub_all[hue] == level]
                es = (early_stopped(a, [x], metric, epoch, select) if red is None else a).sort_values(x)
                parts.append(("early", es[x], es[metric], es[f"{metric}_sem"], es["seeds"]))
            if threshold_eps and x in ("width", "n_train") and "train_error" in m.columns:
                thr = _threshold(m, x, threshold_eps)
                if thr is not None:
                    lines.append(Line("threshold", level, np.array([thr]), np.array([np.nan])))
            for kind, xs, y, sem, k in parts:
                y = y.to_numpy(dtype=float)
                band = sem.to_numpy(dtype=float) * t975(k.to_numpy())
                if noisy_test and kind != "train":
                    slope = 1 - p * C / (C - 1)
                    y, band = p + y * slope, band * abs(slope)
                lo = hi = None
                ok = np.isfinite(band)
                if ok.any() and kind != "early":
                    lo, hi = np.where(ok, y - band, y), np.where(ok, y + band, y)
                    if fraction:  # errors live in [0, 1]: so do their bands
                        lo, hi = np.clip(lo, 0, 1), np.clip(hi, 0, 1)
                lines.append(Line(kind, level, xs.to_numpy(dtype=float), y, lo, hi))
        panels[panel] = lines
    drawn = [ln.y[np.isfinite(ln.y)] for lines in panels.values() for ln in lines if ln.kind != "threshold"]
    values = np.concatenate(drawn) if drawn else np.array([])
    ylim = None
    if values.size:  # the lines' range, not the (with few seeds, wide) bands'
        lo, hi = float(values.min()), float(values.max())
        pad = 0.08 * max(hi - lo, 0.02)
        ylim = (max(lo - pad, -0.02), min(hi + pad, 1.02)) if fraction else (lo - pad, hi + pad)
    ylabel = "error" if metric == "test_error" else label(metric).removeprefix("test ")
    notes = []
    if metric != "test_error":
        notes.append(f"{label(metric)}" + (f" (solid) and {label(twin)} (dashed)" if twin else ""))
    else:
        notes.append(f"test error on the NOISY test distribution: p + e(1 - pC/(C-1)), C = {C}" if noisy_test
                     else "test error on clean test labels; train error on the noisy labels trained on")
    if show_es:
        notes.append("early stopping chosen on the test set" if select is None
                     else f"early stopping chosen on the validation split ({select})")
    if seeds > 1:
        notes.append("bands: 95% CI over seeds")
    return CurveData(x, metric, hue, facet, levels, panels, axis_scale(x, final[x].unique()), labels, ylabel, ylim,
                     linked_axes(df, x), epoch, seeds, fixed, notes, "on the noisy test distribution" if noisy_test else "")


def curve_figure(df: pd.DataFrame | Reduced, name: str = "", x: str = "width", epoch: int | None = None,
                 hue: str | None = "label_noise", where: dict | None = None, facet: str | None = None,
                 noisy_test: bool = False, classes: int | None = None, early_stopping: bool = True,
                 threshold_eps: float | None = 0.1, select_on: str = "test", metric: str = "test_error",
                 ax=None, opts=None, where_shown: dict | None = None, **figure_options):
    """The figure behind `curve`, from a metric frame (as `load_metrics` returns), or a Reduced
    (ddsweep.store.results.reduce: the rows at the epoch, the early-stopped test error per
    cell and, against epoch, the seed-mean curves) that draws the same: a Figure.

    With threshold_eps, a vertical line marks the interpolation threshold (train error
    <= eps: the smallest such width, or EMC = n over n_train). select_on="val": the
    early-stopped curve stops at each cell's epoch of least validation error (the caption says so).
    `metric` replaces the test error (solid) and its train twin, where there is one (test_loss:
    train_loss), the train error (dashed). figure_options: dpi, size, title, style.
    """
    data = curve_data(df, x=x, epoch=epoch, hue=hue, where=where, facet=facet, noisy_test=noisy_test,
                      classes=classes, early_stopping=early_stopping, threshold_eps=threshold_eps,
                      select_on=select_on, metric=metric)
    return draw_curve(data, name, ax=ax, opts=opts or options(**figure_options), where=where_shown or where)


def draw_curve(d: CurveData, name: str = "", ax=None, opts=None, where=None):
    """Draw a CurveData: a Figure (or into `ax`, for one panel)."""
    opts = opts or options()
    with styled(opts, ax):
        return _draw(d, name, ax, opts, where)


def _draw(d: CurveData, name, ax, opts, where):
    import seaborn as sns
    from matplotlib.lines import Line2D

    panels = list(d.panels)
    many = len(d.levels) > MAX_LEGEND_LEVELS
    if many:
        from matplotlib import colormaps
        from matplotlib.colors import LogNorm, Normalize

        lv = np.asarray(d.levels, dtype=float)
        cnorm = LogNorm(lv.min(), lv.max()) if axis_scale(d.hue, lv) == "log" else Normalize(lv.min(), lv.max())
        cmap = colormaps["viridis"]
        colors = {v: cmap(cnorm(v)) for v in d.levels}
    else:
        colors = dict(zip(d.levels, sns.color_palette("colorblind", max(len(d.levels), 1))))
    if ax is not None:
        fig, grid = one_axes(ax, len(panels), f"one per {d.facet}")
    else:
        ncols = min(len(panels), 3)
        nrows = -(-len(panels) // ncols)
        size = (6.2, 4.3) if len(panels) == 1 else (4.6 * ncols + 1.6, 3.5 * nrows + 1.1)
        fig, grid = new_figure(opts, size, nrows, ncols, sharey=True)
    axes = grid.ravel()
    for a in axes[len(panels):]:
        a.set_axis_off()
    lw = None  # (the style's line width)
    top = max((ln.x.max() for lines in d.panels.values() for ln in lines if ln.x.size), default=None)
    for pax, panel in zip(axes, panels):
        for ln in d.panels[panel]:
            color = colors[ln.level]
            ls, mk = STYLES[ln.kind]
            if ln.kind == "threshold":
                pax.axvline(ln.x[0], color=color, ls=ls, lw=1, alpha=0.7)
                continue
            pax.plot(ln.x, ln.y, ls=ls, color=color, marker=mk if d.x != "epoch" else None, ms=3.5, lw=lw)
            if ln.lo is not None:
                pax.fill_between(ln.x, ln.lo, ln.hi, color=color, alpha=0.15, lw=0)
        set_scale(pax, "x", d.xscale, top=top)
        pax.set_xlabel(label(d.x) + (f" (with {', '.join(map(label, d.linked))})" if d.linked else ""))
        if d.facet:
            pax.set_title(fmt_level(d.facet, panel), fontsize="medium")
        pax.grid(alpha=0.3)
    for row in grid:
        row[0].set_ylabel(d.ylabel)
    if d.ylim:
        axes[0].set_ylim(*d.ylim)
    # The key: each kind of line once (grey when there are several colours), then each colour once.
    kinds = [k for k in ("test", "train", "early", "threshold")
             if any(ln.kind == k for lines in d.panels.values() for ln in lines)]
    one_color = len(d.levels) == 1
    handles = [Line2D([], [], color=colors[d.levels[0]] if one_color else "0.3", ls=STYLES[k][0],
                      marker=STYLES[k][1] if d.x != "epoch" else None, ms=3.5) for k in kinds]
    names = [d.labels[k] for k in kinds]
    if not many and not one_color:
        handles += [Line2D([], [], color=colors[v], lw=4) for v in d.levels]
        names += [fmt_level(d.hue, v) for v in d.levels]
    if many:
        from matplotlib.cm import ScalarMappable

        cb = fig.colorbar(ScalarMappable(norm=cnorm, cmap=cmap), ax=list(axes), label=label(d.hue))
        if isinstance(cnorm, LogNorm):
            plain_log_ticks(cb.ax.yaxis)
    when = "" if d.x == "epoch" else (" at the last epoch" if d.epoch is None else f" at epoch {d.epoch}")
    fixed = [fmt_level(a, v) for a, v in d.fixed.items()]
    where_note = where_text(where)
    main = f"{d.ylabel} vs {label(d.x)}{when}" + (f", {d.shows}" if d.shows else "")
    title_text(opts, title_with(main, *fixed, where_note and f"where {where_note}"),
               fig=fig, ax=ax)
    notes = ([f"sweep {name}"] if name else []) + d.notes
    if ax is not None:
        axes_key(ax, handles, names)
    else:
        caption_text(opts, fig, ["; ".join(notes)], handles, names,
                     ncols=len(kinds) if len(handles) > 4 and len(kinds) > 1 else None)
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
