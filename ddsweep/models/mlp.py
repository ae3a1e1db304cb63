"""A pack of K MLPs (input -> h -> ... -> h -> classes, ReLU) with stacked weights.

All parameters of the pack live in one flat tensor `flat` [K, P]; each layer's
weights [K, in, out] and bias [K, 1, out] are views into it, and `grad` has the
same layout. One `torch.baddbmm` runs a layer of all K members at once, and the
optimizer updates the whole pack with a handful of elementwise ops. The backward
pass is written out (three matmuls and a mask per layer) because on small models
autograd's per-op bookkeeping costs more than the arithmetic.

Members never mix: each one's output, loss and gradient depend only on its own
slice. A member narrower than the pack's width `width` (see `padded_width`) keeps
the extra units at exactly zero: their weights start at zero, their pre-activation
is 0, and ReLU's gradient at 0 is 0, so they never receive a gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ALIGN = 16  # floats: 64 bytes


class PackedMLP:
    def __init__(self, members: int, input_dim: int, width: int, num_classes: int, depth: int = 2,
                 device="cpu"):
        self.members, self.width, self.depth = members, width, depth
        self.input_dim, self.num_classes = input_dim, num_classes
        dims = [input_dim] + [width] * depth + [num_classes]
        self.shapes = list(zip(dims[:-1], dims[1:]))
        self.flat = torch.zeros(members, self._layout()[-1], device=device)
        self.grad = torch.zeros_like(self.flat)
        self.weights, self.biases = self._views(self.flat)
        self.weight_grads, self.bias_grads = self._views(self.grad)

    def _layout(self) -> list[int]:
        """Offsets of each weight and bias in a member's row, then the row length.

        Every block starts on a 64-byte boundary: BLAS kernels round differently
        for differently aligned outputs, and a member's numbers must not depend
        on its position in the pack.
        """
        offsets, off = [], 0
        for fan_in, fan_out in self.shapes:
            for size in (fan_in * fan_out, fan_out):
                offsets.append(off)
                off += -(-size // ALIGN) * ALIGN
        return offsets + [off]

    def _views(self, buf):
        weights, biases = [], []
        offsets = self._layout()
        for i, (fan_in, fan_out) in enumerate(self.shapes):
            w, b = offsets[2 * i], offsets[2 * i + 1]
            weights.append(buf[:, w:w + fan_in * fan_out].view(self.members, fan_in, fan_out))
            biases.append(buf[:, b:b + fan_out].view(self.members, 1, fan_out))
        return weights, biases

    @torch.no_grad()
    def init_member(self, k: int, generator: torch.Generator, width: int | None = None) -> None:
        """torch.nn.Linear's init, U(+-1/sqrt(fan_in)), for a member of `width` (<= the pack's).

        The random draws are those of the unpadded model; padded units stay zero.
        """
        width = width or self.width
        dims = [self.input_dim] + [width] * self.depth + [self.num_classes]
        self.flat[k].zero_()
        for (fan_in, fan_out), w, b in zip(zip(dims[:-1], dims[1:]), self.weights, self.biases):
            bound = 1.0 / math.sqrt(fan_in)
            w[k, :fan_in, :fan_out] = (torch.rand(fan_out, fan_in, generator=generator) * 2 - 1).mul_(bound).T
            b[k, :, :fan_out] = (torch.rand(1, fan_out, generator=generator) * 2 - 1).mul_(bound)

    def forward(self, x: torch.Tensor, keep: list | None = None) -> torch.Tensor:
        """x: [K, B, input_dim] -> logits [K, B, classes]; `keep` collects hidden activations."""
        h = x
        last = len(self.shapes) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = torch.relu_(h)
                if keep is not None:
                    keep.append(h)
        return h

    __call__ = forward

    def loss_and_grad(self, x: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
        """Per-member mean loss [K]; writes its gradient into `self.grad`."""
        acts = [x]
        z = self.forward(x, keep=acts)
        per_member, dz = _loss_and_dlogits(z, y, loss)
        delta = dz
        for i in range(len(self.shapes) - 1, -1, -1):
            torch.bmm(acts[i].transpose(1, 2), delta, out=self.weight_grads[i])
            torch.sum(delta, dim=1, keepdim=True, out=self.bias_grads[i])
            if i > 0:  # back through layer i's weights, then through the ReLU of layer i-1
                delta = torch.bmm(delta, self.weights[i].transpose(1, 2))
                delta = torch.ops.aten.threshold_backward(delta, acts[i], 0)
        return per_member

    @property
    def eval_chunk(self) -> int:
        """Samples per member in one evaluation forward pass. On a CPU, activations that stay
        in cache beat one huge matmul (measured: 20-40% faster than 8192 rows); the chunk
        depends on the width only, so a member's numbers never depend on its pack-mates."""
        if self.flat.device.type == "cuda":
            return 8192
        return 1024 if self.width < 256 else 512

    def flops_per_sample(self) -> int:
        """Multiply-adds x 2 of one forward pass of one member (at the pack's width)."""
        return sum(2 * i * o for i, o in self.shapes)


def _loss_and_dlogits(z: torch.Tensor, y: torch.Tensor, loss: str):
    """Per-member mean loss [K] and its gradient w.r.t. the logits z [K, B, C]."""
    K, B, C = z.shape
    if loss == "mse":
        diff = z - F.one_hot(y, C).to(z.dtype)
        return diff.square().mean(dim=(1, 2)), diff.mul_(2.0 / (B * C))
    logp = torch.log_softmax(z, dim=-1)
    target = logp.gather(-1, y.unsqueeze(-1))
    per_member = target.sum(dim=(1, 2)).mul_(-1.0 / B)
    dz = logp.exp_()  # softmax; d(mean CE)/dz = (softmax - onehot) / B
    dz.scatter_add_(-1, y.unsqueeze(-1), _minus_ones(K, B, z))
    return per_member, dz.mul_(1.0 / B)


_MINUS_ONES: dict = {}


def _minus_ones(K: int, B: int, like: torch.Tensor) -> torch.Tensor:
    key = (K, B, like.device, like.dtype)
    if key not in _MINUS_ONES:
        _MINUS_ONES[key] = torch.full((K, B, 1), -1.0, device=like.device, dtype=like.dtype)
    return _MINUS_ONES[key]
