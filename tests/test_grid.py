"""Grid files: axis generators, expansion, job ids, merging of epochs, idempotent planning."""

import copy

import pytest

import ddsweep
from ddsweep.errors import GridError
from ddsweep.grid import EvalSpec, expand, parse_grid
from tests.conftest import TINY, write_grid


def jobs_of(grid):
    return expand(parse_grid(grid))


def test_cartesian_product_and_resolved_config():
    jobs = jobs_of(TINY)
    assert len(jobs) == 2 * 1 * 2 * 1
    c = jobs[0].config
    assert c["train"]["lr"] == 0.05 and "epochs" not in c["train"]
    assert {j.config["width"] for j in jobs} == {4, 16}
    assert len({j.job_id for j in jobs}) == len(jobs)


def test_axis_generators():
    g = copy.deepcopy(TINY)
    g["grid"]["width"] = {"geom": [2, 300, 19]}
    widths = sorted({j.config["width"] for j in jobs_of(g)})
    assert widths[0] == 2 and widths[-1] == 300
    assert len(widths) == 18  # 19 geometric points, two round to 3
    g["grid"]["width"] = {"range": [36, 64, 4]}
    assert sorted({j.config["width"] for j in jobs_of(g)}) == [36, 40, 44, 48, 52, 56, 60, 64]
    g["grid"]["width"] = [8]
    g["grid"]["lr"] = {"geom": [0.001, 0.1, 3]}
    assert sorted({j.config["train"]["lr"] for j in jobs_of(g)}) == [0.001, 0.01, 0.1]


def test_job_id_is_a_hash_of_the_resolved_config():
    a, b = jobs_of(TINY), jobs_of(copy.deepcopy(TINY))
    assert [j.job_id for j in a] == [j.job_id for j in b]
    g = copy.deepcopy(TINY)
    g["train"]["lr"] = 0.051
    assert not {j.job_id for j in a} & {j.job_id for j in jobs_of(g)}
    # spelling a default explicitly changes nothing
    g = copy.deepcopy(TINY)
    g["train"]["weight_decay"] = 0.0
    assert {j.job_id for j in a} == {j.job_id for j in jobs_of(g)}


def test_runs_differing_only_in_epochs_are_one_job():
    g = copy.deepcopy(TINY)
    g["grid"]["epochs"] = [3, 6, 10]
    jobs = jobs_of(g)
    assert len(jobs) == len(jobs_of(TINY))
    assert all(j.epochs == 10 and j.horizons == (3, 6, 10) for j in jobs)


def test_eval_schedule_always_has_zero_and_every_horizon():
    assert EvalSpec(every=4).epochs([10]) == [0, 4, 8, 10]
    log = EvalSpec(log_base=1.5).epochs([100, 37])
    assert log[0] == 0 and 37 in log and log[-1] == 100
    assert log == sorted(set(log)) and len(log) < 30
    assert EvalSpec().epochs([3]) == [0, 1, 2, 3]


def test_plan_is_idempotent_and_widening_adds_only_new_cells(tmp_path):
    db = tmp_path / "r.duckdb"
    path = write_grid(tmp_path / "g.yaml", TINY)
    first = ddsweep.plan(path, db)
    assert (first.new, first.existing, first.total) == (4, 0, 4)
    again = ddsweep.plan(path, db)
    assert (again.new, again.existing, again.total) == (0, 4, 4)
    g = copy.deepcopy(TINY)
    g["grid"]["width"] = [4, 16, 64]
    wider = ddsweep.plan(write_grid(tmp_path / "g.yaml", g), db)
    assert (wider.new, wider.existing, wider.total) == (2, 4, 6)
    assert wider.total_epochs == 6 * 6
    df = ddsweep.query("select width, count(*) n from jobs group by width order by width", db)
    assert df["n"].tolist() == [2, 2, 2]


def test_longer_horizon_extends_existing_jobs(tmp_path):
    db = tmp_path / "r.duckdb"
    ddsweep.plan(write_grid(tmp_path / "g.yaml", TINY), db)
    g = copy.deepcopy(TINY)
    g["grid"]["epochs"] = [6, 12]
    r = ddsweep.plan(write_grid(tmp_path / "g.yaml", g), db)
    assert (r.new, r.extended, r.total) == (0, 4, 4)
    assert ddsweep.query("select distinct epochs from jobs", db)["epochs"].tolist() == [12]


def test_dry_run_writes_nothing(tmp_path):
    db = tmp_path / "r.duckdb"
    r = ddsweep.plan(write_grid(tmp_path / "g.yaml", TINY), db, dry_run=True)
    assert r.new == 4 and not db.exists()


@pytest.mark.parametrize("patch, key", [
    ({"grid": {"width": [0], "n_train": [10]}}, "grid.width"),
    ({"grid": {"width": [4], "n_train": [10], "label_noise": [1.0]}}, "grid.label_noise"),
    ({"grid": {"width": [4], "n_train": [5000]}}, "grid.n_train"),
    ({"grid": {"width": [], "n_train": [10]}}, "grid.width"),
    ({"grid": {"widht": [4], "n_train": [10]}}, "grid.widht"),
    ({"train": {"batch_size": 0}}, "train.batch_size"),
    ({"dataset": {"name": "imagenet"}}, "dataset.name"),
])
def test_bad_values_name_the_key(patch, key):
    g = copy.deepcopy(TINY)
    for k, v in patch.items():
        g[k] = {**g[k], **v} if k != "grid" else v
    with pytest.raises(GridError) as e:
        expand(parse_grid(g, "g.yaml"), "g.yaml")
    assert str(e.value).startswith(f"g.yaml: {key}")


def test_horizon_in_steps_gives_each_n_train_its_epochs():
    g = copy.deepcopy(TINY)
    del g["train"]["epochs"]
    g["train"]["steps"] = 1000
    g["train"]["batch_size"] = 64
    g["grid"]["n_train"] = [100, 640, 1000]
    epochs = {j.config["n_train"]: j.epochs for j in jobs_of(g)}
    assert epochs == {100: 500, 640: 100, 1000: 63}  # ceil(1000 / ceil(n / 64)) whole epochs
    assert all("steps" not in j.config["train"] and "epochs" not in j.config["train"] for j in jobs_of(g))
    # the same runs as epochs: the same jobs (ids) where the horizons agree
    g2 = copy.deepcopy(g)
    del g2["train"]["steps"]
    g2["train"]["epochs"] = 100
    g2["grid"]["n_train"] = [640]
    assert {j.job_id for j in jobs_of(g2)} <= {j.job_id for j in jobs_of(g)}
    g["train"]["epochs"] = 5
    with pytest.raises(GridError, match="either epochs or steps"):
        jobs_of(g)
    del g["train"]["epochs"]
    g["train"]["steps"] = 10**9
    g["train"]["batch_size"] = "full"
    with pytest.raises(GridError, match="the limit is 1000000"):
        jobs_of(g)
