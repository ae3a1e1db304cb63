"""What the store does with jobs: plan them, claim them, record their events.

Every function takes an open connection from `Store.write()` / `Store.read()`, so a
caller groups several of them into one short transaction.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from operator import itemgetter

import duckdb
import numpy as np
import pandas as pd

from ddsweep.axes import AXES, METRIC, METRIC_COLUMNS, config_value
from ddsweep.errors import UserError
from ddsweep.grid import Job, train_recipe
from ddsweep.suggest import no_such_sweep
from ddsweep.workers.events import RETRYABLE, Event, Finished, JobStatus, Metrics, Progress, Released, Retry

# the statuses as SQL literals, for the statements below
PENDING, RUNNING, DONE, FAILED, DIVERGED = (s.sql for s in JobStatus)


@dataclass
class PlanCounts:
    new: int
    existing: int
    extended: int  # planned before, now with a longer horizon
    total: int
    total_epochs: int


def _job_row(job: Job) -> dict:
    """The `jobs` row of a planned job: bookkeeping plus every axis that is a jobs column (ddsweep.axes)."""
    c = job.config
    recipe = train_recipe(c)  # the knobs at their defaults where the hashed config leaves them out
    axes = {a.name: recipe[a.path[1]] if a.section == "train" else config_value(c, a.name) for a in AXES if a.job}
    if axes.get("depth") is None:  # a transformer's depth is its `layers` (encoder and decoder layers each)
        axes["depth"] = c["model"].get("layers")
    return {
        "job_id": job.job_id, "sweep": job.sweep, "status": JobStatus.PENDING.value, **axes,
        "epochs": job.epochs, "horizons": json.dumps(list(job.horizons)),
        "pack_key": job.pack_key, "config": json.dumps(c, sort_keys=True),
    }


def _insert_rows(conn, table: str, rows: list[dict], columns, ignore_existing: bool = False) -> None:
    """Bulk insert: one statement, each column passed as a list and unnested (fast, no pandas scan).
    (`ignore_existing`: INSERT OR IGNORE, for a table with a key; `metrics` has none, see _insert_new_metrics.)"""
    if not rows:
        return
    columns = list(columns)
    params = {f"c{i}": [r.get(c) for r in rows] for i, c in enumerate(columns)}
    select = ", ".join(f"unnest($c{i}) AS {c}" for i, c in enumerate(columns))
    verb = "INSERT OR IGNORE INTO" if ignore_existing else "INSERT INTO"
    conn.connection.driver_connection.execute(f"{verb} {table} BY NAME SELECT {select}", params)


def _insert_new_metrics(raw, source: str, params=None) -> None:
    """Insert the rows of `source` (a table, view or subquery with distinct (job_id, epoch)) whose
    (job_id, epoch) `metrics` does not hold yet, sorted by (job_id, epoch).

    `metrics` has no key (migration 0008: its index had become the cost of ingest), so the
    duplicate check is this anti-join: a row already stored wins, as INSERT OR IGNORE did, which
    is what makes replaying a journal after a crash harmless. Only the single writer (under the
    store's lock) inserts, so no other insert can come between the check and the write. The
    check reads the stored keys of the batch's jobs only, not every key: at 20M rows that was
    0.1 s of every flush, and grew with the table (0.025 s this way).
    """
    raw.execute(f"INSERT INTO metrics BY NAME WITH s AS (SELECT * FROM {source}) SELECT s.* FROM s "
                "ANTI JOIN (SELECT job_id, epoch FROM metrics WHERE job_id IN (SELECT job_id FROM s)) m "
                "ON m.job_id = s.job_id AND m.epoch = s.epoch ORDER BY s.job_id, s.epoch", params)


def insert_metrics(conn, rows: list[dict]) -> None:
    """Metric rows (dicts keyed by the `metrics` columns; absent keys are NULL); a (job_id, epoch)
    already stored is skipped (the stored row stays), one given twice here is stored once (its last copy).

    Column by column into typed arrays, then one insert from that frame (DuckDB scans it
    without converting row by row): 5x faster than unnesting Python lists, which matters
    at 100,000 rows a second. None is NULL; a batch holding a NaN metric (a diverging run)
    goes the slower way, which keeps NaN apart from NULL.
    """
    if not rows:
        return
    columns = _metric_columns(rows)
    keys = list(zip(columns["job_id"], columns["epoch"]))
    if len(set(keys)) < len(keys):  # a row seen twice (a replayed journal) is stored once: its last copy
        rows = [rows[i] for i in sorted({k: i for i, k in enumerate(keys)}.values())]
        columns = _metric_columns(rows)
    data = {}
    for c, values in columns.items():
        if c == "job_id":
            data[c] = np.array(values, dtype=object)
        elif c == "epoch" or METRIC[c].kind == "int":
            data[c] = pd.array(values, dtype="Int64")
        else:
            floats = np.array(values, dtype=np.float64)  # (None becomes NaN here ...)
            missing = np.isnan(floats)
            if int(missing.sum()) != values.count(None):  # (... and DuckDB reads a frame's NaN as NULL: keep NaN)
                params = {f"c{i}": [r.get(c) for r in rows] for i, c in enumerate(METRIC_COLUMNS)}
                select = ", ".join(f"unnest($c{i}) AS {c}" for i, c in enumerate(METRIC_COLUMNS))
                _insert_new_metrics(conn.connection.driver_connection, f"(SELECT {select})", params)
                return
            data[c] = pd.arrays.FloatingArray(floats, missing) if missing.any() else floats
    frame = pd.DataFrame(data)
    raw = conn.connection.driver_connection
    try:  # a statement of the caller's may have left its result unread (fetchone): it blocks register
        raw.fetchall()
    except duckdb.Error:
        pass
    raw.register("_ddsweep_metric_rows", frame)
    try:
        _insert_new_metrics(raw, "_ddsweep_metric_rows")
    finally:
        raw.unregister("_ddsweep_metric_rows")


def _metric_columns(rows: list[dict]) -> dict[str, list]:
    """The values of each `metrics` column the rows hold (a column no row has is left out: NULL).

    Rows of one batch come from one emitter and have the same keys; then each column is one
    C-level pass (`map(itemgetter)`: 3x faster than `r.get` in a comprehension, and no pass
    at all over the columns nobody sent). Rows with differing keys take the general way.
    """
    first = rows[0]
    names = [c for c in METRIC_COLUMNS if c in first]
    if set(map(len, rows)) == {len(first)}:  # (all of one length, all holding the first one's keys: the same keys)
        try:
            return {c: list(map(itemgetter(c), rows)) for c in names}
        except KeyError:
            pass
    present = set().union(*map(dict.keys, rows))
    return {c: [r.get(c) for r in rows] for c in METRIC_COLUMNS if c in present}


def add_jobs(conn, sweep: str, grid_path: str, grid_yaml: str, jobs: list[Job]) -> PlanCounts:
    """Insert new jobs; widen the horizon of planned ones. Idempotent."""
    conn.exec_driver_sql(
        "INSERT INTO sweeps (name, grid_path, grid_yaml) VALUES (?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET grid_path = excluded.grid_path, grid_yaml = excluded.grid_yaml, "
        "updated_at = now()", (sweep, grid_path, grid_yaml))
    existing = {r[0]: json.loads(r[1] or "[]") for r in conn.exec_driver_sql(
        "SELECT job_id, horizons FROM jobs WHERE sweep = ?", (sweep,))}
    new_rows, longer = [], []
    for job in jobs:
        if job.job_id not in existing:
            new_rows.append(_job_row(job))
            continue
        horizons = existing[job.job_id]
        merged = sorted(set(horizons) | set(job.horizons))
        if merged != sorted(horizons):
            longer.append((job.job_id, merged))
    _set_horizons(conn, longer)
    if new_rows:
        _insert_rows(conn, "jobs", new_rows, new_rows[0].keys())
    total, total_epochs = conn.exec_driver_sql(
        "SELECT count(*), coalesce(sum(epochs), 0) FROM jobs WHERE sweep = ?", (sweep,)).fetchone()
    return PlanCounts(len(new_rows), len(jobs) - len(new_rows), len(longer), int(total), int(total_epochs))


def _set_horizons(conn, changes: list[tuple[str, list[int]]]) -> None:
    """Give jobs their new (merged) horizons in one statement; a finished job whose longest
    horizon grew reopens (pending: it continues from its final checkpoint)."""
    if not changes:
        return
    conn.connection.driver_connection.execute(
        "UPDATE jobs SET epochs = n.epochs, horizons = n.horizons, "
        f"status = CASE WHEN jobs.status = {DONE} AND n.epochs > jobs.epochs THEN {PENDING} ELSE jobs.status END, "
        f"finished_at = CASE WHEN jobs.status = {DONE} AND n.epochs > jobs.epochs THEN NULL "
        "ELSE jobs.finished_at END "
        "FROM (SELECT unnest($ids::VARCHAR[]) AS job_id, unnest($epochs::INTEGER[]) AS epochs, "
        "unnest($horizons::VARCHAR[]) AS horizons) AS n WHERE jobs.job_id = n.job_id",
        {"ids": [c[0] for c in changes], "epochs": [max(c[1]) for c in changes],
         "horizons": [json.dumps(c[1]) for c in changes]})


# Lease times are kept in UTC, so that daylight-saving jumps cannot expire a live lease.
NOW_UTC = "(current_timestamp AT TIME ZONE 'UTC')"


def _lease_end(lease_seconds: float) -> str:
    return f"{NOW_UTC} + to_microseconds({int(float(lease_seconds) * 1e6)})"


def reclaim_expired(conn, lease_seconds: float) -> int:
    """Running jobs whose lease ran out (their coordinator stopped heartbeating) go back to pending.

    A job's lease ends at its `lease_until`, set by its own coordinator; jobs leased by an
    older ddsweep (no lease_until) expire `lease_seconds` after their last heartbeat.
    """
    rows = conn.exec_driver_sql(
        f"UPDATE jobs SET status = {PENDING}, lease_owner = NULL, lease_until = NULL WHERE status = {RUNNING} "
        f"AND CASE WHEN lease_until IS NOT NULL THEN lease_until < {NOW_UTC} "
        f"ELSE heartbeat_at IS NULL OR heartbeat_at < current_timestamp - to_microseconds("
        f"{int(float(lease_seconds) * 1e6)}) END "
        "RETURNING job_id").fetchall()
    return len(rows)


def reclaim_owner(conn, owner: str) -> int:
    """Running jobs of a coordinator known to be dead go back to pending at once; returns how many."""
    rows = conn.exec_driver_sql(
        f"UPDATE jobs SET status = {PENDING}, lease_owner = NULL, lease_until = NULL "
        f"WHERE status = {RUNNING} AND lease_owner = ? RETURNING job_id", (owner,)).fetchall()
    return len(rows)


def heartbeat(conn, owner: str, lease_seconds: float) -> None:
    """Renew the lease of every job `owner` runs (or holds queued)."""
    conn.exec_driver_sql(f"UPDATE jobs SET heartbeat_at = current_timestamp, lease_until = {_lease_end(lease_seconds)} "
                         f"WHERE lease_owner = ? AND status = {RUNNING}", (owner,))


def leased_elsewhere(conn, owner: str, sweep: str | None = None) -> tuple[int, float | None]:
    """(running jobs leased by other coordinators, seconds until the first of those leases ends)."""
    sql = (f"SELECT count(*), min(epoch(lease_until) - epoch({NOW_UTC})) FROM jobs "
           f"WHERE status = {RUNNING} AND lease_owner IS DISTINCT FROM ?")
    args: tuple = (owner,)
    if sweep:
        sql, args = sql + " AND sweep = ?", (owner, sweep)
    n, left = conn.exec_driver_sql(sql, args).fetchone()
    return int(n), (None if left is None else max(0.0, float(left)))


def claim(conn, owner: str, max_jobs: int, sweep: str | None = None, lease_seconds: float = 120.0) -> list[dict]:
    """Lease up to max_jobs pending jobs (whole packs first) to `owner`; returns them."""
    where, args = f"status = {PENDING}", []
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
        f"UPDATE jobs SET status = {RUNNING}, lease_owner = ?, heartbeat_at = current_timestamp, "
        f"lease_until = {_lease_end(lease_seconds)}, "
        f"started_at = coalesce(started_at, current_timestamp), attempts = attempts + 1 "
        f"WHERE job_id IN ({marks}) AND status = {PENDING} "
        f"RETURNING job_id, sweep, config, epochs, horizons, pack_key, attempts, coalesce(failures, 0)",
        (owner, *ids)).fetchall()
    return [{"job_id": r[0], "sweep": r[1], "config": json.loads(r[2]), "epochs": r[3],
             "horizons": json.loads(r[4]), "pack_key": r[5], "attempts": r[6], "failures": r[7]} for r in claimed]


def pending_count(conn, sweep: str | None = None) -> int:
    sql, args = f"SELECT count(*) FROM jobs WHERE status = {PENDING}", ()
    if sweep:
        sql, args = sql + " AND sweep = ?", (sweep,)
    return conn.exec_driver_sql(sql, args).fetchone()[0]


def apply_events(conn, owner: str, events: list[Event], lease_seconds: float | None = None) -> None:
    """Record worker events (metric rows, progress, retries, job ends) in one transaction; idempotent.

    Events are replayed from a journal after a crash, so applying one twice changes nothing:
    metric rows are keyed by (job_id, epoch) and a stored one is never inserted again, progress only grows,
    counters are stored as absolute values. With `lease_seconds`, `owner`'s leases are renewed.
    """
    insert_metrics(conn, [r for e in events if isinstance(e, Metrics) for r in e.rows])  # (a row twice: once)
    progress = {}
    for e in events:
        if isinstance(e, Progress):
            for jid in e.job_ids:
                progress[jid] = max(progress.get(jid, 0), e.epoch)
    raw = conn.connection.driver_connection
    if progress:  # one statement for the batch (a pack of 64 sends 64 job ids per epoch)
        raw.execute("UPDATE jobs SET epochs_done = greatest(jobs.epochs_done, p.epoch) "
                    "FROM (SELECT unnest($ids::VARCHAR[]) AS job_id, unnest($epochs::INTEGER[]) AS epoch) AS p "
                    "WHERE jobs.job_id = p.job_id",
                    {"ids": list(progress), "epochs": list(progress.values())})
    for e in events:  # failed attempts that will be tried again (the job stays leased): before any end
        if isinstance(e, Retry):
            conn.exec_driver_sql("UPDATE jobs SET failures = ?, attempts = greatest(attempts, ?), error = ? "
                                 "WHERE job_id = ?", (e.failures, e.attempts, e.error, e.job_id))
    # Job ends, one statement per batch. `epochs` is the horizon the job was trained to; a job whose
    # horizon grew meanwhile (plan / extend while it ran) is not done: it goes back to pending and continues.
    ends = {e.job_id: e for e in events if isinstance(e, Finished)}  # (a job ends once: the last one counts)
    if ends:
        ev = list(ends.values())
        cols = {"job_id": list(ends), "status": [e.status.value for e in ev], "trained": [e.epochs for e in ev],
                "error": [e.error for e in ev], "failures": [e.failures for e in ev],
                "attempts": [e.attempts for e in ev],
                "run_options": [None if e.run_options is None else json.dumps(e.run_options, sort_keys=True)
                                for e in ev]}
        raw.execute(
            "UPDATE jobs SET "
            f"status = CASE WHEN f.status = {DONE} AND coalesce(f.trained, jobs.epochs) < jobs.epochs THEN {PENDING} "
            "ELSE f.status END, "
            f"finished_at = CASE WHEN f.status = {DONE} AND coalesce(f.trained, jobs.epochs) < jobs.epochs THEN NULL "
            "ELSE current_timestamp END, "
            "error = f.error, lease_owner = NULL, lease_until = NULL, "
            f"epochs_done = CASE WHEN f.status = {DONE} THEN least(coalesce(f.trained, jobs.epochs), jobs.epochs) "
            "ELSE jobs.epochs_done END, "
            "failures = coalesce(f.failures, jobs.failures), attempts = coalesce(f.attempts, jobs.attempts), "
            "run_options = coalesce(f.run_options, jobs.run_options) "
            "FROM (SELECT unnest($job_id::VARCHAR[]) AS job_id, unnest($status::VARCHAR[]) AS status, "
            "unnest($trained::INTEGER[]) AS trained, unnest($error::VARCHAR[]) AS error, "
            "unnest($failures::INTEGER[]) AS failures, unnest($attempts::INTEGER[]) AS attempts, "
            "unnest($run_options::VARCHAR[]) AS run_options) AS f "
            "WHERE jobs.job_id = f.job_id", cols)
    released = [e.job_id for e in events if isinstance(e, Released)]  # stopped before the end (Ctrl-C)
    if released:  # back to the queue, one statement for the batch
        raw.execute(f"UPDATE jobs SET status = {PENDING}, lease_owner = NULL, lease_until = NULL "
                    "FROM (SELECT unnest($ids::VARCHAR[]) AS job_id) AS r "
                    f"WHERE jobs.job_id = r.job_id AND jobs.status = {RUNNING} AND jobs.lease_owner = $owner",
                    {"ids": released, "owner": owner})
    if lease_seconds is not None:
        heartbeat(conn, owner, lease_seconds)


def requeue(conn, statuses: tuple[str, ...], sweep: str | None = None) -> int:
    """`ddsweep retry`: jobs in `statuses` (failed, diverged) go back to pending, their failure count reset.

    They resume from their last checkpoint, if any; returns how many were requeued.
    """
    bad = set(statuses) - set(RETRYABLE)
    if bad or not statuses:
        raise ValueError(f"can only requeue failed or diverged jobs, not {sorted(bad) or 'nothing'}")
    marks = ",".join("?" * len(statuses))
    sql = (f"UPDATE jobs SET status = {PENDING}, failures = 0, lease_owner = NULL, lease_until = NULL, "
           f"finished_at = NULL WHERE status IN ({marks})")
    args: tuple = tuple(JobStatus(s).value for s in statuses)
    if sweep:
        sql, args = sql + " AND sweep = ?", (*args, sweep)
    return len(conn.exec_driver_sql(sql + " RETURNING job_id", args).fetchall())


def extend(conn, epochs: int, sweep: str | None = None) -> int:
    """`ddsweep extend`: add the horizon `epochs` to every job (of `sweep`) trained to fewer epochs.

    Finished jobs reopen and continue from their final checkpoint; pending, running,
    failed and diverged jobs just get the longer horizon. Returns how many jobs changed.
    """
    sql, args = "SELECT job_id, horizons FROM jobs WHERE epochs < ?", (epochs,)
    if sweep:
        sql, args = sql + " AND sweep = ?", (epochs, sweep)
    changed = [(job_id, sorted(set(json.loads(horizons or "[]")) | {epochs}))
               for job_id, horizons in conn.exec_driver_sql(sql, args).fetchall()]
    _set_horizons(conn, changed)
    return len(changed)


def status_counts(conn, sweep: str | None = None) -> dict[str, int]:
    """Jobs per status (of `sweep`, or all)."""
    sql, args = "SELECT status, count(*) FROM jobs", ()
    if sweep:
        sql, args = sql + " WHERE sweep = ?", (sweep,)
    return dict(conn.exec_driver_sql(sql + " GROUP BY status", args).fetchall())


def require_sweep(conn, sweep: str | None, db) -> None:
    """A UserError (exit 2) when `sweep` is given and the database has no sweep of that name."""
    if sweep is None:
        return
    names = [r[0] for r in conn.exec_driver_sql("SELECT name FROM sweeps ORDER BY name")]
    if sweep not in names:
        raise UserError(no_such_sweep(sweep, db, names))
