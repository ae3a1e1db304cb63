"""Tidy frames for maps and curves: one row per job and evaluated epoch, then aggregated."""

from __future__ import annotations

import pandas as pd

from ddsweep.errors import UserError

JOB_AXES = ("width", "n_train", "label_noise", "seed", "lr", "batch_size", "momentum", "weight_decay",
            "depth", "horizon")


def pick_sweep(db, sweep: str | None) -> str:
    """The sweep to draw: the one named, or the only one in the database."""
    from ddsweep.api import sweeps

    names = sweeps(db)
    if sweep is None:
        if len(names) != 1:
            raise UserError(f"{db}: holds sweeps {', '.join(names) or '(none)'}; choose one with --sweep")
        return names[0]
    if sweep not in names:
        raise UserError(f"--sweep {sweep}: no such sweep in {db} (sweeps: {', '.join(names) or 'none'})")
    return sweep


def check_columns(df: pd.DataFrame, **named) -> None:
    for option, col in named.items():
        if col is not None and col not in df.columns:
            raise UserError(f"--{option} {col}: no such column (columns: {', '.join(sorted(df.columns))})")


def final_epoch(df: pd.DataFrame) -> pd.DataFrame:
    """Each job's row at its horizon (its last evaluated epoch)."""
    return df.loc[df.groupby("job_id")["epoch"].idxmax()]


def at_epoch(df: pd.DataFrame, epoch: int | None) -> pd.DataFrame:
    """Rows at `epoch` (None: each job's last evaluated epoch)."""
    if epoch is None:
        return final_epoch(df)
    rows = df[df["epoch"] == epoch]
    if rows.empty:
        raise UserError(f"--epoch {epoch}: no job was evaluated at that epoch")
    return rows


def seed_mean(df: pd.DataFrame, by: list[str], metrics: list[str]) -> pd.DataFrame:
    """Mean (and standard error, count) of metrics over seeds, per cell of `by`."""
    g = df.groupby(by, dropna=False)[metrics]
    mean = g.mean()
    sem = g.sem().add_suffix("_sem")
    count = g.size().rename("seeds")
    return pd.concat([mean, sem, count], axis=1).reset_index()
