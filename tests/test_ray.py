"""`ddsweep work --ray`: packs trained by Ray actors, the coordinator still the one writer.

One local Ray cluster (2 CPUs, no dashboard) is shared by the module; `--ray local`
uses the one this process already has. The reference is the same jobs trained
uninterrupted in this process; every metric column but `seconds` must match.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

import ddsweep  # noqa: E402
from tests.conftest import TINY, write_grid  # noqa: E402
from tests.test_reliability import SLOW, db_metrics, train_reference  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    started = not ray.is_initialized()
    t0 = time.monotonic()
    if started:
        # address="local": a cluster of its own, never one another test or process started on this machine
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    print(f"ray start-up: {time.monotonic() - t0:.1f}s")
    yield
    if started:
        ray.shutdown()


def test_ray_sweep_streams_every_row(cluster, tmp_path, cli):
    db = tmp_path / "r.duckdb"
    ddsweep.plan(write_grid(tmp_path / "tiny.yaml", TINY), db)
    result = cli("work", "--db", db, "--ray", "local", "--no-progress")
    assert result.exit_code == 0, result.output
    assert "done 4, failed 0" in result.output
    got = db_metrics(db)
    want = train_reference(TINY)
    assert set(got) == set(want)  # every metric row arrived, none twice
    assert got == want


def test_ray_worker_killed_mid_job_resumes(cluster, tmp_path):
    """SIGKILL the first Ray worker process once checkpoints exist: its jobs resume, metrics unchanged."""
    db = tmp_path / "slow.duckdb"
    ddsweep.plan(write_grid(tmp_path / "slow.yaml", SLOW), db)
    ckpt = tmp_path / "shared-ckpt"
    killed: list[int] = []

    def killer():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (ckpt.is_dir() and any(ckpt.glob("*.pt"))):
            time.sleep(0.02)
        for name in ray.util.list_named_actors(all_namespaces=True):
            if name["namespace"] == "ddsweep" and name["name"].endswith("-1"):  # the first actor started (names end in a counter)
                actor = ray.get_actor(name["name"], namespace="ddsweep")
                pid = ray.get(actor.pid.remote(), timeout=20)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    r = ddsweep.work(db, ray="local", show_progress=False, checkpoint_every=0, checkpoint_dir=ckpt)
    thread.join(timeout=5)
    assert killed, "no Ray worker was killed"
    assert r.retried >= 1, r  # the deaths were seen and the jobs requeued
    assert (r.done, r.failed) == (4, 0), r
    assert any(ckpt.glob("*.pt")) and not Path(str(db) + ".ckpt").exists()  # --checkpoint-dir used
    got = db_metrics(db)
    want = train_reference(SLOW)
    assert set(got) == set(want)
    assert got == want


def test_ray_missing_is_one_line_error(cli, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    db = tmp_path / "m.duckdb"
    ddsweep.plan(write_grid(tmp_path / "tiny.yaml", TINY), db)
    monkeypatch.setattr(builtins, "__import__", no_ray)
    result = cli("work", "--db", db, "--ray", "local")
    assert result.exit_code == 2
    assert "pip install 'ddsweep[ray]'" in result.output
    assert len(result.output.strip().splitlines()) == 1
