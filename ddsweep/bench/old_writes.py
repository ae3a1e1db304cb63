"""The coordinator's write path as it was before the journal took orjson, the flush took
whole columns and `metrics` lost its primary key (migration 0008): the baseline that `python -m ddsweep.bench --store` times ingest against,
in the same run and on the same rows (kept verbatim, nothing else uses it)."""

from __future__ import annotations

import json
import os
import zlib

import duckdb
import numpy as np
import pandas as pd

from ddsweep.axes import METRIC, METRIC_COLUMNS
from ddsweep.store.jobs import _insert_rows, apply_events
from ddsweep.workers.events import Event, Metrics
from ddsweep.workers.journal import Journal, _faults


def old_encode(event: Event) -> bytes:
    body = json.dumps(event.to_dict(), separators=(",", ":")).encode("ascii")
    return b"%08x %s\n" % (zlib.crc32(body), body)


class OldJournal(Journal):
    def append(self, events: list[Event], sync: bool = True) -> None:
        if not events:
            return
        with _faults(self.path):
            self._file.write(b"".join(map(old_encode, events)))
            self._file.flush()
            if sync:
                os.fsync(self._file.fileno())


def old_schema(conn) -> None:
    """The empty `metrics` table keyed again by PRIMARY KEY (job_id, epoch), as it was until 0008."""
    conn.exec_driver_sql("ALTER TABLE metrics ADD PRIMARY KEY (job_id, epoch)")


def old_insert_metrics(conn, rows: list[dict]) -> None:
    if not rows:
        return
    data = {}
    for c in METRIC_COLUMNS:
        values = [r.get(c) for r in rows]
        if c == "job_id":
            data[c] = pd.array(values, dtype=object)
        elif c == "epoch" or METRIC[c].kind == "int":
            data[c] = pd.array(values, dtype="Int64")
        else:
            floats = np.array(values, dtype=np.float64)
            missing = np.isnan(floats)
            if int(missing.sum()) != values.count(None):
                _insert_rows(conn, "metrics", rows, METRIC_COLUMNS, ignore_existing=True)
                return
            data[c] = pd.arrays.FloatingArray(floats, missing) if missing.any() else floats
    frame = pd.DataFrame(data)
    raw = conn.connection.driver_connection
    try:
        raw.fetchall()
    except duckdb.Error:
        pass
    raw.register("_ddsweep_metric_rows", frame)
    try:
        raw.execute("INSERT OR IGNORE INTO metrics BY NAME SELECT * FROM _ddsweep_metric_rows")
    finally:
        raw.unregister("_ddsweep_metric_rows")


def old_apply_events(conn, owner: str, events: list[Event]) -> None:
    rows = {(r["job_id"], r["epoch"]): r for e in events if isinstance(e, Metrics) for r in e.rows}
    old_insert_metrics(conn, list(rows.values()))
    apply_events(conn, owner, [e for e in events if not isinstance(e, Metrics)])
