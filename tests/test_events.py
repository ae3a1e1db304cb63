"""The worker protocol: typed events, their wire/journal form, and journals of older versions."""

from __future__ import annotations

import json
from dataclasses import fields

import duckdb
import pytest

from ddsweep.errors import EXIT_JOBS_FAILED
from ddsweep.store import Store
from ddsweep.store import jobs as store_jobs
from ddsweep.workers.events import (EVENT_TYPES, Checkpointed, Fault, Finished, Idle, JobStatus, Metrics, Progress,
                                    Released, Retry, Started, Timing, WorkerWarning, event_from_dict)

EXAMPLES = [
    Metrics(slot=0, rows=[{"job_id": "a", "epoch": 2, "test_error": 0.5}]),
    Progress(slot=1, epoch=3, epochs=10, step=30, job_ids=["a", "b"]),
    Finished(slot=0, job_id="a", status=JobStatus.DONE, epochs=10),
    Finished(job_id="b", status=JobStatus.FAILED, error="Traceback ...", failures=3, attempts=3),
    Released(slot=2, job_id="c"),
    Retry(slot=1, job_id="d", error="boom", failures=1, attempts=2),
    Started(slot=0, job_ids=["a"], config={"width": 4}, epochs=10, pid=123, node="10.0.0.2"),
    Checkpointed(slot=0, job_ids=["a"], epoch=4),
    Timing(slot=0, train_seconds=1.5, train_samples=800),
    WorkerWarning(slot=3, message="a pack ran out of memory"),
    Fault(slot=1, message="cannot write /ckpt/j.pt: No space left on device (checkpointing)"),
    Idle(slot=0),
]


def test_every_event_kind_has_an_example():
    assert {type(e) for e in EXAMPLES} == set(EVENT_TYPES.values())


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.kind)
def test_event_survives_the_wire_and_the_journal(event):
    line = json.dumps(event.to_dict())
    assert json.loads(line)["kind"] == event.kind
    assert event_from_dict(json.loads(line)) == event


def test_status_is_the_database_string():
    assert [s.value for s in JobStatus] == ["pending", "running", "done", "failed", "diverged"]
    assert f"{JobStatus.DONE}" == str(JobStatus.DONE) == "done" and JobStatus.FAILED.sql == "'failed'"
    assert Finished(job_id="a", status="diverged").status is JobStatus.DIVERGED
    with pytest.raises(ValueError):
        Finished(job_id="a", status="finished")


def test_unknown_kind_is_an_error_and_unknown_keys_are_ignored():
    with pytest.raises(ValueError, match="unknown worker event kind 'exploded'"):
        event_from_dict({"kind": "exploded"})
    assert event_from_dict({"kind": "released", "job_id": "x", "added_later": 1}) == Released(job_id="x")
    assert {f.name for f in fields(Progress)} >= {"slot", "epoch", "epochs", "job_ids"}


def test_journal_of_an_older_ddsweep_replays(tmp_path, tiny_grid, cli):
    """A dead coordinator's journal, written line for line as ddsweep wrote it before events were
    typed (plain dicts), is replayed by the next `work`: rows, ends, retries and releases count."""
    db = tmp_path / "r.duckdb"
    assert cli("plan", tiny_grid, "--db", db).exit_code == 0
    with Store(db).write() as conn:
        a, b, c, d = sorted(j["job_id"] for j in store_jobs.claim(conn, "deadhost-1-abc", 10))
    journal = tmp_path / "r.duckdb.journal"
    journal.mkdir()
    (journal / "deadhost-1-abc.jsonl").write_text("\n".join([
        '{"kind":"metrics","rows":[{"job_id":"%s","epoch":0,"step":0,"train_loss":2.5,"test_error":0.123,'
        '"lr":0.05,"seconds":0.1}],"slot":0}' % a,
        '{"kind":"progress","epoch":6,"epochs":6,"step":48,"slot":0,"job_ids":["%s"]}' % a,
        '{"kind":"finished","job_id":"%s","status":"done","slot":0,"epochs":6}' % a,
        '{"kind":"retry","job_id":"%s","error":"boom","failures":1,"attempts":2,"slot":1}' % b,
        '{"kind":"finished","job_id":"%s","status":"failed","error":"no luck","failures":3,"attempts":3,"slot":1}' % c,
        '{"kind":"released","job_id":"%s"}' % d,
    ]) + "\n")
    r = cli("work", "--db", db, "--cpus", "1", "--no-progress")
    assert r.exit_code == EXIT_JOBS_FAILED, r.output  # (c's failure, from the journal)
    assert "replayed its journal" in r.output
    with duckdb.connect(str(db), read_only=True) as conn:
        status = dict(conn.execute("SELECT job_id, status FROM jobs").fetchall())
        error = conn.execute("SELECT error FROM jobs WHERE job_id = ?", [c]).fetchone()[0]
        kept = conn.execute("SELECT test_error FROM metrics WHERE job_id = ? AND epoch = 0", [a]).fetchone()[0]
    assert status == {a: "done", b: "done", c: "failed", d: "done"}
    assert error == "no luck" and kept == pytest.approx(0.123)  # a's row came from the journal, not retrained
    assert not list(journal.glob("*.jsonl"))


def test_both_transports_implement_the_protocol():
    from ddsweep.workers.ray_backend import RayTransport
    from ddsweep.workers.transport import LocalTransport, Transport

    members = [n for n in dir(Transport) if not n.startswith("_")] + ["kind"]
    assert {"slot_specs", "start", "stopping", "describe", "usage", "close", "kind"} <= set(members)
    for cls in (LocalTransport, RayTransport):
        assert all(hasattr(cls, n) for n in members), [n for n in members if not hasattr(cls, n)]
    local = LocalTransport(cpus=2)
    assert isinstance(local, Transport) and local.slot_specs() == [("cpu", {}, 1.0)] * 2


def test_every_event_type_has_a_handler_or_only_goes_to_the_database():
    """A new event type must get a handler in ddsweep.workers.receive (or be data the store applies)."""
    from ddsweep.workers.receive import HANDLERS

    database_only = {Metrics, Checkpointed}  # applied by store.jobs.apply_events / nothing to do
    assert set(HANDLERS) == set(EVENT_TYPES.values()) - database_only
    assert all(cls.durable for cls in EVENT_TYPES.values() if cls in database_only - {Checkpointed})
