"""Models, each trainable as a *pack*: K independent members with stacked weights.

The registry names classes by import path so that validating a grid does not import torch.
"""

import importlib

from ddsweep.models.padding import padded_width

MODELS = {"mlp": "ddsweep.models.mlp:PackedMLP"}
PADDED = {"mlp": padded_width}  # models whose narrow members train padded (torch-free lookup)


def _module(config: dict):
    module, name = MODELS[config["model"]["name"]].split(":")
    return importlib.import_module(module), name


def train_width(config: dict, device: str = "cpu") -> int:
    """The width a job trains at on this kind of device (its own, or padded up; see the model)."""
    pad = PADDED.get(config["model"]["name"])
    return pad(config["width"], device) if pad else config["width"]


def build_model(config: dict, input_dim: int, num_classes: int, members: int, device="cpu", width=None):
    """The packed model for a job config, with `members` stacked copies (uninitialized)."""
    module, name = _module(config)
    cls = getattr(module, name)
    width = width or train_width(config, str(device))
    return cls(members, input_dim, width, num_classes, depth=config["model"]["depth"], device=device)
