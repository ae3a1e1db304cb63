"""CIFAR-5m (Nakkiran, Neyshabur, Sedghi 2021): about 6M CIFAR-10-like images, read from the released shards.

A grid names it with `dataset: {name: cifar5m, root: DIR}` (without root: the folder
cifar5m/ under $DDSWEEP_DATA, else ~/.cache/ddsweep/data); DIR holds
`cifar5m_part0.npz`, `cifar5m_part1.npz`, ... (numbered from 0 without gaps), each a
numpy .npz with `X` uint8 [N, 32, 32, 3] and `Y` integer [N] (classes 0..9, CIFAR-10's).

The shards are ~18 GB together, so nothing reads them whole. An .npz is a zip file
whose members are .npy files; np.savez stores them uncompressed, so each `X` is a
plain array at a fixed offset of its file: this module finds that offset (zip local
header, then the .npy header) and memory-maps it. A training run reads only the rows
it uses (its n_train real samples once; an ideal-world run each epoch's fresh ones),
sorted for locality. The labels (8 bytes per sample) are read whole.

The shards, concatenated in order, are the samples. The test set is either
- `test: N` (default 10000): the last N samples, held out (as the paper holds out
  CIFAR-5m samples); the pool (what n_train and the ideal world draw from) is the rest;
- `test_from: {name: cifar10, root: DIR, verify: ...}`: the real CIFAR-10 test set,
  read as ddsweep.data.vision reads it; the pool is every sample of the shards.

Images are normalised with CIFAR-10's per-channel constants (CIFAR-5m was generated
to look like CIFAR-10; the models' BatchNorm, or the MLP's first layer, absorbs the
difference). This module imports no torch at import time: planning checks the shards
(each file, array, dtype, shape and label range) without it.
"""

from __future__ import annotations

import functools
import os
import re
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ddsweep.errors import UserError

NAME = "cifar5m"
SHARD = re.compile(r"^cifar5m_part(\d+)\.npz$")
CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)  # as stored: HWC
DEFAULT_TEST = 10_000
TEST_SOURCES = ("cifar10",)  # datasets whose test set `test_from` may name


@dataclass(frozen=True)
class Member:
    """One array of a shard: where its data starts in the file, its dtype and shape."""

    path: str
    offset: int
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Shard:
    path: str
    x: Member
    y: Member

    @property
    def size(self) -> int:
        return self.x.shape[0]


class ShardError(UserError):
    """A missing or malformed shard: one line naming the file, the array and the problem."""


def data_root(spec: dict) -> Path:
    """The folder of the shards: the spec's root, else cifar5m/ under $DDSWEEP_DATA (or ~/.cache/ddsweep/data)."""
    from ddsweep.data.vision import data_root as vision_root

    return vision_root(spec) if spec.get("root") else vision_root(spec) / "cifar5m"


def shard_paths(root: Path) -> list[Path]:
    """The shards under root, in order; a gap in the numbering or no shard at all is a ShardError."""
    if not root.is_dir():
        raise ShardError(f"cifar5m: {root} is not a directory (dataset.root must hold cifar5m_part0.npz, ...)")
    numbered = sorted((int(m.group(1)), root / e) for e in os.listdir(root) if (m := SHARD.match(e)))
    if not numbered:
        raise ShardError(f"cifar5m: no cifar5m_part0.npz (cifar5m_part<i>.npz, i = 0, 1, ...) under {root}")
    for expected, (i, path) in enumerate(numbered):
        if i != expected:
            raise ShardError(f"cifar5m: {root / f'cifar5m_part{expected}.npz'}: missing (the shards are "
                             f"numbered from 0 without gaps; found part{i})")
    return [p for _, p in numbered]


def _member(path: Path, zf: zipfile.ZipFile, fh, array: str) -> Member:
    """Locate array `array` (X or Y) of an .npz: its .npy header and the offset of its data."""
    import numpy as np

    where = f"{path}: {array}"
    try:
        info = zf.getinfo(f"{array}.npy")
    except KeyError:
        have = ", ".join(n.removesuffix(".npy") for n in zf.namelist()) or "none"
        raise ShardError(f"{where}: missing (arrays in the file: {have})") from None
    if info.compress_type != zipfile.ZIP_STORED:
        raise ShardError(f"{where}: stored compressed, so it cannot be memory-mapped; re-save the shard "
                         "with numpy.savez (not savez_compressed)")
    fh.seek(info.header_offset)
    local = fh.read(30)
    if len(local) < 30 or local[:4] != b"PK\x03\x04":
        raise ShardError(f"{where}: bad zip local header (truncated or corrupt file)")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    fh.seek(start)
    try:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fh)
    except (ValueError, OSError) as e:
        raise ShardError(f"{where}: not a .npy array ({e})") from None
    if fortran and len(shape) > 1:
        raise ShardError(f"{where}: stored in Fortran order; re-save it C-ordered (numpy's default)")
    if dtype.hasobject:
        raise ShardError(f"{where}: holds Python objects, not numbers")
    offset = fh.tell()
    if offset + dtype.itemsize * int(np.prod(shape)) > os.path.getsize(path):
        raise ShardError(f"{where}: the file ends before the array does (truncated download?)")
    return Member(str(path), offset, dtype.str, tuple(int(s) for s in shape))


@functools.lru_cache(maxsize=64)
def _read_shard(path: str, size: int, mtime_ns: int) -> Shard:
    """A shard's two arrays, checked (dtype, shape, label range); cached per file version."""
    import numpy as np

    p = Path(path)
    try:
        with open(p, "rb") as fh, zipfile.ZipFile(fh) as zf:
            x, y = _member(p, zf, fh, "X"), _member(p, zf, fh, "Y")
    except zipfile.BadZipFile as e:
        raise ShardError(f"{p}: not an .npz (zip) file ({e})") from None
    except OSError as e:
        raise ShardError(f"{p}: cannot read ({e.strerror or e})") from None
    if np.dtype(x.dtype) != np.uint8:
        raise ShardError(f"{p}: X: dtype {np.dtype(x.dtype)}, expected uint8 images")
    if len(x.shape) != 4 or x.shape[1:] != IMAGE_SHAPE:
        raise ShardError(f"{p}: X: shape {list(x.shape)}, expected [N, 32, 32, 3]")
    if np.dtype(y.dtype).kind not in "iu":
        raise ShardError(f"{p}: Y: dtype {np.dtype(y.dtype)}, expected integer class labels")
    if len(y.shape) != 1 or y.shape[0] != x.shape[0]:
        raise ShardError(f"{p}: Y: shape {list(y.shape)}, expected [{x.shape[0]}] (one label per image of X)")
    labels = _labels(y)
    if len(labels) and (labels.min() < 0 or labels.max() >= CLASSES):
        raise ShardError(f"{p}: Y: labels from {labels.min()} to {labels.max()}, expected 0..{CLASSES - 1}")
    return Shard(str(p), x, y)


def _labels(y: Member):
    import numpy as np

    return np.fromfile(y.path, dtype=np.dtype(y.dtype), count=y.shape[0], offset=y.offset)


def shards(spec: dict) -> list[Shard]:
    """Every shard under the dataset's root, checked; raises ShardError (one line) on the first problem."""
    out = []
    for p in shard_paths(data_root(spec)):
        try:
            st = p.stat()
        except OSError as e:
            raise ShardError(f"{p}: cannot read ({e.strerror or e})") from None
        out.append(_read_shard(str(p), st.st_size, st.st_mtime_ns))
    return out


def total_size(spec: dict) -> int:
    return sum(s.size for s in shards(spec))


def test_size(spec: dict) -> int:
    """Samples held out of the shards as the test set (0 with test_from)."""
    if spec.get("test_from"):
        return 0
    return DEFAULT_TEST if spec.get("test") is None else int(spec["test"])


# ----------------------------------------------------------------------------- torch-free, for planning


def dataset_config(spec: dict) -> dict:
    """{name, root?, test | test_from}: what a job's config holds (its id hashes it)."""
    out = {"name": NAME}
    if spec.get("root") is not None:
        out["root"] = str(spec["root"])
    if spec.get("test_from"):
        src = dict(spec["test_from"])
        out["test_from"] = {k: src[k] for k in ("name", "root", "verify") if src.get(k) is not None}
        if out["test_from"].get("root") is not None:
            out["test_from"]["root"] = str(out["test_from"]["root"])
        if out["test_from"].get("verify") is True:  # the default: not part of the id
            del out["test_from"]["verify"]
    else:
        out["test"] = test_size(spec)
    return out


def spec_problem(spec: dict) -> tuple[str, str] | None:
    """(key, problem) if the dataset section has knobs that do not apply to CIFAR-5m."""
    for key in ("pool", "seed"):
        if spec.get(key) is not None:
            return key, "MNIST-1D's generation knob; CIFAR-5m's pool is its shards (less the test slice)"
    if spec.get("download"):
        return "download", "CIFAR-5m is read from local shards (cifar5m_part<i>.npz); download does not apply"
    if spec.get("verify") is False:
        return "verify", "CIFAR-5m's shards have no published checksums; verify does not apply"
    src = spec.get("test_from")
    if src is not None:
        if spec.get("test") is not None:
            return "test", "give either test (a held-out slice of the shards) or test_from, not both"
        if not isinstance(src, dict) or not isinstance(src.get("name"), str):
            return "test_from", "must be a mapping like {name: cifar10, root: DIR}"
        extra = sorted(set(src) - {"name", "root", "verify"})
        if extra:
            return "test_from", f"unknown key {extra[0]} (keys: name, root, verify)"
        if src["name"] not in TEST_SOURCES:
            return "test_from.name", f"CIFAR-5m's test set can come from {', '.join(TEST_SOURCES)} only"
        if src.get("root") is not None and not isinstance(src["root"], str):
            return "test_from.root", "must be a directory path"
        if src.get("verify") is not None and not isinstance(src["verify"], bool):
            return "test_from.verify", "must be true or false"
    return None


def _test_spec(spec: dict) -> dict:
    return {"download": False, "verify": True, **spec["test_from"]}


def availability_problem(spec: dict) -> str | None:
    """Why the shards (or the test_from set) cannot be used (one line), or None."""
    try:
        total = total_size(spec)
    except ShardError as e:
        return str(e)
    held = test_size(spec)
    if held >= total:
        return (f"cifar5m under {data_root(spec)}: test: {held} holds out every sample of the shards "
                f"({total}); lower it or use test_from")
    if spec.get("test_from"):
        from ddsweep.data.vision import availability_problem as vision_problem

        problem = vision_problem(_test_spec(spec))
        if problem:
            return f"test_from: {problem}"
    return None


def pool_size(spec: dict) -> int:
    return total_size(spec) - test_size(spec)


def info(spec: dict):
    """The VisionSet facts of CIFAR-5m: CIFAR-10's classes and normalisation, its sizes from the shards."""
    from ddsweep.data.vision import VISION, VisionSet

    c10 = VISION["cifar10"]
    return VisionSet("CIFAR5m", 3, CLASSES, pool_size(spec), test_size(spec), c10.mean, c10.std, (), ())


# ----------------------------------------------------------------------------- loading (torch)


class ShardPool:
    """The pool's images, memory-mapped from the shards: rows are read on demand, never the whole set."""

    def __init__(self, shards: list[Shard], stop: int):
        import numpy as np

        self.maps = [np.memmap(s.x.path, dtype=np.uint8, mode="r", offset=s.x.offset, shape=s.x.shape)
                     for s in shards]
        self.starts = np.cumsum([0] + [s.size for s in shards])
        self.stop = stop
        self.shape = (stop, IMAGE_SHAPE[2], IMAGE_SHAPE[0], IMAGE_SHAPE[1])  # as the models see them: CHW
        self.dtype = "uint8"

    def __len__(self) -> int:
        return self.stop

    def rows(self, idx, device="cpu"):
        """uint8 images [len(idx), 3, 32, 32] of pool samples idx (a 1-D tensor or array), on `device`."""
        import numpy as np
        import torch

        idx = np.asarray(idx.cpu() if hasattr(idx, "cpu") else idx, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.stop):
            raise IndexError(f"cifar5m pool index out of range 0..{self.stop - 1}")
        order = np.argsort(idx, kind="stable")  # read in file order: the page cache and disk prefer it
        out = np.empty((len(idx), *IMAGE_SHAPE), dtype=np.uint8)
        sorted_idx = idx[order]
        shard_of = np.searchsorted(self.starts, sorted_idx, side="right") - 1
        for s in np.unique(shard_of):
            sel = shard_of == s
            out[order[sel]] = self.maps[s][sorted_idx[sel] - self.starts[s]]
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(device)


def load_cifar5m(spec: dict):
    """The pool (memory-mapped ShardPool), its labels and the test set -> Tensors."""
    import numpy as np
    import torch

    from ddsweep.data.tensors import Tensors

    problem = availability_problem(spec)
    if problem:
        raise UserError(problem)
    parts = shards(spec)
    labels = np.concatenate([_labels(s.y) for s in parts]).astype(np.int64)
    total, held = len(labels), test_size(spec)
    pool = ShardPool(parts, total - held)
    if spec.get("test_from"):
        from ddsweep.data.vision import load_vision

        real = load_vision(_test_spec(spec))
        x_test, y_test = real.x_test, real.y_test
    else:
        x_test = ShardPool(parts, total).rows(np.arange(total - held, total))
        y_test = torch.from_numpy(labels[total - held:].copy())
    return Tensors(pool, torch.from_numpy(labels[:total - held].copy()), x_test, y_test, CLASSES)
