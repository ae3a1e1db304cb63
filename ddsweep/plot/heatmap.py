"""Heatmaps: a metric over two axes (width x epoch, width x n_train, n_train x epoch, ...).

Seed means per cell; one panel per label-noise level (or per value of any `facet`
axis, and per value of a `row` axis); log axes where the values are geometric
(epochs on a symlog axis, so epoch 0 is drawn); linear or log colour scale;
train-error contours at chosen levels and, where n_train is an axis, the EMC = n line.

`heatmap_data` computes what is drawn (a MapData, testable without drawing);
`heatmap_figure` draws it; `heatmap` reads a database (or takes a frame) and
writes a file when `out` is given.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ddsweep.analysis import at_epoch, free_axes, seed_mean
from ddsweep.analysis.emc import emc_over_n
from ddsweep.analysis.frames import apply_where, check_columns
from ddsweep.errors import UserError
from ddsweep.plot.style import (LABELS, MANY_PANELS, axes_key, axis_scale, bin_centers, caption_text, check_out,
                                check_varies, edges, finish, fmt_level, frame_or_db, label, minor_marks, new_figure,
                                one_axes, options, set_scale, styled, title_text, title_with, where_text)
from ddsweep.store import results

__all__ = ["heatmap", "heatmap_figure", "heatmap_data", "MapData", "LABELS"]

CONTOUR_STYLES = ("-", "--", ":", "-.")
MAX_PANELS = 30
MAX_CELLS = 300  # an axis with more values (4,000 evaluated epochs) is binned into this many cells
EMC_COLOR = "#ff5a36"


def heatmap(data="results.duckdb", sweep: str | None = None, x: str = "width", y: str = "epoch",
            metric: str = "test_error", contour=0.1, facet: str | None = "label_noise",
            epoch: int | None = None, log_color: bool = False, out=None, where: dict | None = None,
            row: str | None = None, emc_line: bool = True, ax=None, dpi: int | None = None, size=None,
            title=None, style: str | None = None):
    """Draw `metric` over x and y (mean over seeds) with train-error contours at `contour` (one or
    several levels). `data`: a database path or a metric frame (as `load_metrics` returns). Returns
    the matplotlib Figure; writes it to `out` (.png, .svg, .pdf) only when given; `ax`: draw into
    this Axes (one panel). dpi, size (inches), title (text, or False for none), style (lab, paper, talk)."""
    opts = options(dpi, size, title, style)
    _levels(contour)  # (a bad level is one line before anything is read)
    if out is not None:
        check_out(out)
    if frame_or_db(data):
        name, df, shown = "", data, None
    else:
        name, df = _read(data, sweep, where, x, y, metric, facet, row, epoch)
        shown, where = where, None  # (applied in the database; still said in the title)
    fig = heatmap_figure(df, name, x=x, y=y, metric=metric, contour=contour, facet=facet, epoch=epoch,
                         log_color=log_color, row=row, emc_line=emc_line, where=where, ax=ax, opts=opts,
                         where_shown=shown)
    return finish(fig, out, opts)


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
        binned = []

        def epoch_bins(epochs):  # (as heatmap_data bins them: the cells drawn are all that is read)
            centers = bin_centers(epochs, axis_scale("epoch", epochs), MAX_CELLS)
            binned.extend(["epoch"] if any(k != v for k, v in centers.items()) else [])
            return centers

        red = results.reduce(db, sweep, where, epoch=None if over_epochs else epoch, metrics=metrics,
                             curves=over_epochs, epoch_bins=epoch_bins if over_epochs else None, rows=not over_epochs)
        if not over_epochs:
            return red["sweep"], red["rows"]
        red["curves"].attrs["binned"] = binned  # (said in the caption, as when heatmap_data bins)
        return red["sweep"], red["curves"]
    return results.sweep_frame(db, sweep, where, metrics=(*metrics, x, y, facet, row))


def _levels(contour) -> list[float]:
    if contour is None or contour is False:
        return []
    levels = [float(c) for c in (contour if isinstance(contour, (list, tuple)) else [contour])]
    bad = [c for c in levels if not 0 <= c <= 1]
    if bad:  # (a train error is in [0, 1]; 0 means no contour)
        raise UserError(f"--contour {bad[0]:g}: a train-error level is between 0 and 1 (0: no contour)")
    return [c for c in levels if c > 0]


@dataclass
class MapData:
    """What a heatmap draws: per panel (row value, column value) the seed means per cell."""

    x: str
    y: str
    metric: str
    row: str | None
    facet: str | None
    rows: list
    cols: list
    panels: dict  # (row value, column value) -> frame: x, y, metric, train_error, seeds
    xscale: str
    yscale: str
    all_x: np.ndarray  # every panel's cell centers (shared axes)
    all_y: np.ndarray
    contours: list[float]
    emc: dict = field(default_factory=dict)  # (row value, column value) -> (xs, ys) of the EMC = n line
    emc_eps: float = 0.1
    binned: list[str] = field(default_factory=list)
    max_cells: int = 300
    epoch: int | None = None
    seeds: int = 1  # the most seeds in one cell
    fixed: dict = field(default_factory=dict)  # axes with one value worth saying (label noise)


def heatmap_data(df: pd.DataFrame, x: str = "width", y: str = "epoch", metric: str = "test_error", contour=0.1,
                 facet: str | None = "label_noise", epoch: int | None = None, where: dict | None = None,
                 row: str | None = None, emc_line: bool = True, max_cells: int = MAX_CELLS) -> MapData:
    """The cells, panels, scales and overlays of a heatmap, from a metric frame."""
    if x == y:
        raise UserError(f"--x and --y are both {x}")
    prebinned = [a for a in df.attrs.get("binned", ()) if a in (x, y)]  # (binned where it was read: _read)
    check_columns(df, x=x, y=y, metric=metric, facet=facet, row=row)
    df = apply_where(df, where)
    for opt, col in (("x", x), ("y", y), ("metric", metric)):
        if df[col].dtype.kind not in "iuf":
            raise UserError(f"--{opt} {col}: not numeric")
    if "epoch" not in (x, y):
        df = at_epoch(df, epoch)
    check_varies(df, "x", x)
    check_varies(df, "y", y)
    facet = None if facet in (x, y) else facet
    row = None if row in (x, y, facet) else row
    rest = free_axes(df, {x, y, facet, row})
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
    fixed = {}
    if facet is not None and len(cols) == 1:  # one panel: its value goes into the title
        fixed[facet], facet, cols = cols[0], None, [None]
    if "label_noise" not in (x, y, facet, row) and "label_noise" in df.columns and df["label_noise"].nunique() == 1:
        fixed.setdefault("label_noise", df["label_noise"].iloc[0])
    xscale = axis_scale(x, df[x].unique())
    yscale = axis_scale(y, df[y].unique())
    xbin = bin_centers(df[x].unique(), xscale, max_cells)
    ybin = bin_centers(df[y].unique(), yscale, max_cells)
    binned = [a for a, b in ((x, xbin), (y, ybin)) if any(k != v for k, v in b.items()) or a in prebinned]

    metrics = list(dict.fromkeys([metric, "train_error"]))
    contours = _levels(contour)
    eps = contours[0] if contours else 0.1
    panels, emc = {}, {}
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
            if "seeds" in sub.columns:  # (seed means already, reduced in the database: keep their seed counts)
                m["seeds"] = sub.groupby([x, y], dropna=False)["seeds"].sum().to_numpy()
            if binned:
                m = m.assign(**{x: m[x].map(xbin), y: m[y].map(ybin)})
                m = m.groupby([x, y], as_index=False)[metrics + ["seeds"]].mean()
            panels[(r, c)] = m
            if emc_line and "n_train" in (x, y):
                line = _emc_line(m, x, y, eps)
                if line is not None:
                    emc[(r, c)] = line
    if not panels:
        raise UserError("no data to draw")
    seeds = int(max(m["seeds"].max() for m in panels.values()))
    return MapData(x, y, metric, row, facet, rows, cols, panels, xscale, yscale,
                   np.array(sorted(set(xbin.values()))), np.array(sorted(set(ybin.values()))), contours, emc, eps,
                   binned, max_cells, epoch, seeds, fixed)


def _emc_line(m: pd.DataFrame, x: str, y: str, eps: float):
    """Per value of the other axis, the n at which the seed-mean train error crosses eps: (xs, ys)."""
    other = y if x == "n_train" else x
    pts = []
    for v, g in m.groupby(other):
        value, bound = emc_over_n(g["n_train"], g["train_error"], eps)
        if not bound and np.isfinite(value):
            pts.append((v, value))
    if not pts:
        return None
    o, n = np.array(pts).T
    return (n, o) if x == "n_train" else (o, n)


def heatmap_figure(df: pd.DataFrame, name: str = "", x: str = "width", y: str = "epoch",
                   metric: str = "test_error", contour=0.1, facet: str | None = "label_noise",
                   epoch: int | None = None, log_color: bool = False, where: dict | None = None,
                   row: str | None = None, emc_line: bool = True, max_cells: int = MAX_CELLS, ax=None, opts=None,
                   where_shown: dict | None = None, **figure_options):
    """The figure behind `heatmap`, from a metric frame (as `load_metrics` returns): a Figure.

    figure_options: dpi, size, title, style (see ddsweep.plot.style.FigureOptions)."""
    data = heatmap_data(df, x=x, y=y, metric=metric, contour=contour, facet=facet, epoch=epoch, where=where,
                        row=row, emc_line=emc_line, max_cells=max_cells)
    return draw_heatmap(data, name, log_color=log_color, ax=ax, opts=opts or options(**figure_options),
                        where=where_shown or where)


def draw_heatmap(d: MapData, name: str = "", log_color: bool = False, ax=None, opts=None, where=None):
    """Draw a MapData: a Figure (or into `ax`, for a one-panel map)."""
    opts = opts or options()
    with styled(opts, ax):
        return _draw(d, name, log_color, ax, opts, where)


def _draw(d: MapData, name, log_color, ax, opts, where):
    x, y, metric = d.x, d.y, d.metric
    values = np.concatenate([m[metric].to_numpy(dtype=float) for m in d.panels.values()])
    norm = _norm(values, log_color)
    rows, cols = d.rows, d.cols
    if len(cols) == 1 and len(rows) > 1:  # a single column of panels wraps into rows of up to 4
        ncols = min(len(rows), 4)
        nrows = -(-len(rows) // ncols)
        places = [((r, cols[0]), k // ncols, k % ncols) for k, r in enumerate(rows)]
    else:
        nrows, ncols = len(rows), len(cols)
        places = [((r, c), i, j) for i, r in enumerate(rows) for j, c in enumerate(cols)]
    if ax is not None:
        fig, axes = one_axes(ax, len(places), "one per " + " and ".join(a for a in (d.row, d.facet) if a))
    else:
        fig, axes = new_figure(opts, (4.2 * ncols + 1.3, 3.5 * nrows + 0.9), nrows, ncols, sharex=True,
                               sharey=True)
    for a in axes.ravel()[len(places):]:
        a.set_axis_off()
    mesh = None
    handles = {}
    for (r, c), i, j in places:
        pax = axes[i][j]
        m = d.panels.get((r, c))
        panel_title = " | ".join(fmt_level(a, v) for a, v in ((d.row, r), (d.facet, c)) if a)
        if panel_title:
            pax.set_title(panel_title, fontsize="medium", y=None if ax is not None else 1.0)  # (own panels have
            # no top ticks: a given y skips re-placing the title over them at every draw; a user's Axes may)
        if m is None:
            pax.set_axis_off()
            continue
        z = m.pivot(index=y, columns=x, values=metric).sort_index().sort_index(axis=1)
        xc, yc = z.columns.to_numpy(dtype=float), z.index.to_numpy(dtype=float)
        mesh = pax.pcolormesh(edges(xc, d.xscale), edges(yc, d.yscale),
                              np.ma.masked_invalid(z.to_numpy(dtype=float)), cmap="viridis", norm=norm,
                              shading="flat", rasterized=True)
        if d.contours and len(xc) > 1 and len(yc) > 1:
            tr = m.pivot(index=y, columns=x, values="train_error").reindex(index=z.index, columns=z.columns)
            trv = np.ma.masked_invalid(tr.to_numpy(dtype=float))
            for k, level in enumerate(d.contours):
                ls = CONTOUR_STYLES[k % len(CONTOUR_STYLES)]
                cs = pax.contour(xc, yc, trv, levels=[level], colors="white", linewidths=1.5, linestyles=ls)
                if cs.allsegs and any(len(s) for s in cs.allsegs[0]):
                    handles.setdefault(f"train error = {level:g}", ("white", ls, None))
        if (r, c) in d.emc:
            px, py = d.emc[(r, c)]
            pax.plot(px, py, color=EMC_COLOR, ls="--", lw=1.6, marker="o", ms=2.5)
            handles.setdefault(f"EMC = n (train error {d.emc_eps:g})", (EMC_COLOR, "--", "o"))
        set_scale(pax, "x", d.xscale, top=d.all_x.max())
        set_scale(pax, "y", d.yscale, top=d.all_y.max())
        pax.set_xlim(edges(d.all_x, d.xscale)[[0, -1]])
        pax.set_ylim(edges(d.all_y, d.yscale)[[0, -1]])
        if i == nrows - 1 or (i + 1) * ncols + j >= len(places):  # nothing below this panel
            pax.set_xlabel(label(x))
            pax.xaxis.set_tick_params(labelbottom=True)
        if j == 0:
            pax.set_ylabel(label(y))
    if ax is None and len(places) > MANY_PANELS:  # (minor ticks as marks: Tick objects are most of the drawing)
        minor_marks([axes[i][j] for (r, c), i, j in places if (r, c) in d.panels])
    key = []
    if handles:  # under the panels: a legend inside one would cover cells and contours
        from matplotlib.lines import Line2D

        key = [Line2D([], [], color="0.25" if col == "white" else col, ls=ls, marker=mk, ms=3, lw=1.5)
               for col, ls, mk in handles.values()]
        if ax is not None:
            axes_key(ax, key, list(handles), ncols=len(key))
    what = label(metric) + (" (seed mean)" if d.seeds > 1 else "") + (", log scale" if _is_log(norm) else "")
    cb = fig.colorbar(mesh, ax=axes.ravel().tolist(), label=what, shrink=0.9 if nrows == 1 else 0.6)
    if _is_log(norm):  # 0.5, 0.6 rather than 5 x 10^-1
        from matplotlib.ticker import FuncFormatter

        cb.ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
        cb.ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:.2g}"))
    when = "" if "epoch" in (x, y) else (" at the last epoch" if d.epoch is None else f" at epoch {d.epoch}")
    fixed = [fmt_level(a, v) for a, v in d.fixed.items()]
    where_note = where_text(where)
    title_text(opts, title_with(f"{label(metric)}{when}", *fixed, where_note and f"where {where_note}"),
               fig=fig, ax=ax)
    notes = []
    if name:
        notes.append(f"sweep {name}")
    if d.seeds > 1:
        notes.append(f"mean over up to {d.seeds} seeds per cell")
    if d.binned:
        notes.append(f"{' and '.join(d.binned)} binned into at most {d.max_cells} cells")
    if ax is None:
        caption_text(opts, fig, ["; ".join(notes)], key, list(handles), ncols=len(key))
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
