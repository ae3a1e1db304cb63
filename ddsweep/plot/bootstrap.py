"""The Deep Bootstrap figure: real-world vs ideal-world test error against steps, and the gap.

Nakkiran, Neyshabur and Sedghi (2021) compare a run that reuses its n training
samples for many epochs (the real world) with the same run on fresh samples at every
step (the ideal world, `world: ideal`): at equal steps, the real world's test error
stays close to the ideal world's until the real world has fitted its training set.
Runs pair up when they differ only in `world` (and are averaged over seeds).

Each panel (one per value of `facet`, by default the one other axis that varies,
e.g. width) shows the real world's test metric (solid; `metric`, default test_error,
e.g. test_soft_error, the paper's headline, or test_loss) and its train counterpart
(dotted, on the noisy labels it trains on: train_soft_error for test_soft_error,
else train_error) and the ideal world's test metric (dashed), seed means with 95%
bands; below it, the bootstrap gap: real minus ideal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ddsweep.analysis import free_axes, seed_mean
from ddsweep.analysis.frames import apply_where, check_columns, t975
from ddsweep.axes import METRIC
from ddsweep.errors import UserError
from ddsweep.plot.style import check_out, fmt_level, label, plain_log_ticks, save, setup
from ddsweep.store import results

__all__ = ["bootstrap", "bootstrap_figure"]

MAX_PANELS = 12


def bootstrap(db="results.duckdb", sweep: str | None = None, out="bootstrap.png", where: dict | None = None,
              facet: str | None = None, metric: str = "test_error") -> Path:
    """Draw the real-vs-ideal figure of a sweep with both worlds (see the module docstring)."""
    out = check_out(out)
    twin = "train_" + metric.removeprefix("test_")
    wanted = ("step", metric, "train_error", *((twin,) if twin in METRIC and twin != metric else ()), facet)
    name, df = results.sweep_frame(db, sweep, where, metrics=tuple(dict.fromkeys(c for c in wanted if c)))
    return save(bootstrap_figure(df, name, facet=facet, metric=metric), out)


def train_counterpart(metric: str, columns) -> str:
    """The train-side metric drawn beside a test metric: train_X for test_X where recorded, else train_error."""
    twin = "train_" + metric.removeprefix("test_")
    return twin if metric.startswith("test_") and twin in columns else "train_error"


def bootstrap_figure(df: pd.DataFrame, name: str = "", where: dict | None = None, facet: str | None = None,
                     metric: str = "test_error"):
    """The figure behind `bootstrap`, from a metric frame (as `load_metrics` returns)."""
    if "world" not in df.columns:
        raise UserError("no world column: this database predates the ideal world; run `ddsweep plan` again")
    check_columns(df, facet=facet, metric=metric)
    if not df[metric].notna().any():
        raise UserError(f"--metric {metric}: no values recorded in this sweep (trained before the column existed?)")
    train_metric = train_counterpart(metric, df.columns)
    df = apply_where(df, where)
    worlds = set(df["world"].dropna().unique())
    if worlds != {"real", "ideal"}:
        have = ", ".join(sorted(worlds)) or "none"
        raise UserError(f"plot bootstrap needs runs in both worlds (this sweep has: {have}); "
                        "add the axis `world: [real, ideal]` to its grid")
    rest = free_axes(df, ("world", facet))
    if facet is None and len(rest) == 1:
        facet = rest.pop()
    if rest:
        raise UserError(f"{', '.join(rest)} also varies: choose panels with --facet AXIS or fix it with "
                        f"--where {rest[0]}=VALUE")
    panels = sorted(df[facet].dropna().unique()) if facet else [None]
    if len(panels) > MAX_PANELS:
        raise UserError(f"{len(panels)} panels ({facet}): too many; fix it with --where {facet}=VALUE")

    plt = setup()
    import seaborn as sns

    real_c, ideal_c = sns.color_palette("colorblind", 2)
    ncols = min(len(panels), 4)
    nblocks = -(-len(panels) // ncols)
    fig, grid = plt.subplots(2 * nblocks, ncols, figsize=(3.9 * ncols + 1.2, 4.3 * nblocks + 0.8), squeeze=False,
                             sharex="col", gridspec_kw={"height_ratios": [3, 1.3] * nblocks},
                             constrained_layout=True)
    for i in range(len(panels), nblocks * ncols):
        grid[2 * (i // ncols), i % ncols].set_axis_off()
        grid[2 * (i // ncols) + 1, i % ncols].set_axis_off()
    df = df[df["step"] > 0]  # steps on a log axis
    for i, panel in enumerate(panels):
        top, bottom = grid[2 * (i // ncols), i % ncols], grid[2 * (i // ncols) + 1, i % ncols]
        sub = df if facet is None else df[df[facet] == panel]
        cols = list(dict.fromkeys([metric, train_metric]))
        means = {w: seed_mean(sub[sub["world"] == w], ["step"], cols).sort_values("step") for w in ("real", "ideal")}
        lines = [("real world: test", means["real"], metric, real_c, "-"),
                 ("real world: train", means["real"], train_metric, real_c, ":"),
                 ("ideal world: test", means["ideal"], metric, ideal_c, "--")]
        for what, m, col, color, ls in lines:
            if m.empty:
                continue
            x, y = m["step"].to_numpy(float), m[col].to_numpy(float)
            top.plot(x, y, ls=ls, color=color, lw=1.5, label=what)
            band = m[f"{col}_sem"].to_numpy(float) * t975(m["seeds"].to_numpy())
            ok = np.isfinite(band)
            if ok.any() and col == metric:
                top_clip = 1 if metric.endswith("error") else None  # errors are fractions; losses are not
                top.fill_between(x, np.clip(np.where(ok, y - band, y), 0, top_clip),
                                 np.clip(np.where(ok, y + band, y), 0, top_clip),
                                 color=color, alpha=0.15, lw=0)
        both = means["real"][["step", metric]].merge(means["ideal"][["step", metric]], on="step",
                                                    suffixes=("_real", "_ideal"))
        bottom.axhline(0, color="0.5", lw=0.8)
        if not both.empty:
            bottom.plot(both["step"], both[f"{metric}_real"] - both[f"{metric}_ideal"], color="0.2", lw=1.4)
        else:
            bottom.text(0.5, 0.5, "no real/ideal pair", transform=bottom.transAxes, ha="center", fontsize=8)
        for ax in (top, bottom):
            ax.set_xscale("log")
            plain_log_ticks(ax.xaxis)
            ax.grid(alpha=0.3)
        if facet:
            top.set_title(fmt_level(facet, panel), fontsize=10)
        bottom.set_xlabel("steps")
        if i % ncols == 0:
            top.set_ylabel(label(metric).replace("test ", "") if metric.startswith("test_") else label(metric))
            bottom.set_ylabel("gap\n(real - ideal)")
    handles, labels = grid[0, 0].get_legend_handles_labels()
    if handles:
        grid[0, 0].legend(handles, labels, fontsize=7.5)
    fig.suptitle(f"{name + ': ' if name else ''}Deep Bootstrap: real world (n samples, many epochs) vs ideal "
                 f"world (fresh samples every step)\n{label(metric)} on clean test labels, {label(train_metric)} on "
                 f"the noisy labels trained on; seed means, bands: 95% CI over seeds", fontsize=9.5)
    return fig
