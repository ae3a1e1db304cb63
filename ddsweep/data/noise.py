"""Training subsets and label noise, as in Deep Double Descent (Nakkiran et al. 2019).

- `n_train` takes the first n indices of a permutation of the pool seeded by the
  run's seed, so for one seed smaller training sets are subsets of larger ones.
- Label noise p: each training label independently, with probability p, is replaced
  by a uniformly random *incorrect* class; drawn once, not per epoch; test labels
  stay clean. The draw depends only on (dataset, seed) per pool sample and on p, so
  it is identical across widths and every other training knob. Draws are coupled
  across p and n: the samples flipped at p=0.1 are also flipped at p=0.2, and a
  sample keeps its noisy label as n grows.
- A validation split (`dataset: {val: N}`) holds N pool samples out once per dataset:
  training subsets are drawn from the rest; validation labels stay clean.
"""

from __future__ import annotations

import hashlib

import torch


def seeded_generator(*parts) -> torch.Generator:
    """A generator seeded by a hash of `parts`; dicts count by content, not key order."""
    digest = hashlib.sha256(repr(_sorted(parts)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _sorted(x):
    if isinstance(x, dict):
        return {k: _sorted(x[k]) for k in sorted(x)}
    if isinstance(x, (list, tuple)):
        return type(x)(_sorted(v) for v in x)
    return x


def pool_order(dataset: dict, pool_size: int, seed: int) -> torch.Tensor:
    """The seeded permutation of the trainable pool (the pool less any validation split): a run's
    training subset is its head, its ideal-world stream (ddsweep.data.ideal.PoolStream) the rest."""
    val = int(dataset.get("val") or 0)
    if not val:
        return torch.randperm(pool_size, generator=seeded_generator("subset", dataset, seed))
    rest = _split(dataset, pool_size)[val:]
    return rest[torch.randperm(len(rest), generator=seeded_generator("subset", dataset, seed))]


def training_subset(dataset: dict, pool_size: int, n_train: int, seed: int) -> torch.Tensor:
    """Indices into the pool of the first n_train samples of a seeded permutation (pool_order).

    With a validation split (`val` in the dataset), the permutation is of the pool less
    the held-out samples, so no seed and no n_train ever trains on one of them."""
    return pool_order(dataset, pool_size, seed)[:n_train]


def validation_split(dataset: dict, pool_size: int) -> torch.Tensor:
    """Indices into the pool of the validation samples (`val` in the dataset; empty without).

    One draw per dataset, whatever the seed: every run of a sweep is validated on the same
    samples, and a larger split holds the smaller one."""
    val = int(dataset.get("val") or 0)
    return _split(dataset, pool_size)[:val]


def _split(dataset: dict, pool_size: int) -> torch.Tensor:
    """The pool in the order the validation split takes it (seeded by the dataset, not its size)."""
    which = {k: v for k, v in dataset.items() if k != "val"}
    return torch.randperm(pool_size, generator=seeded_generator("validation", which))


def noisy_labels(dataset: dict, y_pool: torch.Tensor, idx: torch.Tensor, p: float, seed: int,
                 num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(labels, flipped) for the training samples idx: flipped ones get a wrong class."""
    g = seeded_generator("noise", dataset, seed)
    u = torch.rand(len(y_pool), generator=g)  # per pool sample: flipped iff u < p
    offset = torch.randint(1, num_classes, (len(y_pool),), generator=g)  # 1..C-1: never the true class
    y = y_pool.cpu()[idx]
    flipped = u[idx] < p
    labels = torch.where(flipped, (y + offset[idx]) % num_classes, y)
    return labels, flipped
