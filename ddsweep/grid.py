"""Grid files: validate a sweep's YAML and expand it into resolved job configs.

A grid file names a sweep, its dataset, model, training recipe and evaluation
schedule, and a `grid` of axes whose Cartesian product is the set of jobs:

    name: mnist1d-mlp
    dataset: mnist1d
    model: {name: mlp, depth: 2}
    train: {optimizer: sgd, lr: 0.01, momentum: 0.9, batch_size: 100, epochs: 500}
    eval: {log_base: 1.1}
    grid:
      width: {geom: [2, 300, 19]}
      label_noise: [0.15]

A job is defined by its resolved config; its id is a hash of that config. The
training horizon (`epochs`) is left out of the hash because the constant and
inverse-sqrt schedules do not depend on it: runs that differ only in epochs are one
job trained to the longest horizon, whose per-epoch rows give every shorter run.
The horizon-dependent schedules (step at fractions of the horizon, cosine) keep
`epochs` in the hash: there each horizon is a job of its own.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator

from ddsweep.errors import MISSING, GridError

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
    test: int | None = Field(None, gt=0, description="MNIST-1D: test set size (default 4000)")
    seed: int | None = Field(None, ge=0, description="MNIST-1D: seed of the data generator (default 42)")
    root: str | None = Field(None, min_length=1, description="images: torchvision root (default $DDSWEEP_DATA)")
    download: StrictBool = Field(False, description="images: let torchvision download a missing dataset")
    verify: StrictBool = Field(True, description="images: load through torchvision (MD5-checked) or read directly")
    augment: StrictBool = Field(False, description="images: random crop 32 (4-pixel padding) + horizontal flip")

    def config(self) -> dict:
        from ddsweep.data import dataset_config

        return dataset_config(self.model_dump())


class ModelSpec(_Strict):
    """Which architecture: `mlp` is input -> h x depth -> classes with ReLU."""

    name: str = "mlp"
    depth: int = Field(2, ge=1, le=16, description="number of hidden layers")


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
    world: Literal["real", "ideal"] = "real"

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
KNOB_DEFAULTS = {name: TrainSpec.model_fields[name].default for name in (
    "schedule", "warmup", "inv_sqrt_steps", "step_milestones", "step_factor", "grad_clip", "grad_penalty",
    "flood", "trust", "world")}
KNOB_NEEDS = {"inv_sqrt_steps": ("schedule", "inverse_sqrt"), "step_milestones": ("schedule", "step"),
              "step_factor": ("schedule", "step"), "trust": ("optimizer", "lars")}
KNOB_COLUMNS = ("schedule", "warmup", "grad_clip", "grad_penalty", "flood", "world")  # also columns of `jobs`
HORIZON_SCHEDULES = ("step", "cosine")  # schedules that depend on the horizon: `epochs` joins the job id
IDEAL_DATASETS = ("mnist1d",)  # datasets with a generator for the ideal world (fresh samples every step)


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
    return out


def train_recipe(config: dict) -> dict:
    """A job's whole training recipe: its train section with every omitted knob at its default.

    `epochs` is there only for horizon-dependent schedules (else None: the loop's horizon).
    """
    t = {k: (list(v) if isinstance(v, tuple) else v) for k, v in KNOB_DEFAULTS.items()}
    t.update(SPARSE_TRAIN)
    t.update(config["train"])
    t.setdefault("epochs", None)
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
CELL_AXES = ("width", "n_train", "label_noise", "seed")
TRAIN_AXES = tuple(TrainSpec.model_fields)  # includes epochs
MODEL_AXES = ("depth",)
INT_AXES = {"width", "n_train", "seed", "batch_size", "epochs", "steps", "depth"}
TEXT_AXES = {"optimizer", "loss", "precision", "schedule", "world"}  # every other axis takes numbers only
WORD_VALUES = {"batch_size": ("full",)}  # numeric axes that also take these words
ALL_AXES = CELL_AXES + TRAIN_AXES + MODEL_AXES


class _Cell(_Strict):
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


_SECTIONS: dict[str, type[BaseModel]] = {
    "dataset": DatasetSpec, "model": ModelSpec, "train": TrainSpec, "eval": EvalSpec,
}


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
        return _hash(key)


def _hash(obj) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:16]


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


# ----------------------------------------------------------------------------- loading


def load_grid(path: str | Path) -> GridSpec:
    """Read and validate a grid file; raise GridError naming file, key and value."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise GridError(path, "", MISSING, f"cannot read grid file ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise GridError(path, "", MISSING, f"not valid UTF-8 text (line {line}, byte {e.start}); "
                        "save the grid file as UTF-8") from None
    try:
        raw = _load_yaml(text, path)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        problem = getattr(e, "problem", None) or (str(e).splitlines() or ["unreadable YAML"])[0]
        context, context_mark = getattr(e, "context", None), getattr(e, "context_mark", None)
        if context and context_mark and mark and context_mark.line != mark.line:
            problem += f" ({context} started at line {context_mark.line + 1})"
        raise GridError(path, "", MISSING, f"YAML syntax error at {where}: {problem}") from None
    except RecursionError:
        raise GridError(path, "", MISSING, "YAML nested too deeply") from None
    return parse_grid(raw, path)


def _load_yaml(text: str, path) -> Any:
    """yaml.safe_load, but a key given twice in one mapping is an error, not silently the last."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_duplicate_keys(node, "", path, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_duplicate_keys(node, where: str, path, seen: set) -> None:
    if id(node) in seen:  # an alias: already checked (and may be recursive)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = f"{where}.{key_node.value}" if where else key_node.value
                ident = (key_node.tag, key_node.value)
                line = key_node.start_mark.line + 1
                if ident in first:
                    lines = f"lines {first[ident]} and {line}" if first[ident] != line else f"twice on line {line}"
                    raise GridError(path, key, MISSING,
                                    f"duplicate key ({lines}); YAML would silently keep only the last one")
                first[ident] = line
                _check_duplicate_keys(value_node, key, path, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(item, f"{where}[{i}]", path, seen)


def parse_grid(raw: Any, path: str | Path = "<grid>") -> GridSpec:
    """Validate an already-parsed grid document."""
    if raw is None:
        raise GridError(path, "", MISSING, "the grid file is empty (it needs at least name and grid)")
    if not isinstance(raw, dict):
        kind = {"list": "a list", "str": "a single string"}.get(type(raw).__name__, f"a single {type(raw).__name__}")
        raise GridError(path, "", MISSING,
                        f"a grid file must be a mapping of keys ({', '.join(GridSpec.model_fields)}), got {kind}")
    raw = dict(raw)
    for key, default_name in (("dataset", "name"), ("model", "name")):
        if isinstance(raw.get(key), str):
            raw[key] = {default_name: raw[key]}
    if "grid" not in raw:
        raise GridError(path, "grid", MISSING, "missing: a grid needs at least the axes width and n_train")
    for section, model in _SECTIONS.items():
        if isinstance(raw.get(section), dict):
            for k, v in raw[section].items():
                if isinstance(v, bool) and k in model.model_fields and _is_numeric(model.model_fields[k].annotation):
                    raise GridError(path, f"{section}.{k}", v, "must be a number, not true/false")
    try:
        spec = GridSpec.model_validate(raw)
    except ValidationError as e:
        raise _pydantic_error(e, path) from None
    _check_registry(spec, path)
    return spec


def _is_numeric(annotation) -> bool:
    return all(a in (int, float, type(None)) for a in (typing.get_args(annotation) or (annotation,)))


def _pydantic_error(e: ValidationError, path) -> GridError:
    """The first error pydantic found, as a GridError naming key and value in plain words."""
    err = e.errors()[0]
    loc = list(err["loc"])
    bad_key = bool(loc) and loc[-1] == "[key]"  # a key of the wrong type, e.g. a number as an axis name
    if bad_key:
        loc.pop()
    key = ".".join(str(p) for p in loc)
    kind = err["type"]
    value = err.get("input", MISSING) if kind != "missing" and not bad_key else MISSING
    if isinstance(value, dict) and kind != "extra_forbidden":
        value = MISSING
    if bad_key:
        problem = "keys must be names, not numbers or other values"
    elif kind == "extra_forbidden":
        model = _SECTIONS.get(".".join(str(p) for p in loc[:-1]), GridSpec)
        problem = f"unknown key (keys: {', '.join(model.model_fields)})"
    elif kind == "missing":
        problem = "missing"
    elif kind == "string_pattern_mismatch" and loc == ["name"]:
        problem = "a sweep name is letters, digits, '_', '.' and '-' (no spaces or slashes)"
    elif kind == "finite_number":
        problem = "must be a finite number"
    elif kind in ("model_type", "dict_type"):
        fields = _SECTIONS[key].model_fields if key in _SECTIONS else None
        problem = f"must be a mapping (keys: {', '.join(fields)})" if fields else "must be a mapping of axes to values"
    else:
        problem = err["msg"].removeprefix("Value error, ")
    return GridError(path, key, value, problem)


def _check_registry(spec: GridSpec, path) -> None:
    from ddsweep.data import DATASETS, availability_problem, spec_problem
    from ddsweep.models import CONV_MODELS, MODELS

    if spec.dataset.name not in DATASETS:
        raise GridError(path, "dataset.name", spec.dataset.name,
                        f"unknown dataset (known: {', '.join(sorted(DATASETS))})")
    if spec.model.name not in MODELS:
        raise GridError(path, "model.name", spec.model.name,
                        f"unknown model (known: {', '.join(sorted(MODELS))})")
    raw = spec.dataset.model_dump()
    problem = spec_problem(raw)
    if problem:
        raise GridError(path, f"dataset.{problem[0]}", raw[problem[0]], problem[1])
    if spec.model.name in CONV_MODELS:
        if "depth" in spec.model.model_fields_set or "depth" in spec.grid:
            raise GridError(path, "model.depth" if "depth" in spec.model.model_fields_set else "grid.depth",
                            MISSING, f"{spec.model.name} has a fixed depth; only its width varies")
        from ddsweep.data import is_vision

        if not is_vision(spec.dataset.name):
            raise GridError(path, "model.name", spec.model.name,
                            f"a conv model needs an image dataset, not {spec.dataset.name}")
    elif spec.train.precision == "bf16":
        raise GridError(path, "train.precision", "bf16",
                        f"bf16 is for the conv models ({', '.join(sorted(CONV_MODELS))}); "
                        f"{spec.model.name} trains in float32")
    missing = availability_problem(raw)
    if missing:
        raise GridError(path, "dataset.root" if spec.dataset.root else "dataset", MISSING, missing)


# ----------------------------------------------------------------------------- axes


def axis_values(name: str, raw: Any, path) -> list:
    """Expand one axis: a scalar, a list, or a generator {geom|range|linspace: [...]}."""
    return _dedup(name, _axis_list(name, raw, path))


def _axis_list(name: str, raw: Any, path, key: str | None = None) -> list:
    """An axis as the list of values it gives, in order, duplicates kept (so errors index the file)."""
    key = key or f"grid.{name}"
    if isinstance(raw, dict):
        if len(raw) != 1:
            raise GridError(path, key, raw, "an axis generator has exactly one of geom, range, linspace")
        (kind, args), = raw.items()
        if kind not in ("geom", "range", "linspace"):
            raise GridError(path, key, raw, f"unknown axis generator {kind!r} (use geom, range or linspace)")
        if not isinstance(args, list) or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
            hint = _TEXT_NUMBER_HINT if isinstance(args, list) and any(map(_looks_numeric, args)) else ""
            raise GridError(path, f"{key}.{kind}", args, "arguments must be a list of numbers" + hint)
        if not all(math.isfinite(a) for a in args):
            raise GridError(path, f"{key}.{kind}", args, "arguments must be finite numbers")
        values = _generate(kind, args, path, f"{key}.{kind}")
        if not all(math.isfinite(v) for v in values):
            raise GridError(path, f"{key}.{kind}", args, "generates values too large to represent")
        if name in INT_AXES:
            values = [int(round(v)) for v in values]
    elif isinstance(raw, list):  # values, and generators whose values are spliced in: [{range: [1, 32]}, 96]
        values = []
        for i, item in enumerate(raw):
            if isinstance(item, dict):
                values.extend(_axis_list(name, item, path, f"{key}[{i}]"))
            elif isinstance(item, list):
                raise GridError(path, f"{key}[{i}]", item, "axis values must be single values, not lists")
            else:
                values.append(item)
            if len(values) > MAX_JOBS:
                raise GridError(path, key, MISSING, f"more than {MAX_JOBS} values, the most cells a grid may have")
    else:
        values = [raw]
    if not values:
        raise GridError(path, key, raw, "empty axis: give at least one value")
    for i, v in enumerate(values):
        if isinstance(v, (dict, list)):
            raise GridError(path, f"{key}[{i}]" if isinstance(raw, list) else key, v,
                            "axis values must be single values, not lists or mappings")
    return values


_TEXT_NUMBER_HINT = " (YAML reads 1e-3 and 1.0e12 as text: write 1.0e-3 and 1.0e+12)"


def _looks_numeric(v) -> bool:
    if not isinstance(v, str):
        return False
    try:
        float(v)
    except ValueError:
        return False
    return True


def _canonical(name: str, values: list) -> list:
    """Canonical floats: 0.1 from a generator equals 0.1 typed."""
    return [float(f"{v:.10g}") if isinstance(v, float) and name not in INT_AXES else v for v in values]


def _dedup(name: str, values: list) -> list:
    seen, unique = set(), []
    for v in _canonical(name, values):
        marker = (type(v).__name__, v) if not isinstance(v, (int, float)) or isinstance(v, bool) else v
        if marker not in seen:
            seen.add(marker)
            unique.append(v)
    return unique


def _generate(kind: str, args: list, path, key: str) -> list[float]:
    if kind in ("geom", "linspace") and len(args) == 3 and args[2] > MAX_JOBS:
        raise GridError(path, key, args, f"absurd count {args[2]:g}; a grid has at most {MAX_JOBS} cells")
    if kind == "geom":
        if len(args) != 3 or args[0] <= 0 or args[1] <= 0 or int(args[2]) != args[2] or args[2] < 1:
            raise GridError(path, key, args, "geom takes [start > 0, stop > 0, count >= 1]")
        with np.errstate(all="ignore"):
            return list(np.geomspace(args[0], args[1], int(args[2])))
    if kind == "linspace":
        if len(args) != 3 or int(args[2]) != args[2] or args[2] < 1:
            raise GridError(path, key, args, "linspace takes [start, stop, count >= 1]")
        with np.errstate(all="ignore"):
            return list(np.linspace(args[0], args[1], int(args[2])))
    # range: inclusive of stop, so {range: [1, 64]} is k = 1..64 as in the paper
    if len(args) not in (2, 3) or (len(args) == 3 and args[2] <= 0):
        raise GridError(path, key, args, "range takes [start, stop] or [start, stop, step > 0] (stop included)")
    start, stop, step = args[0], args[1], args[2] if len(args) == 3 else 1
    if stop < start:
        raise GridError(path, key, args, "range is empty: stop < start")
    span = (stop - start) / step
    if not span < MAX_JOBS:
        raise GridError(path, key, args, f"absurd range: more than {MAX_JOBS} values, the most cells a grid may have")
    count = int(math.floor(span + 1e-9)) + 1
    return [start + i * step for i in range(count)]


# ----------------------------------------------------------------------------- expansion


def expand(spec: GridSpec, path: str | Path = "<grid>", pool_size: int | None = None) -> list[Job]:
    """All jobs of a grid, merged over `epochs`; raises GridError on a bad axis value."""
    axes: dict[str, list] = {}
    written: dict[str, list] = {}  # each axis's values as written, for error messages
    for name, raw in spec.grid.items():
        if name not in ALL_AXES:
            raise GridError(path, f"grid.{name}", raw, f"unknown axis (axes: {', '.join(ALL_AXES)})")
        written[name] = _axis_list(name, raw, path)
        axes[name] = _dedup(name, written[name])
        written[name] = _canonical(name, written[name])  # the values jobs get, in the file's order
    for required in ("width", "n_train"):
        if required not in axes:
            raise GridError(path, f"grid.{required}", MISSING, "missing axis: every grid needs width and n_train")
    size = math.prod(len(v) for v in axes.values())
    if size > MAX_JOBS:
        shape = " x ".join(f"{k}={len(v)}" for k, v in axes.items())
        raise GridError(path, "grid", size, f"absurd grid size ({shape}); the limit is {MAX_JOBS} cells")
    _validate_axis_values(spec, written, path)
    if pool_size is None:
        from ddsweep.data import pool_size as dataset_pool_size

        pool_size = dataset_pool_size(spec.dataset.model_dump())
    pool = pool_size
    for i, n in enumerate(written["n_train"]):
        if n > pool:
            key = "grid.n_train" if len(written["n_train"]) == 1 else f"grid.n_train[{i}]"
            raise GridError(path, key, n, f"larger than the dataset's training pool ({pool})")

    names = list(axes)
    dataset = spec.dataset.config()
    merged: dict[str, dict] = {}
    for values in itertools.product(*(axes[n] for n in names)):
        cell = dict(zip(names, values))
        train = spec.train.model_dump()
        model = spec.model.model_dump()
        for k, v in cell.items():
            if k in TRAIN_AXES:
                train[k] = v
            elif k in MODEL_AXES:
                model[k] = v
        epochs = _horizon(spec, cell, train, path)
        for k, default in SPARSE_TRAIN.items():
            if train.get(k) == default:
                del train[k]
        train = canonical_train(train, cell["n_train"])
        if train.get("schedule") in HORIZON_SCHEDULES:
            train["epochs"] = epochs  # the schedule depends on the horizon: each horizon is its own job
        if train.get("world") == "ideal" and spec.dataset.name not in IDEAL_DATASETS:
            raise GridError(path, "grid.world" if "world" in cell else "train.world", "ideal",
                            f"the ideal world needs a dataset with a generator ({', '.join(IDEAL_DATASETS)}); "
                            f"{spec.dataset.name} has a fixed pool")
        config = {
            "sweep": spec.name,
            "dataset": dict(dataset),
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
    where = "grid.steps" if "steps" in cell else "train.steps"
    if "epochs" in cell or "epochs" in spec.train.model_fields_set:
        raise GridError(path, where, steps, "give the horizon as either epochs or steps, not both")
    n, batch = int(cell["n_train"]), train["batch_size"]
    epochs = -(-int(steps) // epoch_steps(n, batch))
    if epochs > 1_000_000:
        raise GridError(path, where, steps, f"{epochs} epochs at n_train={n}, batch {batch}: the limit is 1000000")
    return epochs


def _validate_axis_values(spec: GridSpec, axes: dict[str, list], path) -> None:
    base_cell = {"width": 1, "n_train": 1, "label_noise": 0.0, "seed": 0}
    for name, values in axes.items():
        for i, v in enumerate(values):
            key = f"grid.{name}" if len(values) == 1 else f"grid.{name}[{i}]"
            if isinstance(v, (dict, list)):
                raise GridError(path, key, v, "axis values must be scalars")
            if name not in TEXT_AXES and isinstance(v, bool):
                raise GridError(path, key, v, "must be a number, not true/false")
            if name not in TEXT_AXES and isinstance(v, str) and v not in WORD_VALUES.get(name, ()):
                raise GridError(path, key, v, "must be a number, not text" + (_TEXT_NUMBER_HINT if _looks_numeric(v) else ""))
            if name in INT_AXES and isinstance(v, float) and not v.is_integer():
                raise GridError(path, key, v, "must be an integer")
            try:
                if name in CELL_AXES:
                    _Cell.model_validate({**base_cell, name: v}, strict=False)
                elif name in TRAIN_AXES:
                    TrainSpec.model_validate({**spec.train.model_dump(), name: v})
                else:
                    ModelSpec.model_validate({**spec.model.model_dump(), name: v})
            except ValidationError as e:
                raise GridError(path, key, v, _pydantic_error(e, path).problem) from None
