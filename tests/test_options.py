"""`ddsweep work`'s options: the DDSWEEP_* variables read once and checked at the start, listed in
`--help`, and recorded with every job's run."""

from __future__ import annotations

import json

import duckdb
import pytest

from ddsweep import env
from ddsweep.models.speed import SpeedSettings
from ddsweep.workers.options import WorkOptions


def _untouched(db) -> bool:
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.execute("SELECT count(*) FROM jobs WHERE status != 'pending' OR lease_owner IS NOT NULL"
                            ).fetchone()[0] == 0


@pytest.mark.parametrize("name, bad, why", [
    ("DDSWEEP_COMPILE", "yes", "must be 0 or 1"),
    ("DDSWEEP_CUDA_GRAPHS", "2", "must be 0 or 1"),
    ("DDSWEEP_DENSE_MEMBERS", "auto", "must be 0 or 1"),
    ("DDSWEEP_PACK_MEMORY_GB", "-1", "must be a number of GiB above 0 (e.g. 20)"),
])
def test_bad_variable_is_one_line_before_any_lease(name, bad, why, tmp_path, tiny_grid, cli, monkeypatch):
    db = tmp_path / "r.duckdb"
    cli("plan", tiny_grid, "--db", db)
    monkeypatch.setenv(name, bad)
    r = cli("work", "--db", db, "--cpus", "1", "--no-progress")
    assert r.exit_code == 2, r.output
    assert r.output.strip() == f"ddsweep: error: ${name} = {bad!r}: {why}"
    assert _untouched(db)


def test_a_variable_is_checked_even_when_an_option_overrides_it(tmp_path, tiny_grid, cli, monkeypatch):
    db = tmp_path / "r.duckdb"
    cli("plan", tiny_grid, "--db", db)
    monkeypatch.setenv("DDSWEEP_COMPILE", "true")
    r = cli("work", "--db", db, "--cpus", "1", "--no-progress", "--no-compile")
    assert r.exit_code == 2 and r.output.strip() == "ddsweep: error: $DDSWEEP_COMPILE = 'true': must be 0 or 1"
    monkeypatch.delenv("DDSWEEP_COMPILE")
    r = cli("work", "--db", db, "--cpus", "1", "--no-progress", "--pack-memory-gb", "0")
    assert r.exit_code == 2
    assert r.output.strip() == "ddsweep: error: --pack-memory-gb = 0.0: must be a number of GiB above 0 (e.g. 20)"
    assert _untouched(db)


def test_every_variable_is_in_work_help(cli):
    r = cli("work", "--help")
    assert r.exit_code == 0
    text = " ".join(r.output.split())
    for name in env.VARIABLES:
        assert f"${name}" in text, name
    for option in ("--compile", "--no-cuda-graphs", "--dense-members", "--pack-memory-gb"):
        assert option in text


def test_options_given_win_over_variables(monkeypatch):
    monkeypatch.setenv("DDSWEEP_COMPILE", "1")
    monkeypatch.setenv("DDSWEEP_CUDA_GRAPHS", "0")
    monkeypatch.delenv("DDSWEEP_DENSE_MEMBERS", raising=False)
    monkeypatch.setenv("DDSWEEP_PACK_MEMORY_GB", "12")
    assert SpeedSettings.from_env() == SpeedSettings(compile=True, cuda_graphs=False, dense_members=None)
    o = WorkOptions.from_env(compile=False, dense_members=True, threads=2)
    assert o.speed == SpeedSettings(compile=False, cuda_graphs=False, dense_members=True)
    assert o.threads == 2 and o.pack_memory_gb == 12.0 and o.pack_memory_bytes == 12 << 30
    for name in ("DDSWEEP_COMPILE", "DDSWEEP_CUDA_GRAPHS", "DDSWEEP_PACK_MEMORY_GB"):
        monkeypatch.delenv(name)
    assert WorkOptions.from_env() == WorkOptions()  # nothing set: the defaults


def test_each_finished_job_records_how_it_was_trained(tmp_path, tiny_grid, cli, monkeypatch):
    """run_options: the options of the `work` that finished the job, variables and options merged."""
    db = tmp_path / "r.duckdb"
    cli("plan", tiny_grid, "--db", db)
    monkeypatch.setenv("DDSWEEP_DENSE_MEMBERS", "1")
    monkeypatch.setenv("DDSWEEP_CUDA_GRAPHS", "1")
    r = cli("work", "--db", db, "--cpus", "1", "--no-progress", "--no-cuda-graphs", "--pack-memory-gb", "2.5",
            "--threads", "1")
    assert r.exit_code == 0, r.output
    with duckdb.connect(str(db), read_only=True) as conn:
        rows = conn.execute("SELECT status, run_options FROM jobs").fetchall()
    assert len(rows) == 4 and {s for s, _ in rows} == {"done"}
    import ddsweep

    for _, text in rows:
        assert json.loads(text) == {"ddsweep": ddsweep.__version__, "device": "cpu", "threads": 1, "pack_size": None,
                                    "compile": False, "cuda_graphs": False, "dense_members": True,
                                    "pack_memory_gb": 2.5}
