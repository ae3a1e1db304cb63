"""Databases of every earlier schema revision, with data, open with the current code and read back whole.

tests/upgrade_assets/ holds one frozen database per earlier Alembic revision (made by
make_assets.py there: a trained sweep plus pending jobs), standing for the results
users already have. Each is copied; the read commands refuse it (reading would mean
upgrading it, a write) and leave it as it was; `ddsweep upgrade` migrates it to head,
and every stored row must read back with the values it was stored with.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from ddsweep.store.connection import head_revision, known_revisions

ASSETS = Path(__file__).resolve().parent / "upgrade_assets"
ORDER = {"sweeps": "name", "jobs": "job_id", "metrics": "job_id, epoch"}


def _assets() -> list[Path]:
    return sorted(ASSETS.glob("*.duckdb.gz"))


def _revision(asset: Path) -> str:
    return asset.name.split(".")[0]


def _copy(asset: Path, db: Path) -> Path:
    with gzip.open(asset, "rb") as f, open(db, "wb") as out:
        shutil.copyfileobj(f, out)
    return db


def _stored(db: Path) -> tuple[str, dict[str, pd.DataFrame]]:
    """The revision and the tables as the file holds them, read with plain DuckDB (no migration)."""
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        revision = con.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        tables = {}
        for table, order in ORDER.items():
            cur = con.execute(f"SELECT * FROM {table} ORDER BY {order}")
            tables[table] = pd.DataFrame(cur.fetchall(), columns=[d[0] for d in cur.description])
        return revision, tables
    finally:
        con.close()


def _read_now(db: Path) -> dict[str, pd.DataFrame]:
    """The same tables through the current code (after an upgrade: the read path does not migrate)."""
    from ddsweep.api import query

    return {table: query(f"SELECT * FROM {table} ORDER BY {order}", db) for table, order in ORDER.items()}


def _assert_rows_kept(stored: dict[str, pd.DataFrame], now: dict[str, pd.DataFrame]) -> None:
    for table, old in stored.items():
        new = now[table]
        missing = [c for c in old.columns if c not in new.columns]
        assert not missing, f"{table}: columns lost in the upgrade: {missing}"
        pd.testing.assert_frame_equal(new[list(old.columns)], old, check_dtype=False, check_exact=True, obj=table)


def test_every_earlier_revision_has_an_asset():
    made = {_revision(a) for a in _assets()}
    assert made == known_revisions() - {head_revision()}, (
        "each earlier schema revision needs a frozen database: run "
        "PYTHONPATH=. python tests/upgrade_assets/make_assets.py")


@pytest.mark.parametrize("asset", _assets(), ids=_revision)
def test_an_old_database_upgrades_and_reads_back_every_row(asset, tmp_path, cli):
    from ddsweep.api import load_metrics, query
    from ddsweep.grid import KNOB_COLUMNS, train_recipe

    db = _copy(asset, tmp_path / "results.duckdb")
    revision, stored = _stored(db)
    assert revision == _revision(asset) != head_revision()
    assert len(stored["jobs"]) and len(stored["metrics"]) and set(stored["jobs"]["status"]) == {"done", "pending"}

    # a read command writes nothing, so it does not upgrade: one line saying how, the file as it was
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    for args in (("status",), ("query", "select count(*) from metrics"), ("summary",)):
        r = cli(*args, "--db", db)
        assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
        assert f"older than this ddsweep's ({head_revision()})" in r.output and "ddsweep upgrade --db" in r.output
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.duckdb"]  # (no lock file either)

    r = cli("upgrade", "--db", db)
    assert r.exit_code == 0 and f"from {revision} to {head_revision()}" in r.output, r.output
    r = cli("upgrade", "--db", db)
    assert r.exit_code == 0 and "nothing to do" in r.output, r.output
    now = _read_now(db)
    assert query("SELECT version_num FROM alembic_version", db).iloc[0, 0] == head_revision()
    _assert_rows_kept(stored, now)
    # 0008 rebuilt metrics unkeyed, its rows in (job_id, epoch) order, the views on it in place
    keys = query("SELECT job_id, epoch FROM metrics", db)
    pd.testing.assert_frame_equal(keys, keys.sort_values(["job_id", "epoch"]).reset_index(drop=True))
    assert query("SELECT count(*) AS n FROM duckdb_constraints() WHERE table_name = 'metrics' "
                 "AND constraint_type = 'PRIMARY KEY'", db).iloc[0, 0] == 0
    assert len(query("SELECT * FROM curves", db)) and len(query("SELECT * FROM final_metrics", db))

    # columns added since: the knob axes hold what each job's config says (their defaults here)
    for _, job in now["jobs"].iterrows():
        recipe = train_recipe(json.loads(job["config"]))
        assert {k: job[k] for k in KNOB_COLUMNS} == {k: recipe[k] for k in KNOB_COLUMNS}, job["job_id"]

    # the analysis read path sees every metric row with the values stored
    frame = load_metrics(db)
    metric_cols = [c for c in stored["metrics"].columns if c not in stored["jobs"].columns or c == "job_id"]
    got = frame.sort_values(["job_id", "epoch"]).reset_index(drop=True)[metric_cols]
    pd.testing.assert_frame_equal(got, stored["metrics"][metric_cols], check_dtype=False,
                                  check_exact=True)
    assert (frame["status"] == "done").all()


def test_an_upgraded_database_trains_its_pending_jobs_and_keeps_the_old_rows(cli, tmp_path):
    """The oldest asset (every migration applies): `work` finishes what was pending, losing nothing."""
    from ddsweep.api import query

    db = _copy(_assets()[0], tmp_path / "results.duckdb")
    _, stored = _stored(db)
    pending = set(stored["jobs"].loc[stored["jobs"]["status"] == "pending", "job_id"])
    assert pending

    r = cli("work", "--db", db, "--cpus", "1")
    assert r.exit_code == 0, r.output
    now = _read_now(db)
    assert set(now["jobs"]["status"]) == {"done"}
    old_metrics = stored["metrics"]
    kept = now["metrics"][now["metrics"]["job_id"].isin(set(old_metrics["job_id"]))].reset_index(drop=True)
    _assert_rows_kept({"metrics": old_metrics}, {"metrics": kept})
    trained = set(query("SELECT DISTINCT job_id FROM metrics", db)["job_id"])
    assert pending <= trained


def test_refine_upgrades_an_old_database_and_upgrade_refuses_a_foreign_file(cli, tmp_path):
    """refine writes (it plans new points), so like plan and work it upgrades first; `upgrade` does not
    turn a DuckDB file without ddsweep's tables into a ddsweep database."""
    import duckdb

    db = _copy(_assets()[0], tmp_path / "old.duckdb")
    r = cli("refine", "--db", db)
    assert "older than this ddsweep's" not in r.output and "refine follows one curve" in r.output, r.output
    assert _stored(db)[0] == head_revision()

    empty = tmp_path / "empty.duckdb"
    duckdb.connect(str(empty)).close()
    r = cli("upgrade", "--db", empty)
    assert r.exit_code == 2 and "no ddsweep tables yet" in r.output, r.output
    con = duckdb.connect(str(empty), read_only=True)
    assert con.execute("SELECT count(*) FROM information_schema.tables").fetchone()[0] == 0
    con.close()
