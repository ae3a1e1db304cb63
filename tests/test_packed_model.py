"""Every registered model is a PackedModel, and the training code asks models only through it."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
import torch

from ddsweep.models import MODELS, PackedModel

ROOT = Path(__file__).resolve().parents[1]
MEMBERS = {n for n in PackedModel.__annotations__} | {
    n for n, v in vars(PackedModel).items() if not n.startswith("_") and (callable(v) or isinstance(v, property))
} | {"__call__"}


def _class(name: str):
    module, cls = MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def _instance(name: str):
    from ddsweep.models.conv import PackedConvNet
    from ddsweep.models.mlp import PackedMLP

    cls = _class(name)
    if issubclass(cls, PackedMLP):
        return cls(2, 40, 8, 10, depth=2)
    if issubclass(cls, PackedConvNet):
        return cls(2, 2, 10)
    from ddsweep.models.transformer import PackedTransformer
    from ddsweep.models.transformer_arch import transformer

    if issubclass(cls, PackedTransformer):
        return cls(2, transformer(8, 11, 13, layers=1, heads=2), 7, 8)
    pytest.fail(f"{name}: add how to build a small one here")


def test_the_protocol_names_what_the_loop_uses():
    assert {"flat", "grad", "LAYOUT", "has_running_stats", "buffers", "eval_chunk", "init_member", "loss_and_grad",
            "train", "reset_stats", "layer_slices", "flops_per_sample", "__call__"} <= MEMBERS


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_implements_the_protocol(name):
    model = _instance(name)
    assert isinstance(model, PackedModel)
    missing = [m for m in sorted(MEMBERS) if not hasattr(model, m)]
    assert not missing, f"{name} lacks {missing}"
    assert model.train(False) is model and model.train(True) is model
    model.init_member(0, torch.Generator().manual_seed(0))
    model.reset_stats(1)
    # the layer slices tile each member's row: disjoint, in order, inside `flat`
    slices = model.layer_slices()
    assert slices and all(a < b for a, b in slices)
    assert all(b <= c for (_, b), (c, _) in zip(slices, slices[1:])) and slices[-1][1] <= model.flat.shape[1]
    assert (model.buffers is not None) == model.has_running_stats


def test_mlp_layer_slices_are_its_weights_and_biases():
    from ddsweep.models.mlp import PackedMLP

    model = PackedMLP(3, 40, 8, 10, depth=2)  # the 10-class output layer is stored out-major
    tensors = [t for pair in zip(model.weights, model.biases) for t in pair]  # views into model.flat
    slices = model.layer_slices()
    assert len(slices) == len(tensors)
    for (a, b), t in zip(slices, tensors):
        model.flat.zero_()
        model.flat[:, a:b] = 1.0
        assert b - a == t[0].numel() and bool((t == 1).all())
        assert all(not u.any() for u in tensors if u is not t)


def test_training_code_does_not_duck_type_models():
    """The loop, optimizers, knobs and checkpoints call the protocol, not hasattr/getattr on a model."""
    found = []
    for path in sorted((ROOT / "ddsweep" / "train").glob("*.py")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\b(hasattr|getattr)\(\s*model\b", line):
                found.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not found, "\n".join(found)
