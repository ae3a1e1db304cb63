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

Axes can also be linked: `grid.zip` holds groups of axes whose i-th values go together
(ddsweep.grid.linked); a group crosses with the other axes like one axis.

Modules: spec (the pydantic models of a grid file and its axes), load (YAML reading and
validation), generators (axis values and their generators), linked (grid.zip), expansion
(jobs and their ids).
"""

from ddsweep.grid.expansion import Job, canonical_json, epoch_steps, expand
from ddsweep.grid.generators import axis_values
from ddsweep.grid.linked import axis_key, axis_names
from ddsweep.grid.load import load_grid, parse_grid, read_grid_text
from ddsweep.grid.spec import (
    ALL_AXES, CELL_AXES, HORIZON_SCHEDULES, INT_AXES, KNOB_COLUMNS, KNOB_DEFAULTS, KNOB_NEEDS,
    MAX_JOBS, MODEL_AXES, SPARSE_TRAIN, TEXT_AXES, TRAIN_AXES, WORD_VALUES, DatasetSpec, EvalSpec, GridSpec,
    ModelSpec, TrainSpec, canonical_train, pass_samples, train_recipe,
)

__all__ = [
    "ALL_AXES", "CELL_AXES", "HORIZON_SCHEDULES", "INT_AXES", "KNOB_COLUMNS", "KNOB_DEFAULTS",
    "KNOB_NEEDS", "MAX_JOBS", "MODEL_AXES", "SPARSE_TRAIN", "TEXT_AXES", "TRAIN_AXES", "WORD_VALUES",
    "DatasetSpec", "EvalSpec", "GridSpec", "Job", "ModelSpec", "TrainSpec", "axis_key", "axis_names", "axis_values",
    "canonical_json", "canonical_train", "epoch_steps", "expand", "load_grid", "parse_grid", "pass_samples",
    "read_grid_text", "train_recipe",
]
