"""Memory estimates of a conv member in training, without torch (the coordinator sizes packs from
them, and planning sizes an automatic micro-batch from them)."""

from __future__ import annotations


def member_bytes(config: dict, device: str, samples: int | None = None) -> int:
    """Estimated memory of one conv member in training: parameters with gradient, copies and Adam's
    state (~28 bytes each), the activations of one pass of `samples` images (default: the batch;
    x1.5 for autograd's extras), its images twice (its training set and the epoch's shuffled copy)."""
    from ddsweep.data import image_info
    from ddsweep.data.vision import IMAGE_SIZE
    from ddsweep.models import train_width
    from ddsweep.models.arch import arch_for

    arch = arch_for(config, train_width(config, device))
    bf16 = config["train"].get("precision", "auto") == "bf16" or (
        device.startswith("cuda") and config["train"].get("precision", "auto") == "auto")
    image = image_info(config["dataset"]).channels * IMAGE_SIZE * IMAGE_SIZE
    samples = samples if samples is not None else min(int(config["train"]["batch_size"]), int(config["n_train"]))
    return int(28 * arch.size + 1.5 * (2 if bf16 else 4) * arch.activations * samples
               + 2 * image * config["n_train"])
