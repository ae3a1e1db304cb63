"""Shared figure set-up: headless backend, seaborn theme, axis scaling, saving."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ddsweep import axes
from ddsweep.errors import UserError

FORMATS = {".png", ".svg", ".pdf"}


def setup():
    import matplotlib

    matplotlib.use("Agg")  # headless: no display needed
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(context="paper", style="ticks", font_scale=1.1)
    return plt


def check_out(out) -> Path:
    out = Path(out)
    if out.suffix.lower() not in FORMATS:
        raise UserError(f"--out {out}: unknown figure format {out.suffix!r} (use .png, .svg or .pdf)")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def is_geometric(values) -> bool:
    """True for axes spaced roughly geometrically (e.g. widths 2..300): draw them on a log scale."""
    v = np.sort(np.unique(np.asarray(values, dtype=float)))
    if len(v) < 3 or v[0] <= 0:
        return False
    ratios, diffs = v[1:] / v[:-1], np.diff(v)
    return ratios.max() / ratios.min() < diffs.max() / diffs.min()


def edges(centers, log: bool) -> np.ndarray:
    """Cell edges around sorted centers (midpoints; geometric midpoints on a log axis)."""
    c = np.asarray(centers, dtype=float)
    if len(c) == 1:
        return np.array([c[0] * 0.8, c[0] * 1.25]) if log else np.array([c[0] - 0.5, c[0] + 0.5])
    t = np.log(c) if log else c
    mid = (t[1:] + t[:-1]) / 2
    e = np.concatenate([[t[0] - (mid[0] - t[0])], mid, [t[-1] + (t[-1] - mid[-1])]])
    return np.exp(e) if log else e


def plain_log_ticks(axis) -> None:
    """Log-scaled axis labelled 2, 10, 100 rather than 2x10^0, 10^1, 10^2."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def save(fig, out: Path) -> Path:
    fig.savefig(out, dpi=150, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return out


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


def is_log_axis(col: str, values) -> bool:
    """Epochs always, other axes when spaced roughly geometrically."""
    if col == "epoch":
        return True
    v = np.asarray(values, dtype=float)
    return bool(np.all(v > 0)) and is_geometric(v)


def bin_centers(values, log: bool, max_cells: int) -> dict:
    """Map each distinct value to the center of its bin when there are more than max_cells values.

    Bins are equal in log space on a log axis (so 4000 evaluated epochs become about
    max_cells rows that each cover a few pixels); a bin's center is the (geometric)
    mean of the values in it. Fewer values: the identity map.
    """
    v = np.sort(np.unique(np.asarray(values, dtype=float)))
    if len(v) <= max_cells:
        return {x: x for x in v}
    t = np.log(v) if log else v
    edges_ = np.linspace(t[0], t[-1], max_cells + 1)
    idx = np.clip(np.searchsorted(edges_, t, side="right") - 1, 0, max_cells - 1)
    out = {}
    for b in np.unique(idx):
        members = t[idx == b]
        c = members.mean()
        for m, x in zip(members, v[idx == b]):
            out[x] = float(np.exp(c)) if log else float(c)
    return out


def png_bytes(fig, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (and closed)."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)  # constrained layout already fits titles and colour bars
    plt.close(fig)
    return buf.getvalue()
