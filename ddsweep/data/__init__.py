"""Datasets: a registry from name to loader, and the label-noise/subset rules.

A loader returns a `Tensors` bundle (float inputs, or uint8 images, and int64
labels) for the training pool and the test set. Subsets and label noise are applied
on top, per job, by `ddsweep.data.noise`, identically for every dataset. The registry names loaders
by import path so that validating a grid does not import torch.
"""

from __future__ import annotations

import importlib

DATASETS = {
    "mnist1d": "ddsweep.data.mnist1d:load_mnist1d",
    # torchvision's on-disk formats, held on the device as uint8 images (ddsweep.data.vision)
    "cifar10": "ddsweep.data.vision:load_vision",
    "cifar100": "ddsweep.data.vision:load_vision",
    "mnist": "ddsweep.data.vision:load_vision",
    "fashion_mnist": "ddsweep.data.vision:load_vision",
    "svhn": "ddsweep.data.vision:load_vision",
    "imagefolder": "ddsweep.data.vision:load_vision",  # ROOT/train/<class>/*, ROOT/test/<class>/*
    # sentence pairs: ROOT/train.SRC, ROOT/train.TGT, ... (ddsweep.data.translation)
    "translation": "ddsweep.data.translation:load_translation",
    "synthetic_translation": "ddsweep.data.translation:load_translation",  # generated (ddsweep.data.synthetic_text)
    # ~6M CIFAR-like images from local .npz shards, memory-mapped (ddsweep.data.cifar5m)
    "cifar5m": "ddsweep.data.cifar5m:load_cifar5m",
}
GENERATED = ("mnist1d",)  # a generator makes the ideal world's fresh samples (others draw them from the pool)
MNIST1D_DEFAULTS = {"pool": 8000, "test": 4000, "seed": 42}  # generation knobs (only MNIST-1D has them)
# Keys of a dataset spec that say where and how to read or augment it, not which samples
# it holds: left out of what the training subset and label noise draws are seeded by, so a
# copy at another root, or augmentation on and off, get the same subsets and noisy labels.
NOT_IDENTITY = ("root", "download", "verify", "augment")


def load_dataset(spec: dict):
    """Load (generating or reading the cache) the dataset a job config names -> Tensors."""
    module, name = DATASETS[spec["name"]].split(":")
    return getattr(importlib.import_module(module), name)(spec)


# ----------------------------------------------------------------------------- torch-free, for planning


def is_vision(name: str) -> bool:
    """An image dataset (uint8 [N, C, 32, 32]): the conv models run on these."""
    return DATASETS.get(name, "").startswith(("ddsweep.data.vision:", "ddsweep.data.cifar5m:"))


def _images(name: str):
    """The torch-free module that plans an image dataset: its config, knobs, pool size, files."""
    if name == "cifar5m":
        from ddsweep.data import cifar5m

        return cifar5m
    from ddsweep.data import vision

    return vision


def is_text(name: str) -> bool:
    return DATASETS.get(name, "").startswith("ddsweep.data.translation:")


def image_info(spec: dict):
    """The fixed facts (channels, classes, sizes, normalisation: a vision.VisionSet) of an image dataset."""
    module = _images(spec["name"])
    return module.info(spec) if module.__name__.endswith("cifar5m") else module.vision_info(spec)


def dataset_config(spec: dict) -> dict:
    """The dataset dict a job config holds (its id hashes it): the knobs that apply, defaults filled in.

    MNIST-1D's is {name, pool, test, seed} as it always was; a vision set's is its name plus
    only the location and augmentation knobs that differ from their defaults.
    """
    out = _dataset_config(spec)
    if spec.get("val"):  # only when asked for: configs (and job ids) without a split stay as they were
        out["val"] = int(spec["val"])
    return out


def _dataset_config(spec: dict) -> dict:
    name = spec["name"]
    if name == "translation":  # the files' folder and languages
        return {"name": name, "root": str(spec["root"]), "src": spec.get("src") or "de", "tgt": spec.get("tgt") or "en"}
    if name == "synthetic_translation":
        from ddsweep.data.synthetic_text import SYNTHETIC_DEFAULTS

        return {"name": name, **{k: d if spec.get(k) is None else spec[k] for k, d in SYNTHETIC_DEFAULTS.items()}}
    if not is_vision(name):
        return {"name": name, **{k: d if spec.get(k) is None else spec[k] for k, d in MNIST1D_DEFAULTS.items()}}
    if name == "cifar5m":
        out = _images(name).dataset_config(spec)
        if spec.get("augment"):
            out["augment"] = True
        return out
    out = {"name": name}
    if spec.get("root") is not None:
        out["root"] = str(spec["root"])
    if spec.get("download"):
        out["download"] = True
    if spec.get("verify") is False:
        out["verify"] = False
    if spec.get("augment"):
        out["augment"] = True
    return out


def validation_size(config: dict) -> int:
    """Samples a job's dataset holds out of the training pool for validation (0: none)."""
    return int(config.get("val") or 0)


def dataset_identity(config: dict) -> dict:
    """What a job's training subset and label noise are seeded by: the dataset config without NOT_IDENTITY
    (also in a nested test_from: where CIFAR-10's test set is read from does not matter either)."""
    out = {k: v for k, v in config.items() if k not in NOT_IDENTITY}
    if isinstance(out.get("test_from"), dict):
        out["test_from"] = {k: v for k, v in out["test_from"].items() if k not in NOT_IDENTITY}
    return out


def spec_problem(spec: dict) -> tuple[str, str] | None:
    """(key, problem) when the dataset section has knobs that do not apply to the named dataset."""
    if spec.get("val") and is_text(spec["name"]):
        return "val", "a validation split applies to the classification datasets only, not to text"
    if is_vision(spec["name"]):
        return _images(spec["name"]).spec_problem(spec)
    if is_text(spec["name"]):
        from ddsweep.data import translation

        return translation.spec_problem(spec)
    for key, default in (("src", None), ("tgt", None)):
        if spec.get(key, default) != default:
            return key, "applies to name: translation only"
    for key, default in (("root", None), ("download", False), ("verify", True), ("augment", False),
                         ("test_from", None)):
        if spec.get(key, default) != default:
            return key, f"applies to the image datasets only ({', '.join(n for n in DATASETS if is_vision(n))})"
    return None


def pool_size(spec: dict) -> int:
    """Size of the training pool n_train draws from, without loading the data."""
    if is_vision(spec["name"]):
        return _images(spec["name"]).pool_size(spec)
    if is_text(spec["name"]):
        from ddsweep.data import translation

        return translation.pool_size(spec)
    return int(dataset_config(spec)["pool"])


def availability_problem(spec: dict) -> str | None:
    """Why the dataset cannot be loaded here as specified (one line), or None."""
    if is_vision(spec["name"]):
        return _images(spec["name"]).availability_problem(spec)
    if is_text(spec["name"]):
        from ddsweep.data import translation

        return translation.availability_problem(spec)
    return None


def ideal_capacity(name: str, pool: int, n_train: int) -> int | None:
    """Fresh samples an ideal-world run with this n_train may draw (ddsweep.data.ideal): None when a
    generator makes them without end (MNIST-1D), else the pool less the real training subset."""
    return None if name in GENERATED else max(pool - n_train, 0)
