"""Expansion: a validated grid -> resolved jobs, each identified by the hash of its config.

Runs that differ only in `epochs` merge into one job trained to the longest horizon
(unless the schedule depends on the horizon); see the package docstring.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from ddsweep.errors import MISSING, GridError
from ddsweep.grid.generators import TEXT_NUMBER_HINT, looks_numeric
from ddsweep.grid.linked import axis_key, factors
from ddsweep.grid.load import pydantic_error
from ddsweep.grid.spec import (
    CELL_AXES, HORIZON_SCHEDULES, INT_AXES, MAX_JOBS, MODEL_AXES, SPARSE_TRAIN,
    BOOL_AXES, TEXT_AXES, TRAIN_AXES, WORD_VALUES, CellSpec, GridSpec, ModelSpec, TrainSpec, canonical_train,
)


@dataclass(frozen=True)
class Job:
    """One cell of a grid, fully resolved. `config` is what the job id hashes."""

    job_id: str
    sweep: str
    config: dict
    epochs: int
    horizons: tuple[int, ...] = field(default=())

    @property
    def pack_key(self) -> str:
        """Jobs with equal pack keys can train in one pack once their widths pad alike.

        Width is left out: a worker packs jobs of different widths whose widths pad
        to the same size on its device (see ddsweep.models.train_width).
        """
        c = self.config
        key = {
            "dataset": c["dataset"], "model": c["model"],
            "n_train": c["n_train"], "eval": c["eval"], "epochs": self.epochs,
            "batch_size": c["train"]["batch_size"], "optimizer": c["train"]["optimizer"],
            "loss": c["train"]["loss"],
        }
        if c["train"].get("precision", "auto") != "auto":  # one autocast setting per pack
            key["precision"] = c["train"]["precision"]
        for name in ("micro_batch", "penalty_block"):  # one way of taking a step's batch per pack
            if c["train"].get(name):
                key[name] = c["train"][name]
        return _hash(key)


def _hash(obj) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:16]


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def expand(spec: GridSpec, path: str | Path = "<grid>", pool_size: int | None = None) -> list[Job]:
    """All jobs of a grid, merged over `epochs`; raises GridError on a bad axis value."""
    grid = factors(spec.grid, path)
    written: dict[str, list] = {}  # each axis's values as jobs get them, in the file's order (for errors)
    keys: dict[str, str] = {}  # each axis's key in the file: grid.lr, grid.zip.lr
    for factor in grid:
        written.update(factor.written)
        keys.update(factor.keys)
    for required in ("width", "n_train"):
        if required not in written:
            raise GridError(path, f"grid.{required}", MISSING, "missing axis: every grid needs width and n_train")
    size = math.prod(len(f.rows) for f in grid)
    if size > MAX_JOBS:
        shape = " x ".join(f"{'+'.join(f.names)}={len(f.rows)}" for f in grid)
        raise GridError(path, "grid", size, f"absurd grid size ({shape}); the limit is {MAX_JOBS} cells")
    _validate_axis_values(spec, written, keys, path)
    if pool_size is None:
        from ddsweep.data import pool_size as dataset_pool_size

        pool_size = dataset_pool_size(spec.dataset.model_dump())
    val = spec.dataset.val
    if val and val >= pool_size:
        raise GridError(path, "dataset.val", val, f"holds out the whole training pool ({pool_size}); "
                        "leave samples to train on")
    pool = pool_size - val
    for i, n in enumerate(written["n_train"]):
        if n > pool:
            key = keys["n_train"] if len(written["n_train"]) == 1 else f"{keys['n_train']}[{i}]"
            what = f"the dataset's training pool ({pool})" if not val else \
                f"the training pool less the validation split ({pool_size} - val {val} = {pool})"
            raise GridError(path, key, n, f"larger than {what}")

    dataset = spec.dataset.config()
    merged: dict[str, dict] = {}
    for rows in itertools.product(*(f.rows for f in grid)):
        cell = {name: v for f, row in zip(grid, rows) for name, v in zip(f.names, row)}
        train = spec.train.model_dump()
        model = spec.model.config()
        for k, v in cell.items():
            if k in TRAIN_AXES:
                train[k] = v
            elif k in MODEL_AXES:
                model[k] = v
        epochs = _horizon(spec, cell, train, path)
        augment = train.pop("augment")
        cell_dataset = _with_augment(spec, dict(dataset), augment, "augment" in cell, path)
        for k, default in SPARSE_TRAIN.items():
            if train.get(k) == default:
                del train[k]
        _check_nesterov(spec, cell, train, path)
        train = canonical_train(train, cell["n_train"])
        if train.get("schedule") in HORIZON_SCHEDULES:
            train["epochs"] = epochs  # the schedule depends on the horizon: each horizon is its own job
        if train.get("world") == "ideal":
            _check_fresh_samples(spec, cell, train, epochs, pool, path)
        _check_text_cell(spec, cell, model, train, path)
        _resolve_passes(spec, cell, dataset, model, train, path)
        config = {
            "sweep": spec.name,
            "dataset": cell_dataset,
            "model": model,
            "width": int(cell["width"]),
            "n_train": int(cell["n_train"]),
            "label_noise": float(cell.get("label_noise", 0.0)),
            "seed": int(cell.get("seed", 0)),
            "train": train,
            "eval": spec.eval.model_dump(),
        }
        jid = _hash(config)
        entry = merged.setdefault(jid, {"config": config, "horizons": set()})
        entry["horizons"].add(epochs)
    return [
        Job(jid, spec.name, e["config"], max(e["horizons"]), tuple(sorted(e["horizons"])))
        for jid, e in merged.items()
    ]


def _check_text_cell(spec: GridSpec, cell: dict, model: dict, train: dict, path) -> None:
    """The transformer's heads must divide d_model; text has no label noise; only the transformer
    smooths labels."""
    from ddsweep.data import is_text

    if model["name"] != "transformer" and train.get("label_smoothing", 0.0) > 0:
        where = axis_key(spec.grid, "label_smoothing") if "label_smoothing" in cell else "train.label_smoothing"
        raise GridError(path, where, train["label_smoothing"], "applies to model: transformer only")
    if model["name"] == "transformer" and cell["width"] % model["heads"]:
        where = axis_key(spec.grid, "heads") if "heads" in cell else "model.heads"
        raise GridError(path, where, model["heads"], f"does not divide d_model = width {cell['width']} "
                        "(each head gets d_model / heads dimensions)")
    if is_text(spec.dataset.name) and cell.get("label_noise", 0.0) > 0:
        raise GridError(path, axis_key(spec.grid, "label_noise"), cell["label_noise"],
                        "label noise is not defined for text (a sentence pair has no label to flip); use 0")


def _check_nesterov(spec: GridSpec, cell: dict, train: dict, path) -> None:
    """Nesterov momentum is SGD's, and needs a momentum (torch refuses it without)."""
    if not train.get("nesterov"):
        return
    where = axis_key(spec.grid, "nesterov") if "nesterov" in cell else "train.nesterov"
    if train["optimizer"] != "sgd":
        raise GridError(path, where, True, f"applies to optimizer: sgd only, not {train['optimizer']}")
    if not train["momentum"]:
        raise GridError(path, where, True, "needs momentum > 0 (Nesterov's look-ahead is along the momentum)")


# The memory one member's pass may take when `micro_batch` is left to the plan: the default budget
# of a GPU pack (ddsweep.workers.packing.PACK_MEMORY_BUDGET), so that the choice, which changes
# BatchNorm's statistics, depends on the job alone and not on the device that trains it.
AUTO_MICRO_BUDGET = 32 << 30


def _resolve_passes(spec: GridSpec, cell: dict, dataset: dict, model: dict, train: dict, path) -> None:
    """Check micro_batch and penalty_block against the cell's batch and fill in an automatic micro_batch.

    An explicit micro_batch stays in the config (it changes BatchNorm's statistics, so the job); equal
    to the batch it is no split and left out. With a block penalty each block is one pass, so a
    micro_batch must hold whole blocks and is then left out. Left to the plan (None), a conv model
    whose pass over the whole batch would not fit AUTO_MICRO_BUDGET by the packing code's estimate
    gets the largest power of two that fits, written into the config like an explicit one."""
    from ddsweep.models import CONV_MODELS, TEXT_MODELS

    micro, block = train.get("micro_batch"), train.get("penalty_block", 0)
    batch = min(int(cell["n_train"]), int(train["batch_size"]))
    if (micro or block) and model["name"] in TEXT_MODELS:
        key = "micro_batch" if micro else "penalty_block"
        where = axis_key(spec.grid, key) if key in cell else f"train.{key}"
        raise GridError(path, where, micro or block, "applies to the image and MNIST-1D models only (a "
                        "text batch's loss is a mean over tokens, not samples)")
    if micro is not None:
        where = axis_key(spec.grid, "micro_batch") if "micro_batch" in cell else "train.micro_batch"
        if micro > batch:
            raise GridError(path, where, micro, f"larger than the batch ({batch} samples per step at "
                            f"n_train={cell['n_train']})")
        if block and micro % block:
            raise GridError(path, where, micro, f"not a multiple of penalty_block {block} (a block penalty "
                            "takes each block in one pass, so a micro-batch must hold whole blocks)")
        if micro == batch or block:
            del train["micro_batch"]
        return
    if block or model["name"] not in CONV_MODELS:
        return
    from ddsweep.models.memory import member_bytes

    config = {"model": model, "dataset": dataset, "width": int(cell["width"]), "n_train": int(cell["n_train"]),
              "train": train}
    if member_bytes(config, "cuda", samples=batch) <= AUTO_MICRO_BUDGET:
        return
    micro = 1
    while micro * 2 < batch and member_bytes(config, "cuda", samples=micro * 2) <= AUTO_MICRO_BUDGET:
        micro *= 2
    train["micro_batch"] = micro


def _with_augment(spec: GridSpec, dataset: dict, augment: bool | None, on_axis: bool, path) -> dict:
    """The job's dataset config with `augment` (train key or axis; dataset.augment its default)."""
    if augment is None:
        return dataset
    from ddsweep.data import is_vision

    if augment and not is_vision(spec.dataset.name):
        raise GridError(path, "grid.augment" if on_axis else "train.augment", True,
                        f"augmentation (random crop + flip) is for image datasets, not {spec.dataset.name}")
    dataset.pop("augment", None)
    if augment:
        dataset["augment"] = True
    return dataset


def _check_fresh_samples(spec: GridSpec, cell: dict, train: dict, epochs: int, pool: int, path) -> None:
    """An ideal-world cell must not need more fresh samples (epochs x n_train) than the pool holds
    besides its real training subset (ddsweep.data.ideal); a generated dataset never runs out."""
    from ddsweep.data import ideal_capacity, is_text

    if is_text(spec.dataset.name):
        raise GridError(path, "grid.world" if "world" in cell else "train.world", "ideal",
                        "the ideal world is defined for classification datasets, not text")
    n = int(cell["n_train"])
    capacity = ideal_capacity(spec.dataset.name, pool, n)
    if capacity is None or epochs * n <= capacity:
        return
    per_epoch = epoch_steps(n, train["batch_size"])
    allowed = capacity // n * per_epoch
    where = "train.steps" if spec.train.steps is not None and "steps" not in cell else (
        "grid.steps" if "steps" in cell else ("grid.epochs" if "epochs" in cell else "train.epochs"))
    raise GridError(path, where, MISSING,
                    f"the ideal world at n_train={n} needs {epochs * n} fresh samples ({epochs} epochs x {n}) "
                    f"but {spec.dataset.name}'s pool holds {capacity} besides the real training subset: it allows "
                    f"{allowed} steps ({capacity // n} epoch{'s' * (capacity // n != 1)} of {per_epoch}); shorten "
                    f"the horizon, lower n_train or use a larger pool (cifar5m)")


def epoch_steps(n_train: int, batch_size: int | str) -> int:
    """Optimizer steps in one epoch over n_train samples (batch_size a number, or full)."""
    n = int(n_train)
    batch = n if batch_size == "full" else min(int(batch_size), n)
    return -(-n // batch)


def _horizon(spec: GridSpec, cell: dict, train: dict, path) -> int:
    """The cell's horizon in epochs (popping `epochs` and `steps` off its train section)."""
    epochs, steps = int(train.pop("epochs")), train.pop("steps")
    if steps is None:
        return epochs
    where = axis_key(spec.grid, "steps") if "steps" in cell else "train.steps"
    if "epochs" in cell or "epochs" in spec.train.model_fields_set:
        raise GridError(path, where, steps, "give the horizon as either epochs or steps, not both")
    n, batch = int(cell["n_train"]), train["batch_size"]
    epochs = -(-int(steps) // epoch_steps(n, batch))
    if epochs > 1_000_000:
        raise GridError(path, where, steps, f"{epochs} epochs at n_train={n}, batch {batch}: the limit is 1000000")
    return epochs


def _validate_axis_values(spec: GridSpec, axes: dict[str, list], keys: dict[str, str], path) -> None:
    base_cell = {"width": 1, "n_train": 1, "label_noise": 0.0, "seed": 0}
    for name, values in axes.items():
        for i, v in enumerate(values):
            key = keys[name] if len(values) == 1 else f"{keys[name]}[{i}]"
            if isinstance(v, (dict, list)):
                raise GridError(path, key, v, "axis values must be scalars")
            if name in BOOL_AXES and not isinstance(v, bool):
                raise GridError(path, key, v, "must be true or false")
            if name not in TEXT_AXES and name not in BOOL_AXES and isinstance(v, bool):
                raise GridError(path, key, v, "must be a number, not true/false")
            if name not in TEXT_AXES and isinstance(v, str) and v not in WORD_VALUES.get(name, ()):
                raise GridError(path, key, v, "must be a number, not text" + (TEXT_NUMBER_HINT if looks_numeric(v) else ""))
            if name in INT_AXES and isinstance(v, float) and not v.is_integer():
                raise GridError(path, key, v, "must be an integer")
            try:
                if name in CELL_AXES:
                    CellSpec.model_validate({**base_cell, name: v}, strict=False)
                elif name in TRAIN_AXES:
                    TrainSpec.model_validate({**spec.train.model_dump(), name: v})
                else:
                    ModelSpec.model_validate({**spec.model.model_dump(exclude_none=True), name: v})
            except ValidationError as e:
                raise GridError(path, key, v, pydantic_error(e, path).problem) from None
