"""`python -m ddsweep.bench --model mcnn`: Deep Double Descent's 5-layer CNN, the plain way vs ddsweep.

Synthetic CIFAR-shaped data (random uint8 images and labels) is written in CIFAR-10's
python batch format to a temporary directory, so both arms run their real loading code
on it. For each width k (default 1, 2, 4, 8, 16, 32, 64), both arms train the same
jobs (Adam lr 1e-4, batch 128, random crop + flip) for the same epochs and evaluate on
the train and test sets at the first and last epoch:

(a) plain: torchvision's CIFAR10 dataset with per-image transforms (RandomCrop(32, 4),
    RandomHorizontalFlip, ToTensor, Normalize) in a DataLoader (shuffled, pinned,
    --loader-workers processes), one nn.Module at a time in float32: the usual script.
    (The synthetic files have other MD5 sums than the real archive, so its check is
    skipped; nothing else differs.)
(b) ddsweep: `ddsweep plan` + `ddsweep work` (--gpus 0 on a GPU: uint8 images resident
    on the device, augmentation batched there, bf16 autocast, channels_last, packs).

It reports samples/s per width for both, their ratio, and model-FLOPs utilization:
6 x multiply-adds per sample of the unpadded model, over the device's bf16 matmul
rate measured in the same run (on a CPU the faster of bf16 and float32). A last row
trains every width (x seeds) as one sweep, where ddsweep may pack narrow widths
together, against the sum of the plain runs. "in training steps" is ddsweep's rate
inside its training steps alone (no start-up, data loading or evaluation).

    python -m ddsweep.bench --model mcnn --device cuda                  # about 10 minutes on one H100
    python -m ddsweep.bench --model mcnn --micro --device cuda          # training steps only, about 1 minute
    python -m ddsweep.bench --model mcnn --loop --device cuda --widths 1,64 --packs 1,8 --epochs 4
                                                                        # epoch by epoch inside the training loop
    python -m ddsweep.bench --model mcnn --widths 1,2 --n-train 256 --epochs 1   # a CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from ddsweep.bench.harness import bf16_matmul_rate, ddsweep_arm, device_name

WIDTHS = (1, 2, 4, 8, 16, 32, 64)
RECIPE = {"optimizer": "adam", "lr": 1e-4, "batch_size": 128}


def write_synthetic_cifar(root: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    import numpy as np

    from ddsweep.data.writers import write_cifar

    rng = np.random.default_rng(seed)
    return write_cifar(root, rng.integers(0, 256, (n_train, 3, 32, 32), dtype=np.uint8),
                       rng.integers(0, 10, n_train), rng.integers(0, 256, (n_test, 3, 32, 32), dtype=np.uint8),
                       rng.integers(0, 10, n_test))


def grid(name: str, root: Path, widths, seeds: int, n_train: int, epochs: int, precision: str = "auto") -> dict:
    return {
        "name": name,
        "dataset": {"name": "cifar10", "root": str(root), "verify": False, "augment": True},
        "model": {"name": "mcnn"},
        "train": {**RECIPE, "epochs": epochs, "precision": precision},
        "eval": {"every": epochs},
        "grid": {"width": list(widths), "n_train": [n_train], "label_noise": [0.2], "seed": list(range(seeds))},
    }


# ----------------------------------------------------------------------------- arm (a)


def plain_run(root: Path, k: int, seed: int, n_train: int, epochs: int, device: str, loader_workers: int,
              threads: int) -> dict:
    """One mcnn trained the usual way; returns its seconds and trained samples."""
    import torch
    import torchvision.transforms as T
    from torch.utils.data import DataLoader, Subset
    from torchvision.datasets import CIFAR10

    from ddsweep.data.vision import VISION
    from ddsweep.models.reference import MCNN

    class SyntheticCIFAR10(CIFAR10):  # the synthetic files fail the real archive's MD5 check, nothing else
        def _check_integrity(self) -> bool:
            return True

        def _load_meta(self) -> None:
            self.classes = [f"class{i}" for i in range(10)]

    torch.set_num_threads(threads)
    info = VISION["cifar10"]
    normalize = T.Normalize(info.mean, info.std)
    train_tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    test_tf = T.Compose([T.ToTensor(), normalize])
    t0 = time.perf_counter()
    train_set = Subset(SyntheticCIFAR10(str(root), train=True, transform=train_tf), range(n_train))
    eval_sets = [Subset(SyntheticCIFAR10(str(root), train=True, transform=test_tf), range(n_train)),
                 SyntheticCIFAR10(str(root), train=False, transform=test_tf)]
    cuda = device.startswith("cuda")
    kwargs = {"num_workers": loader_workers, "pin_memory": cuda, "persistent_workers": loader_workers > 0}
    loader = DataLoader(train_set, batch_size=RECIPE["batch_size"], shuffle=True, **kwargs)
    torch.manual_seed(seed)
    model = MCNN(k).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=RECIPE["lr"])
    loss_fn = torch.nn.CrossEntropyLoss()

    def evaluate():
        model.eval()
        with torch.no_grad():
            for ds in eval_sets:
                for xb, yb in DataLoader(ds, batch_size=1000, num_workers=loader_workers, pin_memory=cuda):
                    out = model(xb.to(device, non_blocking=True))
                    loss_fn(out, yb.to(device)).item()
        model.train()

    evaluate()
    train_seconds, samples = 0.0, 0
    for epoch in range(1, epochs + 1):
        t = time.perf_counter()
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            opt.zero_grad(set_to_none=True)
            loss_fn(model(xb), yb).backward()
            opt.step()
            samples += len(yb)
        if cuda:
            torch.cuda.synchronize()
        train_seconds += time.perf_counter() - t
    evaluate()
    return {"seconds": time.perf_counter() - t0, "train_seconds": train_seconds, "samples": samples}


def plain_arm(root: Path, k: int, seeds: int, n_train: int, epochs: int, device: str, loader_workers: int,
              threads: int) -> dict:
    runs = [plain_run(root, k, s, n_train, epochs, device, loader_workers, threads) for s in range(seeds)]
    return {key: sum(r[key] for r in runs) for key in ("seconds", "train_seconds", "samples")}


# ----------------------------------------------------------------------------- training steps only


def in_loop(args) -> list[dict]:
    """Epoch by epoch inside ddsweep's training loop (train_pack in this process: augmentation,
    shuffles and all), for each width x pack size; the steady rate is the best epoch after the
    first (the first holds cuDNN's autotuning and CUDA-graph capture)."""
    import torch

    from ddsweep.grid import expand, parse_grid
    from ddsweep.models.speed import SpeedSettings
    from ddsweep.train.loop import train_pack
    from ddsweep.workers.events import Progress

    torch.set_num_threads(args.cpus)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ddsweep-bench-loop-") as tmp:
        root = write_synthetic_cifar(Path(tmp), args.n_train, args.n_test)
        for k in args.widths:
            for members in args.packs:
                g = grid(f"loop-k{k}", root, [k], members, args.n_train, args.epochs, args.precision)
                g["eval"] = {"every": args.epochs + 1}  # epoch 0 and the last only
                jobs = [{"job_id": j.job_id, "config": j.config, "epochs": j.epochs, "horizons": list(j.horizons)}
                        for j in expand(parse_grid(g))]
                marks = [time.perf_counter()]

                def emit(event, marks=marks):
                    if isinstance(event, Progress):
                        if args.device.startswith("cuda"):
                            torch.cuda.synchronize()
                        marks.append(time.perf_counter())

                train_pack(jobs, args.device, emit=emit, speed=SpeedSettings.from_env())
                epochs = [b - a for a, b in zip(marks, marks[1:])]
                steady = min(epochs[1:]) if len(epochs) > 1 else epochs[0]
                rows.append({"k": k, "members": members, "epoch_seconds": epochs,
                             "steady_samples_per_s": members * args.n_train / steady})
                print(f"k={k:3d} pack of {members:2d}: epochs {', '.join(f'{e:.2f}' for e in epochs)} s; "
                      f"steady {rows[-1]['steady_samples_per_s']:,.0f} samples/s", flush=True)
    return rows


def micro(args) -> list[dict]:
    """Training-step throughput in this process, no data loading: plain nn.Module (fp32, and bf16
    channels_last on a GPU) against ddsweep's packs of 1 and more members (augmentation included)."""
    import torch

    from ddsweep.data.augment import CropFlip
    from ddsweep.models.arch import ARCHS
    from ddsweep.models.mcnn import PackedMCNN
    from ddsweep.models.reference import REFERENCE
    from ddsweep.models.resnet import PackedPreActResNet18
    from ddsweep.models.speed import SpeedSettings
    from ddsweep.train.optim import PackedAdam

    arch, reference = ARCHS[args.model], REFERENCE[args.model]
    speed = SpeedSettings.from_env()  # as `ddsweep work` would train ($DDSWEEP_CUDA_GRAPHS=0: eager steps)
    packed = {"mcnn": PackedMCNN, "preact_resnet18": PackedPreActResNet18}[args.model]

    device, cuda = args.device, args.device.startswith("cuda")
    torch.set_num_threads(args.cpus)
    peak = bf16_matmul_rate(device, args.cpus)
    B, seconds = RECIPE["batch_size"], (1.0 if cuda else 1.5)

    def rate(step, samples_per_step: int) -> float:
        for _ in range(3):
            step()
        if cuda:
            torch.cuda.synchronize()
        t, n = time.perf_counter(), 0
        while time.perf_counter() - t < seconds:
            step()
            n += 1
            if cuda and n % 10 == 0:
                torch.cuda.synchronize()
        if cuda:
            torch.cuda.synchronize()
        return samples_per_step * n / (time.perf_counter() - t)

    rows = []
    for k in args.widths:
        row = {"model": args.model, "k": k, "params": arch(k).size}
        for label, amp in (("plain_fp32", False), ("plain_bf16_cl", True)):
            if amp and not cuda:
                continue
            model = reference(k).to(device)
            if amp:
                model = model.to(memory_format=torch.channels_last)
            opt = torch.optim.Adam(model.parameters(), lr=1e-4)
            x = torch.randn(B, 3, 32, 32, device=device)
            x = x.to(memory_format=torch.channels_last) if amp else x
            y = torch.randint(0, 10, (B,), device=device)

            def step(model=model, opt=opt, x=x, y=y, amp=amp):
                opt.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                    out = model(x)
                torch.nn.functional.cross_entropy(out.float(), y).backward()
                opt.step()

            row[label] = rate(step, B)
        for K in args.packs:
            model = packed(K, k, 10, precision=args.precision if args.precision != "auto" else (
                "bf16" if cuda else "fp32"), device=device, speed=speed)
            for i in range(K):
                model.init_member(i, torch.Generator().manual_seed(i))
            opt = PackedAdam(model.flat, model.grad, [1e-4] * K, [0.0] * K)
            aug = CropFlip()
            x = torch.randint(0, 256, (K, B, 3, 32, 32), dtype=torch.uint8, device=device)
            y = torch.randint(0, 10, (K, B), device=device)
            codes = torch.randint(0, aug.codes, (K, B), device=device)

            def step(model=model, opt=opt, x=x, y=y, codes=codes, aug=aug):
                model.loss_and_grad(aug(x, codes), y, "cross_entropy")
                opt.step()

            row[f"ddsweep_pack{K}"] = rate(step, K * B)
        flops = 6.0 * arch(k).macs
        row.update({f"{key}_mfu": v * flops / peak for key, v in list(row.items())
                    if key.startswith(("plain", "ddsweep"))})
        rows.append(row)
        print(f"k={k:3d}: " + "  ".join(f"{key} {v:,.0f}/s" for key, v in row.items()
                                         if key.startswith(("plain", "ddsweep")) and not key.endswith("mfu"))
              + "  (samples/s of training steps)", flush=True)
    for r in rows:
        r.update({"device": device_name(device), "bf16_matmul_tflops": peak / 1e12})
    return rows


# ----------------------------------------------------------------------------- main


def run(args) -> list[dict]:
    from ddsweep.models.arch import mcnn

    device, cuda = args.device, args.device.startswith("cuda")
    loader_workers = args.loader_workers if args.loader_workers is not None else (
        min(8, os.cpu_count() or 1) if cuda else 0)
    threads = args.cpus
    peak = bf16_matmul_rate(device, threads)
    rows = []
    with tempfile.TemporaryDirectory(prefix="ddsweep-bench-mcnn-") as tmp:
        tmp = Path(tmp)
        root = write_synthetic_cifar(tmp / "data", args.n_train, args.n_test)
        for k in args.widths:
            flops = 6.0 * mcnn(k).macs * args.n_train * args.epochs * args.seeds
            a = plain_arm(root, k, args.seeds, args.n_train, args.epochs, device, loader_workers, threads)
            b = ddsweep_arm(grid(f"bench-mcnn-k{k}", root, [k], args.seeds, args.n_train, args.epochs,
                                 args.precision), args.cpus, device, tmp)
            rows.append(_row(f"k={k}", a, b, flops, peak))
            _print_row(rows[-1])
        flops = sum(6.0 * mcnn(k).macs for k in args.widths) * args.n_train * args.epochs * args.seeds
        a = {key: sum(r["plain"][key] for r in rows) for key in ("seconds", "train_seconds", "samples")}
        b = ddsweep_arm(grid("bench-mcnn-all", root, args.widths, args.seeds, args.n_train, args.epochs,
                             args.precision), args.cpus, device, tmp)
        rows.append(_row("all widths, one sweep", a, b, flops, peak))
        _print_row(rows[-1])
    meta = {"device": device_name(device), "bf16_matmul_tflops": peak / 1e12, "n_train": args.n_train,
            "n_test": args.n_test, "epochs": args.epochs, "seeds": args.seeds, "loader_workers": loader_workers,
            "cpus": args.cpus, "precision": args.precision}
    for r in rows:
        r.update(meta)
    return rows


def _row(label: str, a: dict, b: dict, flops: float, peak: float) -> dict:
    return {
        "case": label, "plain": a, "ddsweep": {k: b[k] for k in ("seconds", "train_seconds", "samples")},
        "plain_samples_per_s": a["samples"] / a["seconds"], "ddsweep_samples_per_s": b["samples"] / b["seconds"],
        "speedup": a["seconds"] / b["seconds"],
        "plain_train_samples_per_s": a["samples"] / a["train_seconds"],
        "ddsweep_train_samples_per_s": b["samples"] / max(b["train_seconds"], 1e-9),
        "plain_mfu": flops / a["seconds"] / peak, "ddsweep_mfu": flops / b["seconds"] / peak,
        "ddsweep_train_mfu": flops / max(b["train_seconds"], 1e-9) / peak,
    }


def _print_row(r: dict) -> None:
    print(f"{r['case']:>22}: plain {r['plain_samples_per_s']:10,.0f} samples/s (MFU {r['plain_mfu']:6.2%})  "
          f"ddsweep {r['ddsweep_samples_per_s']:10,.0f} samples/s (MFU {r['ddsweep_mfu']:6.2%}, "
          f"in training steps {r['ddsweep_train_samples_per_s']:,.0f}/s)  ratio {r['speedup']:5.2f}x", flush=True)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m ddsweep.bench --model mcnn", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mcnn", choices=["mcnn", "preact_resnet18"],
                        help="preact_resnet18 with --micro only")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="comma-separated k")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default: 5 on cuda, 1 on cpu)")
    parser.add_argument("--n-train", type=int, default=None, help="training images (default: 50000 cuda, 512 cpu)")
    parser.add_argument("--n-test", type=int, default=None, help="test images (default: 10000 cuda, 128 cpu)")
    parser.add_argument("--seeds", type=int, default=1, help="runs per width (ddsweep packs them)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="ddsweep's arm")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1,
                        help="CPU: ddsweep workers and the plain arm's torch threads")
    parser.add_argument("--loader-workers", type=int, default=None,
                        help="DataLoader worker processes of the plain arm (default: min(8, cores) on cuda, 0 on cpu)")
    parser.add_argument("--micro", action="store_true",
                        help="training steps only, in this process: plain nn.Module vs packs of --packs members")
    parser.add_argument("--packs", default="1,8", help="with --micro or --loop: pack sizes (comma-separated)")
    parser.add_argument("--loop", action="store_true",
                        help="epoch by epoch inside ddsweep's training loop, in this process (steady rate "
                             "after the first epoch), for --widths x --packs")
    parser.add_argument("--out", default="bench-mcnn.json")
    args = parser.parse_args(argv)
    args.packs = [int(p) for p in str(args.packs).split(",") if p.strip()]
    cuda = args.device.startswith("cuda")
    args.widths = [int(w) for w in str(args.widths).split(",") if w.strip()]
    args.epochs = args.epochs or (5 if cuda else 1)
    args.n_train = args.n_train or (50_000 if cuda else 512)
    args.n_test = args.n_test or (10_000 if cuda else 128)
    os.environ.setdefault("DDSWEEP_CACHE", str(Path.home() / ".cache" / "ddsweep"))
    if args.model != "mcnn" and not args.micro:
        parser.error("--model preact_resnet18 is measured with --micro only")
    if args.loop:
        rows = in_loop(args)
        Path(args.out).write_text(json.dumps(rows, indent=2))
        print(f"wrote {args.out}")
        return rows
    if args.micro:
        rows = micro(args)
        Path(args.out).write_text(json.dumps(rows, indent=2))
        print(f"device {rows[0]['device']}, matmul peak {rows[0]['bf16_matmul_tflops']:.1f} TFLOP/s; wrote {args.out}")
        return rows
    rows = run(args)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    print(f"device {rows[0]['device']}, matmul peak {rows[0]['bf16_matmul_tflops']:.1f} TFLOP/s; wrote {args.out}")
    return rows
