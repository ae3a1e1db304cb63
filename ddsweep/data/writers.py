"""Small datasets written in torchvision's on-disk formats, for tests and benchmarks.

The real loading code (ddsweep.data.vision) then runs on them: CIFAR-10/100's python
batches, MNIST's and Fashion-MNIST's idx files, SVHN's .mat files; CIFAR-5m's .npz shards
(ddsweep.data.cifar5m). And sentence pairs in the layout ddsweep.data.translation reads (also how
the synthetic translation set is written).
"""

from __future__ import annotations

import pickle
from pathlib import Path

from ddsweep.data.vision import VISION


def write_cifar(root, x_train, y_train, x_test, y_test, name: str = "cifar10") -> Path:
    """Write uint8 images [N, 3, 32, 32] and labels in CIFAR-10's (or -100's) python batch format under root.

    CIFAR-10's training images are split over data_batch_1..5 as in the real archive.
    Returns the root. For tests and benchmarks: the real loading code then runs on them.
    """
    import numpy as np

    root = Path(root)
    info = VISION[name]
    folder = root / info.train_files[0].split("/")[0]
    folder.mkdir(parents=True, exist_ok=True)
    label_key = "labels" if name == "cifar10" else "fine_labels"
    x_train, x_test = (np.asarray(x, dtype=np.uint8).reshape(len(x), 3 * 32 * 32) for x in (x_train, x_test))
    y_train, y_test = ([int(v) for v in y] for y in (y_train, y_test))
    parts = np.array_split(np.arange(len(x_train)), len(info.train_files))
    for f, idx in zip(info.train_files, parts):
        batch = {"data": x_train[idx], label_key: [y_train[i] for i in idx], "batch_label": "training batch"}
        (root / f).write_bytes(pickle.dumps(batch, protocol=2))
    batch = {"data": x_test, label_key: y_test, "batch_label": "testing batch"}
    (root / info.test_files[0]).write_bytes(pickle.dumps(batch, protocol=2))
    meta, key = ("batches.meta", "label_names") if name == "cifar10" else ("meta", "fine_label_names")
    names = [f"class{i}" for i in range(info.classes)]
    (folder / meta).write_bytes(pickle.dumps({key: names}, protocol=2))
    return root


def write_mnist(root, x_train, y_train, x_test, y_test, name: str = "mnist") -> Path:
    """Write uint8 images [N, 28, 28] and labels as MNIST's (or Fashion-MNIST's) idx files under root."""
    import numpy as np

    root = Path(root)
    info = VISION[name]
    (root / info.train_files[0]).parent.mkdir(parents=True, exist_ok=True)
    for (fx, fy), (x, y) in zip((info.train_files, info.test_files), ((x_train, y_train), (x_test, y_test))):
        x = np.asarray(x, dtype=np.uint8)
        y = np.asarray(y, dtype=np.uint8)
        header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in x.shape)
        (root / fx).write_bytes(header + x.tobytes())
        (root / fy).write_bytes(bytes([0, 0, 8, 1]) + len(y).to_bytes(4, "big") + y.tobytes())
    return root


def write_svhn(root, x_train, y_train, x_test, y_test) -> Path:
    """Write uint8 images [N, 3, 32, 32] and labels 0..9 as SVHN's train_32x32.mat and test_32x32.mat
    under root (MATLAB arrays X [32, 32, 3, N] and y [N, 1], digit 0 stored as 10)."""
    import numpy as np
    import scipy.io

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for f, x, y in zip(VISION["svhn"].train_files + VISION["svhn"].test_files, (x_train, x_test), (y_train, y_test)):
        y = np.asarray(y, dtype=np.uint8).reshape(-1, 1).copy()
        y[y == 0] = 10
        scipy.io.savemat(str(root / f), {"X": np.asarray(x, dtype=np.uint8).transpose(2, 3, 1, 0), "y": y})
    return root


def write_translation(root, pairs: dict[str, list[tuple[str, str]]], src: str = "de", tgt: str = "en") -> Path:
    """Write split -> [(source, target)] as ROOT/SPLIT.SRC and ROOT/SPLIT.TGT (for tests and examples)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for split, items in pairs.items():
        for lang, side in ((src, 0), (tgt, 1)):
            (root / f"{split}.{lang}").write_text("".join(p[side] + "\n" for p in items), encoding="utf-8")
    return root


def write_cifar5m(root, x, y, parts: int = 2, compressed: bool = False) -> Path:
    """Write uint8 images [N, 32, 32, 3] and labels [N] as `parts` shards cifar5m_part<i>.npz under root,
    as the released files are (np.savez: members stored uncompressed). Returns root."""
    import numpy as np

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    x, y = np.asarray(x, dtype=np.uint8), np.asarray(y)
    save = np.savez_compressed if compressed else np.savez
    for i, idx in enumerate(np.array_split(np.arange(len(x)), parts)):
        save(root / f"cifar5m_part{i}.npz", X=x[idx], Y=y[idx])
    return root


def template_images(n: int, classes: int = 10, seed: int = 0, signal: float = 4.0, noise: float = 64.0):
    """n learnable CIFAR-shaped images (uint8 [n, 32, 32, 3]) and labels: each class is a smooth random
    template (a 4 x 4 colour pattern, upsampled), each image its class's template (amplitude `signal`
    grey levels), shifted by up to 4 pixels and scaled in contrast, plus pixel noise (`noise` grey levels). Hard enough that a small network fitting a
    thousand of them memorises (the Deep Bootstrap's real world parts from its ideal world); for the
    README's CPU demo and benchmarks, not a stand-in for CIFAR-5m's statistics."""
    import numpy as np

    rng = np.random.default_rng(seed)
    coarse = rng.normal(0, 1, (classes, 4, 4, 3))
    templates = np.kron(coarse, np.ones((1, 10, 10, 1)))  # [C, 40, 40, 3]: each image a 32 x 32 window
    y = rng.integers(0, classes, n)
    dy, dx = rng.integers(0, 9, n), rng.integers(0, 9, n)
    contrast = rng.uniform(0.5, 1.5, n)
    x = np.empty((n, 32, 32, 3), dtype=np.uint8)
    for oy in range(9):
        for ox in range(9):
            sel = np.flatnonzero((dy == oy) & (dx == ox))
            t = templates[y[sel], oy:oy + 32, ox:ox + 32]
            img = 128 + signal * contrast[sel, None, None, None] * t + noise * rng.standard_normal(t.shape, np.float32)
            x[sel] = np.clip(img, 0, 255).astype(np.uint8)
    return x, y
