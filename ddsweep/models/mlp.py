"""A pack of K MLPs (input -> h -> ... -> h -> classes, ReLU) with stacked weights.

Member k's layer i is `params[2i][k]` (weights, [in, out]) and `params[2i+1][k]`
(bias, [1, out]); one `torch.baddbmm` runs layer i of all K members at once. The
members never mix: each one's output, loss and gradients depend only on its own
slice, so a member trained in a pack matches the same member trained alone.
"""

from __future__ import annotations

import math

import torch


class PackedMLP:
    def __init__(self, members: int, input_dim: int, width: int, num_classes: int, depth: int = 2,
                 device="cpu"):
        self.members, self.width, self.depth = members, width, depth
        dims = [input_dim] + [width] * depth + [num_classes]
        self.shapes = list(zip(dims[:-1], dims[1:]))
        self.params: list[torch.Tensor] = []
        for fan_in, fan_out in self.shapes:
            self.params.append(torch.zeros(members, fan_in, fan_out, device=device, requires_grad=True))
            self.params.append(torch.zeros(members, 1, fan_out, device=device, requires_grad=True))

    @torch.no_grad()
    def init_member(self, k: int, generator: torch.Generator) -> None:
        """torch.nn.Linear's default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from this member's RNG."""
        for (fan_in, fan_out), w, b in zip(self.shapes, self.params[0::2], self.params[1::2]):
            bound = 1.0 / math.sqrt(fan_in)
            w[k].copy_((torch.rand(fan_out, fan_in, generator=generator) * 2 - 1).mul_(bound).T)
            b[k].copy_((torch.rand(1, fan_out, generator=generator) * 2 - 1).mul_(bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [K, B, input_dim] -> logits [K, B, classes]."""
        h = x
        last = len(self.shapes) - 1
        for i, (w, b) in enumerate(zip(self.params[0::2], self.params[1::2])):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = torch.relu(h)
        return h

    __call__ = forward

    def flops_per_sample(self) -> int:
        """Multiply-adds x 2 of one forward pass of one member."""
        return sum(2 * i * o for i, o in self.shapes)
