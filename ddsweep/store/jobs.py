"""What the store does with jobs: plan them, claim them, record their events.

Every function takes an open connection from `Store.write()` / `Store.read()`, so a
caller groups several of them into one short transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from ddsweep.grid import Job

METRIC_COLUMNS = ("job_id", "epoch", "step", "train_loss", "train_error", "train_error_clean",
                  "noisy_fit", "test_loss", "test_error", "lr", "seconds")
TERMINAL = ("done", "failed", "diverged")


@dataclass
class PlanCounts:
    new: int
    existing: int
    extended: int  # planned before, now with a longer horizon
    total: int
    total_epochs: int


def _job_row(job: Job) -> dict:
    c = job.config
    t = c["train"]
    return {
        "job_id": job.job_id, "sweep": job.sweep, "status": "pending",
        "dataset": c["dataset"]["name"], "model": c["model"]["name"], "depth": c["model"]["depth"],
        "width": c["width"], "n_train": c["n_train"], "label_noise": c["label_noise"], "seed": c["seed"],
        "epochs": job.epochs, "horizons": json.dumps(list(job.horizons)),
        "optimizer": t["optimizer"], "lr": t["lr"], "momentum": t["momentum"],
        "weight_decay": t["weight_decay"], "batch_size": t["batch_size"], "loss": t["loss"],
        "pack_key": job.pack_key, "config": json.dumps(c, sort_keys=True),
    }


def _insert_rows(conn, table: str, rows: list[dict], columns, ignore_existing: bool = False) -> None:
    """Bulk insert: one statement, each column passed as a list and unnested (fast, no pandas scan)."""
    if not rows:
        return
    columns = list(columns)
    params = {f"c{i}": [r.get(c) for r in rows] for i, c in enumerate(columns)}
    select = ", ".join(f"unnest($c{i}) AS {c}" for i, c in enumerate(columns))
    verb = "INSERT OR IGNORE INTO" if ignore_existing else "INSERT INTO"
    conn.connection.driver_connection.execute(f"{verb} {table} BY NAME SELECT {select}", params)


def add_jobs(conn, sweep: str, grid_path: str, grid_yaml: str, jobs: list[Job]) -> PlanCounts:
    """Insert new jobs; widen the horizon of planned ones. Idempotent."""
    conn.exec_driver_sql(
        "INSERT INTO sweeps (name, grid_path, grid_yaml) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET grid_path = excluded.grid_path, grid_yaml = excluded.grid_yaml, "
        "updated_at = now()", (sweep, grid_path, grid_yaml))
    existing = {r[0]: (r[1], json.loads(r[2] or "[]"), r[3]) for r in conn.exec_driver_sql(
        "SELECT job_id, epochs, horizons, status FROM jobs WHERE sweep = ?", (sweep,))}
    new_rows, extended = [], 0
    for job in jobs:
        if job.job_id not in existing:
            new_rows.append(_job_row(job))
            continue
        epochs, horizons, status = existing[job.job_id]
        merged = sorted(set(horizons) | set(job.horizons))
        if merged != sorted(horizons):
            extended += 1
            new_epochs = max(merged)
            # a finished job with a longer horizon continues from its final checkpoint
            reopen = status == "done" and new_epochs > epochs
            conn.exec_driver_sql(
                "UPDATE jobs SET epochs = ?, horizons = ?, status = CASE WHEN ? THEN 'pending' ELSE status END, "
                "finished_at = CASE WHEN ? THEN NULL ELSE finished_at END WHERE job_id = ?",
                (new_epochs, json.dumps(merged), reopen, reopen, job.job_id))
    if new_rows:
        _insert_rows(conn, "jobs", new_rows, new_rows[0].keys())
    total, total_epochs = conn.exec_driver_sql(
        "SELECT count(*), coalesce(sum(epochs), 0) FROM jobs WHERE sweep = ?", (sweep,)).fetchone()
    return PlanCounts(len(new_rows), len(jobs) - len(new_rows), extended, int(total), int(total_epochs))


def reclaim_expired(conn, lease_seconds: float) -> int:
    """Jobs whose coordinator stopped heartbeating go back to pending; returns how many."""
    rows = conn.exec_driver_sql(
        "UPDATE jobs SET status = 'pending', lease_owner = NULL WHERE status = 'running' "
        f"AND (heartbeat_at IS NULL OR heartbeat_at < current_timestamp - INTERVAL {float(lease_seconds)} SECOND) "
        "RETURNING job_id").fetchall()
    return len(rows)


def claim(conn, owner: str, max_jobs: int, sweep: str | None = None) -> list[dict]:
    """Lease up to max_jobs pending jobs (whole packs first) to `owner`; returns them."""
    where, args = "status = 'pending'", []
    if sweep:
        where += " AND sweep = ?"
        args.append(sweep)
    rows = conn.exec_driver_sql(
        f"SELECT job_id FROM jobs WHERE {where} ORDER BY sweep, pack_key, created_at, job_id LIMIT ?",
        (*args, max_jobs)).fetchall()
    if not rows:
        return []
    ids = [r[0] for r in rows]
    marks = ",".join("?" * len(ids))
    claimed = conn.exec_driver_sql(
        f"UPDATE jobs SET status = 'running', lease_owner = ?, heartbeat_at = current_timestamp, "
        f"started_at = coalesce(started_at, current_timestamp), attempts = attempts + 1 "
        f"WHERE job_id IN ({marks}) AND status = 'pending' "
        f"RETURNING job_id, sweep, config, epochs, horizons, pack_key, attempts",
        (owner, *ids)).fetchall()
    return [{"job_id": r[0], "sweep": r[1], "config": json.loads(r[2]), "epochs": r[3],
             "horizons": json.loads(r[4]), "pack_key": r[5], "attempts": r[6]} for r in claimed]


def pending_count(conn, sweep: str | None = None) -> int:
    sql, args = "SELECT count(*) FROM jobs WHERE status = 'pending'", ()
    if sweep:
        sql, args = sql + " AND sweep = ?", (sweep,)
    return conn.exec_driver_sql(sql, args).fetchone()[0]


def apply_events(conn, owner: str, events: list[dict]) -> None:
    """Record worker events (metric rows, progress, job ends) in one transaction; idempotent."""
    rows = {(r["job_id"], r["epoch"]): r for e in events if e["kind"] == "metrics" for r in e["rows"]}
    _insert_rows(conn, "metrics", list(rows.values()), METRIC_COLUMNS, ignore_existing=True)  # keyed by (job_id, epoch)
    progress = {}
    for e in events:
        if e["kind"] == "progress":
            for jid in e["job_ids"]:
                progress[jid] = max(progress.get(jid, 0), e["epoch"])
    for jid, epoch in progress.items():
        conn.exec_driver_sql("UPDATE jobs SET epochs_done = greatest(epochs_done, ?) WHERE job_id = ?",
                             (epoch, jid))
    for e in events:
        kind = e["kind"]
        if kind == "finished":
            conn.exec_driver_sql(
                "UPDATE jobs SET status = ?, error = ?, finished_at = current_timestamp, lease_owner = NULL, "
                "epochs_done = CASE WHEN ? = 'done' THEN epochs ELSE epochs_done END WHERE job_id = ?",
                (e["status"], e.get("error"), e["status"], e["job_id"]))
        elif kind == "released":  # stopped before the end (Ctrl-C): back to the queue
            conn.exec_driver_sql(
                "UPDATE jobs SET status = 'pending', lease_owner = NULL "
                "WHERE job_id = ? AND status = 'running' AND lease_owner = ?", (e["job_id"], owner))
    conn.exec_driver_sql("UPDATE jobs SET heartbeat_at = current_timestamp "
                         "WHERE lease_owner = ? AND status = 'running'", (owner,))


def status_table(conn, sweep: str | None = None) -> pd.DataFrame:
    """Jobs per sweep and status, with epochs done and planned."""
    sql = ("SELECT sweep, count(*) AS jobs, "
           "count(*) FILTER (WHERE status = 'pending') AS pending, "
           "count(*) FILTER (WHERE status = 'running') AS running, "
           "count(*) FILTER (WHERE status = 'done') AS done, "
           "count(*) FILTER (WHERE status = 'failed') AS failed, "
           "count(*) FILTER (WHERE status = 'diverged') AS diverged, "
           "sum(epochs_done) AS epochs_done, sum(epochs) AS epochs "
           "FROM jobs {where} GROUP BY sweep ORDER BY sweep")
    args = (sweep,) if sweep else ()
    return _frame(conn, sql.format(where="WHERE sweep = ?" if sweep else ""), args)


def _frame(conn, sql: str, args=()) -> pd.DataFrame:
    result = conn.exec_driver_sql(sql, tuple(args))
    return pd.DataFrame(result.fetchall(), columns=list(result.keys()))
