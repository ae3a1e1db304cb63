"""What both benchmarks share: the ddsweep arm (`plan` + `work` in a child process) and the machine's rates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml


def ddsweep_arm(grid: dict, cpus: int, device: str, workdir: Path) -> dict:
    """`ddsweep plan` + `ddsweep work` in a child process (it opens the database; this one runs torch)."""
    path = workdir / f"{grid['name']}.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    db = workdir / f"{grid['name']}.duckdb"
    slots = "gpus='0'" if device.startswith("cuda") else f"cpus={cpus}"
    code = (
        "import json, time\n"
        "from ddsweep.api import plan, work\n"
        f"plan({str(path)!r}, {str(db)!r})\n"
        "t0 = time.perf_counter()\n"
        f"r = work({str(db)!r}, {slots}, show_progress=False)\n"
        "print(json.dumps({'seconds': time.perf_counter() - t0, 'done': r.done, 'failed': r.failed,\n"
        "                  'diverged': r.diverged, **r.timing}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"ddsweep arm failed:\n{out.stderr[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if r["failed"] or r["diverged"]:
        raise SystemExit(f"benchmark sweep had {r['failed']} failed / {r['diverged']} diverged jobs")
    r["slots"] = 1 if device.startswith("cuda") else cpus
    r["samples"] = r["train_samples"]
    return r


# ----------------------------------------------------------------------------- the machine


def matmul_rate(device: str, threads: int, n: int = 2048, repeats: int = 5, trials: int = 5) -> float:
    """Float32 FLOP/s of a large square GEMM on `threads` CPU threads (or the GPU, TF32 off): the
    best of `trials` timings (a shared machine's rate varies by tens of percent from one
    timing to the next; the best is what the machine can do, so shares of it are not inflated)."""
    import torch

    torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = False
        n = 8192
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(trials):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(repeats):
            a @ b
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = max(best, 2.0 * n**3 * repeats / (time.perf_counter() - t))
    return best


def bf16_matmul_rate(device: str, threads: int) -> float:
    """bf16 FLOP/s of a large square GEMM on the device (float32 accumulation). On a CPU, which
    may have no fast bf16 path, the faster of bf16 and float32."""
    import torch

    torch.set_num_threads(threads)
    cuda = device.startswith("cuda")
    n, repeats = (8192, 20) if cuda else (1024, 3)
    rates = []
    for dtype in (torch.bfloat16,) if cuda else (torch.bfloat16, torch.float32):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(2):
            a @ b
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(repeats):
            a @ b
        if cuda:
            torch.cuda.synchronize()
        rates.append(2.0 * n**3 * repeats / (time.perf_counter() - t))
    return max(rates)


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"CPU ({os.cpu_count()} cores)"
