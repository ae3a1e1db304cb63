"""MNIST-1D, generated procedurally by the `mnist1d` package and cached on disk."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ddsweep import env


def cache_dir() -> Path:
    """Where generated datasets are cached: $DDSWEEP_CACHE or ~/.cache/ddsweep."""
    root = env.value("DDSWEEP_CACHE") or Path.home() / ".cache" / "ddsweep"
    return Path(root)


def load_mnist1d(spec: dict):
    """MNIST-1D with `pool` training and `test` test samples, from the cache or generated."""
    from ddsweep.data.tensors import Tensors

    pool, test, seed = int(spec["pool"]), int(spec["test"]), int(spec["seed"])
    path = cache_dir() / f"mnist1d-pool{pool}-test{test}-seed{seed}.pt"
    if path.exists():
        try:
            d = torch.load(path, weights_only=True)
            return Tensors(d["x_pool"], d["y_pool"], d["x_test"], d["y_test"], 10)
        except Exception:
            pass  # a truncated cache file is regenerated below
    d = _generate(pool, test, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(d, tmp)
    os.replace(tmp, path)  # atomic: concurrent workers never read a half-written cache
    return Tensors(d["x_pool"], d["y_pool"], d["x_test"], d["y_test"], 10)


def _generate(pool: int, test: int, seed: int) -> dict:
    import mnist1d.data

    args = mnist1d.data.get_dataset_args()
    total = pool + test
    # make_dataset makes num_samples // 10 per class; round up, then cut.
    args.num_samples = -(-total // 10) * 10
    args.train_split = 1.0
    args.seed = seed
    state = np.random.get_state()  # make_dataset seeds numpy's global RNG: isolate it
    try:
        d = mnist1d.data.make_dataset(args)
    finally:
        np.random.set_state(state)
    x = torch.tensor(d["x"][:total], dtype=torch.float32)
    y = torch.tensor(d["y"][:total], dtype=torch.int64)
    return {"x_pool": x[:pool].clone(), "y_pool": y[:pool].clone(),
            "x_test": x[pool:].clone(), "y_test": y[pool:].clone()}
