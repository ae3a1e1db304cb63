"""The ideal world of the Deep Bootstrap (Nakkiran, Neyshabur, Sedghi 2021): fresh samples every step.

A run with `world: ideal` trains on a stream of samples that are never reused: every
step takes the next batch of the stream. Its "epochs" are as long as its real twin's
(n_train samples, the same steps and batch sizes), so the two compare at equal steps
on the same test set. An ideal run of E epochs uses E x n_train fresh samples.

Every dataset with a fixed pool (CIFAR-5m, CIFAR-10/100, MNIST, SVHN, ...) has an
ideal world: `PoolStream`. A run's training subset is the head of its seeded
permutation of the pool (ddsweep.data.noise.pool_order); its ideal-world twin walks
the rest of that permutation in order, so it never meets a sample twice, never a
sample of the real run's training subset, and never the test set (which is not in
the pool). Label noise is ddsweep.data.noise's draw per pool sample, the real
world's rule. The grid refuses at plan time (ddsweep.data.ideal_capacity) a run that would need
more fresh samples than the pool holds besides its real subset. CIFAR-5m (~6M
samples) gives a 50K-sample run about 120 epochs of fresh data; CIFAR-10's own pool
only (50000 - n) / n epochs: there it is for small n_train.

For MNIST-1D the stream is drawn from the same generator as the real data:
`mnist1d_chunk(spec, c)` renders chunk c (CHUNK samples, classes balanced as in
`mnist1d.data.make_dataset`) with the package's transformations, vectorised and
from its own seeded RNG (so no sample of the stream is a sample of the pool or the
test set), and normalises it with the real data's mean and standard deviation (the
pool and test set are normalised by their own statistics, which `real_stats`
recovers by replaying the generator). Chunk c is the same for every run of the dataset.

A run walks the stream in order: its sample number i (counting every sample of every
step) is sample perm_c[i mod CHUNK] of chunk c = i // CHUNK, perm_c a permutation
drawn per (dataset, seed, chunk); so no sample repeats within a run, and runs with
different seeds meet the chunk's samples in different orders. Label noise is applied
as in the real world (ddsweep.data.noise), per stream sample, drawn once per
(dataset, seed, chunk): with probability p a uniformly random incorrect class.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import OrderedDict

import numpy as np
import torch

from ddsweep.data.noise import noisy_labels, pool_order, seeded_generator

CHUNK = 1 << 15  # samples per generated chunk of the stream
IDEAL = {"mnist1d": "mnist1d_chunk"}  # generated datasets (ddsweep.data.GENERATED) -> chunk renderer
_CHUNKS: OrderedDict = OrderedDict()  # (dataset key, chunk) -> (x, y): the last few rendered
_KEEP = 4


def ideal_stream(config: dict, data):
    """The fresh-sample stream of an ideal-world job (its config) on its loaded data (Tensors)."""
    if config["dataset"]["name"] in IDEAL:
        return IdealStream(config["dataset"], config["seed"], config["label_noise"], data.num_classes)
    return PoolStream(config, data)


class PoolStream:
    """The ideal world on a fixed pool: the samples of the pool the run's real twin does not train
    on, in the run's seeded order, each at most once (see the module docstring)."""

    def __init__(self, config: dict, data):
        from ddsweep.data import dataset_identity

        dataset = dataset_identity(config["dataset"])  # as the real world's subset and noise are seeded
        order = pool_order(dataset, len(data.y_pool), config["seed"])
        self.data = data
        self.stream = order[config["n_train"]:]  # pool indices, in the order the run meets them
        labels, _ = noisy_labels(dataset, data.y_pool, self.stream, config["label_noise"], config["seed"],
                                 data.num_classes)
        self.labels = labels.to(torch.int16 if data.num_classes < 2**15 else torch.int64)  # 6M of them on CIFAR-5m

    def positions(self, start: int, count: int) -> torch.Tensor:
        """Pool indices of the run's fresh samples start .. start + count - 1."""
        if start + count > len(self.stream):
            raise ValueError(f"the ideal world ran out of fresh samples: {start + count} asked for, "
                             f"the pool holds {len(self.stream)} besides the real training subset")
        return self.stream[start:start + count]

    def take(self, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(images [count, ...], noisy labels [count]) of the run's fresh samples start .. start + count - 1."""
        idx = self.positions(start, count)
        device = self.data.x_pool.device if isinstance(self.data.x_pool, torch.Tensor) else "cpu"
        return self.data.pool_rows(idx, device), self.labels[start:start + count].long()


class IdealStream:
    """The fresh-sample stream of one run (dataset, seed, label noise) from MNIST-1D's generator."""

    def __init__(self, dataset: dict, seed: int, label_noise: float, num_classes: int):
        if dataset["name"] not in IDEAL:
            raise ValueError(f"dataset {dataset['name']} has no ideal world (only {', '.join(IDEAL)})")
        self.dataset, self.seed, self.p, self.C = dataset, seed, label_noise, num_classes
        self.render = globals()[IDEAL[dataset["name"]]]

    def positions(self, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(chunk, index within the chunk) of the run's samples start .. start + count - 1."""
        i = torch.arange(start, start + count, dtype=torch.int64)
        chunk, local = i // CHUNK, i % CHUNK
        index = torch.empty_like(local)
        for c in chunk.unique().tolist():
            sel = chunk == c
            index[sel] = self._order(c)[local[sel]]
        return chunk, index

    def take(self, start: int, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x [count, d], noisy labels [count]) of the run's samples start .. start + count - 1."""
        chunk, index = self.positions(start, count)
        xs, ys = [], []
        for c in chunk.unique().tolist():
            idx = index[chunk == c]
            x, y = _chunk(self.dataset, c, self.render)
            labels, _ = self._labels(c, y)
            xs.append(x[idx])
            ys.append(labels[idx])
        return torch.cat(xs), torch.cat(ys)

    def _order(self, c: int) -> torch.Tensor:
        return torch.randperm(CHUNK, generator=seeded_generator("ideal-order", self.dataset, self.seed, c))

    def _labels(self, c: int, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """As ddsweep.data.noise.noisy_labels, per chunk: coupled across p, never the true class."""
        g = seeded_generator("ideal-noise", self.dataset, self.seed, c)
        u = torch.rand(CHUNK, generator=g)
        offset = torch.randint(1, self.C, (CHUNK,), generator=g)
        flipped = u < self.p
        return torch.where(flipped, (y + offset) % self.C, y), flipped


def _chunk(dataset: dict, c: int, render):
    key = (json.dumps(dataset, sort_keys=True), CHUNK, c)
    if key in _CHUNKS:
        _CHUNKS.move_to_end(key)
        return _CHUNKS[key]
    x, y = _cached(dataset, c, render)
    _CHUNKS[key] = (torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64))
    while len(_CHUNKS) > _KEEP:
        _CHUNKS.popitem(last=False)
    return _CHUNKS[key]


def _cached(dataset: dict, c: int, render):
    """Chunk c from the disk cache beside the datasets (rendered and saved atomically if missing)."""
    from ddsweep.data.mnist1d import cache_dir

    digest = hashlib.sha256(json.dumps(dataset, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_dir() / "ideal" / f"{dataset['name']}-{digest}-{CHUNK}-chunk{c}.pt"
    if path.exists():
        try:
            d = torch.load(path, weights_only=True)
            return d["x"], d["y"]
        except Exception:
            pass  # a truncated file is rendered again
    x, y = render(dataset, c)
    d = {"x": torch.as_tensor(x, dtype=torch.float32), "y": torch.as_tensor(y, dtype=torch.int64)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(d, tmp)
    os.replace(tmp, path)
    return d["x"], d["y"]


# ----------------------------------------------------------------------------- MNIST-1D


def _rng(*parts) -> np.random.Generator:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def mnist1d_chunk(dataset: dict, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Chunk c of the MNIST-1D stream: x [CHUNK, 40] float32 (normalised like the real data), y [CHUNK]."""
    import mnist1d.data

    args = mnist1d.data.get_dataset_args()
    rng = _rng("ideal-mnist1d", _real_key(dataset), c)
    y = rng.permutation(np.arange(CHUNK) % 10)  # balanced classes, shuffled
    n = CHUNK
    low, high = args.padding
    draws = {
        "pad": low + (rng.random(n) * (high - low + 1)).astype(np.int64),
        "scale": 1 + args.scale_coeff * (rng.random(n) - 0.5),
        "shift": rng.integers(0, args.max_translation, n),
        "corr": args.corr_noise_scale * rng.standard_normal((n, args.template_len + high)),
        "iid": args.iid_noise_scale * rng.standard_normal((n, args.template_len + high)),
        "shear": args.shear_scale * (rng.random(n) - 0.5),
    }
    raw = render_mnist1d(y, draws, args)
    mean, std = real_stats(dataset)
    return ((raw - mean) / std).astype(np.float32), y


def render_mnist1d(y: np.ndarray, d: dict, args) -> np.ndarray:
    """mnist1d.transform.transform for many samples at once, from given random draws; raw (unnormalised) x.

    d holds per sample: pad (zeros appended), scale, shift (translation), corr (the
    correlated noise before its Gaussian filter, already scaled), iid (scaled), shear
    (its coefficient). Bit-for-bit the package's computation for the same draws.
    """
    from mnist1d.data import get_templates
    from scipy.interpolate import interp1d
    from scipy.ndimage import gaussian_filter1d

    templates = get_templates()["x"]
    n, T = len(y), args.template_len
    L = T + args.padding[-1]  # the length everything is dilated to
    x = np.empty((n, L))
    for p in np.unique(d["pad"]):  # pad with p zeros, then dilate to L points
        sel = d["pad"] == p
        padded = np.concatenate([templates[y[sel]] + 1e-8, np.zeros((sel.sum(), p))], axis=1)
        x[sel] = interp1d(np.linspace(0, 1, T + p), padded, axis=1, kind="linear")(np.linspace(0, 1, L))
    x *= d["scale"][:, None]
    k = d["shift"]
    x = np.take_along_axis(x, (np.arange(L)[None, :] - k[:, None]) % L, axis=1)  # translate (roll by k)
    mask = x != 0
    x = mask * x + (1 - mask) * gaussian_filter1d(d["corr"], 2, axis=1)
    x = x + d["iid"]
    x = x - d["shear"][:, None] * np.linspace(-0.5, 0.5, L)[None, :]
    return interp1d(np.linspace(0, 1, L), x, axis=1, kind="linear")(np.linspace(0, 1, args.final_seq_length))


def _real_key(dataset: dict) -> tuple:
    """(pool, test, seed) of the real data, the defaults of ddsweep.grid.DatasetSpec filled in."""
    get = lambda k, default: default if dataset.get(k) is None else int(dataset[k])  # noqa: E731
    return get("pool", 8000), get("test", 4000), get("seed", 42)


def real_stats(dataset: dict) -> tuple[float, float]:
    """Mean and standard deviation the real MNIST-1D data (pool + test) was normalised with.

    `mnist1d.data.make_dataset` normalises by the statistics of what it generated; they
    are recovered by replaying it without the normalisation (a fraction of a second),
    and cached beside the dataset.
    """
    from ddsweep.data.mnist1d import cache_dir

    pool, test, seed = _real_key(dataset)
    path = cache_dir() / f"mnist1d-pool{pool}-test{test}-seed{seed}.stats.json"
    try:
        s = json.loads(path.read_text())
        return float(s["mean"]), float(s["std"])
    except (OSError, ValueError, KeyError):
        pass
    raw = replay_mnist1d_raw(pool + test, seed)
    mean, std = float(raw.mean()), float(raw.std())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"mean": mean, "std": std}))
    os.replace(tmp, path)
    return mean, std


def replay_mnist1d_raw(total: int, seed: int) -> np.ndarray:
    """What ddsweep.data.mnist1d generates for (pool + test = total, seed), before normalisation.

    `mnist1d.data.make_dataset` seeds numpy's global RNG and transforms the templates one
    sample at a time (class by class), then shuffles. This draws the same random numbers in
    the same order from a RandomState with that seed and renders them all at once.
    """
    import mnist1d.data

    args = mnist1d.data.get_dataset_args()
    num_samples = -(-total // 10) * 10
    labels = np.repeat(np.arange(10), num_samples // 10)
    rs = np.random.RandomState(seed)
    low, high = args.padding
    L = args.template_len + high
    d = {k: [] for k in ("pad", "scale", "shift", "corr", "iid", "shear")}
    for _ in labels:  # the package's order: pad, scale, translate, correlated noise, iid noise, shear
        d["pad"].append(low + int(rs.rand() * (high - low + 1)))
        d["scale"].append(1 + args.scale_coeff * (rs.rand() - 0.5))
        d["shift"].append(rs.choice(args.max_translation))
        d["corr"].append(args.corr_noise_scale * rs.randn(L))
        d["iid"].append(args.iid_noise_scale * rs.randn(L))
        d["shear"].append(args.shear_scale * (rs.rand() - 0.5))
    raw = render_mnist1d(labels, {k: np.array(v) for k, v in d.items()}, args)
    return raw[rs.permutation(len(labels))]
