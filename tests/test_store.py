"""The database: Alembic migrations shipped in the package, schema checks, read/write locking."""

import shutil
import subprocess
import sys
import zipfile

import duckdb
import pytest

from ddsweep.errors import DatabaseBusy, SchemaError
from ddsweep.store import Store
from ddsweep.store.connection import head_revision, migrations_dir
from tests.conftest import ROOT


def test_new_database_gets_the_schema(tmp_path):
    db = tmp_path / "r.duckdb"
    with Store(db).write() as conn:
        tables = {r[0] for r in conn.exec_driver_sql("select table_name from information_schema.tables")}
    assert {"sweeps", "jobs", "metrics", "final_metrics", "alembic_version"} <= tables
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("select version_num from alembic_version").fetchone()[0] == head_revision()
    con.close()


def test_newer_schema_is_a_clear_error(tmp_path):
    db = tmp_path / "r.duckdb"
    with Store(db).write():
        pass
    con = duckdb.connect(str(db))
    con.execute("update alembic_version set version_num = '9999_future'")
    con.close()
    with pytest.raises(SchemaError, match="newer than this ddsweep"):
        with Store(db).read():
            pass


def test_foreign_database_is_refused(tmp_path):
    db = tmp_path / "other.duckdb"
    con = duckdb.connect(str(db))
    con.execute("create table t(a int)")
    con.close()
    with pytest.raises(SchemaError, match="not a ddsweep database"):
        with Store(db).write():
            pass


def test_reader_waits_then_names_the_lock_holder(tmp_path):
    db = tmp_path / "r.duckdb"
    with Store(db).write():
        pass
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(db)!r}); "
                               "print('open', flush=True); time.sleep(30)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(DatabaseBusy, match=f"PID {holder.pid}"):
            with Store(db).read(wait=0.5):
                pass
    finally:
        holder.kill()
        holder.wait()
    with Store(db).read(wait=5):  # free again
        pass


def test_migrations_ship_in_the_wheel_and_are_found_when_installed(tmp_path):
    assert (migrations_dir() / "versions" / "0001_initial.py").exists()
    # built from a copy of the sources: a build/ folder left in the checkout by an earlier build
    # would put its files (say, migrations at an old path) into the wheel
    src = tmp_path / "src"
    shutil.copytree(ROOT / "ddsweep", src / "ddsweep", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(wheels), str(src)], check=True, cwd=tmp_path)
    wheel = next(wheels.glob("ddsweep-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "ddsweep/store/migrations/env.py" in names
    assert "ddsweep/store/migrations/script.py.mako" in names
    assert "ddsweep/store/migrations/versions/0001_initial.py" in names
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True)
    code = ("from ddsweep.store import Store; from ddsweep.store.connection import migrations_dir; "
            "w = Store('x.duckdb').write(); w.__enter__(); w.__exit__(None, None, None); print(migrations_dir())")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(target)},
                         capture_output=True, text=True, check=True).stdout
    assert out.strip().startswith(str(target))
    assert (tmp_path / "x.duckdb").exists()


def _metrics(db):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("select job_id, epoch, test_error, train_error from metrics").fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("nan", [False, True], ids=["frame", "with-nan"])
def test_a_stored_metric_row_is_kept_and_a_batch_is_stored_once_in_key_order(tmp_path, nan):
    """`metrics` has no key (0008): insert_metrics skips a (job_id, epoch) already stored (the
    stored row stays, as INSERT OR IGNORE kept it), stores a row given twice in one batch once
    (its last copy), and appends each batch sorted by (job_id, epoch). Both insert ways: the
    typed frame, and the unnested lists a batch holding NaN takes."""
    from ddsweep.store.jobs import insert_metrics

    db = tmp_path / "r.duckdb"
    other = float("nan") if nan else 0.5
    with Store(db).write() as conn:
        insert_metrics(conn, [{"job_id": "b", "epoch": 1, "test_error": 0.1, "train_error": other},
                              {"job_id": "a", "epoch": 2, "test_error": 0.2, "train_error": other}])
    with Store(db).write() as conn:  # a replay: b/1 again with other values, a/2 twice in the batch, new rows
        insert_metrics(conn, [{"job_id": "b", "epoch": 1, "test_error": 0.9, "train_error": other},
                              {"job_id": "c", "epoch": 0, "test_error": 0.3, "train_error": other},
                              {"job_id": "a", "epoch": 1, "test_error": 0.4, "train_error": other},
                              {"job_id": "a", "epoch": 1, "test_error": 0.5, "train_error": other}])
    rows = _metrics(db)
    assert [r[:3] for r in rows] == [("a", 2, 0.2), ("b", 1, 0.1), ("a", 1, 0.5), ("c", 0, 0.3)]
    if nan:
        assert all(r[3] != r[3] for r in rows)  # NaN stays NaN (not NULL)


def test_metrics_has_no_key_and_the_views_read_it(tmp_path):
    db = tmp_path / "r.duckdb"
    with Store(db).write():
        pass
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("select count(*) from duckdb_constraints() where table_name = 'metrics' "
                           "and constraint_type in ('PRIMARY KEY', 'UNIQUE')").fetchone()[0] == 0
        nullable = dict(con.execute("select column_name, is_nullable from information_schema.columns "
                                    "where table_name = 'metrics'").fetchall())
        assert nullable["job_id"] == nullable["epoch"] == "NO"
        for view in ("final_metrics", "curves", "emc_grid", "interpolation_thresholds"):
            con.execute(f"select * from {view}").fetchall()
    finally:
        con.close()
