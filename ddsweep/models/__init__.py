"""Models, each trainable as a *pack*: K independent members with stacked weights.

The registry names classes by import path so that validating a grid does not import torch.
"""

import importlib

from ddsweep.models.padding import conv_padded_width, padded_width
from ddsweep.models.protocol import PackedModel

MODELS = {
    "mlp": "ddsweep.models.mlp:PackedMLP",
    "mcnn": "ddsweep.models.mcnn:PackedMCNN",  # Deep Double Descent's 5-layer CNN
    "preact_resnet18": "ddsweep.models.resnet:PackedPreActResNet18",
    "transformer": "ddsweep.models.transformer:PackedTransformer",  # encoder-decoder, on text datasets
}
CONV_MODELS = {"mcnn", "preact_resnet18"}  # image models, built from the job config (ddsweep.models.arch)
TEXT_MODELS = {"transformer"}  # sequence models on text datasets (ddsweep.models.transformer_arch)
# models whose narrow members train padded (torch-free lookup)
PADDED = {"mlp": padded_width, "mcnn": conv_padded_width, "preact_resnet18": conv_padded_width}


def _module(config: dict):
    module, name = MODELS[config["model"]["name"]].split(":")
    return importlib.import_module(module), name


def train_width(config: dict, device: str = "cpu") -> int:
    """The width a job trains at on this kind of device (its own, or padded up; see the model)."""
    pad = PADDED.get(config["model"]["name"])
    return pad(config["width"], device) if pad else config["width"]


def build_model(config: dict, input_dim: int, num_classes: int, members: int, device="cpu", width=None,
                text=None, speed=None) -> PackedModel:
    """The packed model for a job config, with `members` stacked copies (uninitialized); `text`: a text
    dataset's layout (ddsweep.data.translation.TextInfo), for the text models; `speed`: the GPU speed
    settings of conv models (ddsweep.models.speed.SpeedSettings; default: its defaults)."""
    module, name = _module(config)
    cls = getattr(module, name)
    width = width or train_width(config, str(device))
    if config["model"]["name"] in TEXT_MODELS:
        return cls.from_config(config, members, width, text, device)
    if config["model"]["name"] in CONV_MODELS:  # image shape, normalization and precision from the config
        return cls.from_config(config, members, width, input_dim, num_classes, device, speed=speed)
    from ddsweep.data import image_info, is_vision

    if is_vision(config["dataset"]["name"]):  # the MLP on images: flattened, normalised per channel
        from ddsweep.models.mlp import PackedImageMLP

        info = image_info(config["dataset"])
        return PackedImageMLP(members, input_dim, width, num_classes, depth=config["model"]["depth"], device=device,
                              mean=info.mean, std=info.std)
    return cls(members, input_dim, width, num_classes, depth=config["model"]["depth"], device=device)
