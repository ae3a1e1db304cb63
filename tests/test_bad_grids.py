"""Bad grid files: one line on stderr naming file, key and value; exit code 2; the database untouched.

Each file in tests/bad_grids/ is one malformed grid. Its first line is
`# expect: TEXT`, and TEXT must appear in the error line, which has the form

    ddsweep: error: FILE: KEY = VALUE: PROBLEM

(KEY and VALUE where the mistake has them). Every case is planned, through the
CLI, into a database that already holds a valid sweep; the database directory must
come out byte-for-byte unchanged (no .wal either).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import TINY, write_grid

BAD = Path(__file__).resolve().parent / "bad_grids"
CORPUS = sorted(BAD.glob("*.yaml"))
PREFIX = "# expect: "

# Also run as real processes (about 1 s each): a long message (rich must not wrap it at
# 80 columns), a YAML error, a duplicate key, bytes that are not UTF-8; plus the two odd paths.
SUBPROCESS_CASES = ["unknown_train_key", "yaml_syntax", "duplicate_axis", "not_utf8"]


def expectation(path: Path) -> str:
    first = path.read_bytes().split(b"\n", 1)[0].decode("utf-8", errors="replace")
    assert first.startswith(PREFIX), f"{path.name}: the first line must be '{PREFIX}<text the error must contain>'"
    return first[len(PREFIX):].strip()


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file in the database's folder."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def planned_db(tmp_path_factory):
    """A database holding the valid tiny sweep, and the snapshot of its folder."""
    from typer.testing import CliRunner

    from ddsweep.cli import app

    grid = write_grid(tmp_path_factory.mktemp("grid") / "tiny.yaml", TINY)
    folder = tmp_path_factory.mktemp("db")
    db = folder / "results.duckdb"
    r = CliRunner().invoke(app, ["plan", str(grid), "--db", str(db)])
    assert r.exit_code == 0, r.output
    before = snapshot(folder)
    assert "results.duckdb" in before and not any(name.endswith(".wal") for name in before)
    return db, before


@pytest.fixture(scope="module")
def odd_paths(tmp_path_factory):
    """Grid paths that are not grid files: one that does not exist, and a directory."""
    folder = tmp_path_factory.mktemp("odd")
    (folder / "a-directory.yaml").mkdir()
    return {"missing_file": (folder / "no-such-grid.yaml", "no-such-grid.yaml: cannot read grid file"),
            "directory": (folder / "a-directory.yaml", "a-directory.yaml: cannot read grid file")}


def check_error(stderr: str, stdout: str, path: Path, expect: str) -> None:
    assert stdout == "", f"nothing on stdout, got {stdout!r}"
    lines = stderr.splitlines()
    assert len(lines) == 1 and stderr.endswith("\n"), f"exactly one line on stderr, got {stderr!r}"
    line = lines[0]
    assert line.startswith(f"ddsweep: error: {path}: "), line
    assert expect in line, f"{expect!r} not in {line!r}"
    assert "Traceback" not in line and len(line) < 400, line


def check_untouched(db: Path, before: dict[str, str]) -> None:
    assert snapshot(db.parent) == before, "the bad plan changed the database folder"
    assert not db.with_name(db.name + ".wal").exists()


def test_corpus_is_big_and_well_formed():
    assert len(CORPUS) >= 30
    for path in CORPUS:
        assert expectation(path)
    assert all((BAD / f"{name}.yaml") in CORPUS for name in SUBPROCESS_CASES)


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_bad_grid_in_process(path, planned_db, cli):
    db, before = planned_db
    r = cli("plan", path, "--db", db)
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    assert isinstance(r.exception, SystemExit), r.exception  # typer.Exit(2), nothing uncaught
    check_error(r.stderr, r.stdout, path, expectation(path))
    check_untouched(db, before)


@pytest.mark.parametrize("case", ["missing_file", "directory"])
def test_unreadable_grid_path_in_process(case, odd_paths, planned_db, cli):
    db, before = planned_db
    path, expect = odd_paths[case]
    r = cli("plan", path, "--db", db)
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), (r.output, r.exception)
    check_error(r.stderr, r.stdout, path, expect)
    check_untouched(db, before)


def test_bad_grid_creates_no_database(tmp_path, cli):
    db = tmp_path / "db" / "fresh.duckdb"
    for path in (BAD / "width_zero.yaml", BAD / "yaml_syntax.yaml", BAD / "duplicate_axis.yaml"):
        r = cli("plan", path, "--db", db)
        assert r.exit_code == 2
    assert not db.parent.exists() or not any(db.parent.iterdir())


def ddsweep_command() -> list[str]:
    script = Path(sys.executable).with_name("ddsweep")
    if script.exists():
        return [str(script)]
    found = shutil.which("ddsweep")
    return [found] if found else [sys.executable, "-m", "ddsweep"]


def test_bad_grids_as_real_processes(planned_db, odd_paths):
    """A handful through the installed `ddsweep` command: one line, exit 2, no traceback, DB untouched."""
    db, before = planned_db
    cases = [(BAD / f"{name}.yaml", expectation(BAD / f"{name}.yaml")) for name in SUBPROCESS_CASES]
    cases += list(odd_paths.values())
    env = {**os.environ, "COLUMNS": "80", "TERM": "xterm-256color"}  # rich must still not wrap or colour

    def run(path: Path) -> subprocess.CompletedProcess:
        return subprocess.run([*ddsweep_command(), "plan", str(path), "--db", str(db)],
                              capture_output=True, text=True, env=env, timeout=120)

    with ThreadPoolExecutor(max_workers=3) as pool:  # each start imports the stack: run a few at once
        results = list(pool.map(run, [path for path, _ in cases]))
    for (path, expect), r in zip(cases, results):
        assert r.returncode == 2, (path.name, r.returncode, r.stderr)
        assert "Traceback" not in r.stderr and "\x1b[" not in r.stderr, r.stderr
        check_error(r.stderr, r.stdout, path, expect)
    check_untouched(db, before)


@pytest.mark.parametrize("option, value", [("--flush-every", "0"), ("--lease", "-1"), ("--pack-size", "0")])
def test_bad_work_options_are_one_line_exit_2_and_touch_nothing(option, value, planned_db, cli):
    db, before = planned_db
    r = cli("work", "--db", db, "--cpus", "1", "--no-progress", option, value)
    assert r.exit_code == 2 and isinstance(r.exception, SystemExit), (r.output, r.exception)
    assert option in r.stderr and value in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    check_untouched(db, before)
