"""Same config and seed, same metrics; a job trained in a pack equals the job trained alone."""

import pandas as pd
import pytest

import ddsweep
from ddsweep.grid import expand, parse_grid
from ddsweep.train.loop import train_pack
from ddsweep.workers.events import Metrics
from tests.conftest import TINY, write_grid

METRICS = ["epoch", "step", "train_loss", "train_error", "train_error_clean", "noisy_fit", "test_loss",
           "test_error", "lr"]


def rows(db):
    return ddsweep.query("select * from metrics order by job_id, epoch", db)[["job_id", *METRICS]]


def test_same_job_twice_gives_identical_rows(tmp_path):
    grid = write_grid(tmp_path / "g.yaml", TINY)
    results = []
    for name in ("a", "b"):
        db = tmp_path / f"{name}.duckdb"
        ddsweep.plan(grid, db)
        ddsweep.work(db, cpus=1, show_progress=False)
        results.append(rows(db))
    assert len(results[0]) == 4 * 4
    pd.testing.assert_frame_equal(results[0], results[1], check_exact=True)


def _train(jobs):
    events = []
    train_pack([{"job_id": j.job_id, "config": j.config, "epochs": j.epochs, "horizons": j.horizons}
                for j in jobs], emit=events.append)
    return {(r["job_id"], r["epoch"]): r for e in events if isinstance(e, Metrics) for r in e.rows}


@pytest.mark.parametrize("train", [
    {"optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0},
    {"optimizer": "sgd", "momentum": 0.9, "weight_decay": 5e-4},
    {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0},
    {"optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-3},
])
def test_pack_equals_alone(train):
    grid = {**TINY, "train": {**TINY["train"], **train}, "eval": {"every": 1},
            "grid": {"width": [16], "n_train": [400], "label_noise": [0.0, 0.2], "seed": [0, 1],
                     "lr": [train.get("lr", 0.05), train.get("lr", 0.05) / 2]}}
    jobs = expand(parse_grid(grid))
    assert len({j.pack_key for j in jobs}) == 1 and len(jobs) == 8
    packed = _train(jobs)
    for job in jobs[::3]:
        alone = _train([job])
        for key, r in alone.items():
            for m in ("train_loss", "test_loss"):
                assert packed[key][m] == pytest.approx(r[m], rel=1e-5), (key, m)
            for m in ("train_error", "test_error"):
                assert abs(packed[key][m] - r[m]) <= 2 / 400  # at most a borderline sample or two
