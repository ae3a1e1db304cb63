"""One vocabulary (ddsweep.axes): the grid, the schema, load_metrics and export/import all agree with it."""

import numpy as np
import pandas as pd
import pytest

from ddsweep import api, axes
from ddsweep.grid import ModelSpec, TrainSpec, expand, parse_grid
from ddsweep.store import Store
from ddsweep.store import jobs as store_jobs
from ddsweep.workers.events import Finished, JobStatus, Metrics

# Every knob away from its default; flood and seed vary, so cells differ by a knob axis.
KNOB_GRID = {
    "name": "knobs",
    "dataset": {"name": "mnist1d", "pool": 400, "test": 200},
    "model": {"name": "mlp", "depth": 3},
    "train": {"optimizer": "adam", "lr": 0.003, "momentum": 0.5, "weight_decay": 1.0e-4, "batch_size": 25,
              "epochs": 3, "loss": "mse", "schedule": "cosine", "warmup": 7, "grad_clip": 1.5, "grad_penalty": 0.01,
              "world": "ideal"},
    "eval": {"every": 1},
    "grid": {"width": [4, 8], "n_train": [100], "label_noise": [0.1], "seed": [0, 1], "flood": [0.05, 0.1]},
}


def test_grid_specs_and_the_vocabulary_agree():
    train = [a.name for a in axes.AXES if a.section == "train"]
    assert sorted(train) == sorted(TrainSpec.model_fields)
    for name in train:
        default = TrainSpec.model_fields[name].default
        assert axes.AXIS[name].default == default, name
    assert axes.AXIS["depth"].default == ModelSpec.model_fields["depth"].default
    from ddsweep import grid

    assert set(grid.ALL_AXES) == set(axes.GRID_AXES)
    assert grid.INT_AXES is axes.INT_AXES and grid.TEXT_AXES is axes.TEXT_AXES
    assert grid.KNOB_DEFAULTS == {k: axes.KNOB_DEFAULTS[k] for k in grid.KNOB_DEFAULTS}
    assert set(grid.KNOB_DEFAULTS) == set(axes.KNOB_AXES)


def test_schema_holds_every_vocabulary_column(tmp_path):
    db = tmp_path / "s.duckdb"
    with Store(db).write():
        pass
    got = {t: api.query(f"select column_name from information_schema.columns where table_name = '{t}'", db)
           ["column_name"].tolist() for t in ("jobs", "metrics")}
    assert got["metrics"] == list(axes.METRIC_COLUMNS)
    assert set(axes.JOB_AXES) <= set(got["jobs"])
    types = dict(api.query("select column_name, data_type from information_schema.columns "
                           "where table_name = 'jobs'", db).values)
    for a in axes.AXES:
        if a.job:
            assert types[a.name] == a.sql_type, a.name


def _knob_sweep(tmp_path, name="knobs.duckdb"):
    """The knob grid planned, with every metric column written through the store's event path."""
    spec = parse_grid(KNOB_GRID, "knobs.yaml")
    jobs = expand(spec, "knobs.yaml")
    db = tmp_path / name
    rng = np.random.default_rng(0)
    events = []
    for job in jobs:
        rows = [{"job_id": job.job_id, "epoch": e, **{m: float(rng.uniform(0.01, 0.99)) for m in axes.METRIC}}
                for e in range(4)]
        for r in rows:
            r["step"] = 4 * r["epoch"]
        events.append(Metrics(rows=rows))
        events.append(Finished(job_id=job.job_id, status=JobStatus.DONE, epochs=3))
    with Store(db).write() as conn:
        store_jobs.add_jobs(conn, spec.name, "knobs.yaml", "name: knobs\n", jobs)
        store_jobs.apply_events(conn, "test", events)
    return db, jobs


def test_load_metrics_has_the_export_columns_and_dtypes(tmp_path):
    db, jobs = _knob_sweep(tmp_path)
    df = api.load_metrics(db)
    assert tuple(df.columns) == axes.RESULT_COLUMNS
    assert len(df) == 4 * len(jobs) == 32
    for m in axes.METRICS:
        assert df[m.column].dtype == (np.int64 if m.kind == "int" else np.float64), m.column
    # the per-epoch learning rate next to the job's: both there, different numbers
    assert df["lr"].eq(0.003).all() and df["epoch_lr"].between(0.01, 0.99).all()
    # the knobs, from the grid (train section and axis) into the jobs columns
    one = df.iloc[0]
    assert (one["schedule"], one["warmup"], one["grad_clip"], one["grad_penalty"], one["world"]) == (
        "cosine", 7, 1.5, 0.01, "ideal")
    assert sorted(df["flood"].unique()) == [0.05, 0.1]
    assert (one["optimizer"], one["loss"], one["depth"], one["batch_size"]) == ("adam", "mse", 3, 25)
    out, rows = api.export(db, fmt="csv", out=tmp_path / "k.csv")
    assert tuple(pd.read_csv(out).columns) == axes.RESULT_COLUMNS and rows == 32


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_export_import_round_trip_with_every_knob(tmp_path, fmt):
    db, _ = _knob_sweep(tmp_path)
    out, rows = api.export(db, fmt=fmt, out=tmp_path / f"k.{fmt}")
    res = api.import_results(out, tmp_path / "back.duckdb")
    assert (res.sweep, res.jobs, res.rows) == ("knobs", 8, rows)
    assert set(axes.KNOB_COLUMNS) <= set(res.axes) and "epoch_lr" in res.metrics
    key = ["width", "seed", "flood", "epoch"]
    a = api.load_metrics(db).sort_values(key).reset_index(drop=True)
    b = api.load_metrics(tmp_path / "back.duckdb").sort_values(key).reset_index(drop=True)
    same = [c for c in axes.RESULT_COLUMNS if c != "job_id"]
    pd.testing.assert_frame_equal(a[same], b[same], check_exact=False, rtol=1e-12)
    # imported twice (the export of the import): the same runs, the same ids
    out2, _ = api.export(tmp_path / "back.duckdb", fmt=fmt, out=tmp_path / f"k2.{fmt}")
    api.import_results(out2, tmp_path / "back2.duckdb")
    ids = [set(api.load_metrics(d)["job_id"]) for d in (tmp_path / "back.duckdb", tmp_path / "back2.duckdb")]
    assert ids[0] == ids[1]


def test_import_ids_skip_knobs_at_their_defaults(tmp_path):
    """A file without knob columns and the same file with them at their defaults are the same runs."""
    base = pd.DataFrame({"width": [4, 8], "n_train": [10, 10], "label_noise": [0.0, 0.0], "seed": [0, 0],
                         "epoch": [1, 1], "test_error": [0.5, 0.4]})
    api.import_results  # noqa: B018 (the twin exists)
    from ddsweep.exchange import import_frame

    import_frame(base, tmp_path / "a.duckdb", sweep="s")
    import_frame(base.assign(schedule="constant", flood=0.0, world="real"), tmp_path / "b.duckdb", sweep="s")
    ids = [sorted(api.load_metrics(tmp_path / d)["job_id"]) for d in ("a.duckdb", "b.duckdb")]
    assert ids[0] == ids[1]
