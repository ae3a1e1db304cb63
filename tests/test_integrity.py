"""Corrupt state is detected: checkpoints and journals carry checksums, checked on every read.

Each test corrupts real files the way a disk, a bad copy or a stray write would, then
resumes with `ddsweep work` and compares every metric with an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import replace

import torch

import ddsweep
from ddsweep.grid import expand, parse_grid
from ddsweep.train import checkpoint
from ddsweep.workers import journal
from ddsweep.workers.events import Finished, Metrics, Progress
from tests.conftest import TINY, write_grid
from tests.test_reliability import assert_equal_metrics, ckpt_dir, db_rows, train_reference

GRID = {**TINY, "eval": {"every": 1}, "grid": {**TINY["grid"], "width": [16]}}


def _jobs(grid: dict) -> list[dict]:
    return [{"job_id": j.job_id, "config": json.loads(json.dumps(j.config, sort_keys=True)), "epochs": j.epochs,
             "horizons": j.horizons, "pack_key": j.pack_key} for j in expand(parse_grid(grid))]


def _checkpoint_halfway(grid: dict, directory) -> None:
    """Train the grid's jobs for 3 of their epochs in this process and leave their checkpoints."""
    from ddsweep.train.loop import train_pack

    calls = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train_pack(_jobs(grid), should_stop=lambda: calls.append(1) or len(calls) >= 3,
                          checkpoint_dir=directory, checkpoint_every=1e9) == "stopped"
    finally:
        torch.set_num_threads(threads)


def _flip_weight_bytes(path, count: int = 64) -> None:
    """Flip `count` bytes in the middle of the stored weights (`params`), keeping the file's size."""
    data = bytearray(path.read_bytes())
    weights = checkpoint.read(path.parent, path.stem)["params"].numpy().tobytes()
    start = data.find(weights)
    assert start > 0 and len(weights) > 2 * count
    middle = start + len(weights) // 2
    for i in range(middle, middle + count):
        data[i] ^= 0xFF
    size = path.stat().st_size
    path.write_bytes(bytes(data))
    assert path.stat().st_size == size


def test_checkpoint_with_flipped_weight_bytes_restarts_from_scratch(tmp_path):
    db = tmp_path / "r.duckdb"
    ddsweep.plan(write_grid(tmp_path / "g.yaml", GRID), db)
    _checkpoint_halfway(GRID, ckpt_dir(db))
    bad, good = sorted(j["job_id"] for j in _jobs(GRID))
    _flip_weight_bytes(ckpt_dir(db) / f"{bad}.pt")
    assert checkpoint.read(ckpt_dir(db), good)["epoch"] == 3

    result = ddsweep.work(db, cpus=1, show_progress=False)
    assert result.done == 2
    (warning,) = result.warnings  # one warning, naming the job and why
    assert bad in warning and "checksum mismatch" in warning and "restarting it from scratch" in warning, warning
    assert_equal_metrics(db, train_reference(GRID))


def test_checkpoint_round_trip_and_a_checkpoint_from_before_checksums(tmp_path):
    _checkpoint_halfway(GRID, tmp_path)
    job = sorted(j["job_id"] for j in _jobs(GRID))[0]
    path = checkpoint.path_for(tmp_path, job)
    assert path.read_bytes().startswith(checkpoint.MAGIC)
    state = checkpoint.read(tmp_path, job)
    torch.save(state, path)  # as a ddsweep without checksums wrote it: still read
    assert checkpoint.read(tmp_path, job)["epoch"] == 3
    encoded = checkpoint.encode(state)
    for i in (0, len(checkpoint.MAGIC) + 5, len(encoded) - 1):  # magic, digest, last byte
        data = bytearray(encoded)
        data[i] ^= 0x01
        path.write_bytes(bytes(data))
        try:
            checkpoint.read(tmp_path, job)
        except ValueError as e:
            assert str(path) in str(e)
        else:
            raise AssertionError(f"a flipped bit at byte {i} went unnoticed")


# ----------------------------------------------------------------------------- journal

DEAD = "deadhost-4242-abcdef"  # a coordinator that was killed with results still in its journal


def _dead_coordinator(tmp_path):
    """A planned database whose jobs a killed coordinator held, its journal holding a whole run's
    events (as received) and the run's final checkpoints; returns (db, journal path, events)."""
    from ddsweep.train.loop import train_pack

    db = tmp_path / "r.duckdb"
    ddsweep.plan(write_grid(tmp_path / "g.yaml", GRID), db)
    events = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert train_pack(_jobs(GRID), emit=events.append, checkpoint_dir=ckpt_dir(db)) == "done"
    finally:
        torch.set_num_threads(threads)
    import duckdb

    con = duckdb.connect(str(db))
    con.execute("update jobs set status = 'running', lease_owner = ?, attempts = 1", [DEAD])
    con.close()
    ids = [j["job_id"] for j in _jobs(GRID)]
    durable = [replace(e, job_ids=ids) if isinstance(e, Progress) else e  # (as the worker sends them)
               for e in events if isinstance(e, (Metrics, Progress, Finished))]
    path = tmp_path / "r.duckdb.journal" / f"{DEAD}.jsonl"
    path.parent.mkdir()
    return db, path, durable


def test_unreadable_journal_records_are_skipped_with_one_warning_and_nothing_is_lost(tmp_path):
    db, path, events = _dead_coordinator(tmp_path)
    records = [journal.encode(e) for e in events]
    metrics_at = [i for i, e in enumerate(events) if isinstance(e, Metrics)]
    # the first records as a ddsweep from before checksums wrote them (plain JSON lines)
    records[:3] = [json.dumps(e.to_dict()).encode() + b"\n" for e in events[:3]]
    garbled = metrics_at[-3]  # a metrics record in the middle, one digit changed
    records[garbled] = records[garbled].replace(b'"epoch":', b'"epoch":9', 1)
    garbled_record = records[garbled]
    records.insert(5, b"{}\n")
    records.insert(9, b"\xff\xfe not text \x80\n")
    path.write_bytes(b"".join(records) + b"\x93\x94 torn")
    got = journal.read_journal(path)
    line = records.index(garbled_record) + 1
    assert line < len(records) - 2  # followed by good records
    assert dict(got.skipped) == {6: "not an event", 10: "not UTF-8", line: "checksum mismatch",
                                 len(records) + 1: "cut off mid-write"}
    assert len(got.events) == len(events) - 1  # every record after the bad ones still read

    result = ddsweep.work(db, cpus=1, show_progress=False)
    (warning,) = result.warnings
    assert str(path) in warning and "line 6 (not an event)" in warning and "line 10 (not UTF-8)" in warning, warning
    assert "skipped 4 unreadable record(s)" in warning, warning
    # the jobs' ends were not trusted (a skipped record may have held their rows): they resumed from
    # their final checkpoints, which re-sent every row, and nothing was trained again
    assert result.done == 2 and result.timing["train_samples"] == 0
    assert not path.exists()
    assert_equal_metrics(db, train_reference(GRID))
    assert db_rows(db, "select distinct status, epochs_done, lease_owner from jobs") == [("done", 6, None)]


def test_a_journal_from_before_checksums_replays(tmp_path):
    db, path, events = _dead_coordinator(tmp_path)
    path.write_text("".join(json.dumps(e.to_dict()) + "\n" for e in events))
    result = ddsweep.work(db, cpus=1, show_progress=False)
    assert result.warnings == [] and result.done == 0  # replayed: the jobs had ended
    assert_equal_metrics(db, train_reference(GRID))
    assert db_rows(db, "select distinct status from jobs") == [("done",)]


def test_a_journal_that_cannot_be_read_is_moved_aside(tmp_path):
    db, path, _ = _dead_coordinator(tmp_path)
    path.mkdir()  # open() fails (as any unreadable file would: we may run as root, who reads anything)
    result = ddsweep.work(db, cpus=1, show_progress=False)
    (warning,) = result.warnings
    aside = path.with_name(path.name + ".unreadable")
    assert f"journal {path}" in warning and "cannot be read" in warning and f"moved aside to {aside}" in warning
    assert aside.is_dir() and not path.exists()
    assert result.done == 2  # requeued, resumed from the final checkpoints
    assert_equal_metrics(db, train_reference(GRID))
    assert ddsweep.work(db, cpus=1, show_progress=False).warnings == []


def test_journal_records_round_trip_and_detect_changes():
    event = Finished(job_id="j", status="failed", error="Ünïcode\nTraceback")
    record = journal.encode(event)
    assert journal.decode(record) == event
    assert record[:8] == b"%08x" % zlib.crc32(record[9:-1])
    for i in range(9, len(record) - 1):  # any single changed byte of the JSON is caught
        changed = bytearray(record)
        changed[i] ^= 0x04
        assert isinstance(journal.decode(bytes(changed)), str), i


def test_journal_keeps_nan_apart_from_missing_and_reads_the_previous_records():
    """A diverged run's NaN and infinite metrics come back as such, not as a missing value (None);
    records as the previous version wrote them (the json module's ASCII, NaN literals) still read."""
    rows = [{"job_id": "a", "epoch": 1, "train_loss": math.nan, "test_loss": math.inf, "grad_norm": None},
            {"job_id": "a", "epoch": 2, "train_loss": 0.25, "test_loss": -math.inf, "grad_norm": 1e-05}]
    finite = [{"job_id": "b", "epoch": 1, "train_loss": 0.1 + 0.2, "test_loss": 1e300, "grad_norm": None}]
    for event in (Metrics(rows=rows), Metrics(rows=finite), Finished(job_id="j", status="done", epochs=3)):
        old = json.dumps(event.to_dict(), separators=(",", ":")).encode("ascii")
        for record in (journal.encode(event), b"%08x %s\n" % (zlib.crc32(old), old)):
            got = journal.decode(record)
            assert isinstance(got, type(event)), got
            if isinstance(event, Metrics):
                assert len(got.rows) == len(event.rows)
                for want, back in zip(event.rows, got.rows):
                    assert back.keys() == want.keys()
                    for k, v in want.items():
                        if isinstance(v, float) and math.isnan(v):
                            assert isinstance(back[k], float) and math.isnan(back[k]), (k, back[k])
                        else:
                            assert back[k] == v and type(back[k]) is type(v), (k, back[k], v)
            else:
                assert got == event
    assert b"NaN" in journal.encode(Metrics(rows=rows))  # (not orjson's null)
