"""Shared figure set-up: headless backend, seaborn theme, axis scaling, saving."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
