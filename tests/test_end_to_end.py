"""plan -> work -> query -> plot through the CLI, as a user runs it, on a tiny grid."""

import json

import duckdb

from ddsweep.grid import EvalSpec, expand, load_grid


def test_plan_work_plot(tmp_path, tiny_grid, cli):
    db = tmp_path / "results.duckdb"
    r = cli("plan", tiny_grid, "--db", db)
    assert r.exit_code == 0, r.output
    assert "4" in r.output
    r = cli("work", "--db", db, "--cpus", "2", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "done 4, failed 0" in r.output

    evals = EvalSpec(**load_grid(tiny_grid).eval.model_dump()).epochs([6])
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("select count(*) from metrics").fetchone()[0] == 4 * len(evals)
        assert con.execute("select count(*) from jobs where status = 'done'").fetchone()[0] == 4
        rows = con.execute("select epoch, step, train_loss, train_error, train_error_clean, noisy_fit, "
                           "test_loss, test_error, m.lr, seconds from metrics m join jobs j using (job_id) "
                           "where j.label_noise = 0.2 order by job_id, epoch").fetchall()
        ids = {j.job_id for j in expand(load_grid(tiny_grid))}
        assert {r[0] for r in con.execute("select job_id from jobs").fetchall()} == ids
    finally:
        con.close()
    assert [r[0] for r in rows[:len(evals)]] == evals
    assert rows[0][1] == 0 and rows[-1][1] == 6 * 8  # 400 samples / batch 50 = 8 steps per epoch
    assert all(v is not None for r in rows for v in r)  # noisy_fit defined where labels are noisy

    r = cli("query", "select width, count(*) as n from final_metrics group by width order by width", "--db", db)
    assert r.exit_code == 0 and "16" in r.output
    for kind, extra in (("heatmap", []), ("curve", ["--x", "width"])):
        out = tmp_path / f"{kind}.png"
        r = cli("plot", kind, "--db", db, "--out", out, *extra)
        assert r.exit_code == 0, r.output
        assert out.stat().st_size > 10_000
    r = cli("status", "--db", db)
    assert r.exit_code == 0 and "tiny" in r.output


def test_work_without_cuda_suggests_cpus(tmp_path, tiny_grid, cli):
    import torch

    if torch.cuda.is_available():
        return
    db = tmp_path / "r.duckdb"
    cli("plan", tiny_grid, "--db", db)
    r = cli("work", "--db", db, "--gpus", "0")
    assert r.exit_code == 2
    assert "--cpus" in r.output


def test_bad_pack_memory_variable_is_one_line_before_any_lease(tmp_path, tiny_grid, cli, monkeypatch):
    db = tmp_path / "r.duckdb"
    cli("plan", tiny_grid, "--db", db)
    for bad in ("abc", "0", "-3", "inf"):
        monkeypatch.setenv("DDSWEEP_PACK_MEMORY_GB", bad)
        r = cli("work", "--db", db, "--cpus", "1", "--no-progress")
        assert r.exit_code == 2, r.output
        assert r.output.strip() == f"ddsweep: error: $DDSWEEP_PACK_MEMORY_GB = {bad!r}: must be a number of GiB " \
                                   "above 0 (e.g. 20)"
    with duckdb.connect(str(db), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM jobs WHERE status != 'pending' OR lease_owner IS NOT NULL"
                            ).fetchone()[0] == 0


def test_failed_job_is_recorded_and_others_go_on(tmp_path, tiny_grid, cli, monkeypatch):
    db = tmp_path / "r.duckdb"
    cli("plan", tiny_grid, "--db", db)
    # Corrupt one job's config in the database: its pack raises, the rest finish.
    con = duckdb.connect(str(db))
    job_id, config = con.execute("select job_id, config from jobs where width = 16 and label_noise = 0.2").fetchone()
    config = json.loads(config)
    config["dataset"]["name"] = "no-such-dataset"  # raises in the worker, not before
    con.execute("update jobs set config = ?, pack_key = job_id where job_id = ?", (json.dumps(config), job_id))
    con.close()
    r = cli("work", "--db", db, "--cpus", "1", "--no-progress")
    assert r.exit_code == 3 and "1 job(s) failed" in r.output, r.output  # EXIT_JOBS_FAILED
    con = duckdb.connect(str(db), read_only=True)
    status = dict(con.execute("select status, count(*) from jobs group by status").fetchall())
    error = con.execute("select error from jobs where status = 'failed'").fetchone()[0]
    con.close()
    assert status == {"done": 3, "failed": 1}
    assert "Traceback" in error
