"""Nothing lost: kills, signals, stray lock holders, concurrent writers, retries, resume, extend.

Real processes, real signals, real DuckDB files. The reference for "equal metrics" is
the same jobs trained uninterrupted in this process (one torch thread, as workers use);
every metric column but `seconds` must match bit for bit.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

import ddsweep
from ddsweep.grid import EvalSpec, expand, parse_grid
from ddsweep.store.jobs import METRIC_COLUMNS
from ddsweep.workers.events import Finished, Metrics, Progress, WorkerWarning
from ddsweep.workers.options import WorkOptions
from tests.conftest import ROOT, TINY, write_grid

# every metric column but the wall-clock `seconds`
COMPARED = tuple(c for c in METRIC_COLUMNS if c not in ("job_id", "epoch", "seconds"))

# Two packs (widths 64 and 512), long enough epochs (~0.1-0.2 s) to kill a worker mid-epoch.
SLOW = {**TINY, "name": "slow", "train": {**TINY["train"], "epochs": 16},
        "grid": {"width": [64, 512], "n_train": [1000], "label_noise": [0.0, 0.2], "seed": [0]}}


# ----------------------------------------------------------------------------- helpers


def train_reference(grid: dict, horizons: list[int] | None = None) -> dict:
    """{(job_id, epoch): metrics} of every job of `grid` trained uninterrupted, in this process."""
    import torch

    from ddsweep.train.loop import train_pack

    from ddsweep.workers.packing import make_packs

    # the config as workers get it: through the database's JSON (sorted keys; the data
    # generators' seeds hash the dataset dict's repr, so key order matters)
    jobs = [{"job_id": j.job_id, "config": json.loads(json.dumps(j.config, sort_keys=True)), "pack_key": j.pack_key,
             "epochs": max(horizons or [j.epochs]), "horizons": horizons or list(j.horizons)}
            for j in expand(parse_grid(grid))]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        events = []
        for pack in make_packs(jobs, None, "cpu"):
            train_pack(pack, emit=events.append)
    finally:
        torch.set_num_threads(threads)
    return {(r["job_id"], r["epoch"]): {c: r.get(c) for c in COMPARED}
            for e in events if isinstance(e, Metrics) for r in e.rows}


@pytest.fixture(scope="module")
def slow_reference():
    return train_reference(SLOW)


def db_metrics(db) -> dict:
    rows = db_rows(db, f"select job_id, epoch, {', '.join(COMPARED)} from metrics")
    out = {(r[0], r[1]): dict(zip(COMPARED, r[2:])) for r in rows}
    assert len(out) == len(rows)  # (job_id, epoch) is unique
    return out


def db_rows(db, sql: str) -> list[tuple]:
    """Rows of a read-only query; retries while a writer (the coordinator's flush) holds the file."""
    deadline = time.monotonic() + 30
    while True:
        try:
            con = duckdb.connect(str(db), read_only=True)
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
            continue
        try:
            return con.execute(sql).fetchall()
        finally:
            con.close()


def assert_equal_metrics(db, reference: dict) -> None:
    got = db_metrics(db)
    assert set(got) == set(reference), (sorted(set(reference) - set(got))[:5], sorted(set(got) - set(reference))[:5])
    diff = [k for k in reference if got[k] != reference[k]]
    assert not diff, f"{len(diff)} rows differ, e.g. {diff[0]}: {got[diff[0]]} != {reference[diff[0]]}"


def start_work(db, *args, session=True) -> subprocess.Popen:
    """`ddsweep work` as a real process (its own process group: kill it and its workers together)."""
    return subprocess.Popen([sys.executable, "-m", "ddsweep", "work", "--db", str(db), "--no-progress",
                             *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT, start_new_session=session)


def finish(proc: subprocess.Popen, timeout: float = 120, code: int | tuple = 0) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode in (code if isinstance(code, tuple) else (code,)), \
        f"exit {proc.returncode}\nstdout: {out}\nstderr: {err}"
    return out, err


def worker_pids(pid: int) -> list[int]:
    """Worker processes (multiprocessing spawn children) of the coordinator `pid`."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    workers = []
    for c in children:
        try:
            cmd = Path(f"/proc/{c}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd:
            workers.append(c)
    return workers


def wait_for(predicate, timeout: float = 60, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def ckpt_dir(db) -> Path:
    return Path(str(db) + ".ckpt")


def job_ids(grid: dict, width: int | None = None) -> list[str]:
    return [j.job_id for j in expand(parse_grid(grid)) if width is None or j.config["width"] == width]


def checkpointed(db, ids) -> bool:
    return any((ckpt_dir(db) / f"{i}.pt").exists() for i in ids)


def checkpoint_epoch(db, job_id: str) -> int:
    from ddsweep.train.checkpoint import read

    try:
        state = read(ckpt_dir(db), job_id)
    except ValueError:  # (being replaced right now)
        return -1
    return -1 if state is None else state["epoch"]


# ----------------------------------------------------------------------------- kill -9


def test_kill_worker_mid_epoch_then_coordinator_then_work_again(tmp_path, slow_reference):
    db = tmp_path / "r.duckdb"
    ddsweep.plan(write_grid(tmp_path / "slow.yaml", SLOW), db)
    wide = job_ids(SLOW, 512)  # one pack of 2, trained first (the costliest)
    proc = start_work(db, "--cpus", 1, "--checkpoint-every", 0, "--lease", 3)
    try:
        # 1. kill -9 the worker mid-epoch: the coordinator requeues its jobs at once (a failed attempt each)
        wait_for(lambda: checkpointed(db, wide), what="the first checkpoint of the wide pack")
        time.sleep(0.07)  # into the next epoch
        (first,) = wait_for(lambda: worker_pids(proc.pid), what="the worker process")
        os.kill(first, signal.SIGKILL)
        killed_at = checkpoint_epoch(db, wide[0])  # where its jobs resume
        # 2. once a new worker has resumed them and checkpointed further, kill -9 the coordinator (and it)
        wait_for(lambda: (pids := worker_pids(proc.pid)) and pids != [first], what="a new worker")
        wait_for(lambda: checkpoint_epoch(db, wide[0]) > killed_at, what="the resumed pack's next checkpoint")
        time.sleep(0.07)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    assert "worker 0 died (killed by SIGKILL); 2 job(s) requeued" in err, err
    assert checkpoint_epoch(db, wide[0]) < SLOW["train"]["epochs"]
    # Its jobs are still leased to it; its journal holds what it had not written yet.
    leased = db_rows(db, "select count(*) from jobs where status = 'running' and lease_owner is not null")[0][0]
    assert leased > 0 and list(Path(str(db) + ".journal").glob("*.jsonl"))

    # 3. work again: replays the dead coordinator's journal, requeues its jobs, resumes them
    out, err = finish(start_work(db, "--cpus", 1, "--lease", 3))
    m = re.search(r"requeued (\d+) job\(s\) of a stopped `ddsweep work`", err)
    assert m and 1 <= int(m.group(1)) <= leased, err  # (fewer if its journal held some job's end)
    assert not list(Path(str(db) + ".journal").glob("*.jsonl"))  # replayed and removed
    rows = {r[0]: r[1:] for r in db_rows(db, "select job_id, status, failures, lease_owner from jobs")}
    assert set(rows.values()) <= {("done", 0, None), ("done", 1, None)}
    assert all(rows[j] == ("done", 1, None) for j in wide)  # the worker's death: one failed attempt
    assert_equal_metrics(db, slow_reference)


def test_expired_lease_is_reclaimed_a_live_one_is_not(tmp_path):
    from ddsweep.store import Store
    from ddsweep.store import jobs as store_jobs

    grid = {**TINY, "train": {**TINY["train"], "epochs": 2}}
    db = tmp_path / "r.duckdb"
    ddsweep.plan(write_grid(tmp_path / "g.yaml", grid), db)
    ghost, live, *_ = job_ids(grid)
    con = duckdb.connect(str(db))
    con.execute("update jobs set status = 'running', lease_owner = 'ghost-1-a', heartbeat_at = now() - interval 1 hour, "
                "lease_until = (current_timestamp at time zone 'UTC') - interval 1 second where job_id = ?", [ghost])
    con.execute("update jobs set status = 'running', lease_owner = 'other-2-b', heartbeat_at = now(), "
                "lease_until = (current_timestamp at time zone 'UTC') + interval 1 hour where job_id = ?", [live])
    con.close()
    r = ddsweep.work(db, cpus=1, show_progress=False, lease_seconds=2)
    assert r.done == 3
    status = dict(db_rows(db, "select job_id, status || ':' || coalesce(lease_owner, '') from jobs"))
    assert status[ghost] == "done:" and status[live] == "running:other-2-b"
    # ... until its lease runs out too (a lease_until-less row from an older ddsweep: by its heartbeat)
    con = duckdb.connect(str(db))
    con.execute("update jobs set lease_until = null, heartbeat_at = now() - interval 3 second where job_id = ?", [live])
    con.close()
    with Store(db).write() as conn:
        assert store_jobs.reclaim_expired(conn, lease_seconds=60) == 0
        assert store_jobs.reclaim_expired(conn, lease_seconds=2) == 1
    assert db_rows(db, f"select status, lease_owner from jobs where job_id = '{live}'") == [("pending", None)]


# ----------------------------------------------------------------------------- a stray lock holder


HOLDER = """
import duckdb, sys, time
while True:
    try:
        con = duckdb.connect(sys.argv[1])              # read-write: DuckDB's file lock, as `duckdb r.duckdb` takes
        break
    except duckdb.IOException:                         # the coordinator is flushing: try again
        time.sleep(0.02)
print(con.execute("select count(*) from metrics").fetchone()[0], flush=True)
time.sleep(float(sys.argv[2]))
print(con.execute("select count(*) from metrics").fetchone()[0], flush=True)
con.close()
"""


def test_stray_lock_holder_delays_writes_loses_nothing_warns_once(tmp_path, slow_reference):
    db = tmp_path / "r.duckdb"
    ddsweep.plan(write_grid(tmp_path / "slow.yaml", SLOW), db)
    expected = len(slow_reference)
    proc = start_work(db, "--cpus", 1, "--checkpoint-every", 0)
    holder = None
    try:
        # Once the jobs are leased, take the database and keep it for 10.5 s while training goes on. A worker
        # starts only once a pack is leased, so wait for one, not for the database: a read of ours that a busy
        # machine stretched past the coordinator's 1 s wait would be the one "database busy" warning, and
        # it would name this process instead of the holder.
        wait_for(lambda: worker_pids(proc.pid), what="jobs to be leased (a worker)")
        t0 = time.monotonic()
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), "10.5"], stdout=subprocess.PIPE,
                                  text=True)
        before = int(holder.stdout.readline())
        out, err = finish(proc)
        after = int(holder.stdout.readline())
        held = time.monotonic() - t0
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    warnings = [line for line in err.splitlines() if "warning" in line.lower()]
    assert len(warnings) == 1, err
    assert f"PID {holder.pid}" in warnings[0] and "training goes on" in warnings[0]
    assert "database free again: wrote" in err
    assert before == after < expected  # nothing reached the file while it was held ...
    assert held >= 10.5
    assert "done 4, failed 0" in out
    assert_equal_metrics(db, slow_reference)  # ... and everything did afterwards, once
    print(f"\nstray lock: held {held:.1f}s; metric rows {before} while held, {len(db_metrics(db))} after "
          f"(expected {expected})")


# ----------------------------------------------------------------------------- concurrent writers and readers


READER = """
import sys, time, json
from pathlib import Path
import ddsweep
db, stop = sys.argv[1], Path(sys.argv[2])
ddsweep.status(db)  # imports, schema check
print("ready", flush=True)
ok, longest, running_seen = 0, 0.0, []
while not stop.exists():
    t = time.monotonic()
    df = ddsweep.status(db, wait=60)
    longest = max(longest, time.monotonic() - t)
    ok += 1
    base = df[(df.sweep == "base") & (df.running > 0)]
    if len(base):
        running_seen.append([base["epochs/s"].iloc[0], base["eta"].iloc[0]])
    time.sleep(0.1)
print(json.dumps({"ok": ok, "longest": longest, "running": running_seen}))
"""


def test_eight_planners_a_worker_and_a_reader_at_once(tmp_path):
    db = tmp_path / "r.duckdb"
    base = {**SLOW, "name": "base", "train": {**SLOW["train"], "epochs": 100}, "eval": {"every": 10},
            "grid": {**SLOW["grid"], "width": [512]}}
    ddsweep.plan(write_grid(tmp_path / "base.yaml", base), db)
    grids = [base] + [{**TINY, "name": f"p{i}", "train": {**TINY["train"], "epochs": 4},
                       "grid": {"width": [4 + i, 12 + i], "n_train": [400], "label_noise": [0.1], "seed": [i]}}
                      for i in range(8)]
    paths = [write_grid(tmp_path / f"p{i}.yaml", g) for i, g in enumerate(grids[1:])]
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(db), str(stop)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT)
    # progress reaches the database every 0.5 s (default 5 s): on a fast machine the base jobs train in
    # about 4 s, and the reader must see them running with a rate, not only pending and then done
    work = start_work(db, "--cpus", 1, "--flush-every", 0.5)
    planners = []
    try:
        assert reader.stdout.readline().strip() == "ready"  # polling from now on
        planners = [subprocess.Popen([sys.executable, "-m", "ddsweep", "plan", str(path), "--db", str(db)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
                    for path in paths]
        for p in planners:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, out + err
        out, err = finish(work, code=(0, 4))  # 4: jobs were planned after its last look (pending)
        stop.touch()
        r_out, r_err = reader.communicate(timeout=60)
        assert reader.returncode == 0, r_err
    finally:
        for p in (reader, *planners):
            if p.poll() is None:
                p.kill()
        if work.poll() is None:
            os.killpg(work.pid, signal.SIGKILL)  # with its workers
    polled = json.loads(r_out)
    assert polled["ok"] > 3 and any(rate > 0 and eta for rate, eta in polled["running"]), polled  # rate, ETA
    first = int(re.search(r"done (\d+), failed 0", out).group(1))
    late = db_rows(db, "select count(*) from jobs where status = 'pending'")[0][0]
    if late:  # planned after that `work` took its last look (a slow machine): the next one trains them
        finish(start_work(db, "--cpus", 1))

    jobs = [j for g in grids for j in expand(parse_grid(g))]
    expected = {(j.job_id, e) for j in jobs for e in EvalSpec(**j.config["eval"]).epochs(list(j.horizons))}
    assert db_rows(db, "select status, count(*) from jobs group by all") == [("done", len(jobs))]
    assert {r[0] for r in db_rows(db, "select job_id from jobs")} == {j.job_id for j in jobs}
    got = db_rows(db, "select job_id, epoch from metrics")
    assert len(got) == len(set(got)) and set(got) == expected
    print(f"\n8 planners + work + reader: {len(jobs)} jobs ({first} trained by the running `work`, {late} "
          f"planned after it finished), {len(got)} metric rows; reader polled {polled['ok']} times, "
          f"longest wait {polled['longest']:.2f}s")


# ----------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_checkpoints_and_hands_back_then_resumes(tmp_path):
    # long enough (~5 s of training) to be still running when the test sees its first epoch in the database
    grid = {**SLOW, "train": {**SLOW["train"], "epochs": 48}, "eval": {"every": 8}, "grid": {**SLOW["grid"], "width": [512]}}
    db = tmp_path / "r.duckdb"
    ddsweep.plan(write_grid(tmp_path / "long.yaml", grid), db)
    wide = job_ids(grid)

    def progressed():
        return db_rows(db, "select max(epochs_done) from jobs")[0][0] >= 1

    # One Ctrl-C (to the whole process group, as a terminal sends it): workers checkpoint, jobs go back.
    # (Checkpoints every 30 s: the one we get is the Ctrl-C's; epochs reach the database within 0.2 s.)
    proc = start_work(db, "--cpus", 1, "--flush-every", 0.2)
    try:
        wait_for(progressed, interval=0.1, what="an epoch")
        os.killpg(proc.pid, signal.SIGINT)
        out, err = finish(proc, timeout=60, code=130)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "Stopping: workers checkpoint" in err and "handed back 2" in out, out + err
    assert db_rows(db, "select status, count(*), count(lease_owner) from jobs group by all") == [("pending", 2, 0)]
    stopped_at = checkpoint_epoch(db, wide[0])
    assert 1 <= stopped_at < 48

    # Two Ctrl-Cs: stop at once (workers killed), jobs go back all the same. The worker is frozen first (as
    # one deep in a long step would be): otherwise its graceful stop can end before the second Ctrl-C lands.
    proc = start_work(db, "--cpus", 1)
    try:
        wait_for(lambda: len(worker_pids(proc.pid)) == 1, what="a worker")
        time.sleep(1.0)
        os.kill(worker_pids(proc.pid)[0], signal.SIGSTOP)
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.5)  # the coordinator looks at its signals every 0.2 s
        os.killpg(proc.pid, signal.SIGINT)
        t = time.monotonic()
        out, err = finish(proc, timeout=30, code=130)
        assert time.monotonic() - t < 10
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "Stopping at once" in err, err
    assert db_rows(db, "select count(*) from jobs where status = 'running'") == [(0,)]

    finish(start_work(db, "--cpus", 1))
    assert db_rows(db, "select status, count(*) from jobs group by all") == [("done", 2)]
    assert_equal_metrics(db, train_reference(grid))


# ----------------------------------------------------------------------------- in-process: resume, extend, failures


def test_resumed_pack_is_bit_identical(tmp_path):
    import torch

    from ddsweep.train.loop import train_pack

    grid = {**TINY, "eval": {"every": 1}, "train": {**TINY["train"], "optimizer": "adam", "lr": 1e-3}}
    jobs = [{"job_id": j.job_id, "config": json.loads(json.dumps(j.config, sort_keys=True)), "epochs": j.epochs,
             "horizons": j.horizons} for j in expand(parse_grid(grid)) if j.config["width"] == 16]
    reference = train_reference({**grid, "grid": {**grid["grid"], "width": [16]}})
    events, calls = [], []

    def stop_after_three():
        calls.append(1)
        return len(calls) >= 3

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the reference and the workers: a reduction's rounding depends on the threads
    try:
        assert train_pack(jobs, emit=events.append, should_stop=stop_after_three, checkpoint_dir=tmp_path,
                          checkpoint_every=1e9) == "stopped"
        resumed = []
        assert train_pack(jobs, emit=resumed.append, checkpoint_dir=tmp_path, checkpoint_every=0) == "done"
    finally:
        torch.set_num_threads(threads)
    assert [e.epoch for e in resumed if isinstance(e, Progress)] == [4, 5, 6]  # continued, not restarted
    rows = {(r["job_id"], r["epoch"]): {c: r.get(c) for c in COMPARED}
            for e in events + resumed if isinstance(e, Metrics) for r in e.rows}
    assert rows == reference
    # the resumed run re-sent the rows recorded before its checkpoint (a dead coordinator may have lost them)
    assert {r["epoch"] for r in resumed[0].rows} == {0, 1, 2, 3}


def _out_of_memory_when_more_than(limit: int, after_epoch: int, monkeypatch) -> list[int]:
    """Make train_pack raise torch's OutOfMemoryError in packs of more than `limit` members, once
    they have trained `after_epoch` epochs; returns the list of pack sizes it is called with."""
    import torch

    import ddsweep.train.loop as loop
    from ddsweep.workers import worker

    real, sizes = loop.train_pack, []

    def train_pack(jobs, device, emit, *args):
        sizes.append(len(jobs))
        if len(jobs) <= limit:
            return real(jobs, device, emit, *args)

        def emit_until_full(event):
            emit(event)
            if isinstance(event, Progress) and event.epoch >= after_epoch:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return real(jobs, device, emit_until_full, *args)

    monkeypatch.setattr(loop, "train_pack", train_pack)
    monkeypatch.setattr(worker, "_fits", {})
    return sizes


def test_pack_out_of_memory_trains_in_halves_from_checkpoints(tmp_path, monkeypatch):
    """A pack that runs out of device memory mid-run goes on in halves, each from its members'
    checkpoints, with the metrics of an uninterrupted run; later packs like it split at once."""
    import torch

    from ddsweep.workers.worker import run_pack

    grid = {**TINY, "eval": {"every": 1}, "grid": {**TINY["grid"], "width": [16], "seed": [0, 1]}}
    jobs = [{"job_id": j.job_id, "config": json.loads(json.dumps(j.config, sort_keys=True)), "pack_key": j.pack_key,
             "epochs": j.epochs, "horizons": list(j.horizons)} for j in expand(parse_grid(grid))]
    assert len(jobs) == 4 and len({j["pack_key"] for j in jobs}) == 1
    reference = train_reference(grid)
    sizes = _out_of_memory_when_more_than(2, after_epoch=3, monkeypatch=monkeypatch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        events = []
        run_pack(jobs, 0, "cpu", events.append, lambda: False,
                 WorkOptions(checkpoint_dir=str(tmp_path / "a"), checkpoint_every=0))
        assert sizes == [4, 2, 2]
        again = []
        run_pack(jobs, 0, "cpu", again.append, lambda: False,
                 WorkOptions(checkpoint_dir=str(tmp_path / "b"), checkpoint_every=0))
        assert sizes == [4, 2, 2, 2, 2]  # learned: no second out-of-memory error
    finally:
        torch.set_num_threads(threads)
    warnings = [e.message for e in events if isinstance(e, WorkerWarning)]
    assert len(warnings) == 1 and "ran out of cpu memory" in warnings[0] and "parts of 2" in warnings[0]
    for run in (events, again):
        ends = [e for e in run if isinstance(e, Finished)]
        assert sorted(e.job_id for e in ends) == sorted(j["job_id"] for j in jobs)
        assert {e.status for e in ends} == {"done"}
    progress = [e.epoch for e in events if isinstance(e, Progress)]
    # the halves resumed from a checkpoint (epoch 2's: the error came before epoch 3's was written)
    assert progress[:3] == [1, 2, 3] and progress[3] == 3
    rows = {}
    for e in events:  # the store keeps a (job, epoch)'s first row
        if isinstance(e, Metrics):
            for r in e.rows:
                rows.setdefault((r["job_id"], r["epoch"]), {c: r.get(c) for c in COMPARED})
    assert rows == reference


def test_single_member_out_of_memory_fails_with_the_error(tmp_path, monkeypatch):
    from ddsweep.workers.worker import run_pack

    grid = {**TINY, "train": {**TINY["train"], "epochs": 2}, "grid": {**TINY["grid"], "width": [16], "seed": [0, 1]}}
    jobs = [{"job_id": j.job_id, "config": j.config, "pack_key": j.pack_key, "epochs": j.epochs,
             "horizons": list(j.horizons)} for j in expand(parse_grid(grid))]
    sizes = _out_of_memory_when_more_than(0, after_epoch=0, monkeypatch=monkeypatch)
    events = []
    run_pack(jobs, 0, "cpu", events.append, lambda: False, WorkOptions(checkpoint_dir=str(tmp_path), checkpoint_every=0))
    assert sizes == [4, 2, 1, 1, 2, 1, 1]
    ends = [e for e in events if isinstance(e, Finished)]
    assert len(ends) == 4 and {e.status for e in ends} == {"failed"}
    assert all("OutOfMemoryError: CUDA out of memory" in e.error for e in ends)


def test_checkpoints_of_another_parameter_layout_restart_from_scratch(tmp_path):
    """A checkpoint written by a ddsweep that laid parameters out differently is not resumed
    as if it fitted: the jobs restart (with a warning) and train exactly as from scratch."""
    import torch

    from ddsweep.train.checkpoint import path_for, read
    from ddsweep.train.loop import train_pack

    grid = {**TINY, "eval": {"every": 1}}
    jobs = [{"job_id": j.job_id, "config": json.loads(json.dumps(j.config, sort_keys=True)), "epochs": j.epochs,
             "horizons": j.horizons} for j in expand(parse_grid(grid)) if j.config["width"] == 16]
    reference = train_reference({**grid, "grid": {**grid["grid"], "width": [16]}})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        calls = []
        assert train_pack(jobs, should_stop=lambda: calls.append(1) or len(calls) >= 2, checkpoint_dir=tmp_path,
                          checkpoint_every=1e9) == "stopped"
        for j in jobs:  # as an older ddsweep wrote them: no layout recorded (layout 1)
            state = read(tmp_path, j["job_id"])
            del state["layout"]
            torch.save(state, path_for(tmp_path, j["job_id"]))
        events = []
        assert train_pack(jobs, emit=events.append, checkpoint_dir=tmp_path) == "done"
    finally:
        torch.set_num_threads(threads)
    warnings = [e.message for e in events if isinstance(e, WorkerWarning)]
    assert len(warnings) == len(jobs) and all("layout 1" in w and "from scratch" in w for w in warnings), warnings
    assert [e.epoch for e in events if isinstance(e, Progress)][0] == 1  # restarted, not continued
    rows = {(r["job_id"], r["epoch"]): {c: r.get(c) for c in COMPARED}
            for e in events if isinstance(e, Metrics) for r in e.rows}
    assert rows == reference


def test_extend_continues_from_final_checkpoints_and_a_corrupt_one_restarts(tmp_path, cli):
    grid = {**TINY, "eval": {"every": 1}, "grid": {**TINY["grid"], "width": [16]}}
    db = tmp_path / "r.duckdb"
    ddsweep.plan(write_grid(tmp_path / "g.yaml", grid), db)
    assert ddsweep.work(db, cpus=1, show_progress=False).done == 2
    good, bad = job_ids(grid)
    path = ckpt_dir(db) / f"{bad}.pt"
    path.write_bytes(path.read_bytes()[:100])  # truncated

    # planning the grid with more epochs reopens the finished jobs, and so does `extend`
    assert ddsweep.plan(write_grid(tmp_path / "g8.yaml", {**grid, "train": {**grid["train"], "epochs": 8}}),
                        db).extended == 2
    r = cli("extend", "--epochs", 10, "--db", db)
    assert r.exit_code == 0 and "extended 2 job(s) to 10 epochs" in r.output, r.output
    assert db_rows(db, "select distinct status, epochs, horizons from jobs") == [("pending", 10, "[6, 8, 10]")]
    result = ddsweep.work(db, cpus=1, show_progress=False)
    assert result.done == 2
    (warning,) = result.warnings
    assert bad in warning and "unreadable checkpoint" in warning and "restarting it from scratch" in warning
    # the continued job and the restarted one both equal a run planned to 10 epochs from the start
    assert_equal_metrics(db, train_reference(grid, horizons=[6, 8, 10]))
    assert db_rows(db, "select distinct status, epochs_done from jobs") == [("done", 10)]


def test_failures_retries_divergence_and_retry_command(tmp_path, cli):
    grid = {**TINY, "train": {**TINY["train"], "epochs": 2},
            "grid": {"width": [16], "n_train": [400], "label_noise": [0.0], "seed": [0], "lr": [0.05, 1e30]}}
    db = tmp_path / "r.duckdb"
    ddsweep.plan(write_grid(tmp_path / "g.yaml", grid), db)
    ok, huge = sorted(expand(parse_grid(grid)), key=lambda j: j.config["train"]["lr"])
    # A third job that raises in the worker on every attempt.
    con = duckdb.connect(str(db))
    config = {**ok.config, "dataset": {**ok.config["dataset"], "name": "no-such-dataset"}}
    con.execute("insert into jobs (job_id, sweep, status, width, epochs, horizons, config, pack_key) "
                "values ('broken', 'tiny', 'pending', 16, 2, '[2]', ?, 'broken')", [json.dumps(config)])
    con.close()

    r = ddsweep.work(db, cpus=1, show_progress=False, retries=2)
    assert (r.done, r.diverged, r.failed, r.retried) == (1, 1, 1, 2)
    rows = {r[0]: r[1:] for r in db_rows(db, "select job_id, status, attempts, failures, error from jobs")}
    assert rows[ok.job_id][:3] == ("done", 1, 0)
    assert rows[huge.job_id][0] == "diverged" and "training loss diverged" in rows[huge.job_id][3]
    status, attempts, failures, error = rows["broken"]
    assert (status, attempts, failures) == ("failed", 3, 3) and "Traceback" in error and "no-such-dataset" in error

    r = cli("retry", "--db", db)  # failed ones by default
    assert r.exit_code == 0 and "requeued 1 failed job(s)" in r.output, r.output
    r = cli("retry", "--diverged", "--db", db)
    assert r.exit_code == 0 and "requeued 1 diverged job(s)" in r.output, r.output
    assert sorted(db_rows(db, "select job_id, status, failures from jobs where status != 'done'")) == sorted(
        [("broken", "pending", 0), (huge.job_id, "pending", 0)])

    r = ddsweep.work(db, cpus=1, show_progress=False, retries=0)
    assert (r.diverged, r.failed, r.retried) == (1, 1, 0)
    assert db_rows(db, "select attempts, failures from jobs where job_id = 'broken'") == [(4, 1)]
