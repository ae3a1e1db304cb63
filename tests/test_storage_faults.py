"""Storage faults are events, not crashes: a full disk or an unwritable folder is one line, exit 2;
a `work` that meets one stops cleanly, hands every job back (none failed), and the next resumes.

Real faults, on real file systems: a tiny tmpfs filled up (ENOSPC), a folder made read-only by
a read-only bind mount or `chattr +i` (root writes through plain chmod). Where the test cannot
create them (no root, no CAP_SYS_ADMIN) it skips, saying why.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid

import pytest

import ddsweep
from tests.conftest import TINY, write_grid
from tests.test_reliability import (SLOW, assert_equal_metrics, checkpoint_epoch, checkpointed, ckpt_dir, db_rows,
                                    finish, job_ids, start_work, train_reference, wait_for)


def _run(*command) -> bool:
    return subprocess.run(list(map(str, command)), capture_output=True).returncode == 0


def _writable(folder) -> bool:
    probe = folder / f".probe-{uuid.uuid4().hex}"
    try:
        probe.write_text("x")
    except OSError:
        return False
    probe.unlink()
    return True


@contextlib.contextmanager
def read_only(folder):
    """`folder` unwritable for now: a read-only bind mount, else `chattr +i`, else chmod (not root)."""
    undo = None
    if _run("mount", "--bind", folder, folder):
        if _run("mount", "-o", "remount,ro,bind", folder):
            undo = ("umount", "-l", folder)
        else:
            _run("umount", "-l", folder)
    if undo is None and _run("chattr", "+i", folder):
        undo = ("chattr", "-i", folder)
    if undo is None and os.geteuid() != 0:
        folder.chmod(0o555)
        undo = ("chmod", "755", folder)
    if undo is None or _writable(folder):
        if undo:
            _run(*undo)
        pytest.skip(f"cannot make {folder} read-only here (no read-only bind mount, chattr or chmod that holds)")
    try:
        yield
    finally:
        _run(*undo)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 48 MiB tmpfs (skips where it cannot be mounted)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if not _run("mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", disk):
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): the full-disk test needs one")
    try:
        yield disk
    finally:
        _run("umount", "-l", disk)


def _fill(disk) -> None:
    """Fill the file system up to its last byte."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ddsweep: error: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


# ----------------------------------------------------------------------------- commands


def test_every_command_in_a_read_only_folder_is_one_line(tmp_path, cli):
    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "r.duckdb"
    grid = write_grid(tmp_path / "g.yaml", {**TINY, "train": {**TINY["train"], "epochs": 1}})
    ddsweep.plan(grid, db)
    path = tmp_path / "m.csv"
    path.write_text("width,n_train,label_noise,seed,epoch,test_error\n4,100,0.1,0,1,0.5\n")
    with read_only(folder):
        for command in (["plan", grid, "--db", folder / "new.duckdb"], ["plan", grid, "--db", db],
                        ["work", "--db", db, "--cpus", 1, "--no-progress"], ["retry", "--db", db],
                        ["extend", "--epochs", 3, "--db", db], ["export", "--db", db, "--out", folder / "m.parquet"],
                        ["import", path, "--db", db, "--sweep", "again"]):
            r = cli(*command)
            assert r.exit_code == 2, (command, r.output)
            line = _one_error_line(r.output)
            assert str(folder) in line and ("Read-only file system" in line or "not permitted" in line
                                            or "Permission denied" in line), (command, line)
        r = cli("status", "--db", db)  # reading needs no write
        assert r.exit_code == 0 and "tiny" in r.output, r.output
    assert db_rows(db, "select distinct status, lease_owner from jobs") == [("pending", None)]


# ----------------------------------------------------------------------------- work, mid-run

LONG = {**SLOW, "train": {**SLOW["train"], "epochs": 32}, "eval": {"every": 4}}


def test_disk_full_mid_run_stops_cleanly_and_the_next_work_resumes(tiny_disk):
    db = tiny_disk / "r.duckdb"
    ddsweep.plan(write_grid(tiny_disk / "g.yaml", LONG), db)
    proc = start_work(db, "--cpus", 1, "--flush-every", 0.2, "--checkpoint-every", 0)
    try:
        # (two epochs seen in their checkpoints, not in the database: a read of ours that a busy machine
        # stretched past the coordinator's 1 s wait would add a "database busy" warning to its one line)
        wait_for(lambda: max(checkpoint_epoch(db, j) for j in job_ids(LONG)) >= 2, interval=0.1, what="two epochs")
        _fill(tiny_disk)
        out, err = finish(proc, timeout=120, code=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    line = _one_error_line(err)
    assert "No space left on device" in line and str(tiny_disk) in line and "handed back" in line, line
    (tiny_disk / "filler").unlink()
    assert db_rows(db, "select count(*) from jobs where status = 'failed'") == [(0,)]
    out, err = finish(start_work(db, "--cpus", 1), timeout=300)
    assert db_rows(db, "select status, count(*) from jobs group by all") == [("done", 4)]
    assert db_rows(db, "select max(failures) from jobs") == [(0,)]
    assert_equal_metrics(db, train_reference(LONG))


def test_unwritable_checkpoints_hand_jobs_back_not_failed(tmp_path):
    grid = {**LONG, "grid": {**LONG["grid"], "width": [512]}}
    db = tmp_path / "r.duckdb"
    ddsweep.plan(write_grid(tmp_path / "g.yaml", grid), db)
    ckpt_dir(db).mkdir()
    proc = start_work(db, "--cpus", 1, "--flush-every", 0.2, "--checkpoint-every", 0)
    try:
        # (an epoch seen in its checkpoint, not in the database: see the test above)
        wait_for(lambda: checkpointed(db, job_ids(grid)), interval=0.1, what="an epoch")
        with read_only(ckpt_dir(db)):
            out, err = finish(proc, timeout=120, code=2)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    line = _one_error_line(err)
    assert str(ckpt_dir(db)) in line and "checkpointing" in line and "2 job(s) handed back (none failed)" in line, line
    assert db_rows(db, "select status, failures, lease_owner, count(*) from jobs group by all") == [
        ("pending", 0, None, 2)]
    finish(start_work(db, "--cpus", 1), timeout=300)
    assert db_rows(db, "select status, count(*) from jobs group by all") == [("done", 2)]
    assert_equal_metrics(db, train_reference(grid))


# ----------------------------------------------------------------------------- odd data: one line, exit 2

HEADER = "width,n_train,label_noise,seed,epoch,test_error,train_error\n"


def test_out_of_range_imports_all_nan_sweeps_and_truncated_databases_are_one_line(tmp_path, cli):
    db = tmp_path / "r.duckdb"
    for name, row, why in (("epoch", "4,100,0.1,0,99999999999,0.5,0.1", "epoch = 1e+11 (row 1): too large"),
                           ("width", "1e20,100,0.1,0,1,0.5,0.1", "width = 1e+20 (row 1): too large")):
        (tmp_path / f"{name}.csv").write_text(HEADER + row + "\n")
        r = cli("import", tmp_path / f"{name}.csv", "--db", db, "--sweep", name)
        assert r.exit_code == 2 and why in _one_error_line(r.output), r.output
    (tmp_path / "nan.csv").write_text(HEADER + "".join(f"{w},100,0.1,0,1,nan,nan\n" for w in (4, 8, 16, 32)))
    assert cli("import", tmp_path / "nan.csv", "--db", db, "--sweep", "nan").exit_code == 0
    r = cli("emc", "--db", db, "--sweep", "nan")
    assert r.exit_code == 2 and "no train error" in _one_error_line(r.output), r.output
    r = cli("report", "--db", db, "--sweep", "nan", "--out", tmp_path / "nan.html")
    assert r.exit_code == 0 and "no train error" in (tmp_path / "nan.html").read_text(), r.output
    truncated = tmp_path / "t.duckdb"
    truncated.write_bytes(db.read_bytes()[:20_000])
    r = cli("status", "--db", truncated)
    assert r.exit_code == 2 and str(truncated) in _one_error_line(r.output), r.output
