"""A dataset held in memory as tensors."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Tensors:
    """Training pool and test set; moved to the worker's device once and kept there."""

    # [pool, features...] float32, or uint8 images [pool, C, 32, 32] (ddsweep.data.vision); or, for a
    # pool too large to hold (CIFAR-5m), an object with .shape, len() and .rows(idx, device) that reads
    # the rows asked for (ddsweep.data.cifar5m.ShardPool): it stays where it is, rows go to the device
    x_pool: torch.Tensor
    y_pool: torch.Tensor  # [pool] int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    # text datasets (ddsweep.data.translation): rows are int32 [source | target] token ids, the
    # labels are unused zeros, num_classes is the target vocabulary; this says how rows are laid out
    text: Any = None

    def to(self, device) -> "Tensors":
        pool = self.x_pool.to(device) if isinstance(self.x_pool, torch.Tensor) else self.x_pool
        return Tensors(pool, self.y_pool.to(device), self.x_test.to(device), self.y_test.to(device),
                       self.num_classes, self.text)

    def pool_rows(self, idx: torch.Tensor, device) -> torch.Tensor:
        """x_pool[idx] on `device` (idx any shape), whether the pool is held or read on demand."""
        if isinstance(self.x_pool, torch.Tensor):
            return self.x_pool[idx.to(self.x_pool.device)].to(device)
        flat = self.x_pool.rows(idx.reshape(-1), device)
        return flat.view(*idx.shape, *flat.shape[1:])

    @property
    def input_dim(self) -> int:
        return int(math.prod(self.x_pool.shape[1:]))
