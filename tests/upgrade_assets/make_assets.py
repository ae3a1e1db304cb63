"""Make the frozen databases that tests/test_upgrade_assets.py upgrades: one per earlier schema revision.

    PYTHONPATH=. python tests/upgrade_assets/make_assets.py          # adds the missing ones
    PYTHONPATH=. python tests/upgrade_assets/make_assets.py --force  # remakes them all

Run it after adding a migration (the test fails until the previous head has an asset).
Existing assets are left alone: they stand for databases users already have.

How an asset is made: a small real sweep is planned and trained with the current
ddsweep (`ddsweep plan` + `ddsweep work` in a temporary folder; then a wider grid is
planned and left pending, so the asset holds done and pending jobs). For each earlier
revision R, a fresh DuckDB file is brought to R by the Alembic scripts (frozen: they
never change once released), and the sweep's rows are inserted into the columns R
has. Every column of an earlier revision still exists at head (migrations add
columns), so nothing is made up. The file is gzipped: DuckDB allocates whole blocks,
mostly empty here.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

GRID = {
    "name": "upgrade-asset",
    "dataset": {"name": "mnist1d", "pool": 1200, "test": 600},
    "model": {"name": "mlp", "depth": 2},
    "train": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 50, "epochs": 6},
    "eval": {"every": 2},
    "grid": {"width": [4, 16], "n_train": [400], "label_noise": [0.0, 0.2], "seed": [0]},
}
WIDER = {**GRID, "grid": {**GRID["grid"], "width": [4, 8, 16]}}  # width 8 stays pending
TABLES = ("sweeps", "jobs", "metrics")


def asset_path(revision: str) -> Path:
    return HERE / f"{revision}.duckdb.gz"


def _ddsweep(*args: str, cwd: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "ddsweep", *args], cwd=cwd, env=env, check=True)


def trained_sweep(workdir: Path) -> Path:
    """A head-revision database holding the asset's sweep (trained, plus pending jobs)."""
    db = workdir / "source.duckdb"
    grid = workdir / "upgrade-asset.yaml"
    grid.write_text(yaml.safe_dump(GRID, sort_keys=False))
    _ddsweep("plan", str(grid), "--db", str(db), cwd=workdir)
    _ddsweep("work", "--db", str(db), "--cpus", "1", cwd=workdir)
    grid.write_text(yaml.safe_dump(WIDER, sort_keys=False))
    _ddsweep("plan", str(grid), "--db", str(db), cwd=workdir)
    return db


def at_revision(source: Path, revision: str, out: Path) -> None:
    """A fresh database at `revision` with the source's rows in the columns that revision has."""
    import duckdb
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from ddsweep.store.connection import migrations_dir

    engine = sa.create_engine(f"duckdb:///{out}", poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(migrations_dir()))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        conn.commit()
    engine.dispose()
    con = duckdb.connect(str(out))
    try:
        con.execute(f"ATTACH '{source}' AS src (READ_ONLY)")
        for table in TABLES:
            cols = [r[0] for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_catalog = current_database() "
                "AND table_schema = 'main' AND table_name = ? ORDER BY ordinal_position", [table]).fetchall()]
            names = ", ".join(cols)
            con.execute(f"INSERT INTO main.{table} ({names}) SELECT {names} FROM src.main.{table}")
        con.execute("DETACH src")
        con.execute("CHECKPOINT")
    finally:
        con.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="remake existing assets too")
    args = parser.parse_args(argv)
    from ddsweep.store.connection import head_revision, known_revisions

    earlier = known_revisions() - {head_revision()}
    todo = [r for r in sorted(earlier) if args.force or not asset_path(r).exists()]
    if not todo:
        print("every earlier revision has its asset")
        return
    with tempfile.TemporaryDirectory(prefix="ddsweep-assets-") as tmp:
        tmp = Path(tmp)
        source = trained_sweep(tmp)
        for rev in todo:
            out = tmp / f"{rev}.duckdb"
            at_revision(source, rev, out)
            with open(out, "rb") as f, gzip.GzipFile(asset_path(rev), "wb", mtime=0) as g:
                shutil.copyfileobj(f, g)
            print(f"wrote {asset_path(rev).relative_to(ROOT)} ({asset_path(rev).stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
