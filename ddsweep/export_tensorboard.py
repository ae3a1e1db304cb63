"""`ddsweep export --format tensorboard DIR`: every run as a TensorBoard run.

One run (folder DIR/<sweep>/<job_id>) per job; at each evaluated epoch (the step
TensorBoard plots against) one event holds every metric recorded there as a scalar
(`test_error`, `train_error`, `epoch_lr`, ...; the names `load_metrics` uses), and a
text summary names the job's axes. Wall times are the job's start plus its
cumulative training `seconds`, so TensorBoard's "relative" axis is training time.

The event files are written here, not through a summary-writer library: the ones
there are (torch.utils.tensorboard, tensorboardX) import torch, and a process that
opens DuckDB never imports torch (see ddsweep/__init__.py). The format is small and
fixed: TFRecord framing (length, masked CRC-32C, data, masked CRC-32C) around
`tensorflow.Event` protocol buffers, encoded by hand below; the tests read the files
back with tensorboardX's protobuf definitions.
"""

from __future__ import annotations

import math
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd

from ddsweep.axes import JOB_AXES, METRICS
from ddsweep.errors import UserError
from ddsweep.store import results

SCALARS = tuple(m.column for m in METRICS)  # every per-epoch metric, under its load_metrics name


def export_tensorboard(db, out=None, sweep: str | None = None) -> tuple[Path, int, int]:
    """Write the sweep's (or every sweep's) runs under `out` (default <db>-tensorboard/); returns
    (folder, runs, metric rows). The folder must not exist yet (or be empty): written whole or not at all."""
    db = Path(db)
    out = Path(out) if out else Path(f"{db.stem}-tensorboard")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out}: exists and is not an empty folder; TensorBoard runs go into a new folder")
    if sweep:
        known = results.sweeps(db)
        if sweep not in known:
            raise UserError(f"--sweep {sweep}: no such sweep in {db} (sweeps: {', '.join(sorted(known)) or 'none'})")
    df = results.load_metrics(db, sweep)
    if df.empty:
        raise UserError(f"{db}: no metric rows to export" + (f" in sweep {sweep}" if sweep else ""))
    starts = _start_times(db)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    runs = events = 0
    try:
        for (name, job), rows in df.groupby(["sweep", "job_id"], sort=True):
            events += write_run(tmp / str(name) / str(job), rows, starts.get(job, 0.0))
            runs += 1
        if out.exists():
            out.rmdir()  # (empty, checked above)
        tmp.replace(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out, runs, events


def _start_times(db) -> dict:
    """job_id -> its start as Unix seconds (creation where it never started)."""
    jobs = results.query(db, "SELECT job_id, epoch(coalesce(started_at, created_at)) AS t FROM jobs")
    return {j: float(t) for j, t in zip(jobs["job_id"], jobs["t"]) if t is not None and np.isfinite(t)}


def write_run(folder: Path, rows: pd.DataFrame, start: float = 0.0) -> int:
    """One job's rows (one per evaluated epoch) as an event file in `folder`; returns the rows written."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = rows.sort_values("epoch")
    metrics = [c for c in SCALARS if c in rows.columns and rows[c].notna().any()]
    first = start + float(rows["seconds"].iloc[0]) if "seconds" in rows and pd.notna(rows["seconds"].iloc[0]) else start
    axes = {a: rows[a].iloc[0] for a in JOB_AXES if a in rows.columns and pd.notna(rows[a].iloc[0])}
    n = 0
    with open(folder / f"events.out.tfevents.{int(first)}.ddsweep", "wb") as f:
        f.write(_record(_event(first, 0, file_version="brain.Event:2")))
        text = ", ".join(f"{k}={v:g}" if isinstance(v, (float, np.floating)) else f"{k}={v}" for k, v in axes.items())
        f.write(_record(_event(first, 0, summary=_text_summary("axes", text))))
        for r in rows.itertuples(index=False):
            r = r._asdict()
            values = [(m, float(r[m])) for m in metrics if r[m] is not None and not _isnan(r[m])]
            if not values:
                continue
            wall = start + float(r["seconds"]) if "seconds" in r and not _isnan(r["seconds"]) else first
            f.write(_record(_event(wall, int(r["epoch"]), summary=_scalar_summary(values))))
            n += 1
    return n


def _isnan(v) -> bool:
    return v is None or (isinstance(v, (float, np.floating)) and math.isnan(v)) or v is pd.NA


# ---------------------------------------------------------------- protocol buffers (tensorflow/core/util/event.proto)

def _varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b, v = v & 0x7F, v >> 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _field(number: int, wire: int, payload: bytes) -> bytes:
    key = _varint(number << 3 | wire)
    return key + (_varint(len(payload)) + payload if wire == 2 else payload)


def _event(wall_time: float, step: int, file_version: str | None = None, summary: bytes | None = None) -> bytes:
    """Event{wall_time = 1 (double), step = 2 (int64), file_version = 3 | summary = 5}."""
    msg = _field(1, 1, struct.pack("<d", wall_time)) + _field(2, 0, _varint(step))
    if file_version is not None:
        msg += _field(3, 2, file_version.encode())
    if summary is not None:
        msg += _field(5, 2, summary)
    return msg


def _scalar_summary(values) -> bytes:
    """Summary{value = 1: repeated Value{tag = 1, simple_value = 2 (float)}}."""
    return b"".join(_field(1, 2, _field(1, 2, tag.encode()) + _field(2, 5, struct.pack("<f", v))) for tag, v in values)


def _text_summary(tag: str, text: str) -> bytes:
    """A text summary as TensorBoard's text plugin reads it: Value{tag, metadata{plugin_data{plugin_name =
    "text"}}, tensor{dtype = DT_STRING, tensor_shape {}, string_val = [text]}}."""
    metadata = _field(1, 2, _field(1, 2, b"text"))  # SummaryMetadata{plugin_data = 1 {plugin_name = 1}}
    tensor = _field(1, 0, _varint(7)) + _field(2, 2, b"") + _field(8, 2, text.encode())  # DT_STRING = 7
    return _field(1, 2, _field(1, 2, tag.encode()) + _field(9, 2, metadata) + _field(8, 2, tensor))


# ---------------------------------------------------------------- TFRecord framing with masked CRC-32C

def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _masked(data: bytes) -> bytes:
    c = crc32c(data)
    return struct.pack("<I", (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def _record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return length + _masked(length) + data + _masked(data)
