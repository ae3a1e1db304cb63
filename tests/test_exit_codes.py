"""Exit codes tell the truth: `ddsweep work && ddsweep report` stops when it should."""

from __future__ import annotations

import os
import signal

import duckdb

import ddsweep
from ddsweep.errors import EXIT_UNFINISHED, EXIT_USAGE
from tests.conftest import TINY, write_grid
from tests.test_reliability import (SLOW, assert_equal_metrics, db_rows, finish, start_work, train_reference,
                                    wait_for)


def test_sigterm_to_the_process_group_hands_every_job_back_and_exits_143(tmp_path):
    grid = {**SLOW, "train": {**SLOW["train"], "epochs": 48}, "eval": {"every": 8}, "grid": {**SLOW["grid"], "width": [512]}}
    db = tmp_path / "r.duckdb"
    ddsweep.plan(write_grid(tmp_path / "long.yaml", grid), db)
    proc = start_work(db, "--cpus", 1, "--flush-every", 0.2)
    try:
        wait_for(lambda: db_rows(db, "select max(epochs_done) from jobs")[0][0] >= 1, interval=0.1, what="an epoch")
        os.killpg(proc.pid, signal.SIGTERM)  # as a service manager stops a unit: every process of the group
        out, err = finish(proc, timeout=60, code=143)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "handed back 2" in out, out + err
    # handed back, not failed: the workers (which ignore SIGTERM) checkpointed first
    assert db_rows(db, "select status, failures, count(*) from jobs group by all") == [("pending", 0, 2)]
    finish(start_work(db, "--cpus", 1))
    assert_equal_metrics(db, train_reference(grid))


def test_jobs_leased_by_another_work_exit_4(tmp_path, cli):
    db = tmp_path / "r.duckdb"
    ddsweep.plan(write_grid(tmp_path / "g.yaml", {**TINY, "train": {**TINY["train"], "epochs": 1}}), db)
    con = duckdb.connect(str(db))  # another coordinator, alive (its lease runs for an hour), holds one job
    con.execute("update jobs set status = 'running', lease_owner = 'elsewhere-1-abcdef', "
                "lease_until = (current_timestamp AT TIME ZONE 'UTC') + INTERVAL 1 HOUR "
                "where job_id = (select min(job_id) from jobs)")
    con.close()
    r = cli("work", "--db", db, "--cpus", 1, "--no-progress")
    assert r.exit_code == EXIT_UNFINISHED == 4, r.output
    assert "done 3" in r.output and "1 running elsewhere" in r.output, r.output
    r = cli("work", "--db", db, "--cpus", 1, "--no-progress", "--sweep", "tiny")
    assert r.exit_code == 4, r.output


def test_unknown_sweep_is_bad_input_everywhere(tmp_path, cli):
    db = tmp_path / "r.duckdb"
    ddsweep.plan(write_grid(tmp_path / "g.yaml", {**TINY, "train": {**TINY["train"], "epochs": 1}}), db)
    for command in (["status"], ["retry"], ["retry", "--diverged"], ["extend", "--epochs", 9], ["work", "--cpus", 1],
                    ["export"], ["emc"], ["summary"], ["report"], ["plot", "curve"]):
        r = cli(*command, "--db", db, "--sweep", "nosuch")
        assert r.exit_code == EXIT_USAGE, (command, r.output)
        assert r.output.strip().splitlines() == [f"ddsweep: error: --sweep nosuch: no such sweep in {db} "
                                                 "(known: tiny)"], (command, r.output)
    r = cli("status", "--db", db, "--sweep", "tiyn")
    assert r.exit_code == EXIT_USAGE and r.output.strip() == \
        f"ddsweep: error: --sweep tiyn: no such sweep in {db}; did you mean tiny?", r.output
    assert db_rows(db, "select distinct status, lease_owner from jobs") == [("pending", None)]
