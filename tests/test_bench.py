"""The benchmark runs end to end and reports both arms side by side (no timing asserted here)."""

import json
import subprocess
import sys


def test_bench_smoke(tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, "-m", "ddsweep.bench", "--epochs", "1", "--cases", "default",
                    "--cpus", "1", "--out", str(out)], check=True, capture_output=True, text=True, cwd=tmp_path)
    (r,) = json.loads(out.read_text())
    assert r["jobs"] == 18 and r["epochs"] == 1
    assert r["plain_seconds"] > 0 and r["ddsweep_seconds"] > 0
    assert r["speedup"] == r["plain_seconds"] / r["ddsweep_seconds"]
    assert 0 <= r["outside_training_share"] <= 1 and r["peak_matmul_gflops"] > 0
    assert r["plain_samples_per_s"] > 0 and r["ddsweep_samples_per_s"] > 0
