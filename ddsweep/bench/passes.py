"""`python -m ddsweep.bench --passes`: the cost of taking a step's batch in passes (micro-batches, the
penalty's blocks) against the unsplit step, measured in the same run.

Each case builds one pack member and one batch (random data of the dataset's shape: a step's cost does
not depend on the values), then times ddsweep.train.passes.StepPasses.gradient for every variant,
the variants interleaved round by round so that a shared machine's load hits them alike; each
variant's time is its best round (what the machine can do), and the ratio is against the case's
unsplit step. One torch thread, as a CPU worker trains.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

# (case, variant): (samples per pass, blocks, with the penalty)
VARIANTS = {
    "whole batch": (None, False, False),
    "micro-batches of 500": (500, False, False),
    "micro-batches of 128": (128, False, False),
    "penalty, whole batch": (None, False, True),
    "penalty, blocks of 128": (128, True, True),
}


def _case(name: str, batch: int):
    """(model, x, y) of one member: the MNIST-1D MLP (h = 64) or mcnn (k = 8) on CIFAR-shaped images."""
    import torch

    g = torch.Generator().manual_seed(0)
    if name == "mlp":
        from ddsweep.models.mlp import PackedMLP

        model = PackedMLP(1, 40, 64, 10, depth=2)
        x = torch.randn(1, batch, 40, generator=g)
    else:
        from ddsweep.models.mcnn import PackedMCNN

        model = PackedMCNN(1, 8, 10)
        x = torch.randint(0, 256, (1, batch, 3, 32, 32), generator=g, dtype=torch.uint8)
    model.init_member(0, torch.Generator().manual_seed(1))
    return model, x, torch.randint(0, 10, (1, batch), generator=g)


def time_case(name: str, batch: int, rounds: int) -> list[dict]:
    import torch

    from ddsweep.train.passes import StepPasses

    model, x, y = _case(name, batch)
    penalty = torch.ones(1, 1, dtype=torch.bool)
    best = {v: float("inf") for v in VARIANTS}
    for _ in range(rounds):
        for variant, (samples, blocks, with_penalty) in VARIANTS.items():
            passes = StepPasses(model, "cross_entropy", samples, blocks)
            t = time.perf_counter()
            passes.gradient(x, y, with_loss=with_penalty, penalty=penalty if with_penalty else None)
            best[variant] = min(best[variant], time.perf_counter() - t)
    out = []
    for variant, (_, _, with_penalty) in VARIANTS.items():
        base = best["penalty, whole batch" if with_penalty else "whole batch"]
        out.append({"case": name, "batch": batch, "variant": variant, "ms_per_step": best[variant] * 1e3,
                    "ratio_vs_unsplit": best[variant] / base})
    return out


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(prog="python -m ddsweep.bench --passes", description=__doc__.splitlines()[0])
    parser.add_argument("--passes", action="store_true", help="this benchmark")
    parser.add_argument("--rounds", type=int, default=20, help="timings of each variant (the best counts)")
    parser.add_argument("--out", default="bench-passes.json", help="JSON file for the results")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    results = []
    for name, batch in (("mlp", 4000), ("mcnn", 512)):
        rows = time_case(name, batch, args.rounds)
        print(f"{name}: one step of a batch of {batch} on the CPU, 1 thread (best of {args.rounds} rounds)")
        for r in rows:
            print(f"  {r['variant']:<24} {r['ms_per_step']:8.1f} ms   x{r['ratio_vs_unsplit']:.2f} of the unsplit step")
        results += rows
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return results
