"""Datasets: a registry from name to loader, and the label-noise/subset rules.

A loader returns a `Tensors` bundle (float inputs, int64 labels) for the training
pool and the test set. Subsets and label noise are applied on top, per job, by
`ddsweep.data.noise`, identically for every dataset. The registry names loaders
by import path so that validating a grid does not import torch.
"""

from __future__ import annotations

import importlib

DATASETS = {"mnist1d": "ddsweep.data.mnist1d:load_mnist1d"}


def load_dataset(spec: dict):
    """Load (generating or reading the cache) the dataset a job config names -> Tensors."""
    module, name = DATASETS[spec["name"]].split(":")
    return getattr(importlib.import_module(module), name)(spec)
