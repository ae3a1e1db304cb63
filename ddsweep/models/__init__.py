"""Models, each trainable as a *pack*: K independent members with stacked weights.

The registry names classes by import path so that validating a grid does not import torch.
"""

import importlib

MODELS = {"mlp": "ddsweep.models.mlp:PackedMLP"}


def build_model(config: dict, input_dim: int, num_classes: int, members: int, device="cpu"):
    """The packed model for a job config, with `members` stacked copies (uninitialized)."""
    spec = config["model"]
    module, name = MODELS[spec["name"]].split(":")
    cls = getattr(importlib.import_module(module), name)
    width = getattr(importlib.import_module(module), "padded_width", lambda w: w)(config["width"])
    return cls(members, input_dim, width, num_classes, depth=spec["depth"], device=device)
