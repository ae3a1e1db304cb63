"""The benchmark runs end to end and reports both arms side by side (no timing asserted here)."""

import json
import subprocess
import sys

import yaml

from tests.conftest import TINY


def test_bench_smoke(tmp_path):
    out = tmp_path / "bench.json"
    grid = tmp_path / "grid.yaml"
    grid.write_text(yaml.safe_dump({**TINY, "grid": {**TINY["grid"], "label_noise": [0.2]}}))
    subprocess.run([sys.executable, "-m", "ddsweep.bench", "--epochs", "2", "--cases", "default,seeds-noise",
                    "--cpus", "1", "--grid", str(grid), "--out", str(out)],
                   check=True, capture_output=True, text=True, cwd=tmp_path)
    default, seeds = json.loads(out.read_text())
    assert (default["jobs"], seeds["jobs"]) == (2, 2 * 4 * 3) and default["epochs"] == 2
    r = default
    assert r["plain_seconds"] > 0 and r["ddsweep_seconds"] > 0
    assert r["speedup"] == r["plain_seconds"] / r["ddsweep_seconds"]
    assert 0 <= r["outside_training_share"] <= 1 and r["peak_matmul_gflops"] > 0
    assert r["plain_samples_per_s"] > 0 and r["ddsweep_samples_per_s"] > 0
    # the workers' start-up (interpreter, import torch) is measured and is part of the time outside steps
    assert 0 < r["startup_share"] < r["outside_training_share"]
    # evaluations at epochs 0, 2 (TINY: every 2 of 2 epochs): 2 x (400 train + 600 test) forward passes per job
    assert r["evaluated_epochs"] == 2
    macs = sum(40 * h + h * h + h * 10 for h in (4, 16))  # widths 4 and 16, depth 2
    assert abs(r["eval_tflop"] * 1e12 - 2 * macs * 1000 * 2) < 1e-3


def test_shortened_cases_evaluate_as_often_per_epoch_as_the_full_recipe():
    from ddsweep.bench.mlp import DEFAULT_GRID, case_grid
    from ddsweep.grid import EvalSpec

    full = yaml.safe_load(DEFAULT_GRID.read_text())
    full_rate = len(EvalSpec(**full["eval"]).epochs([full["train"]["epochs"]])) / full["train"]["epochs"]
    short = case_grid("default", 100)
    rate = len(EvalSpec(**short["eval"]).epochs([100])) / 100
    assert abs(rate - full_rate) < 0.03, (rate, full_rate)
    assert case_grid("default", 100, eval_as_grid=True)["eval"] == full["eval"]
    assert case_grid("default", full["train"]["epochs"])["eval"] == full["eval"]  # the full horizon: as planned


def test_vision_bench_times_epochs_inside_the_loop(tmp_path):
    out = tmp_path / "loop.json"
    subprocess.run([sys.executable, "-m", "ddsweep.bench", "--model", "mcnn", "--loop", "--widths", "1",
                    "--packs", "1,2", "--epochs", "2", "--n-train", "64", "--n-test", "16", "--cpus", "1",
                    "--out", str(out)], check=True, capture_output=True, text=True, cwd=tmp_path)
    rows = json.loads(out.read_text())
    assert [(r["k"], r["members"]) for r in rows] == [(1, 1), (1, 2)]
    assert all(len(r["epoch_seconds"]) == 2 and r["steady_samples_per_s"] > 0 for r in rows)


def test_step_costs_time_every_pack_work_would_form():
    from ddsweep.bench.mlp import step_costs

    rows = step_costs("default", repeats=3)
    widths = sorted(w for r in rows for w in r["widths"])
    assert len(widths) == 18 and widths[0] == 2 and widths[-1] == 300  # every job, each in one pack
    narrow = next(r for r in rows if 2 in r["widths"])
    assert narrow["trains_at"] == 32 and narrow["members"] == 10
    assert all(r["us_per_step"] > 0 and r["gflops"] > 0 for r in rows)


def test_store_bench_builds_reads_and_reports(tmp_path):
    """`--store` tiny: every row through journal + flush, every read command timed on both paths."""
    out = tmp_path / "store.json"
    r = subprocess.run([sys.executable, "-m", "ddsweep.bench", "--store", "--rows", "20000", "--old-rows", "20000",
                        "--commands", "status,summary,heatmap", "--out", str(out)],
                       check=True, capture_output=True, text=True, cwd=tmp_path)
    report = json.loads(out.read_text())
    big = report["large"]
    assert big["ingest"]["rows"] == big["ingest"]["stored_rows"] == 300 * 66  # 300 jobs x 66 epochs, none lost
    assert big["ingest"]["ingest_rows_per_s"] > 0
    old_writes = report["small"]["ingest"]["old"]  # the former write path, on the same rows
    assert old_writes["rows"] == old_writes["stored_rows"] == report["small"]["ingest"]["stored_rows"]
    for arm, part in (("new", big), ("new", report["small"]), ("old", report["small"])):
        assert set(part[arm]) == {"status", "summary", "heatmap"}
        for name, timing in part[arm].items():
            assert timing["seconds"] > 0 and timing["peak_mb"] > 50, (arm, name, timing)
    assert "ingest" in r.stdout and "old/new" in r.stdout and "ingest old" in r.stdout and "targets on 19,800 rows" in r.stdout


def test_passes_benchmark_times_every_variant_against_the_unsplit_step(tmp_path):
    from ddsweep.bench import main

    rows = main(["--passes", "--rounds", "1", "--out", str(tmp_path / "p.json")])
    assert {(r["case"], r["variant"]) for r in rows} == {(c, v) for c in ("mlp", "mcnn")
                                                        for v in ("whole batch", "micro-batches of 500",
                                                                  "micro-batches of 128", "penalty, whole batch",
                                                                  "penalty, blocks of 128")}
    assert all(r["ms_per_step"] > 0 for r in rows)
    base = [r for r in rows if r["variant"] in ("whole batch", "penalty, whole batch")]
    assert all(r["ratio_vs_unsplit"] == 1.0 for r in base)
    assert (tmp_path / "p.json").exists()
