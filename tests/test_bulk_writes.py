"""Bulk updates (extend, re-planning a longer horizon) are set-based: one statement, a short lock."""

from __future__ import annotations

import time

import duckdb

import ddsweep
from tests.conftest import TINY, write_grid
from tests.test_reliability import db_rows

JOBS = 20_000


def _many_jobs(tmp_path, count: int):
    """A database with `count` jobs: TINY's four, copied under new ids; a quarter done, one failed."""
    db = tmp_path / "r.duckdb"
    ddsweep.plan(write_grid(tmp_path / "g.yaml", TINY), db)
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO jobs BY NAME SELECT jobs.* REPLACE ('copy' || i || '-' || job_id AS job_id) "
                "FROM jobs, range(?) AS t(i)", [count // 4 - 1])
    con.execute("UPDATE jobs SET status = 'done', finished_at = current_timestamp, epochs_done = 6 "
                "WHERE width = 4 AND label_noise = 0")
    con.execute("UPDATE jobs SET status = 'failed', finished_at = current_timestamp "
                "WHERE job_id = (SELECT min(job_id) FROM jobs WHERE width = 16)")
    con.close()
    assert db_rows(db, "select count(*) from jobs") == [(count,)]
    return db


def test_extend_of_20k_jobs_is_one_statement(tmp_path, cli, capsys):
    db = _many_jobs(tmp_path, JOBS)
    t = time.perf_counter()
    r = cli("extend", "--epochs", 9, "--db", db)
    seconds = time.perf_counter() - t
    assert r.exit_code == 0 and f"extended {JOBS} job(s) to 9 epochs" in r.output, r.output
    with capsys.disabled():
        print(f"\n  extend --epochs 9 of {JOBS:,} jobs: {seconds:.2f}s (CLI, in process)")
    assert db_rows(db, "select status, epochs, horizons, count(*), count(finished_at) from jobs group by all "
                       "order by status") == [("failed", 9, "[6, 9]", 1, 1), ("pending", 9, "[6, 9]", JOBS - 1, 0)]
    # a shorter or equal horizon changes nothing
    r = cli("extend", "--epochs", 9, "--db", db)
    assert r.exit_code == 0 and "extended 0 job(s)" in r.output, r.output


def test_replanning_a_longer_horizon_reopens_finished_jobs(tmp_path):
    db = tmp_path / "r.duckdb"
    grid = write_grid(tmp_path / "g.yaml", TINY)
    ddsweep.plan(grid, db)
    con = duckdb.connect(str(db))
    con.execute("UPDATE jobs SET status = 'done', finished_at = current_timestamp, epochs_done = 6 WHERE width = 4")
    con.close()
    longer = write_grid(tmp_path / "g9.yaml", {**TINY, "train": {**TINY["train"], "epochs": 9}})
    r = ddsweep.plan(longer, db)
    assert (r.new, r.existing, r.extended) == (0, 4, 4)
    assert db_rows(db, "select width, status, epochs, horizons, count(finished_at) from jobs group by all "
                       "order by width") == [(4, "pending", 9, "[6, 9]", 0), (16, "pending", 9, "[6, 9]", 0)]
    assert ddsweep.plan(longer, db).extended == 0


def test_extend_validates_epochs_like_plan(tmp_path, cli):
    db = tmp_path / "r.duckdb"
    ddsweep.plan(write_grid(tmp_path / "g.yaml", TINY), db)
    for bad, why in ((100_000_000, "less than or equal to 1000000"), (0, "greater than 0"), (-3, "greater than 0")):
        r = cli("extend", "--epochs", bad, "--db", db)
        assert r.exit_code == 2 and f"--epochs = {bad}: Input should be {why}" in r.output, r.output
    assert db_rows(db, "select distinct epochs from jobs") == [(6,)]
    r = cli("extend", "--epochs", 7, "--sweep", "nosuch", "--db", db)
    assert r.exit_code == 2 and "--sweep nosuch: no such sweep" in r.output, r.output


def test_bulk_write_benchmark_runs_both_ways_to_the_same_rows():
    from ddsweep.bench.writes import main

    r = main(["--jobs", "400"])  # (it asserts that both ways leave the same rows)
    assert r["jobs"] == 400 and r["seconds"] > 0 and r["baseline_seconds"] > 0
