"""A pack of K MLPs (input -> h -> ... -> h -> classes, ReLU) with stacked weights.

All parameters of the pack live in one flat tensor `flat` [K, P]; each layer's
weights and bias [K, 1, out] are views into it, and `grad` has the same layout.
`weights[i]` is layer i's [K, in, out] matrix. A layer that narrows (out < in, e.g.
the 10-class output) stores it as [K, out, in], nn.Linear's layout: MKL runs the
skinny products of such a layer 2-4x faster that way round (measured on 1 thread,
batch 100: width 300 -> 10 takes 57 us per step instead of 126).

One `torch.baddbmm` runs a layer of all K members at once, and the optimizer
updates the whole pack with a handful of elementwise ops. The backward pass is
written out (three matmuls and a mask per layer) because on small models autograd's
per-op bookkeeping costs more than the arithmetic.

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
    """A ddsweep.models.PackedModel."""

    # Version of the parameter layout, kept in checkpoints: 2 stores narrowing layers out-major,
    # so a checkpoint of layout 1 (all in-major) must not be resumed as if it were one of these.
    LAYOUT = 2
    has_running_stats = False  # no BatchNorm: training and evaluation compute one function
    buffers = None  # no running statistics

    def __init__(self, members: int, input_dim: int, width: int, num_classes: int, depth: int = 2,
                 device="cpu"):
        self.members, self.width, self.depth = members, width, depth
        self.input_dim, self.num_classes = input_dim, num_classes
        dims = [input_dim] + [width] * depth + [num_classes]
        self.shapes = list(zip(dims[:-1], dims[1:]))
        self.flat = torch.zeros(members, self._layout()[-1], device=device)
        self.grad = torch.zeros_like(self.flat)
        self.out_major = [fan_out < fan_in for fan_in, fan_out in self.shapes]  # stored [K, out, in]
        # views that stay valid: the optimizer updates `flat` in place
        self.weights, self.biases = self.matrices(self.flat)  # [K, in, out], [K, 1, out]
        self.stored_grads, self.bias_grads = self._views(self.grad)  # gradients as stored
        self.weights_t = [w.transpose(1, 2) for w in self.weights]  # [K, out, in], for the backward pass

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

    def layer_slices(self) -> list[tuple[int, int]]:
        """Column ranges [a, b) of `flat` holding each weight and each bias of a member (for LARS)."""
        offsets = self._layout()
        sizes = [size for fan_in, fan_out in self.shapes for size in (fan_in * fan_out, fan_out)]
        return [(o, o + size) for o, size in zip(offsets, sizes)]

    def _views(self, buf):
        """Each layer's weight block as stored ([K, in, out], or [K, out, in] where out_major), and bias."""
        weights, biases = [], []
        offsets = self._layout()
        for i, (fan_in, fan_out) in enumerate(self.shapes):
            w, b = offsets[2 * i], offsets[2 * i + 1]
            shape = (fan_out, fan_in) if self.out_major[i] else (fan_in, fan_out)
            weights.append(buf[:, w:w + fan_in * fan_out].view(self.members, *shape))
            biases.append(buf[:, b:b + fan_out].view(self.members, 1, fan_out))
        return weights, biases

    def matrices(self, buf):
        """([K, in, out] weight views, [K, 1, out] bias views) of a [K, P] buffer laid out as `flat`."""
        stored, biases = self._views(buf)
        return [w.transpose(1, 2) if t else w for w, t in zip(stored, self.out_major)], biases

    def train(self, mode: bool = True) -> PackedMLP:
        """No modes: an MLP computes the same function in training and evaluation."""
        return self

    def reset_stats(self, k: int) -> None:
        """Nothing to reset: an MLP keeps no running statistics."""

    def configure(self, recipes: list[dict]) -> None:
        """Nothing per member beyond the optimizer's and the knobs' settings."""

    def token_metrics(self, x: torch.Tensor) -> None:
        """A classifier: evaluated from its logits."""
        return None

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

    def loss_and_grad(self, x: torch.Tensor, y: torch.Tensor, loss: str,
                      with_loss: bool = True) -> torch.Tensor | None:
        """Per-member mean loss [K] (None unless `with_loss`); writes its gradient into `self.grad`.

        The loss itself costs a third of a small pack's loss-and-gradient arithmetic on top
        of its gradient: the training loop asks for it only where a knob needs it."""
        acts = [x]
        z = self.forward(x, keep=acts)
        per_member, delta = _loss_and_dlogits(z, y, loss, with_loss)
        for i in range(len(self.shapes) - 1, -1, -1):
            if self.out_major[i]:
                torch.bmm(delta.transpose(1, 2), acts[i], out=self.stored_grads[i])
            else:
                torch.bmm(acts[i].transpose(1, 2), delta, out=self.stored_grads[i])
            torch.sum(delta, dim=1, keepdim=True, out=self.bias_grads[i])
            if i > 0:  # back through layer i's weights, then through the ReLU of layer i-1
                delta = torch.bmm(delta, self.weights_t[i])
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


def _loss_and_dlogits(z: torch.Tensor, y: torch.Tensor, loss: str, with_loss: bool = True):
    """Per-member mean loss [K] (None unless `with_loss`) and its gradient w.r.t. the logits z [K, B, C]."""
    K, B, C = z.shape
    if loss == "mse":
        diff = z - F.one_hot(y, C).to(z.dtype)
        per_member = diff.square().mean(dim=(1, 2)) if with_loss else None
        return per_member, diff.mul_(2.0 / (B * C))
    per_member = None
    if with_loss:  # (the gradient below is the same either way: a member's numbers never depend on this)
        per_member = torch.log_softmax(z, dim=-1).gather(-1, y.unsqueeze(-1)).sum(dim=(1, 2)).mul_(-1.0 / B)
    dz = torch.softmax(z, dim=-1)
    dz.scatter_add_(-1, y.unsqueeze(-1), _minus_ones(K, B, z))  # d(mean CE)/dz = (softmax - onehot) / B
    return per_member, dz.mul_(1.0 / B)


_MINUS_ONES: dict = {}


def _minus_ones(K: int, B: int, like: torch.Tensor) -> torch.Tensor:
    key = (K, B, like.device, like.dtype)
    if key not in _MINUS_ONES:
        _MINUS_ONES[key] = torch.full((K, B, 1), -1.0, device=like.device, dtype=like.dtype)
    return _MINUS_ONES[key]


class PackedImageMLP(PackedMLP):
    """The MLP on images (uint8 [K, B, C, H, W], as ddsweep.data.vision holds them): each image is
    flattened (C x H x W values, channel-major) and normalised per channel with the dataset's mean
    and standard deviation, then it is a PackedMLP on C*H*W inputs. Augmentation runs on the uint8
    images before this, as for the conv models; float [K, B, d] input passes through unchanged."""

    def __init__(self, members: int, input_dim: int, width: int, num_classes: int, depth: int = 2, device="cpu",
                 mean: tuple[float, ...] = (0.5,), std: tuple[float, ...] = (0.25,)):
        super().__init__(members, input_dim, width, num_classes, depth=depth, device=device)
        channels = len(mean)
        per_channel = input_dim // channels
        std_t = torch.tensor(std, dtype=torch.float32, device=device).repeat_interleave(per_channel)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).repeat_interleave(per_channel)
        self._scale = 1.0 / (255.0 * std_t)  # x_normalised = x * scale + shift, per input value
        self._shift = -mean_t / std_t

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            return x
        return torch.addcmul(self._shift, x.reshape(*x.shape[:2], -1).float(), self._scale)

    def forward(self, x: torch.Tensor, keep: list | None = None) -> torch.Tensor:
        return super().forward(self._inputs(x), keep)

    __call__ = forward

    def loss_and_grad(self, x: torch.Tensor, y: torch.Tensor, loss: str, with_loss: bool = True):
        return super().loss_and_grad(self._inputs(x), y, loss, with_loss)
