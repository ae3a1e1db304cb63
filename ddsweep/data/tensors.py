"""A dataset held in memory as tensors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Tensors:
    """Training pool and test set; moved to the worker's device once and kept there."""

    x_pool: torch.Tensor  # [pool, features...] float32, or uint8 images [pool, C, 32, 32] (ddsweep.data.vision)
    y_pool: torch.Tensor  # [pool] int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    # text datasets (ddsweep.data.translation): rows are int32 [source | target] token ids, the
    # labels are unused zeros, num_classes is the target vocabulary; this says how rows are laid out
    text: Any = None

    def to(self, device) -> "Tensors":
        return Tensors(self.x_pool.to(device), self.y_pool.to(device), self.x_test.to(device),
                       self.y_test.to(device), self.num_classes, self.text)

    @property
    def input_dim(self) -> int:
        return int(self.x_pool[0].numel())
