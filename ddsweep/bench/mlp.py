"""`python -m ddsweep.bench`: ddsweep against the plain training loop, on the same grid, in one run.

Arm (a) is the loop a researcher would write: one run at a time, an nn.Sequential
MLP, torch.optim, a shuffled DataLoader over a TensorDataset, all cores as torch
threads. Arm (b) is `ddsweep plan` + `ddsweep work` into a fresh database. Both
train the same jobs (same data subsets and noisy labels) for the same number of
epochs and evaluate on the same epochs. The machine's float32 matmul rate is
measured in the same run (a large GEMM on the same cores), and model FLOPs
(forward + backward of the unpadded models) are reported as a share of it.

    python -m ddsweep.bench                         # both cases, about 14 minutes on 2 cores
    python -m ddsweep.bench --cases default --epochs 200   # shortened (both arms alike)
    python -m ddsweep.bench --cases default --out bench.json
    python -m ddsweep.bench --device cuda           # plain loop on the GPU vs `ddsweep work --gpus 0`
    python -m ddsweep.bench --model mcnn --device cuda   # the 5-layer CNN on CIFAR-shaped data (ddsweep.bench.vision)
    python -m ddsweep.bench --steps                 # one training step of each pack of a case, 1 thread
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import tempfile
import time
from pathlib import Path

import yaml

from ddsweep.bench.harness import ddsweep_arm, matmul_rate

DEFAULT_GRID = Path(__file__).resolve().parents[2] / "sweeps" / "mnist1d-mlp.yaml"
CASES = {
    # the embedded default: 18 widths x 1 seed
    "default": {},
    # the same widths x 4 seeds x 3 noise levels
    "seeds-noise": {"seed": [0, 1, 2, 3], "label_noise": [0.0, 0.15, 0.3]},
}
# Epochs per case unless --epochs is given. The default grid runs its whole recipe (500
# epochs: about 9 minutes for both arms on 2 cores), so the fixed start-up of `ddsweep
# work` weighs as in the real sweep; seeds x noise (216 runs) is cut to minutes.
CASE_EPOCHS = {"default": 500, "seeds-noise": 20}


def case_grid(name: str, epochs: int, base: Path = DEFAULT_GRID, eval_as_grid: bool = False) -> dict:
    """The case's grid, shortened to `epochs`.

    Unless `eval_as_grid`, the shortened runs evaluate as often per epoch as the grid's
    full horizon does (every k-th epoch, k = full epochs / evaluated epochs): a log-spaced
    schedule cut at a short horizon would evaluate nearly every epoch (19 of 20), and the
    benchmark would then measure evaluation, not the recipe's per-epoch cost.
    """
    grid = copy.deepcopy(yaml.safe_load(base.read_text()))
    full = grid["train"]["epochs"]
    if not eval_as_grid and epochs < full:
        from ddsweep.grid import EvalSpec

        evaluated = len(EvalSpec(**grid.get("eval", {})).epochs([full]))
        grid["eval"] = {"every": max(1, round(full / evaluated))}
    grid["name"] = f"bench-{name}"
    grid["train"]["epochs"] = epochs
    grid["grid"].update(CASES[name])
    return grid


# MNIST-1D's shape, the cases' dataset: 40 inputs, 10 classes.
INPUT_DIM, CLASSES = 40, 10


def macs_per_sample(config: dict, input_dim: int = INPUT_DIM, classes: int = CLASSES) -> int:
    h, depth = config["width"], config["model"]["depth"]
    dims = [input_dim] + [h] * depth + [classes]
    return sum(i * o for i, o in zip(dims[:-1], dims[1:]))


def train_flops(jobs) -> float:
    """Forward (2) + backward (4) FLOPs per multiply-add, over every training sample of every job."""
    return sum(6.0 * macs_per_sample(j.config) * j.config["n_train"] * j.epochs for j in jobs)


def eval_flops(jobs, evaluations: int, test_size: int) -> float:
    """Forward FLOPs of the evaluations: each job's training set and the test set, `evaluations` times."""
    return sum(2.0 * macs_per_sample(j.config) * (j.config["n_train"] + test_size) * evaluations for j in jobs)


# ----------------------------------------------------------------------------- arm (a)


def plain_loop(jobs, device: str, threads: int) -> dict:
    """Train each job the straightforward way, one after another; returns timings."""
    import torch
    import torch.nn as nn
    from torch.utils.data import DataLoader, TensorDataset

    from ddsweep.data import load_dataset
    from ddsweep.grid import EvalSpec
    from ddsweep.train.loop import training_set

    torch.set_num_threads(threads)
    data = load_dataset(jobs[0].config["dataset"])
    t0 = time.perf_counter()
    train_seconds = 0.0
    samples = 0
    for job in jobs:
        c, t = job.config, job.config["train"]
        torch.manual_seed(c["seed"])
        idx, labels, _ = training_set(c, data)
        x, y = data.x_pool[idx], labels
        h = c["width"]
        layers, width_in = [], data.input_dim
        for _ in range(c["model"]["depth"]):
            layers += [nn.Linear(width_in, h), nn.ReLU()]
            width_in = h
        model = nn.Sequential(*layers, nn.Linear(width_in, data.num_classes)).to(device)
        if t["optimizer"] == "sgd":
            opt = torch.optim.SGD(model.parameters(), lr=t["lr"], momentum=t["momentum"],
                                  weight_decay=t["weight_decay"])
        else:
            opt = torch.optim.Adam(model.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])
        loader = DataLoader(TensorDataset(x, y), batch_size=t["batch_size"], shuffle=True)
        evals = set(EvalSpec(**c["eval"]).epochs(list(job.horizons)))
        loss_fn = nn.CrossEntropyLoss()

        def evaluate():
            model.eval()
            with torch.no_grad():
                for xs, ys in ((x, y), (data.x_test, data.y_test)):
                    for i in range(0, len(xs), 1000):
                        out = model(xs[i:i + 1000].to(device))
                        loss_fn(out, ys[i:i + 1000].to(device)).item()
                        (out.argmax(1) != ys[i:i + 1000].to(device)).float().mean().item()
            model.train()

        evaluate()
        for epoch in range(1, job.epochs + 1):
            t_epoch = time.perf_counter()
            for xb, yb in loader:
                xb, yb = xb.to(device), yb.to(device)
                opt.zero_grad()
                loss_fn(model(xb), yb).backward()
                opt.step()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            train_seconds += time.perf_counter() - t_epoch
            samples += len(x)
            if epoch in evals:
                evaluate()
    return {"seconds": time.perf_counter() - t0, "train_seconds": train_seconds, "samples": samples}


# ----------------------------------------------------------------------------- one step per pack


def step_costs(name: str, device: str = "cpu", base: Path = DEFAULT_GRID, repeats: int = 300) -> list[dict]:
    """Microseconds and model FLOP/s of one training step (loss gradient + optimizer) of each pack
    that `ddsweep work` forms for case `name`, on one thread: where a sweep's training time goes."""
    import torch

    from ddsweep.grid import expand, parse_grid, train_recipe
    from ddsweep.models import build_model, train_width
    from ddsweep.train.optim import build_optimizer
    from ddsweep.workers.packing import make_packs

    torch.set_num_threads(1)
    jobs = [{"job_id": j.job_id, "config": j.config, "epochs": j.epochs, "horizons": j.horizons,
             "pack_key": j.pack_key} for j in expand(parse_grid(case_grid(name, 1, base)))]
    out = []
    for pack in make_packs(jobs, None, device):
        cfg, K = pack[0]["config"], len(pack)
        model = build_model(cfg, INPUT_DIM, CLASSES, K, device, width=train_width(cfg, device))
        for k, job in enumerate(pack):
            model.init_member(k, torch.Generator().manual_seed(k), job["config"]["width"])
        opt = build_optimizer(cfg["train"]["optimizer"], model, [train_recipe(j["config"]) for j in pack])
        b = cfg["train"]["batch_size"]
        x = torch.randn(K, b, INPUT_DIM, device=device)
        y = torch.randint(0, CLASSES, (K, b), device=device)
        best = math.inf
        for trial in range(4):  # the first is a warm-up
            t = time.perf_counter()
            for _ in range(repeats):
                model.loss_and_grad(x, y, cfg["train"]["loss"], with_loss=False)
                opt.step()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            best = min(best, (time.perf_counter() - t) / repeats) if trial else math.inf
        flops = 3 * b * sum(macs_per_sample(j["config"]) * 2 for j in pack)  # forward + backward, unpadded
        out.append({"widths": [j["config"]["width"] for j in pack], "trains_at": train_width(cfg, device),
                    "members": K, "us_per_step": best * 1e6, "gflops": flops / best / 1e9})
    return out


# ----------------------------------------------------------------------------- main


def run_case(name: str, epochs: int, cpus: int, device: str, peak: float, workdir: Path,
             base: Path = DEFAULT_GRID, eval_as_grid: bool = False) -> dict:
    from ddsweep.grid import EvalSpec, expand, parse_grid

    grid = case_grid(name, epochs, base, eval_as_grid)
    jobs = expand(parse_grid(grid))
    flops = train_flops(jobs)
    evaluations = len(EvalSpec(**grid["eval"]).epochs([epochs]))  # epoch 0 included
    e_flops = eval_flops(jobs, evaluations, grid["dataset"].get("test", 0))
    a = plain_loop(jobs, device, threads=cpus)
    b = ddsweep_arm(grid, cpus, device, workdir)
    slot_seconds = b["seconds"] * b["slots"]
    return {
        "case": name, "jobs": len(jobs), "epochs": epochs, "device": device, "cpus": cpus,
        "eval": grid["eval"], "evaluated_epochs": len(EvalSpec(**grid["eval"]).epochs([epochs])),
        "plain_seconds": a["seconds"], "ddsweep_seconds": b["seconds"],
        "speedup": a["seconds"] / b["seconds"],
        "plain_runs_per_s": len(jobs) / a["seconds"], "ddsweep_runs_per_s": len(jobs) / b["seconds"],
        "plain_samples_per_s": a["samples"] / a["seconds"], "ddsweep_samples_per_s": b["samples"] / b["seconds"],
        "model_tflop": flops / 1e12,
        "plain_mfu": flops / a["seconds"] / peak, "ddsweep_mfu": flops / b["seconds"] / peak,
        # the same over the workers' time inside training steps only (no evaluation, start-up or tail)
        "ddsweep_step_mfu": flops / (b["train_seconds"] / b["slots"]) / peak,
        # share of the workers' wall time not spent in training steps (evaluation, set-up,
        # database, scheduling and the idle tail at the end)
        "outside_training_share": 1.0 - b["train_seconds"] / slot_seconds,
        "eval_share": b["eval_seconds"] / slot_seconds,
        "setup_share": b["setup_seconds"] / slot_seconds,
        # the workers' start (interpreter, import torch) before their first pack
        "startup_share": b.get("startup_seconds", 0.0) / slot_seconds,
        # forward FLOPs of the evaluations, and the least time they could take at the matmul peak:
        # with the start-up, a floor under the time outside training steps
        "eval_tflop": e_flops / 1e12,
        "eval_at_peak_share": e_flops / peak / b["seconds"],
    }
def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m ddsweep.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"epochs per run in both arms (default per case: {CASE_EPOCHS})")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated: {', '.join(CASES)}")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="cores: ddsweep workers / plain threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--grid", default=str(DEFAULT_GRID), help="base grid file (default: the embedded default)")
    parser.add_argument("--eval-as-grid", action="store_true",
                        help="evaluate on the grid's own schedule cut at the short horizon (default: as often "
                             "per epoch as over the grid's full horizon)")
    parser.add_argument("--out", default="bench-results.json", help="JSON file for the results")
    parser.add_argument("--steps", action="store_true",
                        help="only time one training step of each pack of the cases (1 thread)")
    args = parser.parse_args(argv)
    os.environ.setdefault("DDSWEEP_CACHE", str(Path.home() / ".cache" / "ddsweep"))
    if args.steps:
        return _print_steps(args.cases, args.device, Path(args.grid))
    peak = matmul_rate(args.device, args.cpus)
    results = []
    with tempfile.TemporaryDirectory(prefix="ddsweep-bench-") as tmp:
        for name in args.cases.split(","):
            epochs = args.epochs or CASE_EPOCHS[name.strip()]
            r = run_case(name.strip(), epochs, args.cpus, args.device, peak, Path(tmp), Path(args.grid),
                         args.eval_as_grid)
            after = matmul_rate(args.device, args.cpus)  # again after the arms: the best of both is the peak
            if after > peak:
                for key in ("plain_mfu", "ddsweep_mfu", "ddsweep_step_mfu"):
                    r[key] *= peak / after
                peak = after
            r["peak_matmul_gflops"] = peak / 1e9
            results.append(r)
            _print(r)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return results


def _print_steps(cases: str, device: str, base: Path) -> list[dict]:
    results = []
    for name in cases.split(","):
        rows = step_costs(name.strip(), device, base)
        print(f"{name.strip()}: one training step per pack on {device}, 1 thread")
        for r in rows:
            w = r["widths"]
            span = f"{min(w)}..{max(w)}" if len(set(w)) > 1 else f"{w[0]}"
            print(f"  widths {span:>9} (at {r['trains_at']:>3}) x{r['members']:<3} {r['us_per_step']:7.0f} us/step "
                  f"{r['gflops']:6.1f} GFLOP/s")
        print(f"  all packs: {sum(r['us_per_step'] for r in rows):.0f} us per step of each")
        results.append({"case": name.strip(), "packs": rows})
    return results


def _print(r: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{r['case']}: {r['jobs']} runs x {r['epochs']} epochs ({r['evaluated_epochs']} evaluated) "
                    f"on {r['device']} ({r['cpus']} cores)")
    for col in ("arm", "wall s", "runs/s", "samples/s", "model FLOP/s vs matmul peak"):
        t.add_column(col, justify="right")
    t.add_row("plain loop", f"{r['plain_seconds']:.1f}", f"{r['plain_runs_per_s']:.3f}",
              f"{r['plain_samples_per_s']:,.0f}", f"{r['plain_mfu']:.1%}")
    t.add_row("ddsweep", f"{r['ddsweep_seconds']:.1f}", f"{r['ddsweep_runs_per_s']:.3f}",
              f"{r['ddsweep_samples_per_s']:,.0f}", f"{r['ddsweep_mfu']:.1%}")
    Console().print(t)
    print(f"speedup ddsweep / plain: {r['speedup']:.1f}x; matmul peak {r['peak_matmul_gflops']:.0f} GFLOP/s; "
          f"{r['model_tflop']:.2f} TFLOP of training; ddsweep time outside training steps "
          f"{r['outside_training_share']:.1%} (evaluation {r['eval_share']:.1%}, worker start-up "
          f"{r['startup_share']:.1%}, pack set-up {r['setup_share']:.1%}; the evaluations' "
          f"{r['eval_tflop'] * 1000:.0f} GFLOP would take {r['eval_at_peak_share']:.1%} at the matmul peak); "
          f"inside its training steps ddsweep reaches {r['ddsweep_step_mfu']:.1%} of the matmul peak")
