"""Curves: test and train error against an axis, seed mean with a band, one colour per noise level."""

from __future__ import annotations

from pathlib import Path

from ddsweep.analysis import at_epoch, seed_mean
from ddsweep.analysis.frames import check_columns, pick_sweep
from ddsweep.errors import UserError
from ddsweep.plot.heatmap import LABELS, _fmt_level
from ddsweep.plot.style import check_out, is_geometric, plain_log_ticks, save, setup


def curve(db="results.duckdb", sweep: str | None = None, x: str = "width", epoch: int | None = None,
          hue: str = "label_noise", out="curve.png") -> Path:
    """Final-epoch (or `epoch`) test and train error against x; against epoch it plots whole runs."""
    from ddsweep.api import load_metrics

    plt = setup()
    import seaborn as sns

    out = check_out(out)
    name = pick_sweep(db, sweep)
    df = load_metrics(db, name)
    if df.empty:
        raise UserError(f"{db}: sweep {name} has no metric rows yet; run `ddsweep work --db {db}` first")
    check_columns(df, x=x, hue=hue)
    if x != "epoch":
        df = at_epoch(df, epoch)
    else:
        df = df[df["epoch"] > 0]
    levels = sorted(df[hue].dropna().unique())
    colors = sns.color_palette("colorblind", len(levels))
    fig, ax = plt.subplots(figsize=(6.2, 4.0), constrained_layout=True)
    for color, level in zip(colors, levels):
        m = seed_mean(df[df[hue] == level], [x], ["test_error", "train_error"]).sort_values(x)
        tag = f"{LABELS.get(hue, hue)} {_fmt_level(hue, level)}"
        for metric, style in (("test_error", "-"), ("train_error", "--")):
            ax.plot(m[x], m[metric], style, color=color, marker="o" if style == "-" else None, ms=3,
                    label=f"{metric.split('_')[0]} ({tag})")
            band = m[f"{metric}_sem"].fillna(0) * 1.96
            ax.fill_between(m[x], m[metric] - band, m[metric] + band, color=color, alpha=0.15, lw=0)
    if x == "epoch" or is_geometric(df[x]):
        ax.set_xscale("log")
        plain_log_ticks(ax.xaxis)
    ax.set_xlabel(LABELS.get(x, x))
    ax.set_ylabel("error (clean test labels)")
    when = "last epoch" if epoch is None else f"epoch {epoch}"
    ax.set_title(f"{name}: error vs {LABELS.get(x, x)}" + ("" if x == "epoch" else f" at {when}"), fontsize=11)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save(fig, out)
