"""`python -m ddsweep.bench.writes --jobs N`: bulk writes, set-based against one UPDATE per job.

Builds a database of N jobs (TINY-like MLP jobs, a quarter of them done), then times
`extend` two ways on identical copies of it, in this run: the baseline (one UPDATE per
job, as ddsweep did before bulk updates were set-based) and `ddsweep.store.jobs.extend`
(one statement). Prints both times and their ratio; both must leave the same rows.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

GRID = {"name": "bench", "dataset": {"name": "mnist1d", "pool": 1200, "test": 600}, "model": {"name": "mlp"},
        "train": {"epochs": 6}, "grid": {"width": [4, 16], "n_train": [400], "label_noise": [0.0, 0.2], "seed": [0]}}


def _database(folder: Path, jobs: int) -> Path:
    import duckdb
    import yaml

    from ddsweep.api import plan

    grid = folder / "g.yaml"
    grid.write_text(yaml.safe_dump(GRID))
    db = folder / "base.duckdb"
    plan(grid, db)
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO jobs BY NAME SELECT jobs.* REPLACE ('copy' || i || '-' || job_id AS job_id) "
                "FROM jobs, range(?) AS t(i)", [max(0, jobs // 4 - 1)])
    con.execute("UPDATE jobs SET status = 'done', finished_at = current_timestamp WHERE width = 4 AND label_noise = 0")
    con.close()
    return db


def _per_row_extend(conn, epochs: int) -> int:
    """The baseline: what `extend` did before, one UPDATE per job."""
    changed = conn.exec_driver_sql("SELECT job_id, horizons, status FROM jobs WHERE epochs < ?", (epochs,)).fetchall()
    for job_id, horizons, status in changed:
        merged = sorted(set(json.loads(horizons or "[]")) | {epochs})
        reopen = status == "done"
        conn.exec_driver_sql(
            "UPDATE jobs SET epochs = ?, horizons = ?, status = CASE WHEN ? THEN 'pending' ELSE status END, "
            "finished_at = CASE WHEN ? THEN NULL ELSE finished_at END WHERE job_id = ?",
            (epochs, json.dumps(merged), reopen, reopen, job_id))
    return len(changed)


def _rows(db: Path) -> list[tuple]:
    import duckdb

    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute("SELECT job_id, status, epochs, horizons, finished_at IS NULL FROM jobs "
                           "ORDER BY job_id").fetchall()
    finally:
        con.close()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m ddsweep.bench.writes", description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs in the database (default 20000)")
    args = parser.parse_args(argv)
    from ddsweep.store import Store
    from ddsweep.store import jobs as store_jobs

    folder = Path(tempfile.mkdtemp(prefix="ddsweep-bench-writes-"))
    try:
        base = _database(folder, args.jobs)
        times = {}
        for name, extend in (("per-row UPDATE (baseline)", _per_row_extend), ("set-based (ddsweep)", store_jobs.extend)):
            db = folder / f"{len(times)}.duckdb"
            shutil.copy(base, db)
            t = time.perf_counter()
            with Store(db).write() as conn:
                n = extend(conn, 9)
            times[name] = (time.perf_counter() - t, n, _rows(db))
        (t0, n0, rows0), (t1, n1, rows1) = times.values()
        assert n0 == n1 and rows0 == rows1, "the two ways left different rows"
        for name, (t, n, _) in times.items():
            print(f"extend --epochs 9 of {n:,} jobs, {name}: {t:.2f}s")
        print(f"set-based is {t0 / t1:.1f}x faster")
        return {"jobs": n1, "baseline_seconds": t0, "seconds": t1, "ratio": t0 / t1}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
