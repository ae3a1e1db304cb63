"""Heatmaps: a metric over two axes (width x epoch, width x n_train, n_train x epoch, ...).

Seed means per cell; one panel per label-noise level (or per value of any `facet`
axis, and per value of a `row` axis); log axes where the values are geometric
(epochs always); linear or log colour scale; train-error contours at chosen levels
and, where n_train is an axis, the EMC = n line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ddsweep.analysis import at_epoch, free_axes, seed_mean
from ddsweep.analysis.emc import emc_over_n
from ddsweep.analysis.frames import apply_where, check_columns
from ddsweep.errors import UserError
from ddsweep.plot.style import (LABELS, bin_centers, check_out, edges, fmt_level, is_log_axis, label,
                                plain_log_ticks, save, setup)
from ddsweep.store import results

__all__ = ["heatmap", "heatmap_figure", "LABELS"]

CONTOUR_STYLES = ("-", "--", ":", "-.")
MAX_PANELS = 30


def heatmap(db="results.duckdb", sweep: str | None = None, x: str = "width", y: str = "epoch",
            metric: str = "test_error", contour=0.1, facet: str | None = "label_noise",
            epoch: int | None = None, log_color: bool = False, out="heatmap.png", where: dict | None = None,
            row: str | None = None, emc_line: bool = True) -> Path:
    """Draw `metric` over x and y (mean over seeds) with train-error contours at `contour` (one or several levels)."""
    out = check_out(out)
    name, df = _read(db, sweep, where, x, y, metric, facet, row, epoch)
    fig = heatmap_figure(df, name, x=x, y=y, metric=metric, contour=contour, facet=facet, epoch=epoch,
                         log_color=log_color, row=row, emc_line=emc_line)
    return save(fig, out)


def _read(db, sweep, where, x, y, metric, facet, row, epoch):
    """What the map draws, reduced in DuckDB where its axes are cell axes (and epoch): each
    job's row at the epoch read, or against epoch the seed means per cell and epoch (the map
    draws seed means; a mean of one cell's mean is that mean). Else the rows themselves.
    """
    from ddsweep.axes import CELL_AXES

    metrics = (metric, "train_error")
    cells = all(c is None or c in CELL_AXES or c == "epoch" for c in (x, y, facet, row))
    if cells and metric in results.METRIC_NAMES:
        over_epochs = "epoch" in (x, y)
        red = results.reduce(db, sweep, where, epoch=None if over_epochs else epoch, metrics=metrics,
                             curves=over_epochs)
        return red["sweep"], red["curves"] if over_epochs else red["rows"]
    return results.sweep_frame(db, sweep, where, metrics=(*metrics, x, y, facet, row))


def _levels(contour) -> list[float]:
    if contour is None or contour is False:
        return []
    levels = [float(c) for c in (contour if isinstance(contour, (list, tuple)) else [contour])]
    return [c for c in levels if c > 0]


def heatmap_figure(df: pd.DataFrame, name: str = "", x: str = "width", y: str = "epoch",
                   metric: str = "test_error", contour=0.1, facet: str | None = "label_noise",
                   epoch: int | None = None, log_color: bool = False, where: dict | None = None,
                   row: str | None = None, emc_line: bool = True, max_cells: int = 300):
    """The figure behind `heatmap`, from a metric frame (as `load_metrics` returns)."""
    plt = setup()
    if x == y:
        raise UserError(f"--x and --y are both {x}")
    check_columns(df, x=x, y=y, metric=metric, facet=facet, row=row)
    df = apply_where(df, where)
    for opt, col in (("x", x), ("y", y), ("metric", metric)):
        if df[col].dtype.kind not in "iuf":
            raise UserError(f"--{opt} {col}: not numeric")
    if "epoch" not in (x, y):
        df = at_epoch(df, epoch)
    if "epoch" in (x, y):
        df = df[df["epoch"] > 0]  # epochs are drawn on a log axis, where epoch 0 has no place
    facet = None if facet in (x, y) else facet
    row = None if row in (x, y, facet) else row
    taken = {x, y, facet, row}
    rest = free_axes(df, taken)
    if rest and row is None and len(rest) == 1:
        row = rest.pop()
    if rest:
        vals = ", ".join(f"{a} ({df[a].nunique()} values)" for a in rest)
        raise UserError(f"{vals} also varies: draw it with --facet/--row AXIS or fix it with --where "
                        f"{rest[0]}={_first(df[rest[0]])}")
    cols = sorted(df[facet].dropna().unique()) if facet else [None]
    rows = sorted(df[row].dropna().unique()) if row else [None]
    if len(cols) * len(rows) > MAX_PANELS:
        raise UserError(f"{len(cols) * len(rows)} panels: too many; fix an axis with --where")
    levels = _levels(contour)
    xlog = is_log_axis(x, df[x].unique())
    ylog = is_log_axis(y, df[y].unique())
    xbin = bin_centers(df[x].unique(), xlog, max_cells)
    ybin = bin_centers(df[y].unique(), ylog, max_cells)
    binned = [a for a, b in ((x, xbin), (y, ybin)) if any(k != v for k, v in b.items())]

    metrics = list(dict.fromkeys([metric, "train_error"]))
    panels = {}
    for r in rows:
        for c in cols:
            sub = df
            if row:
                sub = sub[sub[row] == r]
            if facet:
                sub = sub[sub[facet] == c]
            if sub.empty:
                continue
            m = seed_mean(sub, [x, y], metrics)
            if binned:
                m = m.assign(**{x: m[x].map(xbin), y: m[y].map(ybin)})
                m = m.groupby([x, y], as_index=False)[metrics + ["seeds"]].mean()
            panels[(r, c)] = m
    if not panels:
        raise UserError("no data to draw")
    values = np.concatenate([m[metric].to_numpy(dtype=float) for m in panels.values()])
    norm = _norm(values, log_color)

    if len(cols) == 1 and len(rows) > 1:  # a single column of panels wraps into rows of up to 4
        ncols = min(len(rows), 4)
        nrows = -(-len(rows) // ncols)
        places = [((r, cols[0]), k // ncols, k % ncols) for k, r in enumerate(rows)]
    else:
        nrows, ncols = len(rows), len(cols)
        places = [((r, c), i, j) for i, r in enumerate(rows) for j, c in enumerate(cols)]
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols + 1.3, 3.5 * nrows + 0.6),
                             squeeze=False, sharex=True, sharey=True, constrained_layout=True)
    for ax in axes.ravel()[len(places):]:
        ax.set_axis_off()
    all_x = np.array(sorted(set(xbin.values())))  # shared axes: limits from every panel's cells
    all_y = np.array(sorted(set(ybin.values())))
    mesh = None
    handles = {}
    for (r, c), i, j in places:
        ax = axes[i][j]
        m = panels.get((r, c))
        title = " | ".join(fmt_level(a, v) for a, v in ((row, r), (facet, c)) if a)
        ax.set_title(title, fontsize=10)
        if m is None:
            ax.set_axis_off()
            continue
        z = m.pivot(index=y, columns=x, values=metric).sort_index().sort_index(axis=1)
        xc, yc = z.columns.to_numpy(dtype=float), z.index.to_numpy(dtype=float)
        mesh = ax.pcolormesh(edges(xc, xlog), edges(yc, ylog), np.ma.masked_invalid(z.to_numpy(dtype=float)),
                             cmap="viridis", norm=norm, shading="flat", rasterized=True)
        if levels and len(xc) > 1 and len(yc) > 1:
            tr = m.pivot(index=y, columns=x, values="train_error").reindex(index=z.index, columns=z.columns)
            trv = np.ma.masked_invalid(tr.to_numpy(dtype=float))
            for k, level in enumerate(levels):
                style = CONTOUR_STYLES[k % len(CONTOUR_STYLES)]
                cs = ax.contour(xc, yc, trv, levels=[level], colors="white", linewidths=1.5,
                                linestyles=style)
                if cs.allsegs and any(len(s) for s in cs.allsegs[0]):
                    handles.setdefault(f"train error = {level:g}", ("white", style, None))
        if emc_line and "n_train" in (x, y):
            other = y if x == "n_train" else x
            eps = levels[0] if levels else 0.1
            pts = []
            for v, g in m.groupby(other):
                value, bound = emc_over_n(g["n_train"], g["train_error"], eps)
                if not bound and np.isfinite(value):
                    pts.append((v, value))
            if pts:
                o, n = np.array(pts).T
                px, py = (n, o) if x == "n_train" else (o, n)
                ax.plot(px, py, color="#ff5a36", ls="--", lw=1.6, marker="o", ms=2.5)
                handles.setdefault(f"EMC = n (train error {eps:g})", ("#ff5a36", "--", "o"))
        if xlog:
            ax.set_xscale("log")
            plain_log_ticks(ax.xaxis)
        if ylog:
            ax.set_yscale("log")
            plain_log_ticks(ax.yaxis)
        ax.set_xlim(edges(all_x, xlog)[[0, -1]])
        ax.set_ylim(edges(all_y, ylog)[[0, -1]])
        if i == nrows - 1 or (i + 1) * ncols + j >= len(places):  # nothing below this panel
            ax.set_xlabel(label(x))
            ax.xaxis.set_tick_params(labelbottom=True)
        if j == 0:
            ax.set_ylabel(label(y))
    if handles:
        from matplotlib.lines import Line2D

        lines = [Line2D([], [], color=col, ls=ls, marker=mk, ms=3, lw=1.5) for col, ls, mk in handles.values()]
        axes[0][-1].legend(lines, list(handles), loc="upper right", fontsize=7.5, facecolor="0.3",
                           labelcolor="white", framealpha=0.7)
    what = f"{label(metric)} (mean over seeds{', log scale' if _is_log(norm) else ''})"
    cb = fig.colorbar(mesh, ax=axes.ravel().tolist(), label=what, shrink=0.9 if len(rows) == 1 else 0.6)
    if _is_log(norm):  # 0.5, 0.6 rather than 5 x 10^-1
        from matplotlib.ticker import FuncFormatter

        cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
        cb.ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
    when = "" if "epoch" in (x, y) else (" at the last epoch" if epoch is None else f" at epoch {epoch}")
    note = f"; {' and '.join(binned)} binned into at most {max_cells} cells" if binned else ""
    fig.suptitle(f"{name + ': ' if name else ''}{label(metric)}{when}{note}", fontsize=11)
    return fig


def _first(s) -> str:
    v = sorted(s.dropna().unique())[0]
    return f"{v:g}" if isinstance(v, (float, np.floating)) else str(v)


def _is_log(norm) -> bool:
    from matplotlib.colors import LogNorm

    return isinstance(norm, LogNorm)


def _norm(values, log: bool):
    from matplotlib.colors import LogNorm, Normalize

    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1e-9
    if log:
        positive = finite[finite > 0]
        if positive.size:  # zeros (a perfect fit) are drawn in the lowest colour
            lo = float(positive.min())
            return LogNorm(lo, max(hi, lo * (1 + 1e-9)), clip=True)
    return Normalize(lo, hi)


def _fmt_level(facet: str, level) -> str:  # kept for callers of the old name
    return fmt_level(facet, level)
