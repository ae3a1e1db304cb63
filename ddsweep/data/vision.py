"""Image datasets read from torchvision's on-disk formats: CIFAR-10/100, MNIST, Fashion-MNIST, SVHN,
and any ImageFolder tree (`name: imagefolder`).

A grid names one with `dataset: {name: cifar10, root: DIR, download: false, verify: true}`:

- `root`: the directory torchvision's dataset class is given (CIFAR-10 lives in
  ROOT/cifar-10-batches-py, MNIST in ROOT/MNIST/raw, SVHN in ROOT/train_32x32.mat).
  Without it, $DDSWEEP_DATA, else ~/.cache/ddsweep/data.
- `download: true` lets torchvision fetch a missing dataset (needs internet).
- `verify: true` (default) loads through torchvision, which checks the MD5 sums of
  CIFAR's and SVHN's files. `verify: false` reads the same files directly (CIFAR's
  pickled python batches, MNIST's idx files, SVHN's .mat files) without the check:
  for a re-packed copy whose archive differs but whose contents do not, and for
  the tests, which write small files in these formats (ddsweep.data.writers). Both
  give identical tensors.

The whole set is held on the worker's device as uint8 [N, C, 32, 32] (MNIST and
Fashion-MNIST are zero-padded from 28x28 to 32x32, so every model sees 32x32);
the models normalize per channel on the fly with the constants below, and
augmentation runs batched on the device (ddsweep.data.augment). The pool is the
training set and `test` the test set; subsets and label noise follow
ddsweep.data.noise as for every dataset.

This module imports no torch at import time: planning (which must not load torch)
reads the metadata and checks that the files are there.
"""

from __future__ import annotations

import functools
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

from ddsweep import env
from ddsweep.errors import UserError


@dataclass(frozen=True)
class VisionSet:
    torchvision_class: str
    channels: int
    classes: int
    train_size: int
    test_size: int
    mean: tuple[float, ...]  # per channel, of the training images scaled to [0, 1]
    std: tuple[float, ...]
    train_files: tuple[str, ...]  # relative to root: what must exist to load without downloading
    test_files: tuple[str, ...]


_CIFAR10 = "cifar-10-batches-py"
_CIFAR100 = "cifar-100-python"
_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
_MNIST_TEST = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

VISION = {
    "cifar10": VisionSet("CIFAR10", 3, 10, 50_000, 10_000, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                         tuple(f"{_CIFAR10}/data_batch_{i}" for i in range(1, 6)), (f"{_CIFAR10}/test_batch",)),
    "cifar100": VisionSet("CIFAR100", 3, 100, 50_000, 10_000, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
                          (f"{_CIFAR100}/train",), (f"{_CIFAR100}/test",)),
    "mnist": VisionSet("MNIST", 1, 10, 60_000, 10_000, (0.1307,), (0.3081,),
                       tuple(f"MNIST/raw/{f}" for f in _MNIST_FILES), tuple(f"MNIST/raw/{f}" for f in _MNIST_TEST)),
    "fashion_mnist": VisionSet("FashionMNIST", 1, 10, 60_000, 10_000, (0.2860,), (0.3530,),
                               tuple(f"FashionMNIST/raw/{f}" for f in _MNIST_FILES),
                               tuple(f"FashionMNIST/raw/{f}" for f in _MNIST_TEST)),
    "svhn": VisionSet("SVHN", 3, 10, 73_257, 26_032, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
                      ("train_32x32.mat",), ("test_32x32.mat",)),
}
LOCATION_KEYS = ("root", "download", "verify")  # where and how to read; not what is read
IMAGE_SIZE = 32

# Any image classification set as an ImageFolder tree: ROOT/train/<class>/<image> and
# ROOT/test/<class>/<image> (or ROOT/val/...). Classes are the train folder's subfolders in
# sorted order, images files with these extensions anywhere below them (torchvision's
# ImageFolder rules); they are read as RGB and resized to 32x32. The constants normalize
# [0, 255] to about [-2, 2]; BatchNorm right after the first convolution makes the exact
# values immaterial.
IMAGEFOLDER = "imagefolder"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
FOLDER_MEAN, FOLDER_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
FOLDER_TEST_SPLITS = ("test", "val")


def vision_info(spec: dict) -> VisionSet:
    """The fixed facts of a vision dataset; for an ImageFolder tree, read from the tree (no torch)."""
    if spec["name"] != IMAGEFOLDER:
        return VISION[spec["name"]]
    return _folder_info(str(data_root(spec)))


@dataclass(frozen=True)
class FolderTree:
    classes: tuple[str, ...]  # train/'s class folders, sorted
    test: str  # "test" or "val"
    train_files: tuple[tuple[Path, int], ...]  # (image, class index)
    test_files: tuple[tuple[Path, int], ...]


@functools.lru_cache(maxsize=16)  # a tree is listed once per process (planning checks it, workers read it)
def _folder_tree(root: str) -> FolderTree:
    root = Path(root)
    classes = _folder_classes(root / "train")
    test = _folder_test_split(root)
    return FolderTree(tuple(classes), test, tuple(_folder_files(root / "train", classes)),
                      tuple(_folder_files(root / test, classes)))


def _folder_info(root: str) -> VisionSet:
    tree = _folder_tree(root)
    return VisionSet("ImageFolder", 3, len(tree.classes), len(tree.train_files), len(tree.test_files),
                     FOLDER_MEAN, FOLDER_STD, ("train",), (tree.test,))


def _folder_classes(split: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(split) if e.is_dir()) if split.is_dir() else []


def _folder_test_split(root: Path) -> str:
    return next((s for s in FOLDER_TEST_SPLITS if (root / s).is_dir()), FOLDER_TEST_SPLITS[0])


def _folder_files(split: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """(image path, class index) below split/<class>/, in torchvision ImageFolder's order."""
    out = []
    for index, name in enumerate(classes):
        folder = split / name
        if not folder.is_dir():
            continue
        for dirpath, _, files in sorted(os.walk(folder, followlinks=True)):
            out.extend((Path(dirpath) / f, index) for f in sorted(files) if f.lower().endswith(IMAGE_EXTENSIONS))
    return out


def _folder_problem(spec: dict) -> str | None:
    """What is wrong with an ImageFolder dataset spec or tree (None: loadable)."""
    if not spec.get("root"):
        return "imagefolder needs dataset.root: a folder with train/<class>/ and test/<class>/ (or val/) of images"
    if spec.get("download"):
        return "imagefolder reads a local tree; download does not apply"
    root = data_root(spec)
    tree = _folder_tree(str(root))
    if len(tree.classes) < 2:
        return (f"imagefolder under {root}: train/ must hold one folder per class (found "
                f"{len(tree.classes)}): ROOT/train/<class>/<image>, ROOT/test/<class>/<image>")
    if not (root / tree.test).is_dir():
        return f"imagefolder under {root}: no test/ (or val/) folder next to train/"
    extra = sorted(set(_folder_classes(root / tree.test)) - set(tree.classes))
    if extra:
        return f"imagefolder under {root}: {tree.test}/ has classes that train/ lacks: {', '.join(extra[:5])}"
    for split, files in (("train", tree.train_files), (tree.test, tree.test_files)):
        if not files:
            return f"imagefolder under {root}: no images ({', '.join(IMAGE_EXTENSIONS)}) in {split}/"
    return None


def _read_folder(root: Path) -> list:
    """[(uint8 images [N, 32, 32, 3], labels) for train, test] of an ImageFolder tree, decoded once
    and cached (keyed by every file's path, size and mtime) in $DDSWEEP_CACHE."""
    import hashlib

    import numpy as np
    from filelock import FileLock

    from ddsweep.data.mnist1d import cache_dir

    tree = _folder_tree(str(root))
    splits = [tree.train_files, tree.test_files]
    h = hashlib.sha256(f"{root.resolve()}|{IMAGE_SIZE}".encode())
    for files in splits:
        for path, label in files:
            st = path.stat()
            h.update(f"{path.relative_to(root)}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    cache = cache_dir() / f"imagefolder-{h.hexdigest()[:20]}.npz"
    cache.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache) + ".lock"):  # workers starting together decode once
        if not cache.exists():
            arrays = {}
            for name, files in zip(("train", "test"), splits):
                arrays[f"x_{name}"] = np.stack([_decode(p) for p, _ in files])
                arrays[f"y_{name}"] = np.asarray([label for _, label in files], dtype=np.int64)
            tmp = cache.with_suffix(f".tmp{os.getpid()}.npz")
            np.savez(tmp, **arrays)
            os.replace(tmp, cache)
        with np.load(cache) as d:
            return [(d["x_train"], d["y_train"]), (d["x_test"], d["y_test"])]


def _decode(path: Path):
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if im.size != (IMAGE_SIZE, IMAGE_SIZE):
                im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except OSError as e:
        raise UserError(f"{path}: not a readable image ({e})") from None


def data_root(spec: dict) -> Path:
    """The directory a vision dataset is read from: the spec's root, $DDSWEEP_DATA, or ~/.cache/ddsweep/data."""
    root = spec.get("root") or env.value("DDSWEEP_DATA") or Path.home() / ".cache" / "ddsweep" / "data"
    return Path(root).expanduser()


def missing_files(spec: dict) -> list[Path]:
    """Files the dataset needs that are not under its root (empty: loadable without a download)."""
    info, root = vision_info(spec), data_root(spec)
    return [root / f for f in info.train_files + info.test_files if not (root / f).exists()]


def availability_problem(spec: dict) -> str | None:
    """Why the dataset cannot be loaded as specified (None if it can): one line, where and how to get it."""
    if spec["name"] == IMAGEFOLDER:
        return _folder_problem(spec)
    if spec.get("download"):
        return None
    missing = missing_files(spec)
    if not missing:
        return None
    name, root = spec["name"], data_root(spec)
    where = "the grid's dataset.root" if spec.get("root") else (
        "$DDSWEEP_DATA" if env.value("DDSWEEP_DATA") else "the default root (set dataset.root or $DDSWEEP_DATA)")
    shown = ", ".join(str(p.relative_to(root)) for p in missing[:3]) + (", ..." if len(missing) > 3 else "")
    cls = VISION[name].torchvision_class
    fetch = (f"python -c \"import torchvision; torchvision.datasets.{cls}('{root}', split='train', download=True); "
             f"torchvision.datasets.{cls}('{root}', split='test', download=True)\"" if name == "svhn" else
             f"python -c \"import torchvision; torchvision.datasets.{cls}('{root}', download=True); "
             f"torchvision.datasets.{cls}('{root}', train=False, download=True)\"")
    return (f"{name} not found under {root} ({where}): missing {shown}; get it with `{fetch}` "
            f"or set `download: true` in the dataset section (needs internet)")


def load_vision(spec: dict):
    """Training pool and test set of a vision dataset as uint8 [N, C, 32, 32] tensors -> Tensors."""
    import torch
    from filelock import FileLock

    from ddsweep.data.tensors import Tensors

    name = spec["name"]
    root = data_root(spec)
    problem = availability_problem(spec)
    if problem:
        raise UserError(problem)
    info = vision_info(spec)
    if name == IMAGEFOLDER:
        parts = _read_folder(root)
    elif spec.get("download"):
        root.mkdir(parents=True, exist_ok=True)
        with FileLock(str(root / f".ddsweep-{name}.lock")):  # workers starting together download once
            parts = _via_torchvision(name, root, download=True)
    elif spec.get("verify", True):
        parts = _via_torchvision(name, root, download=False)
    else:
        parts = [_read_direct(name, root, train) for train in (True, False)]
    (x_pool, y_pool), (x_test, y_test) = [(_as_images(x, info.channels), torch.as_tensor(y, dtype=torch.int64))
                                          for x, y in parts]
    return Tensors(x_pool, y_pool, x_test, y_test, info.classes)


def _as_images(x, channels: int):
    """numpy uint8 [N, H, W], [N, H, W, C] or [N, C, H, W] -> torch uint8 [N, C, 32, 32] (zero-padded)."""
    import numpy as np
    import torch

    x = np.asarray(x, dtype=np.uint8)
    if x.ndim == 3:
        x = x[:, None]
    elif x.shape[-1] == channels and x.shape[1] != channels:
        x = x.transpose(0, 3, 1, 2)
    x = np.ascontiguousarray(x)
    t = torch.from_numpy(x if x.flags.writeable else x.copy())
    pad_h, pad_w = IMAGE_SIZE - t.shape[2], IMAGE_SIZE - t.shape[3]
    if pad_h or pad_w:
        t = torch.nn.functional.pad(t, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
    return t.contiguous()


def _via_torchvision(name: str, root: Path, download: bool) -> list:
    """[(images, labels) for train, test] through torchvision's classes (they check the files' MD5 sums)."""
    try:
        import torchvision.datasets as tvd
    except ImportError:
        raise UserError(f"dataset {name} needs torchvision: pip install 'ddsweep[vision]' "
                        "(or set `verify: false` to read the files without it)") from None
    cls = getattr(tvd, VISION[name].torchvision_class)
    out = []
    for train in (True, False):
        try:
            if name == "svhn":
                d = cls(str(root), split="train" if train else "test", download=download)
                out.append((d.data, d.labels))
            else:
                d = cls(str(root), train=train, download=download)
                data = d.data.numpy() if hasattr(d.data, "numpy") else d.data
                out.append((data, list(d.targets)))
        except RuntimeError as e:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
            raise UserError(f"{name} under {root}: torchvision refused the files ({str(e).splitlines()[0]}); "
                            "a copy whose files differ from the official archive's MD5 sums loads with "
                            "`verify: false`") from None
    return out


def _read_direct(name: str, root: Path, train: bool):
    """(images, labels) read from torchvision's on-disk format without any checksum."""
    info = VISION[name]
    files = info.train_files if train else info.test_files
    if name in ("cifar10", "cifar100"):
        import numpy as np

        xs, ys = [], []
        label_key = "labels" if name == "cifar10" else "fine_labels"
        for f in files:
            with open(root / f, "rb") as fh:  # pickled by Python 2: latin1, as torchvision reads them
                batch = pickle.load(fh, encoding="latin1")
            batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
            xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.extend(int(v) for v in batch[label_key])
        return np.concatenate(xs), ys
    if name in ("mnist", "fashion_mnist"):
        return _read_idx(root / files[0]), _read_idx(root / files[1]).astype("int64")
    if name == "svhn":
        import numpy as np
        import scipy.io

        mat = scipy.io.loadmat(str(root / files[0]))
        labels = mat["y"].astype(np.int64).squeeze(1)
        labels[labels == 10] = 0  # SVHN stores digit 0 as class 10 (torchvision maps it back too)
        return mat["X"].transpose(3, 2, 0, 1), labels
    raise KeyError(name)


def _read_idx(path: Path):
    """An MNIST idx file (as torchvision's download leaves it, uncompressed) -> numpy array."""
    import numpy as np

    raw = path.read_bytes()
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path}: not an unsigned-byte idx file (magic {raw[:4].hex()})")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


# ----------------------------------------------------------------------------- torch-free helpers for the grid


def pool_size(spec: dict) -> int:
    return vision_info(spec).train_size


def spec_problem(spec: dict) -> tuple[str, str] | None:
    """(key, problem) if the spec's knobs do not apply to a vision dataset."""
    if spec.get("test_from") is not None:
        return "test_from", "CIFAR-5m's knob (its test set from another dataset); this dataset has its own test set"
    for key in ("pool", "test", "seed"):
        if spec.get(key) is not None:
            if spec["name"] == IMAGEFOLDER:
                return key, "MNIST-1D's generation knob; an ImageFolder tree's train/ is the pool, test/ the test set"
            info = VISION[spec["name"]]
            return key, (f"MNIST-1D's generation knob; {spec['name']} has a fixed training set "
                         f"({info.train_size}, the pool n_train draws from) and test set ({info.test_size})")
    return None
