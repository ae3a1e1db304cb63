"""The vocabulary: every axis a grid may vary and every metric a run records, in one table.

Grid validation (which axes exist, which take integers or words), the columns of the
`jobs` and `metrics` tables, `load_metrics`, export and import, the analysis defaults
and the plot labels are all derived from `AXES` and `METRICS` below, so they cannot
drift apart. Adding a metric is one `Metric(...)` entry here (plus a migration that adds
the column, and the code that computes it); adding an axis is one `Axis(...)` entry
(plus its field in the grid's pydantic spec, which a test checks against this table).

The Alembic migrations keep their own frozen copies of the column lists: a migration
describes the schema as it was at that revision, not as it is now.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["int", "float", "text", "floats", "bool"]  # floats: a list of numbers (step_milestones)


@dataclass(frozen=True)
class Axis:
    """One axis of a run: where it lives in a job's config, and how it is stored and shown.

    path:    keys into the resolved config (("width",), ("train", "lr"), ("model", "depth")).
    grid:    a grid file may vary it (`grid: {name: [...]}`).
    job:     a column of the `jobs` table (and so of `load_metrics` and the export).
    cell:    tells one cell of a map from another (the seed is what is averaged, not a cell).
    knob:    a training knob (issue 7): left out of a job's hashed config at its default.
    default: the value a job has when its grid does not set it.
    """

    name: str
    kind: Kind
    path: tuple[str, ...]
    default: Any = None
    grid: bool = True
    job: bool = True
    cell: bool = True
    knob: bool = False
    required: bool = False  # an import needs the column (or --set)
    label: str = ""
    short: str = ""  # in 'h = 43'; else the label is used

    @property
    def section(self) -> str:
        """Where a grid axis lands in the config: cell (top level), train, model or dataset."""
        return "cell" if len(self.path) == 1 else self.path[0]

    @property
    def sql_type(self) -> str:
        return {"int": "INTEGER", "float": "DOUBLE", "text": "VARCHAR", "bool": "BOOLEAN"}[self.kind]


@dataclass(frozen=True)
class Metric:
    """One per-epoch metric column of `metrics`.

    export: its name in `load_metrics` and the exchange format (the per-epoch learning rate
    is `epoch_lr` there, beside the job's `lr`). fraction: a share in [0, 1] (checked on
    import; errors in percent are refused). kind: float or whole numbers.
    """

    name: str
    kind: Literal["float", "int"] = "float"  # read as float64 / int64 (float64 where values are missing)
    fraction: bool = False
    export: str = ""
    label: str = ""

    @property
    def column(self) -> str:
        return self.export or self.name


_TRAIN = "train"
AXES: tuple[Axis, ...] = (
    # the cell of a grid: top-level keys of a job's config
    Axis("width", "int", ("width",), None, required=True, label="model width h", short="h"),
    Axis("n_train", "int", ("n_train",), None, required=True, label="training samples n", short="n"),
    Axis("label_noise", "float", ("label_noise",), 0.0, required=True, label="label noise"),
    Axis("seed", "int", ("seed",), 0, required=True, cell=False),
    Axis("depth", "int", ("model", "depth"), 2),
    Axis("lr", "float", (_TRAIN, "lr"), 0.01, label="learning rate"),
    Axis("momentum", "float", (_TRAIN, "momentum"), 0.0),
    Axis("weight_decay", "float", (_TRAIN, "weight_decay"), 0.0, label="weight decay"),
    Axis("batch_size", "int", (_TRAIN, "batch_size"), 100, label="batch size"),  # or the word full
    Axis("optimizer", "text", (_TRAIN, "optimizer"), "sgd"),
    Axis("dataset", "text", ("dataset", "name"), "mnist1d", grid=False),
    Axis("model", "text", ("model", "name"), "mlp", grid=False),
    Axis("loss", "text", (_TRAIN, "loss"), "cross_entropy"),
    # the knobs of the neighbouring phenomena (ddsweep.train.knobs) that are jobs columns (migration 0004)
    Axis("schedule", "text", (_TRAIN, "schedule"), "constant", knob=True),
    Axis("warmup", "int", (_TRAIN, "warmup"), 0, knob=True),
    Axis("grad_clip", "float", (_TRAIN, "grad_clip"), 0.0, knob=True),
    Axis("grad_penalty", "float", (_TRAIN, "grad_penalty"), 0.0, knob=True),
    Axis("flood", "float", (_TRAIN, "flood"), 0.0, knob=True),
    Axis("world", "text", (_TRAIN, "world"), "real", knob=True),
    # random crop + flip on images (migration 0007): a train key whose default is dataset.augment; the
    # job keeps it in its dataset config (ids planned before it was a train key stay), train_recipe reads it
    Axis("augment", "bool", (_TRAIN, "augment"), None, label="augmentation"),
    # train keys a grid may vary that are not jobs columns (they live in the job's config)
    Axis("epochs", "int", (_TRAIN, "epochs"), 100, job=False, cell=False),
    Axis("steps", "int", (_TRAIN, "steps"), None, job=False, cell=False),
    Axis("precision", "text", (_TRAIN, "precision"), "auto", job=False, cell=False),
    Axis("inv_sqrt_steps", "int", (_TRAIN, "inv_sqrt_steps"), 512, job=False, cell=False, knob=True),
    Axis("step_milestones", "floats", (_TRAIN, "step_milestones"), (0.5, 0.75), job=False, cell=False, knob=True),
    Axis("step_factor", "float", (_TRAIN, "step_factor"), 0.1, job=False, cell=False, knob=True),
    Axis("trust", "float", (_TRAIN, "trust"), 0.001, job=False, cell=False, knob=True),
    Axis("label_smoothing", "float", (_TRAIN, "label_smoothing"), 0.0, job=False, cell=False, knob=True),
    # SGD's Nesterov momentum (torch's rule); left out of a job's config while false
    Axis("nesterov", "bool", (_TRAIN, "nesterov"), False, job=False, cell=False, knob=True),
    # gradient accumulation (ddsweep.train.passes): samples per forward/backward of a step; None: no split
    # unless the memory estimate needs one (resolved when planning, kept in the job's config)
    Axis("micro_batch", "int", (_TRAIN, "micro_batch"), None, job=False, cell=False),
    # the gradient penalty averaged over blocks of this many samples (Geiping et al.); 0: the whole batch
    Axis("penalty_block", "int", (_TRAIN, "penalty_block"), 0, job=False, cell=False, knob=True),
    # the transformer's encoder and decoder layers: stored in the jobs' depth column
    Axis("layers", "int", ("model", "layers"), None, job=False, cell=False),
)

METRICS: tuple[Metric, ...] = (
    Metric("step", "int"),
    Metric("train_loss", label="train loss"),
    Metric("train_error", fraction=True, label="train error"),  # against the noisy labels trained on
    Metric("train_error_clean", fraction=True, label="train error (true labels)"),
    Metric("noisy_fit", fraction=True, label="noisy labels fitted"),
    Metric("test_loss", label="test loss"),
    Metric("test_error", fraction=True, label="test error"),  # the clean test set
    Metric("lr", export="epoch_lr"),
    Metric("seconds"),
    # migration 0004: null where they do not apply (see the README's metrics table)
    Metric("grad_norm"),
    Metric("dist_from_init"),
    Metric("weight_norm"),
    Metric("noise_scale"),
    Metric("flooded_loss"),
    Metric("ascent_fraction", fraction=True),
    Metric("clip_rate", fraction=True),
    # the validation split (dataset: {val: N}): held-out pool samples, clean labels; null without one
    Metric("val_loss", label="validation loss"),
    Metric("val_error", fraction=True, label="validation error"),
    # migration 0007: the Deep Bootstrap's soft error, 1 - mean softmax probability of the label
    # (ddsweep.train.loop.true_class_probability); null for text models and rows written before
    Metric("train_soft_error", fraction=True, label="train soft error"),  # the noisy labels trained on
    Metric("test_soft_error", fraction=True, label="test soft error"),  # the clean test set
)

AXIS = {a.name: a for a in AXES}
METRIC = {m.name: m for m in METRICS}

# Derived names (tuples, in table order)
GRID_AXES = tuple(a.name for a in AXES if a.grid)
JOB_AXES = tuple(a.name for a in AXES if a.job)  # the axes stored as jobs columns
CELL_AXES = tuple(a.name for a in AXES if a.cell)  # what tells cells apart (seed aside), in this order
KNOB_AXES = tuple(a.name for a in AXES if a.knob)
KNOB_COLUMNS = tuple(a.name for a in AXES if a.knob and a.job)
KNOB_DEFAULTS = {a.name: a.default for a in AXES if a.knob}
INT_AXES = frozenset(a.name for a in AXES if a.kind == "int")
TEXT_AXES = frozenset(a.name for a in AXES if a.kind == "text")
REQUIRED_AXES = tuple(a.name for a in AXES if a.required)
METRIC_COLUMNS = ("job_id", "epoch") + tuple(m.name for m in METRICS)  # the `metrics` table

# The long exchange format = `load_metrics`: bookkeeping, the job's axes, epoch, metrics.
# (`horizon` is the job's `epochs`: the longest horizon it is trained to.)
BOOKKEEPING = ("sweep", "job_id", "status", "horizon")
RESULT_COLUMNS = BOOKKEEPING + JOB_AXES + ("epoch",) + tuple(m.column for m in METRICS)


def result_select(jobs: str = "j", metrics: str = "m") -> str:
    """The SELECT list of the long format over `metrics {metrics} JOIN jobs {jobs}`."""
    cols = [f"{jobs}.sweep", f"{jobs}.job_id", f"{jobs}.status", f"{jobs}.epochs AS horizon"]
    cols += [f"{jobs}.{a}" for a in JOB_AXES]
    cols += [f"{metrics}.epoch"] + [f"{metrics}.{m.name}" + (f" AS {m.export}" if m.export else "") for m in METRICS]
    return ", ".join(cols)


def normalize(df):
    """A long-format frame with each known column in its vocabulary's dtype (in place; returned).

    Float axes and metrics become float64; whole numbers int64, or float64 (NaN) where a
    value is missing, e.g. the depth of imported runs; text stays text.
    """
    import numpy as np
    import pandas as pd

    kinds = {a.name: a.kind for a in AXES if a.job}
    kinds.update({m.column: m.kind for m in METRICS})
    kinds.update(horizon="int", epoch="int")
    for col in df.columns:
        kind = kinds.get(col)
        if kind == "float" and df[col].dtype != np.float64:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(np.float64)
        elif kind == "int" and df[col].dtype != np.int64:
            s = pd.to_numeric(df[col], errors="coerce")
            df[col] = s.astype(np.float64) if s.isna().any() else s.astype(np.int64)
    return df


def config_value(config: dict, axis: str):
    """An axis's value in a resolved job config (None where the config does not hold it)."""
    node: Any = config
    for key in AXIS[axis].path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def label(col: str) -> str:
    """How a plot names a column: 'model width h', 'test error', else the name in words."""
    if col in AXIS and AXIS[col].label:
        return AXIS[col].label
    if col in METRIC and METRIC[col].label:
        return METRIC[col].label
    return col.replace("_", " ")


def short(col: str) -> str:
    """The short name in 'h = 43' (the label where there is none)."""
    return AXIS[col].short if col in AXIS and AXIS[col].short else label(col)
