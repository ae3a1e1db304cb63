"""The validation split (`dataset: {val: N}`): held out of the pool, never trained on, stored per evaluation."""

import copy

import duckdb
import pytest
import torch

from ddsweep.data import dataset_identity, load_dataset
from ddsweep.data.noise import seeded_generator, training_subset, validation_split
from ddsweep.errors import GridError
from ddsweep.grid import expand, parse_grid
from ddsweep.train.loop import training_set
from tests.conftest import TINY, write_grid


def with_val(val, **grid):
    g = copy.deepcopy(TINY)
    g["dataset"]["val"] = val
    g["grid"].update(grid)
    return g


def test_validation_never_overlaps_training_or_test_for_any_seed_and_n():
    jobs = expand(parse_grid(with_val(300, n_train=[100, 400, 900], seed=[0, 1, 2], label_noise=[0.0, 0.3])))
    cfg = jobs[0].config["dataset"]
    assert cfg["val"] == 300 and all(j.config["dataset"] == cfg for j in jobs)
    data = load_dataset(cfg)
    val = validation_split(dataset_identity(cfg), len(data.y_pool))
    assert len(val) == 300 == len(set(val.tolist()))
    held = set(val.tolist())
    for j in jobs:
        idx, labels, _ = training_set(j.config, data)
        assert len(idx) == j.config["n_train"] and not held & set(idx.tolist()), j.config
    # the test set is generated apart from the pool: no validation input equals a test input
    x_val, x_test = data.x_pool[val], data.x_test
    assert not (torch.cdist(x_val, x_test).min(dim=1).values == 0).any()
    # the same split for every seed; smaller training sets stay subsets of larger ones
    small = training_subset(dataset_identity(cfg), len(data.y_pool), 100, 1)
    large = training_subset(dataset_identity(cfg), len(data.y_pool), 900, 1)
    assert set(small.tolist()) <= set(large.tolist())


def test_no_split_keeps_configs_and_draws_unchanged():
    base = expand(parse_grid(TINY))
    assert sorted(j.job_id for j in expand(parse_grid(with_val(0)))) == sorted(j.job_id for j in base)
    assert "val" not in base[0].config["dataset"]
    ds = base[0].config["dataset"]
    perm = torch.randperm(1200, generator=seeded_generator("subset", ds, 0))  # the draw as it always was
    assert torch.equal(training_subset(ds, 1200, 400, 0), perm[:400])
    assert len(validation_split(ds, 1200)) == 0


def test_a_split_too_large_for_the_pool_is_one_line(tmp_path, cli):
    with pytest.raises(GridError, match=r"grid\.n_train\[1\] = 1000: larger than the training pool less the "
                                        r"validation split \(1200 - val 300 = 900\)"):
        expand(parse_grid(with_val(300, n_train=[400, 1000])))
    with pytest.raises(GridError, match="dataset.val = 1200: holds out the whole training pool"):
        expand(parse_grid(with_val(1200)))
    db = tmp_path / "r.duckdb"
    r = cli("plan", write_grid(tmp_path / "g.yaml", with_val(900)), "--db", db)
    assert r.exit_code == 2 and not db.exists()
    assert "\n" not in r.output.strip() and "g.yaml: grid.n_train = 400: larger than the training pool less" in r.output


def test_each_evaluation_stores_val_loss_and_error(tmp_path, cli):
    g = with_val(200, label_noise=[0.2], width=[16])
    db = tmp_path / "r.duckdb"
    assert cli("plan", write_grid(tmp_path / "g.yaml", g), "--db", db).exit_code == 0
    r = cli("work", "--db", db, "--cpus", "1", "--no-progress")
    assert r.exit_code == 0 and "done 1, failed 0" in r.output, r.output
    con = duckdb.connect(str(db), read_only=True)
    try:
        rows = con.execute("select epoch, val_loss, val_error, test_error, train_error from metrics "
                           "order by epoch").fetchall()
    finally:
        con.close()
    assert len(rows) == 4 and all(v is not None for row in rows for v in row)
    assert all(0 <= row[2] <= 1 for row in rows) and rows[-1][1] < rows[0][1]  # it learns, on held-out data
    assert rows[0][2] > 0.5  # an untrained 10-class model is mostly wrong on clean held-out labels


def test_select_on_val_stops_where_the_validation_error_is_least():
    """Early stopping chosen on val reads the test error at the epoch of least val error, not least test error."""
    import pandas as pd

    from ddsweep.analysis.frames import early_stopped

    rows = [{"job_id": f"w{w}", "width": w, "n_train": 400, "label_noise": 0.0, "seed": 0, "epoch": e,
             "test_error": te, "val_error": ve, "train_error": 0.0}
            for w in (4, 8) for e, te, ve in ((1, 0.5, 0.2), (2, 0.3, 0.4), (3, 0.4, 0.3))]
    df = pd.DataFrame(rows)
    on_test = early_stopped(df, ["width"], "test_error")
    on_val = early_stopped(df, ["width"], "test_error", select="val_error")
    assert on_test["best_epoch"].tolist() == [2, 2] and on_test["test_error"].tolist() == [0.3, 0.3]
    assert on_val["best_epoch"].tolist() == [1, 1] and on_val["test_error"].tolist() == [0.5, 0.5]


def test_select_on_val_through_the_cli(tmp_path, cli):
    g = with_val(200, width=[4, 8, 16], label_noise=[0.0])
    db = tmp_path / "r.duckdb"
    assert cli("plan", write_grid(tmp_path / "g.yaml", g), "--db", db).exit_code == 0
    assert cli("work", "--db", db, "--cpus", "1", "--no-progress").exit_code == 0
    r = cli("summary", "--db", db, "--select-on", "val")
    assert r.exit_code == 0 and "early-stopped on val" in r.output, r.output
    out = tmp_path / "c.png"
    r = cli("plot", "curve", "--db", db, "--x", "width", "--select-on", "val", "--out", out)
    assert r.exit_code == 0 and out.stat().st_size > 10_000, r.output
    r = cli("summary", "--db", db, "--select-on", "train")
    assert r.exit_code == 2 and "'train' is not one of 'test', 'val'" in r.output  # (a choice: --help lists it)
    plain = tmp_path / "p.duckdb"  # no split: selecting on val is one line, not a figure of nothing
    assert cli("plan", write_grid(tmp_path / "p.yaml", TINY), "--db", plain).exit_code == 0
    assert cli("work", "--db", plain, "--cpus", "1", "--no-progress").exit_code == 0
    r = cli("summary", "--db", plain, "--select-on", "val")
    assert r.exit_code == 2 and "no val_error" in r.output and "\n" not in r.output.strip(), r.output
