"""Tidy frames for maps and curves: one row per job and evaluated epoch, then aggregated."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ddsweep.axes import CELL_AXES
from ddsweep import where as where_filter
from ddsweep.errors import UserError
from ddsweep.suggest import hint, no_such_column, not_evaluated


@dataclass
class Reduced:
    """A sweep already reduced (in the database: ddsweep.store.results.reduce) to what a summary,
    an EMC table or a figure reads, instead of all its rows.

    rows:   each job's row at the epoch read (its last, or the one asked for), with its axes;
    curves: seed means per cell (every varying cell axis, plus label noise, n, width) and
            evaluated epoch: `epoch_curves` of all rows, or None;
    best:   per cell, the epoch of least seed-mean `best_select` (default: `best_metric`) up to
            `best_until`, with `best_metric` there (`early_stopped` of all rows), or None.
    The functions below take a Reduced wherever they take a frame of rows, and give the same.
    """

    rows: pd.DataFrame
    curves: pd.DataFrame | None = None
    best: pd.DataFrame | None = None
    best_metric: str = "test_error"
    best_until: int | None = None
    best_select: str | None = None


def rows_of(df) -> pd.DataFrame:
    """The metric rows of a frame or a Reduced (a Reduced's: one per job)."""
    return df.rows if isinstance(df, Reduced) else df


def _cells_of(red: Reduced, keys, what: str) -> None:
    """A Reduced's tables are per cell: `keys` must split at least as finely (every varying axis)."""
    missing = set(free_axes(red.rows, keys))
    if missing or red.curves is None and what == "curves" or red.best is None and what == "best":
        raise ValueError(f"this Reduced has no {what} by {list(keys)} (it splits by every varying cell axis)")


def check_metric(name: str, option: str = "--metric") -> str:
    """`name` if it is a stored per-epoch metric (as load_metrics names it), else a one-line UserError."""
    from ddsweep.axes import METRICS

    names = [m.column for m in METRICS if m.name != "step"]
    if name not in names:
        raise UserError(f"{option} {name}: not a stored metric{hint(name, names)}")
    return name


def check_columns(df: pd.DataFrame, **named) -> None:
    for option, col in named.items():
        if col is not None and col not in df.columns:
            if option == "metric":  # (a figure's frame holds the metric asked for only: name the stored ones)
                check_metric(col)
            raise UserError(no_such_column(f"--{option}", col, df.columns))


def final_epoch(df: pd.DataFrame) -> pd.DataFrame:
    """Each job's row at its horizon (its last evaluated epoch)."""
    return df.loc[df.groupby("job_id")["epoch"].idxmax()]


def at_epoch(df: pd.DataFrame, epoch: int | None) -> pd.DataFrame:
    """Rows at `epoch` (None: each job's last evaluated epoch)."""
    if epoch is None:
        return final_epoch(df)
    rows = df[df["epoch"] == epoch]
    if rows.empty:
        raise UserError(not_evaluated(epoch, df["epoch"].unique()))
    return rows


def seed_mean(df: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean (and standard error, count) of metrics over seeds, per cell of `by`."""
    g = df.groupby(by, dropna=False)[metrics]
    mean = g.mean()
    sem = g.sem().add_suffix("_sem")
    count = g.size().rename("seeds")
    return pd.concat([mean, sem, count], axis=1).reset_index()


def varying_axes(df: pd.DataFrame) -> list[str]:
    """The cell axes that take more than one value in df (in the order of ddsweep.axes).

    (Cell axes tell one cell of a grid from another, seed aside: a curve or a map is
    drawn over one or two of them with every other varying axis held fixed.)
    """
    return [a for a in CELL_AXES if a in df.columns and df[a].nunique(dropna=False) > 1]


def linked_axes(df: pd.DataFrame, axis: str) -> list[str]:
    """The varying cell axes whose values go one-to-one with `axis`'s in df.

    That is what a linked group of a grid (`grid.zip`: batch size with lr and warmup)
    gives: each value of one comes with exactly one value of the other, so a curve over
    `axis` is a curve over them too, and they are neither fixed nor split into panels.
    (Read from the rows, not the grid: a crossed grid with only its diagonal finished
    looks linked too; plots name the linked axes beside the x axis.)
    """
    if axis not in CELL_AXES or axis not in df.columns or df[axis].nunique(dropna=False) < 2:
        return []
    out = []
    for other in varying_axes(df):
        if other == axis:
            continue
        pairs = len(df[[axis, other]].drop_duplicates())
        if pairs == df[axis].nunique(dropna=False) == df[other].nunique(dropna=False):
            out.append(other)
    return out


def free_axes(df: pd.DataFrame, taken) -> list[str]:
    """What a figure over the axes `taken` must still fix or split into panels: the other varying
    cell axes, less those linked one-to-one with a taken one, and one axis per linked group."""
    taken = [t for t in taken if t is not None]
    out: list[str] = []
    moved = {a for t in taken for a in linked_axes(df, t)}
    for a in varying_axes(df):
        if a not in taken and a not in moved:
            out.append(a)
            moved.update(linked_axes(df, a))
    return out


def parse_where(items) -> dict[str, list]:
    """`["width=43", "n_train=1000,2000", "width>=8", "lr=0.01..0.1"]` -> a filter (see ddsweep.where)."""
    return where_filter.parse_where(items)


def apply_where(df: pd.DataFrame, where: dict | None) -> pd.DataFrame:
    """Keep rows whose columns take the given values (numbers compared with a relative tolerance) and satisfy
    the comparisons and ranges (ddsweep.where)."""
    rtol, atol = where_filter.TOLERANCE
    for col, values in (where or {}).items():
        if col not in df.columns:
            raise UserError(no_such_column("--where", col, df.columns))
        plain, conds = where_filter.split(values)
        s = df[col]
        keep = np.ones(len(df), dtype=bool)
        if plain and s.dtype.kind in "iuf":
            try:
                wanted = np.array([float(v) for v in plain])
            except ValueError:
                raise UserError(f"--where {col}={','.join(map(str, plain))}: {col} is numeric") from None
            x = s.to_numpy(dtype=float)
            keep = np.isclose(x[:, None], wanted[None, :], rtol=rtol, atol=atol).any(axis=1)
        elif plain:
            keep = s.astype(str).isin([str(v) for v in plain]).to_numpy()
        for cond in conds:
            keep &= np.array([where_filter.holds(cond, v) for v in s.tolist()], dtype=bool)
        if not keep.any():
            have = ", ".join(_fmt_value(v) for v in sorted(s.dropna().unique()))
            raise UserError(f"--where {where_filter.describe(col, values)}: no such value (values: {have})")
        df = df[keep]
    return df


def _fmt_value(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def epoch_curves(df: pd.DataFrame | Reduced, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """Seed means per cell of `keys` and evaluated epoch (the SQL view `curves`, in pandas)."""
    if isinstance(df, Reduced):
        _cells_of(df, keys, "curves")
        cols = list(keys) + ["epoch"] + list(metrics) + [f"{m}_sem" for m in metrics] + ["seeds"]
        return df.curves[cols]
    return seed_mean(df, list(keys) + ["epoch"], metrics)


def final_means(df: pd.DataFrame | Reduced, keys: list[str], metrics: list[str],
                epoch: int | None = None) -> pd.DataFrame:
    """Seed means per cell at `epoch` (None: each job's last epoch), with the epoch read.

    At the last epoch, jobs of one cell may stop at different horizons; the cell's
    `epoch` is then the largest of them.
    """
    rows = df.rows if isinstance(df, Reduced) else at_epoch(df, epoch)  # (a Reduced's rows: at that epoch)
    m = seed_mean(rows, list(keys), metrics)
    ep = rows.groupby(list(keys), dropna=False)["epoch"].max().rename("epoch").reset_index()
    return m.merge(ep, on=list(keys), how="left")


# `--select-on`: the set whose seed-mean error chooses the early-stopping epoch (the metric it minimises)
SELECT_ON = {"test": "test_error", "val": "val_error"}


def selector(select_on: str) -> str | None:
    """The metric `--select-on SET` minimises to choose an epoch (None: the reported test error itself)."""
    if select_on not in SELECT_ON:
        raise UserError(f"--select-on {select_on}: choose {' or '.join(SELECT_ON)}")
    return None if select_on == "test" else SELECT_ON[select_on]


def early_stopped(df: pd.DataFrame | Reduced, keys: list[str], metric: str = "test_error",
                  epoch: int | None = None, select: str | None = None) -> pd.DataFrame:
    """"Optimal early stopping": per cell, the minimum over epochs of the seed-mean `metric`.

    Taken on the seed mean (not per seed, which would pick each seed's luckiest
    epoch); `{metric}_sem` and `seeds` are those of the best epoch, `best_epoch` is it.
    With `epoch`, only epochs up to it count. With `select` (e.g. val_error, the validation
    split's), the epoch is the one of least seed-mean `select` and `metric` is read there:
    early stopping chosen on held-out data, not on the test set it reports.
    """
    select = None if select == metric else select
    if isinstance(df, Reduced):
        _cells_of(df, keys, "best")
        if (df.best_metric, df.best_until, df.best_select) != (metric, epoch, select):
            raise ValueError(f"this Reduced stopped early on {df.best_metric} (chosen on {df.best_select}) up to "
                             f"{df.best_until}, not {metric} (chosen on {select}) up to {epoch}")
        return df.best[list(keys) + ["best_epoch", metric, f"{metric}_sem", "seeds"]]
    rows = df if epoch is None else df[df["epoch"] <= epoch]
    if select is not None and (select not in rows.columns or rows[select].isna().all()):
        raise UserError(f"no {select} in these runs: give the sweep's dataset a validation split "
                        "(dataset: {val: N}) to select on it")
    chooser = select or metric
    m = epoch_curves(rows, keys, [metric] + ([select] if select else []))
    m = m[m[chooser].notna()]
    best = m.loc[m.groupby(list(keys), dropna=False)[chooser].idxmin()]
    if select:
        best = best.drop(columns=[select, f"{select}_sem"])
    return best.rename(columns={"epoch": "best_epoch"}).reset_index(drop=True)


# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom (95% intervals).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(seeds):
    """The t quantile for a 95% interval of a mean of `seeds` runs (NaN for one run)."""
    n = np.asarray(seeds, dtype=float)
    dof = n - 1
    table = np.array((np.nan,) + _T975)
    out = np.where(dof > 30, 1.96, table[np.clip(dof, 0, 30).astype(int)])
    return np.where(dof >= 1, out, np.nan)


DATASET_CLASSES = {"mnist1d": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10, "cifar100": 100,
                   "cifar5m": 10, "svhn": 10}


def noisy_test_error(error, label_noise, classes: int):
    """Clean test error e -> error on the noisy test distribution: p + e(1 - pC/(C-1)).

    (Deep Double Descent, Fig. 1; labels flipped with probability p to a uniformly
    random *incorrect* class out of C.) The authors' notebook used p + e(1 - 8p/9)
    for C = 10; ddsweep uses the exact form.
    """
    p = label_noise
    return p + error * (1 - p * classes / (classes - 1))


def classes_of(df: pd.DataFrame, classes: int | None = None) -> int:
    """Number of classes for the noisy-test transform: given, or known from the dataset column."""
    if classes is not None:
        if classes < 2:
            raise UserError(f"--classes {classes}: need at least 2 classes")
        return int(classes)
    names = sorted(df["dataset"].dropna().unique()) if "dataset" in df.columns else []
    known = {DATASET_CLASSES.get(str(n)) for n in names}
    if len(names) >= 1 and len(known) == 1 and None not in known:
        return known.pop()
    raise UserError(f"--noisy-test: number of classes unknown for dataset {', '.join(map(str, names)) or '(none)'}; "
                    "pass --classes C")
