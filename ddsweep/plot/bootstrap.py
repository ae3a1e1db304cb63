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

`bootstrap_data` computes what is drawn (testable without drawing), `bootstrap_figure` draws it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ddsweep.analysis import free_axes, seed_mean
from ddsweep.analysis.frames import apply_where, check_columns, t975
from ddsweep.axes import METRIC
from ddsweep.errors import UserError
from ddsweep.plot.style import (axes_key, caption_text, check_out, finish, fmt_level, frame_or_db, label, new_figure,
                                options, set_scale, styled, title_text, title_with, where_text)
from ddsweep.store import results

__all__ = ["bootstrap", "bootstrap_figure", "bootstrap_data", "BootstrapData"]

MAX_PANELS = 12


def bootstrap(data="results.duckdb", sweep: str | None = None, out=None, where: dict | None = None,
              facet: str | None = None, metric: str = "test_error", ax=None, dpi: int | None = None, size=None,
              title=None, style: str | None = None):
    """Draw the real-vs-ideal figure of a sweep with both worlds (see the module docstring).

    `data`: a database path or a metric frame (as `load_metrics` returns). Returns the matplotlib
    Figure; writes it to `out` only when given; `ax`: one Axes (the curves, no gap panel) or a
    pair (curves, gap), for one panel. dpi, size (inches), title (text or False), style (lab, paper, talk)."""
    opts = options(dpi, size, title, style)
    if out is not None:
        check_out(out)
    if frame_or_db(data):
        name, df, shown = "", data, None
    else:
        twin = "train_" + metric.removeprefix("test_")
        wanted = ("step", metric, "train_error", *((twin,) if twin in METRIC and twin != metric else ()), facet)
        name, df = results.sweep_frame(data, sweep, where, metrics=tuple(dict.fromkeys(c for c in wanted if c)))
        shown, where = where, None  # (applied in the database; still said in the title)
    fig = bootstrap_figure(df, name, facet=facet, metric=metric, where=where, ax=ax, opts=opts, where_shown=shown)
    return finish(fig, out, opts)


def train_counterpart(metric: str, columns) -> str:
    """The train-side metric drawn beside a test metric: train_X for test_X where recorded, else train_error."""
    twin = "train_" + metric.removeprefix("test_")
    return twin if metric.startswith("test_") and twin in columns else "train_error"


@dataclass
class BootstrapData:
    """Per panel (a value of `facet`, or None): the seed means per step of each world, and the gap."""

    metric: str
    train_metric: str
    facet: str | None
    means: dict  # panel -> {"real": frame, "ideal": frame} (step, metric, train metric, _sem, seeds)
    gaps: dict  # panel -> frame: step, gap (real - ideal test metric at equal steps)
    seeds: int = 1
    fixed: dict = field(default_factory=dict)


def bootstrap_data(df: pd.DataFrame, where: dict | None = None, facet: str | None = None,
                   metric: str = "test_error") -> BootstrapData:
    """What the Deep Bootstrap figure draws, from a metric frame."""
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
    fixed = {}
    if facet is not None and len(panels) == 1:
        fixed[facet], facet, panels = panels[0], None, [None]
    if "label_noise" != facet and "label_noise" in df.columns and df["label_noise"].nunique() == 1:
        fixed.setdefault("label_noise", df["label_noise"].iloc[0])
    cols = list(dict.fromkeys([metric, train_metric]))
    means, gaps, seeds = {}, {}, 1
    for panel in panels:
        sub = df if facet is None else df[df[facet] == panel]
        m = {w: seed_mean(sub[sub["world"] == w], ["step"], cols).sort_values("step") for w in ("real", "ideal")}
        both = m["real"][["step", metric]].merge(m["ideal"][["step", metric]], on="step", suffixes=("_real", "_ideal"))
        means[panel] = m
        gaps[panel] = pd.DataFrame({"step": both["step"], "gap": both[f"{metric}_real"] - both[f"{metric}_ideal"]})
        seeds = max([seeds] + [int(f["seeds"].max()) for f in m.values() if not f.empty])
    return BootstrapData(metric, train_metric, facet, means, gaps, seeds, fixed)


def bootstrap_figure(df: pd.DataFrame, name: str = "", where: dict | None = None, facet: str | None = None,
                     metric: str = "test_error", ax=None, opts=None, where_shown: dict | None = None,
                     **figure_options):
    """The figure behind `bootstrap`, from a metric frame (as `load_metrics` returns): a Figure.
    figure_options: dpi, size, title, style."""
    data = bootstrap_data(df, where=where, facet=facet, metric=metric)
    opts = opts or options(**figure_options)
    with styled(opts, ax):
        return _draw(data, name, ax, opts, where_shown or where)


def _draw(d: BootstrapData, name, ax, opts, where):
    import seaborn as sns

    real_c, ideal_c = sns.color_palette("colorblind", 2)
    panels = list(d.means)
    if ax is not None:
        if len(panels) > 1:
            raise UserError(f"ax= draws one panel, this figure has {len(panels)} (one per {d.facet}); fix it "
                            "with where= or leave out ax=")
        pair = list(ax) if isinstance(ax, (list, tuple, np.ndarray)) else [ax]
        fig = pair[0].figure
        grid = np.array([[pair[0]], [pair[1] if len(pair) > 1 else None]], dtype=object)
        ncols = 1
    else:
        ncols = min(len(panels), 4)
        nblocks = -(-len(panels) // ncols)
        fig, grid = new_figure(opts, (3.9 * ncols + 1.2, 4.3 * nblocks + 1.0), 2 * nblocks, ncols, sharex="col",
                               gridspec_kw={"height_ratios": [3, 1.3] * nblocks})
        for i in range(len(panels), nblocks * ncols):
            grid[2 * (i // ncols), i % ncols].set_axis_off()
            grid[2 * (i // ncols) + 1, i % ncols].set_axis_off()
    ylabel = label(d.metric).replace("test ", "") if d.metric.startswith("test_") else label(d.metric)
    handles = labels = None
    for i, panel in enumerate(panels):
        top, bottom = grid[2 * (i // ncols), i % ncols], grid[2 * (i // ncols) + 1, i % ncols]
        m = d.means[panel]
        lines = [("real world: test", m["real"], d.metric, real_c, "-"),
                 ("real world: train", m["real"], d.train_metric, real_c, ":"),
                 ("ideal world: test", m["ideal"], d.metric, ideal_c, "--")]
        for what, f, col, color, ls in lines:
            if f.empty:
                continue
            x, y = f["step"].to_numpy(float), f[col].to_numpy(float)
            top.plot(x, y, ls=ls, color=color, label=what)
            band = f[f"{col}_sem"].to_numpy(float) * t975(f["seeds"].to_numpy())
            ok = np.isfinite(band)
            if ok.any() and col == d.metric:
                top_clip = 1 if d.metric.endswith("error") else None  # errors are fractions; losses are not
                top.fill_between(x, np.clip(np.where(ok, y - band, y), 0, top_clip),
                                 np.clip(np.where(ok, y + band, y), 0, top_clip), color=color, alpha=0.15, lw=0)
        if bottom is not None:
            gap = d.gaps[panel]
            bottom.axhline(0, color="0.5", lw=0.8)
            if not gap.empty:
                bottom.plot(gap["step"], gap["gap"], color="0.2")
            else:
                bottom.text(0.5, 0.5, "no real/ideal pair", transform=bottom.transAxes, ha="center",
                            fontsize="small")
        for a in (top, bottom):
            if a is not None:
                set_scale(a, "x", "symlog", top=max(f["step"].max() for f in m.values() if not f.empty))
                a.grid(alpha=0.3)
        if d.facet:
            top.set_title(fmt_level(d.facet, panel), fontsize="medium")
        (bottom if bottom is not None else top).set_xlabel("steps")
        if i % ncols == 0:
            top.set_ylabel(ylabel)
            if bottom is not None:
                bottom.set_ylabel("gap\n(real - ideal)")
        if handles is None:
            handles, labels = top.get_legend_handles_labels()
    fixed = [fmt_level(a, v) for a, v in d.fixed.items()]
    where_note = where_text(where)
    title_text(opts, title_with("Deep Bootstrap: real vs ideal world", *fixed, where_note and f"where {where_note}"),
               fig=fig, ax=None if ax is None else grid[0, 0])
    notes = ([f"sweep {name}"] if name else []) + [
        "real world: n samples, many epochs; ideal world: fresh samples every step",
        f"{label(d.metric)} on clean test labels, {label(d.train_metric)} on the noisy labels trained on"
        + ("; seed means, bands: 95% CI over seeds" if d.seeds > 1 else "")]
    if ax is not None:
        if handles:
            axes_key(grid[1, 0] if grid[1, 0] is not None else grid[0, 0], handles, labels, ncols=3)
    else:
        caption_text(opts, fig, notes, handles or [], labels or [], ncols=3)
    return fig
