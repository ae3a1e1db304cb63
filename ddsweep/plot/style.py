"""Shared figure set-up: styles, sizes, axis scaling, titles, saving.

Figures are plain matplotlib `Figure`s made without pyplot (nothing global: no
backend switch, no figure manager to close, a notebook's own settings untouched);
a style is an rcParams context active while a figure is built.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ddsweep import axes
from ddsweep.errors import UserError
from ddsweep.paths import output_file

FORMATS = {".png", ".svg", ".pdf"}
STYLES = ("lab", "paper", "talk")  # lab: for reading at a screen (method notes below the plot)
DEFAULT_DPI = 150


@dataclass(frozen=True)
class FigureOptions:
    """How a figure looks, apart from what it shows.

    size: (width, height) in inches (None: from the number of panels); title: None for
    the figure's own short title, a text to replace it, False for none; style: lab (the
    default: method notes in a caption below), paper (smaller type, no caption) or talk
    (larger type, thicker lines). Drawing into a given Axes, the style is not applied: that
    figure keeps its own look.
    """

    dpi: int = DEFAULT_DPI
    size: tuple[float, float] | None = None
    title: str | bool | None = None
    style: str = "lab"

    def __post_init__(self):
        if self.style not in STYLES:
            raise UserError(f"--style {self.style}: unknown style (use {', '.join(STYLES)})")
        if not (isinstance(self.dpi, (int, np.integer)) and 10 <= self.dpi <= 2400):
            raise UserError(f"--dpi {self.dpi}: expected a whole number from 10 to 2400")
        if self.size is not None:
            w, h = self.size
            if not (0.5 <= w <= 100 and 0.5 <= h <= 100):
                raise UserError(f"--size {w:g},{h:g}: width and height are inches from 0.5 to 100")

    @property
    def caption(self) -> bool:
        """Method notes under the plot: not in the paper style (the paper's caption says it)."""
        return self.style != "paper"


def options(dpi=None, size=None, title=None, style=None) -> FigureOptions:
    """FigureOptions from the keyword arguments of the plot functions (None: the default)."""
    if isinstance(size, str):
        size = parse_size(size)
    if size is not None and len(tuple(size)) != 2:
        raise UserError(f"size {size}: expected (width, height) in inches")
    if isinstance(dpi, (float, np.floating)) and float(dpi).is_integer():
        dpi = int(dpi)
    return FigureOptions(dpi=DEFAULT_DPI if dpi is None else dpi,
                         size=None if size is None else tuple(float(v) for v in size), title=title, style=style or "lab")


def parse_size(text: str) -> tuple[float, float]:
    """'6,4' or '6x4' -> (6.0, 4.0) inches."""
    parts = str(text).replace("x", ",").split(",")
    try:
        w, h = (float(p) for p in parts)
    except ValueError:
        raise UserError(f"--size {text}: expected WIDTH,HEIGHT in inches, e.g. --size 6,4") from None
    return w, h


def _rc(style: str) -> dict:
    import seaborn as sns

    scale = {"lab": 1.1, "paper": 1.0, "talk": 0.9}[style]
    context = "talk" if style == "talk" else "paper"
    rc = dict(sns.axes_style("ticks"))
    rc.update(sns.plotting_context(context, font_scale=scale))
    if style == "paper":
        rc.update({"lines.linewidth": 1.1, "axes.linewidth": 0.6, "font.family": "serif",
                   "mathtext.fontset": "dejavuserif"})
    rc["svg.fonttype"] = "none"  # text in SVG stays text (editable, searchable)
    rc["pdf.fonttype"] = 42
    return rc


@contextmanager
def styled(opts: FigureOptions, ax=None):
    """The style's rcParams while a figure is built (restored afterwards). Not when drawing into a
    given Axes: its figure keeps the look it has (text made later, at drawing, would not follow it)."""
    import matplotlib

    if ax is not None:
        yield
        return
    with matplotlib.rc_context(_rc(opts.style)):
        yield


def axes_key(ax, handles, labels, ncols: int = 2):
    """The key to the lines of a figure drawn into a given Axes: under it, not over its data."""
    if len(handles):
        ax.legend(list(handles), list(labels), loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=ncols,
                  fontsize="small", frameon=False)


def setup():
    """matplotlib and seaborn imported (callers that time a command's own work import them first)."""
    import matplotlib.figure  # noqa: F401
    import seaborn  # noqa: F401


def new_figure(opts: FigureOptions, default_size, nrows: int = 1, ncols: int = 1, **subplots):
    """A Figure (constrained layout) and its grid of Axes (a 2-D array)."""
    from matplotlib.figure import Figure

    grow = 1.4 if opts.style == "talk" else 1.0  # (the talk style's larger type needs the room)
    size = opts.size or (default_size[0] * grow, default_size[1] * grow)
    fig = Figure(figsize=size, dpi=opts.dpi, layout="constrained")
    return fig, fig.subplots(nrows, ncols, squeeze=False, **subplots)


def one_axes(ax, n_panels: int, what: str):
    """ax= draws one panel: more panels is an error that says which axis to fix."""
    if n_panels > 1:
        raise UserError(f"ax= draws one panel, this figure has {n_panels} ({what}); fix it with where= or "
                        "leave out ax=")
    return ax.figure, np.array([[ax]])


def title_text(opts: FigureOptions, text: str, fig=None, ax=None) -> None:
    """The figure's title (a short one), or the user's, or none; on a given Axes, its own title."""
    if opts.title is False:
        return
    text = opts.title if isinstance(opts.title, str) else text
    if ax is not None:
        ax.set_title(text)
    else:
        lines = fit_lines(fig, text.split("\n"), "large")
        if len(lines) > 1 and " (" in text and "\n" not in text:  # (too wide: break before its parenthesis first)
            main, _, extra = text.partition(" (")
            lines = fit_lines(fig, [main, "(" + extra], "large")
        fig.suptitle("\n".join(lines), fontsize="large")


def caption_text(opts: FigureOptions, fig, lines, handles=(), labels=(), ncols: int | None = None):
    """Under the plot: the key to its lines (handles, labels) and, in small type, method notes
    (not in the paper style). One legend block holds both (its title is the notes): two separate
    blocks at the bottom of a constrained layout overlap. Returns the legend (or None)."""
    notes = "\n".join(fit_lines(fig, [line for line in lines if line], "x-small")) if opts.caption else ""
    if len(handles):
        ncols = _fitting_columns(fig, list(labels), ncols or min(len(handles), 4))
        legend = fig.legend(list(handles), list(labels), loc="outside lower center", frameon=False,
                            ncols=ncols, fontsize="small", title=notes or None, title_fontsize="x-small")
        if notes:
            legend.get_title().set_color("0.35")
        return legend
    if notes:
        fig.supxlabel(notes, fontsize="x-small", color="0.35")
    return None


def _text_width(text: str, size, dpi: float = 100) -> float:
    """The width of `text` in points, in the current style's font at `size` ("small", 9, ...), as drawn
    at `dpi` (glyph hinting makes small type wider at low resolutions)."""
    from matplotlib.font_manager import FontProperties

    pixels = _renderer(float(dpi)).get_text_width_height_descent(text, FontProperties(size=size), ismath=False)[0]
    return pixels * 72 / dpi


@lru_cache(maxsize=8)
def _renderer(dpi: float):
    from matplotlib.backends.backend_agg import RendererAgg

    return RendererAgg(1, 1, dpi)


def fit_lines(fig, lines, size) -> list[str]:
    """The lines, wrapped between words to the figure's width. (A figure is saved at its own size,
    not grown to a tight box around its texts: a line wider than it would be cut at the edges.)"""
    room = fig.get_figwidth() * 72 * 0.94  # (a legend's padding around it)
    out = []
    for line in lines:
        current = ""
        for word in str(line).split(" "):
            longer = f"{current} {word}" if current else word
            if _text_width(longer, size, fig.dpi) <= room:
                current = longer
                continue
            if current:
                out.append(current)
            *whole, current = _word_pieces(word, size, fig.dpi, room)
            out.extend(whole)
        out.append(current)
    return out


def _word_pieces(word: str, size, dpi: float, room: float) -> list[str]:
    """A word wider than `room` (a long sweep name) in pieces that fit, cut after - _ / . where it can."""
    pieces, current = [], ""
    for ch in word:
        if current and _text_width(current + ch, size, dpi) > room:
            cut = max(current.rfind(sep) for sep in "-_/.")
            if cut > 0:
                pieces.append(current[:cut + 1])
                current = current[cut + 1:]
            else:
                pieces.append(current)
                current = ""
        current += ch
    return pieces + [current]


def _fitting_columns(fig, labels: list[str], ncols: int) -> int:
    """The most legend columns, up to `ncols`, whose rows fit the figure's width (each entry: its
    handle, the gap and its label in small type; the columns' spacing between)."""
    import matplotlib as mpl
    from matplotlib.font_manager import FontProperties

    em = FontProperties(size="small").get_size_in_points()
    extra = (mpl.rcParams["legend.handlelength"] + mpl.rcParams["legend.handletextpad"]) * em
    widths = [_text_width(t, "small", fig.dpi) + extra for t in labels]
    room, gap = fig.get_figwidth() * 72 * 0.94, mpl.rcParams["legend.columnspacing"] * em
    for n in range(max(ncols, 1), 1, -1):
        cols = [max(c) for c in np.array_split(widths, n) if len(c)]  # (matplotlib fills column by column)
        if sum(cols) + gap * (len(cols) - 1) <= room:
            return n
    return 1


def where_text(where) -> str:
    """A --where filter as the user wrote it: 'width=64, label_noise=0.2', 'width>=8', 'lr=0.01..0.1'
    (as ddsweep.where.describe says it; a long list of values shortened); empty for none."""
    if not where:
        return ""
    from ddsweep.where import split

    if not isinstance(where, dict):
        return str(where)
    parts = []
    for col, values in where.items():
        plain, conds = split(values if isinstance(values, (list, tuple, set)) else [values])
        parts += ([f"{col}={_values_text(plain)}"] if plain else []) + [f"{col}{c}" for c in conds]  # width>=8
    return ", ".join(parts)


def _values_text(values) -> str:
    """'8,16' as given; a long list as its ends and its length: '2,3,...,43 (11 values)'."""
    if not isinstance(values, (list, tuple, set)):
        return str(values)
    v = [str(x) for x in values]
    return ",".join(v) if len(v) <= 4 else f"{v[0]},{v[1]},...,{v[-1]} ({len(v)} values)"


def title_with(main: str, *extras: str) -> str:
    """'error vs width' + ('label noise 15%', 'where n_train=4000') -> 'error vs width (label noise 15%; ...)'."""
    extras = [e for e in extras if e]
    return f"{main} ({'; '.join(extras)})" if extras else main


def check_out(out) -> Path:
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise UserError(f"--out {out}: unknown figure format {out.suffix!r} (use .png, .svg or .pdf)")
    return output_file(out, "--out")  # (the CLI's rule in the API too: a missing folder is refused, not made)


def finish(fig, out, opts: FigureOptions):
    """Write the figure when `out` is given; the Figure either way."""
    if out is not None:
        out = check_out(out)
        check_fits(fig, opts)
        save(fig, out, dpi=opts.dpi)
    return fig


def check_fits(fig, opts: FigureOptions) -> None:
    """A size given by the user that leaves the plot no room for its texts is one line, before a file
    is written. (Saved at its own size, such a figure would come out with its texts over the plot and
    cut at the edges: constrained layout gives up. Default sizes leave the room; not checked, as the
    check is one more draw.)"""
    import warnings

    if opts.size is None or fig.get_layout_engine() is None:
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.draw_without_rendering()
    if any("constrained_layout not applied" in str(w.message) for w in caught):
        w, h = opts.size
        raise UserError(f"--size {w:g},{h:g}: too small for this figure's texts in the {opts.style} style; give a "
                        "larger --size (or --style paper, or --no-title)")


def save(fig, out: Path, dpi: int = DEFAULT_DPI) -> Path:
    out = Path(out)
    # A constrained layout already fits every text inside the figure: saved as it is, the file has the size
    # asked for (--size: a paper's column width) and is drawn once, not twice (a tight box is a second draw).
    tight = None if fig.get_layout_engine() is not None else "tight"
    fig.savefig(out, dpi=dpi, bbox_inches=tight)
    return out


def frame_or_db(data):
    """True when `data` is a metric frame (as load_metrics returns), False for a database path."""
    import pandas as pd

    from ddsweep.analysis.frames import Reduced

    return isinstance(data, (pd.DataFrame, Reduced))


def is_geometric(values) -> bool:
    """True for axes spaced roughly geometrically (e.g. widths 2..300): draw them on a log scale."""
    v = np.sort(np.unique(np.asarray(values, dtype=float)))
    if len(v) < 3 or v[0] <= 0:
        return False
    ratios, diffs = v[1:] / v[:-1], np.diff(v)
    return ratios.max() / ratios.min() < diffs.max() / diffs.min()


# An axis' scale: "linear", "log" (values > 0), or "symlog" (epochs and steps: log above 1, linear
# from 0 to 1, so epoch 0, the model at initialisation, has its place on a log-epoch axis).
def _forward(scale):
    if scale == "log":
        return np.log
    if scale == "symlog":
        return lambda v: np.where(np.asarray(v) <= 1, np.asarray(v, dtype=float), 1 + np.log(np.maximum(v, 1)))
    return lambda v: np.asarray(v, dtype=float)


def _inverse(scale):
    if scale == "log":
        return np.exp
    if scale == "symlog":
        return lambda t: np.where(np.asarray(t) <= 1, np.asarray(t, dtype=float), np.exp(np.asarray(t) - 1))
    return lambda t: np.asarray(t, dtype=float)


def _scale_of(log) -> str:
    return {True: "log", False: "linear"}.get(log, log) if isinstance(log, bool) else log


def edges(centers, log) -> np.ndarray:
    """Cell edges around sorted centers (midpoints in the axis' scale: log, symlog or linear)."""
    scale = _scale_of(log)
    c = np.asarray(centers, dtype=float)
    if len(c) == 1:
        return np.array([c[0] * 0.8, c[0] * 1.25]) if scale == "log" else np.array([c[0] - 0.5, c[0] + 0.5])
    t = _forward(scale)(c)
    mid = (t[1:] + t[:-1]) / 2
    e = np.concatenate([[t[0] - (mid[0] - t[0])], mid, [t[-1] + (t[-1] - mid[-1])]])
    out = _inverse(scale)(e)
    if scale == "symlog" and c[0] >= 0:
        out[0] = max(out[0], -0.5)  # the first cell of epoch 0 ends at a half epoch below it, not at -1
    return out


def plain_log_ticks(axis) -> None:
    """Log-scaled axis labelled 2, 10, 100 rather than 2x10^0, 10^1, 10^2."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def set_scale(ax, which: str, scale: str, top: float | None = None) -> None:
    """Apply an axis scale with plain tick labels (0, 1, 10, 100 on a symlog epoch axis); `top`: the
    largest value drawn (a symlog axis over more than 3 decades is labelled at powers of 10 only)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    setter = ax.set_xscale if which == "x" else ax.set_yscale
    if scale == "log":
        setter("log")
        plain_log_ticks(axis)
    elif scale == "symlog":
        # linscale (1 - 1/10) / ln 10: the linear part 0..1 as wide as 1..e on the log part, so the scale is
        # smooth at 1 and proportional to the one `edges` and `bin_centers` use (x below 1, 1 + ln x above)
        setter("symlog", base=10, linthresh=1, linscale=0.9 / np.log(10))
        decades = int(np.ceil(np.log10(max(top or 10, 10))))
        subs = (1, 2, 5) if decades <= 3 else (1,)
        axis.set_major_locator(FixedLocator([0] + [m * 10 ** k for k in range(decades + 1) for m in subs]))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_locator(FixedLocator([m * 10 ** k for k in range(decades + 1) for m in range(2, 10)]))
        axis.set_minor_formatter(NullFormatter())


MANY_PANELS = 4  # above this many panels, minor ticks are drawn as marks (minor_marks)


def minor_marks(axes_list) -> None:
    """Draw the minor ticks of these Axes as one line of tick-shaped markers per axis.

    A grid of many log or symlog panels spends most of its drawing time on matplotlib's Tick
    objects (each two lines and two texts, created and transformed at every draw, by the layout
    too): 20 panels with about 55 minor ticks each took 1.7 s of a 3.6 s save on 2 cores. The
    marks look the same (length, width, colour and direction from the style) and cost one
    artist per axis; they do not follow limits changed after drawing, so they are used only
    for figures of many panels, all drawn here with fixed limits.
    """
    import matplotlib as mpl
    from matplotlib import lines as mlines
    from matplotlib.ticker import NullLocator

    marker = {"x": {"out": mlines.TICKDOWN, "in": mlines.TICKUP, "inout": "|"},
              "y": {"out": mlines.TICKLEFT, "in": mlines.TICKRIGHT, "inout": "_"}}
    for which in ("x", "y"):
        rc = lambda key: mpl.rcParams[f"{which}tick.{key}"]  # noqa: E731
        if not rc("bottom" if which == "x" else "left"):  # (the side ticks are drawn on)
            continue
        per_axes = []
        for ax in axes_list:
            axis = ax.xaxis if which == "x" else ax.yaxis
            lo, hi = sorted(axis.get_view_interval())
            locs = [v for v in axis.get_minorticklocs() if lo - 1e-9 * abs(lo) <= v <= hi + 1e-9 * abs(hi)]
            per_axes.append((ax, locs))
        for ax, locs in per_axes:
            (ax.xaxis if which == "x" else ax.yaxis).set_minor_locator(NullLocator())  # (shared: for all)
            if not locs:
                continue
            at_edge = [0.0] * len(locs)
            xy = (locs, at_edge) if which == "x" else (at_edge, locs)
            transform = ax.get_xaxis_transform() if which == "x" else ax.get_yaxis_transform()
            ax.plot(*xy, transform=transform, ls="none", marker=marker[which][rc("direction")],
                    ms=rc("minor.size"), mew=rc("minor.width"), color=rc("color"), clip_on=False,
                    scalex=False, scaley=False, zorder=2.5)


# How figures name columns (from the vocabulary, ddsweep.axes); any other column: its name in words.
LABELS = {c: axes.label(c) for c in ("epoch", *axes.AXIS, *axes.METRIC) if axes.label(c) != c.replace("_", " ")}


def label(col: str) -> str:
    return axes.label(col)


def fmt_level(col: str, level) -> str:
    """How a panel or a line names its value: 'label noise 15%', 'model width h 43'."""
    if col == "label_noise":
        return f"{label(col)} {level:.0%}"
    short = axes.AXIS[col].short if col in axes.AXIS else ""
    value = f"{level:g}" if isinstance(level, (float, int, np.integer, np.floating)) else str(level)
    return f"{short} = {value}" if short else f"{label(col)} {value}"


def axis_scale(col: str, values) -> str:
    """Epochs and steps symlog (0 included), other axes log when spaced roughly geometrically, else linear."""
    if col in ("epoch", "step"):
        return "symlog"
    v = np.asarray(values, dtype=float)
    return "log" if bool(np.all(v > 0)) and is_geometric(v) else "linear"


def is_log_axis(col: str, values) -> bool:
    """Epochs always, other axes when spaced roughly geometrically."""
    return axis_scale(col, values) != "linear"


def check_varies(df, option: str, col: str) -> None:
    """An axis drawn along x or y needs two values or more: else say which axes do vary."""
    from ddsweep.analysis import free_axes

    values = df[col].dropna().unique()
    if len(values) < 2:
        varying = [a for a in free_axes(df, ()) if a != col]
        one = f"one value ({values[0]:g})" if len(values) and isinstance(values[0], (int, float, np.number)) \
            else f"{len(values)} value(s)"
        raise UserError(f"--{option} {col}: {col} has {one} here, nothing to draw against"
                        + (f"; axes that vary: {', '.join(varying)}" if varying else ""))


def bin_centers(values, log, max_cells: int) -> dict:
    """Map each distinct value to the center of its bin when there are more than max_cells values.

    Bins are equal in the axis' scale (log or symlog: 4000 evaluated epochs become about
    max_cells rows that each cover a few pixels); a bin's center is the mean of its
    values in that scale. Fewer values: the identity map.
    """
    scale = _scale_of(log)
    v = np.sort(np.unique(np.asarray(values, dtype=float)))
    if len(v) <= max_cells:
        return {x: x for x in v}
    fwd, inv = _forward(scale), _inverse(scale)
    t = fwd(v)
    edges_ = np.linspace(t[0], t[-1], max_cells + 1)
    idx = np.clip(np.searchsorted(edges_, t, side="right") - 1, 0, max_cells - 1)
    out = {}
    for b in np.unique(idx):
        members = t[idx == b]
        c = float(inv(members.mean()))
        for x in v[idx == b]:
            out[x] = c
    return out


def png_bytes(fig, dpi: int = 110) -> bytes:
    """The figure as PNG bytes."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)  # constrained layout already fits titles, notes and colour bars
    return buf.getvalue()


def svg_text(fig) -> str:
    """The figure as SVG text (colour meshes stay rasterised inside it)."""
    import io

    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    return buf.getvalue()


__all__ = ["FigureOptions", "options", "styled", "new_figure", "finish", "STYLES", "replace"]
