"""Heatmaps: a metric over two axes (e.g. width x epoch), seed means, one panel per facet."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ddsweep.analysis import at_epoch, seed_mean
from ddsweep.analysis.frames import check_columns, pick_sweep
from ddsweep.errors import UserError
from ddsweep.plot.style import check_out, edges, is_geometric, plain_log_ticks, save, setup

LABELS = {"width": "model width h", "n_train": "training samples n", "epoch": "epoch",
          "label_noise": "label noise", "test_error": "test error", "train_error": "train error"}


def heatmap(db="results.duckdb", sweep: str | None = None, x: str = "width", y: str = "epoch",
            metric: str = "test_error", contour: float | None = 0.1, facet: str = "label_noise",
            epoch: int | None = None, log_color: bool = False, out="heatmap.png") -> Path:
    """Draw `metric` over x and y (mean over seeds) with the train-error = `contour` line."""
    from ddsweep.api import load_metrics

    plt = setup()
    out = check_out(out)
    name = pick_sweep(db, sweep)
    df = load_metrics(db, name)
    if df.empty:
        raise UserError(f"{db}: sweep {name} has no metric rows yet; run `ddsweep work --db {db}` first")
    check_columns(df, x=x, y=y, metric=metric, facet=facet)
    if "epoch" not in (x, y):
        df = at_epoch(df, epoch)
    for axis in (x, y):
        if axis == "epoch":  # epochs are drawn on a log axis, where epoch 0 has no place
            df = df[df["epoch"] > 0]
    facets = sorted(df[facet].dropna().unique())
    fig, axes = plt.subplots(1, len(facets), figsize=(4.2 * len(facets) + 1.2, 3.8), squeeze=False,
                             sharey=True, constrained_layout=True)
    values = df[metric].to_numpy(dtype=float)
    norm = _norm(values, log_color)
    mesh = None
    for ax, level in zip(axes[0], facets):
        sub = df[df[facet] == level]
        m = seed_mean(sub, [x, y], [metric, "train_error"])
        z = m.pivot(index=y, columns=x, values=metric).sort_index().sort_index(axis=1)
        xc, yc = z.columns.to_numpy(dtype=float), z.index.to_numpy(dtype=float)
        xlog = x == "epoch" or is_geometric(xc)
        ylog = y == "epoch" or is_geometric(yc)
        mesh = ax.pcolormesh(edges(xc, xlog), edges(yc, ylog), z.to_numpy(dtype=float), cmap="viridis",
                             norm=norm, shading="flat")
        if contour and len(xc) > 1 and len(yc) > 1:
            tr = m.pivot(index=y, columns=x, values="train_error").reindex(index=z.index, columns=z.columns)
            cs = ax.contour(xc, yc, tr.to_numpy(dtype=float), levels=[contour], colors="white", linewidths=1.6)
            if cs.allsegs and any(len(s) for s in cs.allsegs[0]):
                ax.plot([], [], color="white", label=f"train error = {contour:g}")
                ax.legend(loc="upper right", fontsize=8, facecolor="0.3", labelcolor="white", framealpha=0.6)
        if xlog:
            ax.set_xscale("log")
            plain_log_ticks(ax.xaxis)
        if ylog:
            ax.set_yscale("log")
            plain_log_ticks(ax.yaxis)
        ax.set_xlabel(LABELS.get(x, x))
        ax.set_title(f"{LABELS.get(facet, facet)} {_fmt_level(facet, level)}")
    axes[0][0].set_ylabel(LABELS.get(y, y))
    fig.colorbar(mesh, ax=axes[0].tolist(), label=f"{LABELS.get(metric, metric)} (mean over seeds)")
    fig.suptitle(f"{name}: {LABELS.get(metric, metric)}", fontsize=11)
    return save(fig, out)


def _norm(values, log: bool):
    from matplotlib.colors import LogNorm, Normalize

    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if log and lo > 0:
        return LogNorm(lo, hi)
    return Normalize(lo, hi)


def _fmt_level(facet: str, level) -> str:
    return f"{level:.0%}" if facet == "label_noise" else f"{level:g}" if isinstance(level, float) else str(level)
