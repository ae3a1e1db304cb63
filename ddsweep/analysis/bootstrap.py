"""The Deep Bootstrap numbers (Nakkiran, Neyshabur, Sedghi 2021): how far the real world's test
error strays from the ideal world's, before and after the real world fits its training set.

Runs pair up when they differ only in `world` (real: n samples reused for many epochs;
ideal: fresh samples every step) and are averaged over seeds first. Per pair and per
test metric (test_soft_error where recorded, the paper's headline; test_error always):

- fit_step: the first evaluated step at which the real world's train error (on the
  noisy labels it trains on) is below `fit` (1%): it has fitted its samples; None if never.
- max_gap: real minus ideal at the evaluated step, among the steps where the real world's
  train error is still above `fit`, where |real - ideal| is largest (max_gap_step: that
  step). The paper's claim is that this stays small.
- end_gap: real minus ideal at the last step both worlds were evaluated at (end_step),
  with real_end and ideal_end.

Pure functions of a frame shaped like `ddsweep.load_metrics()`; no database, no torch.
"""

from __future__ import annotations

import math

import pandas as pd

from ddsweep.analysis.frames import seed_mean, varying_axes
from ddsweep.errors import UserError
from ddsweep.suggest import no_such_column

FIT = 0.01  # the real world has fitted its samples once its train error is below this
METRICS = ("test_soft_error", "test_error")


class NoWorldPairs(UserError):
    """The sweep has no runs in both worlds: there is no bootstrap to summarise."""


def has_both_worlds(df: pd.DataFrame) -> bool:
    return "world" in df.columns and {"real", "ideal"} <= set(df["world"].dropna().unique())


def bootstrap_summary(df: pd.DataFrame, fit: float = FIT, metrics: tuple[str, ...] | None = None) -> pd.DataFrame:
    """One row per real/ideal pair and test metric (see the module docstring)."""
    if not has_both_worlds(df):
        have = ", ".join(sorted(df["world"].dropna().unique())) if "world" in df.columns else "none"
        raise NoWorldPairs(f"the bootstrap summary needs runs in both worlds (this sweep has: {have}); "
                        "add the axis `world: [real, ideal]` to its grid")
    if metrics is None:
        metrics = tuple(m for m in METRICS if m in df.columns and df[m].notna().any())
    for m in metrics:
        if m not in df.columns:
            raise UserError(no_such_column("--metric", m, df.columns))
    keys = [a for a in varying_axes(df) if a != "world"]
    means = seed_mean(df, keys + ["world", "step"], ["train_error", *metrics])
    rows = []
    for key, cell in (means.groupby(keys, dropna=False, sort=True) if keys else [((), means)]):
        ctx = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        real = cell[cell["world"] == "real"].set_index("step").sort_index()
        ideal = cell[cell["world"] == "ideal"].set_index("step").sort_index()
        if real.empty or ideal.empty:
            continue
        fitted = real.index[real["train_error"] < fit]
        fit_step = int(fitted[0]) if len(fitted) else None
        for metric in metrics:
            both = pd.DataFrame({"real": real[metric], "ideal": ideal[metric],
                                 "real_train": real["train_error"]}).dropna(subset=["real", "ideal"])
            if both.empty:
                continue
            gap = both["real"] - both["ideal"]
            before = gap[both["real_train"] >= fit] if fit_step is None else gap[gap.index < fit_step]
            at = before.abs().idxmax() if len(before) else None
            end = both.index.max()
            rows.append({**ctx, "metric": metric, "fit": fit, "fit_step": fit_step,
                         "real_train_end": float(real["train_error"].loc[end]) if end in real.index else math.nan,
                         "max_gap": float(before.loc[at]) if at is not None else math.nan,
                         "max_gap_step": int(at) if at is not None else None,
                         "end_step": int(end), "end_gap": float(gap.loc[end]),
                         "real_end": float(both["real"].loc[end]), "ideal_end": float(both["ideal"].loc[end]),
                         "seeds": int(min(real["seeds"].min(), ideal["seeds"].min()))})
    if not rows:
        raise UserError("no real/ideal pair to summarise: no cell has runs in both worlds at common steps")
    return pd.DataFrame(rows)


def _num(v, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.{digits}f}"


def describe_bootstrap(row, keys: list[str]) -> str:
    """One line per pair and metric, e.g. 'width=64: test_soft_error: ...'."""
    where = ", ".join(f"{k}={row[k]:g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in keys)
    head = f"{where + ': ' if where else ''}{row['metric']} real - ideal: "
    fit = f"{row['fit'] * 100:g}%"
    if row["fit_step"] is None or (isinstance(row["fit_step"], float) and math.isnan(row["fit_step"])):
        fitted = f"the real world's train error never fell below {fit} (at the end {row['real_train_end']:.3f}); "
        before = "largest gap"
    else:
        fitted = f"the real world's train error first < {fit} at step {int(row['fit_step'])}; "
        before = "largest gap before it"
    if row["max_gap_step"] is None or (isinstance(row["max_gap_step"], float) and math.isnan(row["max_gap_step"])):
        gap = f"{before}: n/a (fitted by the first evaluation); "
    else:
        gap = f"{before} {_num(row['max_gap'])} (step {int(row['max_gap_step'])}); "
    end = (f"at the end (step {int(row['end_step'])}) {_num(row['end_gap'])} "
           f"(real {row['real_end']:.3f}, ideal {row['ideal_end']:.3f}; {int(row['seeds'])} seed(s))")
    return head + fitted + gap + end


def describe_all(table: pd.DataFrame) -> list[str]:
    keys = [c for c in table.columns if c not in (
        "metric", "fit", "fit_step", "real_train_end", "max_gap", "max_gap_step", "end_step", "end_gap", "real_end",
        "ideal_end", "seeds")]
    return [describe_bootstrap(r, keys) for _, r in table.iterrows()]
