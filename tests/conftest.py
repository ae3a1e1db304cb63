"""Shared fixtures: a session-wide dataset cache, tiny grids, and a CLI runner."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

# One MNIST-1D cache for the whole session (and for the worker processes tests start),
# removed at exit so repeated runs do not fill the disk.
if "DDSWEEP_CACHE" not in os.environ:
    os.environ["DDSWEEP_CACHE"] = tempfile.mkdtemp(prefix="ddsweep-cache-")
    atexit.register(shutil.rmtree, os.environ["DDSWEEP_CACHE"], ignore_errors=True)

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "name": "tiny",
    "dataset": {"name": "mnist1d", "pool": 1200, "test": 600},
    "model": {"name": "mlp", "depth": 2},
    "train": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 50, "epochs": 6},
    "eval": {"every": 2},
    "grid": {"width": [4, 16], "n_train": [400], "label_noise": [0.0, 0.2], "seed": [0]},
}


def jobs_of(grid: dict) -> list[dict]:
    """The grid's jobs as plain data (id, JSON-normalised config, epochs, horizons), for comparisons."""
    from ddsweep.grid import expand, parse_grid

    return [{"job_id": j.job_id, "config": json.loads(json.dumps(j.config, sort_keys=True)),
             "epochs": j.epochs, "horizons": list(j.horizons)} for j in expand(parse_grid(grid))]


def rows_of(events) -> dict:
    """Metric rows of a training run's events, by (job_id, epoch)."""
    from ddsweep.workers.events import Metrics

    return {(r["job_id"], r["epoch"]): r for e in events if isinstance(e, Metrics) for r in e.rows}


def finish_pending(db, final, first=None):
    """Finish every pending job with synthetic metrics instead of training: the row `first` at epoch 0
    (default: errors 0.9) and `final(width)` at the job's horizon. Returns what `work` reports (counts)."""
    from ddsweep.store import Store
    from ddsweep.store import jobs as store_jobs
    from ddsweep.workers.events import Finished, JobStatus, Metrics

    first = first or {"test_error": 0.9, "train_error": 0.9}
    with Store(db).write() as conn:
        claimed = store_jobs.claim(conn, "fake", 10**6)
        events = []
        for j in claimed:
            w, e = j["config"]["width"], j["epochs"]
            rows = [{"job_id": j["job_id"], "epoch": 0, **first}, {"job_id": j["job_id"], "epoch": e, **final(w)}]
            events += [Metrics(rows=rows), Finished(job_id=j["job_id"], status=JobStatus.DONE, epochs=e)]
        store_jobs.apply_events(conn, "fake", events)
    return type("W", (), {"done": len(claimed), "failed": 0, "diverged": 0})()


def write_grid(path: Path, grid: dict) -> Path:
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


@pytest.fixture
def tiny_grid(tmp_path) -> Path:
    return write_grid(tmp_path / "tiny.yaml", TINY)


@pytest.fixture
def runner():
    from typer.testing import CliRunner

    return CliRunner()


@pytest.fixture
def cli(runner):
    """Invoke the ddsweep CLI in-process: cli("plan", "g.yaml", "--db", db) -> Result."""
    from ddsweep.cli import app

    def invoke(*args):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


def demo_frame():
    """Metric rows shaped like `make demo`'s database: the embedded default grid's widths, n, noise, seed and
    evaluated epochs, with a smooth double-descent-like test error (peak near the interpolation threshold)
    and float32 values, as training records them. Fast: no training."""
    import numpy as np
    import pandas as pd

    from ddsweep.grid import expand, load_grid

    grid = ROOT / "sweeps" / "mnist1d-mlp.yaml"
    spec = load_grid(grid)
    jobs = expand(spec, grid)
    epochs = np.array(spec.eval.epochs([jobs[0].epochs]))
    rows = []
    for job in jobs:
        c = job.config
        h, n, p = c["width"], c["n_train"], c["label_noise"]
        cap = h / 50.0  # fits its noisy training set from h ~ 50 on, later for small h
        t = np.log1p(epochs) / np.log1p(epochs[-1])
        train = np.clip(p * (1 - np.tanh(cap * t * 3)) + 0.5 * np.exp(-epochs / 4), 0, 1)
        test = np.clip(0.35 + 0.2 * np.exp(-np.log(cap * (t + 0.05)) ** 2) + 0.4 * np.exp(-epochs / 20), 0, 1)
        rows.append(pd.DataFrame({"width": h, "n_train": n, "label_noise": p, "seed": c["seed"], "epoch": epochs,
                                  "test_error": test.astype(np.float32).astype(float),
                                  "train_error": train.astype(np.float32).astype(float),
                                  "test_loss": (2 * test).astype(np.float32).astype(float),
                                  "train_loss": (2 * train).astype(np.float32).astype(float)}))
    return spec.name, pd.concat(rows, ignore_index=True).assign(dataset="mnist1d")


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory) -> Path:
    """A database shaped like the one `make demo` writes (sweep mnist1d-mlp), built by import in a blink."""
    from ddsweep.exchange import import_frame

    name, df = demo_frame()
    db = tmp_path_factory.mktemp("demo") / "results.duckdb"
    import_frame(df, db, sweep=name)
    return db
