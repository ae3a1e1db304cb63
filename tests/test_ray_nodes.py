"""A sweep on a two-node Ray cluster on this machine (ray.cluster_utils.Cluster: a head and a
second raylet, one CPU each, one worker on each), the second node killed mid-sweep with its
raylet and workers: every job finishes, with the metrics of an uninterrupted run.

After the loss the cluster can host one worker, so the coordinator trains on with one: the
lost node's jobs resume from their checkpoints on the head (no replacement actor waits for
a node that is gone).
"""

from __future__ import annotations

import threading
import time

import pytest

ray = pytest.importorskip("ray")

import ddsweep  # noqa: E402
from tests.conftest import write_grid  # noqa: E402
from tests.test_reliability import SLOW, db_metrics, train_reference  # noqa: E402


# Two packs of one job each, both long enough (~0.1 s an epoch) to be mid-run when the node goes.
GRID = {**SLOW, "train": {**SLOW["train"], "epochs": 24}, "eval": {"every": 2},
        "grid": {**SLOW["grid"], "width": [384, 512], "label_noise": [0.1]}}


@pytest.fixture
def two_nodes():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        pytest.skip("a Ray session is already running in this process")
    t0 = time.monotonic()
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
        second = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
    except Exception as e:
        pytest.skip(f"cannot start a two-node Ray cluster here ({type(e).__name__}: {e})")
    print(f"two-node Ray cluster up in {time.monotonic() - t0:.1f}s")
    try:
        yield cluster, second
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


@pytest.mark.slow  # about a minute on 2 busy cores, most of it starting the two nodes
def test_a_node_killed_mid_sweep_loses_nothing(two_nodes, tmp_path):
    cluster, second = two_nodes
    db = tmp_path / "r.duckdb"
    ddsweep.plan(write_grid(tmp_path / "slow.yaml", GRID), db)
    ckpt = tmp_path / "shared-ckpt"  # (on a real cluster: a folder every node reaches)
    killed = []

    def kill_second_node():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(ckpt.glob("*.pt"))) < 2:  # both packs under way
            time.sleep(0.02)
        cluster.remove_node(second, allow_graceful=False)  # its raylet and its workers, as a lost machine
        killed.append(time.monotonic())

    thread = threading.Thread(target=kill_second_node, daemon=True)
    thread.start()
    r = ddsweep.work(db, ray=cluster.address, show_progress=False, checkpoint_every=0, checkpoint_dir=ckpt)
    thread.join(timeout=5)
    assert killed, "the second node was not killed"
    assert (r.done, r.failed) == (2, 0), r
    assert r.retried == 1, r  # the lost node's job: one failed attempt, resumed on the head
    got, want = db_metrics(db), train_reference(GRID)
    assert set(got) == set(want)
    assert got == want
