"""Read once, validate, then write: `plan` takes its grid from anything readable once, and
`query` sees the database only."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading

import yaml

import ddsweep
from tests.conftest import ROOT, TINY, write_grid
from tests.test_reliability import db_rows

TEXT = "# the sweep's grid, as written\n" + yaml.safe_dump(TINY, sort_keys=False)


def _stored_grid(db) -> tuple[str, str]:
    return db_rows(db, "select grid_path, grid_yaml from sweeps")[0]


def test_plan_from_a_fifo_stores_the_text_it_parsed(tmp_path, cli):
    fifo, db = tmp_path / "grid.fifo", tmp_path / "r.duckdb"
    os.mkfifo(fifo)

    def write():
        with open(fifo, "w") as f:  # blocks until plan opens it: once
            f.write(TEXT)

    writer = threading.Thread(target=write)
    writer.start()
    r = cli("plan", fifo, "--db", db)
    writer.join(timeout=10)
    assert r.exit_code == 0, r.output
    assert _stored_grid(db) == (str(fifo), TEXT)
    assert db_rows(db, "select count(*) from jobs") == [(4,)]


def _shell(command: str, tmp_path, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(["bash", "-c", command], input=stdin, capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=120)


def test_plan_from_process_substitution_and_stdin(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(TEXT)
    ddsweep_cmd = f"{shlex.quote(sys.executable)} -m ddsweep"
    p = _shell(f"{ddsweep_cmd} plan <(cat g.yaml) --db a.duckdb", tmp_path)
    assert p.returncode == 0, p.stderr
    path, text = _stored_grid(tmp_path / "a.duckdb")
    assert path.startswith("/dev/fd/") and text == TEXT
    p = _shell(f"{ddsweep_cmd} plan - --db b.duckdb", tmp_path, stdin=TEXT)
    assert p.returncode == 0, p.stderr
    assert _stored_grid(tmp_path / "b.duckdb") == ("<stdin>", TEXT)
    assert db_rows(tmp_path / "b.duckdb", "select count(*) from jobs") == [(4,)]


def test_plan_refuses_an_endless_file_before_opening_the_database(tmp_path, cli):
    db = tmp_path / "r.duckdb"
    r = cli("plan", "/dev/zero", "--db", db)
    assert r.exit_code == 2, r.output
    assert r.output.strip() == "ddsweep: error: /dev/zero: larger than 4 MiB: not a grid file"
    assert not db.exists() and not (tmp_path / "r.duckdb.lock").exists()


def test_query_sees_only_the_database_unless_allowed(tmp_path, cli):
    db = tmp_path / "r.duckdb"
    ddsweep.plan(write_grid(tmp_path / "g.yaml", TINY), db)
    copy, exported, other = tmp_path / "copy.csv", tmp_path / "exported", tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    for sql in (f"copy jobs to '{copy}'", f"export database '{exported}'", f"select * from read_csv('{other}')",
                "select * from read_text('/etc/hostname')", f"attach '{tmp_path / 'x.duckdb'}' as x",
                "install httpfs", "set enable_external_access = true"):
        r = cli("query", sql, "--db", db)
        assert r.exit_code == 2, (sql, r.output)
        assert len(r.output.strip().splitlines()) == 1 and r.output.startswith("ddsweep: error: query failed: "), \
            (sql, r.output)
    assert not copy.exists() and not exported.exists() and not (tmp_path / "x.duckdb").exists()
    r = cli("query", "select count(*) as n from jobs", "--db", db)
    assert r.exit_code == 0 and "4" in r.output, r.output

    r = cli("query", f"copy jobs to '{copy}'", "--db", db, "--allow-external")
    assert r.exit_code == 0 and copy.read_text().count("\n") == 5, r.output
    # the database is not left locked down for the rest of the process: export (COPY ... TO) works
    path, rows = ddsweep.export(db, fmt="csv", table="jobs", out=tmp_path / "jobs.csv")
    assert rows == 4 and path.exists()


def test_a_huge_result_is_not_drawn_as_a_table(tmp_path, cli):
    db = tmp_path / "r.duckdb"
    ddsweep.plan(write_grid(tmp_path / "g.yaml", TINY), db)
    r = cli("query", "select range as i from range(5000)", "--db", db, "--format", "table")
    assert r.exit_code == 0
    assert "warning: 5,000 rows; showing the first 1,000 as a table (all of them: --format tsv, csv or json)" \
        in r.output, r.output[:300]
    assert " 999 " in r.output and " 1000 " not in r.output
    for args in (["--csv"], ["--format", "csv"], []):  # (piped, the default is tsv: every row)
        r = cli("query", "select range as i from range(5000)", "--db", db, *args)
        assert r.exit_code == 0 and r.output.splitlines() == ["i", *map(str, range(5000))]
