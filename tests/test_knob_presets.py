"""Every preset of the neighbouring phenomena plans as shipped, and runs end to end on a short horizon.

The presets' grids are copied with epochs = 2 into one database and trained by one
`ddsweep work`; then each preset's own metrics are checked, the views tell the knob
axes apart, and `ddsweep plot bootstrap` draws the real-vs-ideal figure in a process
that never imports torch.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

import ddsweep
from tests.conftest import ROOT, TINY, write_grid

PRESETS = ["mnist1d-flood", "mnist1d-batch-lr", "mnist1d-fullbatch", "mnist1d-fullbatch-sgd", "mnist1d-bootstrap"]
EPOCHS = 2


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("presets")
    db = tmp / "r.duckdb"
    planned = {}
    for name in PRESETS:
        shipped = ROOT / "sweeps" / f"{name}.yaml"
        full = ddsweep.plan(shipped, db, dry_run=True)
        assert full.new > 0 and full.sweep == name
        grid = yaml.safe_load(shipped.read_text())
        grid["train"]["epochs"] = EPOCHS
        planned[name] = ddsweep.plan(write_grid(tmp / f"{name}.yaml", grid), db)
        assert planned[name].new == full.new  # the same cells (the horizon aside)
    result = ddsweep.work(db, cpus=2, show_progress=False)
    assert result.failed == 0
    return db, planned, tmp


def frame(db, sweep):
    return ddsweep.query(f"select j.*, m.* exclude (job_id) from metrics m join jobs j using (job_id) "
                         f"where j.sweep = '{sweep}'", db)


def test_every_preset_runs(trained):
    db, planned, _ = trained
    status = ddsweep.query("select sweep, status, count(*) n from jobs group by all", db)
    assert set(status["status"]) == {"done"}
    for name, p in planned.items():
        df = frame(db, name)
        assert len(df) == p.total * (EPOCHS + 1), name  # epochs 0, 1, 2 of every job
        trained_rows = df[df["epoch"] > 0]
        assert trained_rows[["dist_from_init", "weight_norm"]].notna().all().all(), name
    # the full-batch gradient norm is measured where a knob acts on gradients, NULL elsewhere
    gd = frame(db, "mnist1d-fullbatch")
    assert gd[gd["epoch"] > 0]["grad_norm"].notna().all()
    batch = frame(db, "mnist1d-batch-lr")
    full = batch["batch_size"] >= batch["n_train"]
    assert batch[full & (batch["epoch"] > 0)]["grad_norm"].notna().all()


def test_preset_metrics(trained):
    db, _, _ = trained
    flood = frame(db, "mnist1d-flood")
    on = flood[(flood["flood"] > 0) & (flood["epoch"] > 0)]
    assert on["ascent_fraction"].notna().all() and on["flooded_loss"].notna().all()
    assert flood[flood["flood"] == 0]["ascent_fraction"].isna().all()
    batch = frame(db, "mnist1d-batch-lr")
    assert set(batch["batch_size"]) == {10, 32, 100, 320, 1000, 4000}  # full = n_train
    assert (batch.loc[batch["batch_size"] == 4000, "noise_scale"] == 0).all()
    assert batch["noise_scale"].max() > 100  # lr 0.1, B 10: 0.1 * 399 / 0.1
    gd = frame(db, "mnist1d-fullbatch")
    assert set(gd["step"]) == {0, 1, 2}  # one step per epoch
    clipped = gd[(gd["grad_clip"] > 0) & (gd["epoch"] > 0)]
    assert clipped["clip_rate"].notna().all() and gd[gd["grad_clip"] == 0]["clip_rate"].isna().all()
    boot = frame(db, "mnist1d-bootstrap")
    assert set(boot["world"]) == {"real", "ideal"}
    assert boot[boot["world"] == "ideal"]["noise_scale"].isna().all()
    # the views keep the knob axes apart: one curve cell per (width, flood), one seed each
    cells = ddsweep.query("select width, flood, max(seeds) s from curves where sweep = 'mnist1d-flood' group by all", db)
    assert len(cells) == flood["job_id"].nunique() and (cells["s"] == 1).all()


def test_plot_bootstrap_without_torch(trained, cli):
    db, _, tmp = trained
    out = tmp / "bootstrap.png"
    code = ("import sys; from ddsweep.plot import bootstrap; "
            f"bootstrap({str(db)!r}, sweep='mnist1d-bootstrap', out={str(out)!r}); "
            "assert 'torch' not in sys.modules, 'the plotting process imported torch'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size > 10_000
    r = cli("plot", "bootstrap", "--db", db, "--sweep", "mnist1d-bootstrap", "--where", "width=16,64",
            "--out", tmp / "b2.svg")
    assert r.exit_code == 0, r.output
    r = cli("plot", "bootstrap", "--db", db, "--sweep", "mnist1d-flood", "--out", tmp / "b3.png")
    assert r.exit_code == 2 and "needs runs in both worlds" in r.output


def test_ideal_world_of_a_generator_never_runs_out():
    """MNIST-1D's ideal world renders fresh samples: no pool bounds its horizon (a pool dataset's
    ideal world is bounded by its pool: tests/test_bootstrap.py)."""
    import ddsweep.grid as grid

    g = {**TINY, "train": {**TINY["train"], "epochs": 5000},
         "grid": {**TINY["grid"], "world": ["real", "ideal"]}}  # 5000 x 400 samples, the pool is 1200
    jobs = grid.expand(grid.parse_grid(g, "g.yaml"), "g.yaml")
    assert {j.config["train"].get("world", "real") for j in jobs} == {"real", "ideal"}
