"""The validated shape of a grid file: its sections as pydantic models, the axes it may vary.

Also the sparse-knob rules (which train keys a job's config leaves out, so adding a knob
did not change old job ids) and `train_recipe`, which fills them back in.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator

from ddsweep import axes as vocabulary

MAX_JOBS = 200_000  # a grid bigger than this is almost surely a typo in an axis


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DatasetSpec(_Strict):
    """Which data: `name` from the dataset registry, plus the knobs that apply to it.

    MNIST-1D is generated: `pool`, `test`, `seed` (defaults 8000, 4000, 42). The image
    sets (cifar10, cifar100, mnist, fashion_mnist, svhn) are read from torchvision's
    on-disk formats: `root`, `download`, `verify`, `augment` (see ddsweep.data.vision).
    `config()` is what a job's config holds.
    """

    name: str = "mnist1d"
    pool: int | None = Field(None, gt=0, description="MNIST-1D: training pool size (default 8000)")
    test: int | None = Field(None, gt=0, description="MNIST-1D: test set size (default 4000); cifar5m: samples "
                             "held out of the shards as the test set (default 10000)")
    seed: int | None = Field(None, ge=0, description="MNIST-1D: seed of the data generator (default 42)")
    root: str | None = Field(None, min_length=1, description="images: torchvision root (default $DDSWEEP_DATA)")
    download: StrictBool = Field(False, description="images: let torchvision download a missing dataset")
    verify: StrictBool = Field(True, description="images: load through torchvision (MD5-checked) or read directly")
    augment: StrictBool = Field(False, description="images: random crop 32 (4-pixel padding) + horizontal flip")
    src: str | None = Field(None, pattern=r"^[A-Za-z0-9_\-]+$", description="translation: source language suffix")
    tgt: str | None = Field(None, pattern=r"^[A-Za-z0-9_\-]+$", description="translation: target language suffix")
    # held out of the pool once per dataset (not per seed): never trained on, clean labels
    val: int = Field(0, ge=0, le=100_000_000, description="validation samples held out of the training pool; 0: none")
    test_from: dict[str, Any] | None = Field(None, description="cifar5m: the test set of another dataset "
                                             "instead of a held-out slice, e.g. {name: cifar10, root: DIR}")

    def config(self) -> dict:
        from ddsweep.data import dataset_config

        return dataset_config(self.model_dump())


class ModelSpec(_Strict):
    """Which architecture: `mlp` is input -> h x depth -> classes with ReLU; `transformer` the
    encoder-decoder of ddsweep.models.transformer (its options below; None: the default)."""

    name: str = "mlp"
    depth: int = Field(2, ge=1, le=16, description="number of hidden layers")
    layers: int | None = Field(None, ge=1, le=48, description="transformer: encoder and decoder layers (6)")
    heads: int | None = Field(None, ge=1, le=256, description="transformer: attention heads (4); divides d_model")
    ffn_ratio: float | None = Field(None, gt=0, le=64, description="transformer: feed-forward width / d_model (4)")
    norm: Literal["post", "pre"] | None = Field(None, description="transformer: LayerNorm after (post) or before (pre)")
    embeddings: Literal["tied", "separate"] | None = Field(
        None, description="transformer: decoder output projection tied to its input embedding, or separate")

    def config(self) -> dict:
        """What a job's config holds: {name, depth} as always, the transformer's options in full."""
        from ddsweep.models import TEXT_MODELS

        if self.name in TEXT_MODELS:
            from ddsweep.models.transformer_arch import model_options

            return {"name": self.name, **model_options(self.model_dump())}
        return {"name": self.name, "depth": self.depth}


class TrainSpec(_Strict):
    """The training recipe; every field can also be a grid axis."""

    optimizer: Literal["sgd", "adam", "lars"] = "sgd"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int | Literal["full"] = Field(100, description="samples per step; full: the whole training set")
    epochs: int = Field(100, gt=0, le=1_000_000)
    # a horizon in optimizer steps instead: each job trains ceil(steps / its steps per epoch)
    # whole epochs, so runs on different n_train get (about) the same number of updates
    steps: int | None = Field(None, gt=0, le=1_000_000_000, description="horizon in optimizer steps")
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"
    # auto: bf16 autocast (BatchNorm and the loss in float32) for conv models on a GPU, float32 otherwise
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # the knobs of the neighbouring phenomena (issue 7; ddsweep.train.knobs); see KNOB_DEFAULTS
    schedule: Literal["constant", "step", "cosine", "inverse_sqrt"] = "constant"
    warmup: int = Field(0, ge=0, le=100_000_000, description="steps of linear warmup")
    inv_sqrt_steps: int = Field(512, gt=0, description="inverse_sqrt: lr / sqrt(1 + floor(step / this))")
    step_milestones: tuple[float, ...] = Field((0.5, 0.75), description="step: fractions of the horizon")
    step_factor: float = Field(0.1, gt=0, description="step: lr multiplied by this at each milestone")
    grad_clip: float = Field(0.0, ge=0, description="clip each run's gradient to this global 2-norm; 0: off")
    grad_penalty: float = Field(0.0, ge=0, description="strength of the gradient-norm penalty; 0: off")
    flood: float = Field(0.0, ge=0, description="flood level b: train on |L - b| + b; 0: off")
    trust: float = Field(0.001, gt=0, le=1, description="lars: trust coefficient")
    nesterov: StrictBool = Field(False, description="sgd: Nesterov momentum (needs momentum > 0)")
    # gradient accumulation (ddsweep.train.passes): each step's batch in passes of this many samples whose
    # gradients sum to the batch's; BatchNorm normalises each pass with its own statistics
    micro_batch: int | None = Field(None, gt=0, le=100_000_000, description="samples per forward/backward "
                                    "of a step; default: no split unless a conv model's memory estimate needs one")
    penalty_block: int = Field(0, ge=0, le=100_000_000, description="grad_penalty averaged over blocks of this "
                               "many samples (Geiping et al.); 0: over the whole batch")
    world: Literal["real", "ideal"] = "real"
    # the transformer's loss: (1 - eps) x NLL + eps x mean over the vocabulary of -log p (torch's definition)
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="transformer: label smoothing eps; 0: off")
    # images: random crop 32 (4-pixel padding) + horizontal flip, per sample, in both worlds. A train key
    # (so a grid axis); `dataset.augment` is its default. A job keeps it in its dataset config, as before
    # it was a train key, so the ids of jobs planned with `dataset.augment` do not change.
    augment: StrictBool | None = Field(None, description="images: random crop + flip (default: dataset.augment)")

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size(cls, v):
        if v == "full":
            return v
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer() or v <= 0:
            raise ValueError("must be a positive integer or full (the whole training set per step)")
        return int(v)

    @field_validator("step_milestones")
    @classmethod
    def _milestones(cls, v):
        if any(not 0 < m <= 1 for m in v) or list(v) != sorted(v):
            raise ValueError("must be increasing fractions of the horizon in (0, 1], e.g. [0.5, 0.75]")
        return v


# Train keys left out of a job's config while at these defaults, so that adding them did
# not change the ids of jobs planned before they existed (readers use .get(key, default)).
SPARSE_TRAIN = {"precision": "auto"}

# The knobs of issue 7 (ddsweep.train.knobs) are sparse too, and more: a knob that does
# not matter for the job (KNOB_NEEDS: it only acts with that other setting) is left out
# as well, so equal runs get equal ids. Read a job's full recipe with `train_recipe`.
KNOB_DEFAULTS = {name: TrainSpec.model_fields[name].default for name in vocabulary.KNOB_AXES}
KNOB_NEEDS = {"inv_sqrt_steps": ("schedule", "inverse_sqrt"), "step_milestones": ("schedule", "step"),
              "step_factor": ("schedule", "step"), "trust": ("optimizer", "lars"), "nesterov": ("optimizer", "sgd")}
KNOB_COLUMNS = vocabulary.KNOB_COLUMNS  # also columns of `jobs`
HORIZON_SCHEDULES = ("step", "cosine")  # schedules that depend on the horizon: `epochs` joins the job id


def canonical_train(train: dict, n_train: int) -> dict:
    """The knobs' part of the train section a job id hashes.

    batch_size `full` becomes n_train; knobs at their defaults, and knobs that do not act
    for this job, are dropped. (`expand` adds `epochs` back for horizon-dependent schedules.)
    """
    out = dict(train)
    if out.get("batch_size") == "full":
        out["batch_size"] = int(n_train)
    if "step_milestones" in out:
        out["step_milestones"] = [float(m) for m in out["step_milestones"]]
    for name, default in KNOB_DEFAULTS.items():
        need = KNOB_NEEDS.get(name)
        idle = need is not None and out.get(need[0], KNOB_DEFAULTS.get(need[0])) != need[1]
        if name in out and (idle or out[name] == (list(default) if isinstance(default, tuple) else default)):
            del out[name]
    # a block penalty acts only with a penalty, and only with blocks smaller than the batch
    if out.get("penalty_block") and (not out.get("grad_penalty") or
                                     out["penalty_block"] >= min(int(out["batch_size"]), int(n_train))):
        del out["penalty_block"]
    if out.get("micro_batch", 0) is None:
        del out["micro_batch"]
    return out


def pass_samples(train: dict, n_train: int) -> int:
    """Samples per member in one forward/backward of a training step (a job's resolved train section):
    a penalty block where the penalty is taken over blocks, else a micro-batch where the batch is
    split, else the whole batch (ddsweep.train.passes)."""
    batch = min(int(n_train), int(train["batch_size"]))
    return min(batch, train.get("penalty_block") or train.get("micro_batch") or batch)


def train_recipe(config: dict) -> dict:
    """A job's whole training recipe: its train section with every omitted knob at its default.

    `epochs` is there only for horizon-dependent schedules (else None: the loop's horizon).
    """
    t = {k: (list(v) if isinstance(v, tuple) else v) for k, v in KNOB_DEFAULTS.items()}
    t.update(SPARSE_TRAIN)
    t.update(config["train"])
    t.setdefault("epochs", None)
    t["augment"] = bool(config.get("dataset", {}).get("augment", False))  # kept in the dataset config
    return t


class EvalSpec(_Strict):
    """Which epochs get a full evaluation: every k-th, or log-spaced; 0 and the last always."""

    every: int | None = Field(None, gt=0)
    log_base: float | None = Field(None, gt=1, le=10)

    @field_validator("log_base")
    @classmethod
    def _one_of(cls, v, info):
        if v is not None and info.data.get("every") is not None:
            raise ValueError("give either every or log_base, not both")
        return v

    def epochs(self, horizons: list[int]) -> list[int]:
        """Evaluated epochs up to max(horizons): the schedule, plus 0 and every horizon."""
        last = max(horizons)
        if self.log_base is not None:
            points, x = set(), 1.0
            while x <= last:
                points.add(int(round(x)))
                x = max(x * self.log_base, x + 1)
        else:
            points = set(range(0, last + 1, self.every or 1))
        points.update([0, *horizons])
        return sorted(p for p in points if 0 <= p <= last)


# Axes a grid may vary, and where each lands in the resolved config.
# `layers` (the transformer's) lands in the jobs' depth column (ddsweep.axes).
# (from the vocabulary, ddsweep.axes; tests/test_vocabulary.py checks it against the specs above)
CELL_AXES = tuple(a.name for a in vocabulary.AXES if a.grid and a.section == "cell")  # top-level keys of a config
TRAIN_AXES = tuple(a.name for a in vocabulary.AXES if a.grid and a.section == "train")  # includes epochs
MODEL_AXES = tuple(a.name for a in vocabulary.AXES if a.grid and a.section == "model")
INT_AXES = vocabulary.INT_AXES
TEXT_AXES = vocabulary.TEXT_AXES  # every other axis takes numbers only
BOOL_AXES = frozenset(a.name for a in vocabulary.AXES if a.kind == "bool")  # ... except these: true / false
WORD_VALUES = {"batch_size": ("full",)}  # numeric axes that also take these words
ALL_AXES = CELL_AXES + tuple(TrainSpec.model_fields) + MODEL_AXES  # (the order error messages list them in)


class CellSpec(_Strict):
    width: int = Field(gt=0, le=1_000_000)
    n_train: int = Field(gt=0)
    label_noise: float = Field(0.0, ge=0, lt=1)
    seed: int = Field(0, ge=0, lt=2**31)


class GridSpec(_Strict):
    """A whole grid file, validated."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=100)
    dataset: DatasetSpec = DatasetSpec()
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    eval: EvalSpec = EvalSpec(log_base=1.1)
    grid: dict[str, Any]
    description: str = ""


# The sections of a grid file, by key (for error messages that list a section's keys).
SECTIONS: dict[str, type[BaseModel]] = {
    "dataset": DatasetSpec, "model": ModelSpec, "train": TrainSpec, "eval": EvalSpec,
}
