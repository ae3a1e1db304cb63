"""Packs of conv nets: K members trained at once as one network of grouped convolutions.

Member k's channels are the k-th block of every layer: images [K, B, C, H, W] become
[B, K*C, H, W], each conv runs with groups=K, and BatchNorm over the K*C channels keeps
per-member statistics for free (it normalizes each channel on its own). Max- and
average-pooling, ReLU and the residual sums act channel by channel. The last layer is
a batched matmul per member. So members never mix: a member's outputs, losses and
gradients depend only on its own weights and data.

Parameters live in one flat tensor `flat` [K, P] (one row per member, laid out as the
architecture's list in ddsweep.models.arch); each step splits a leaf copy of it into
the layers' weights, autograd writes the gradient of the summed per-member losses,
and it lands in `grad` [K, P] for the packed optimizers. BatchNorm running statistics
are per member too; `buffers` [K, Q] gets and sets them all (for checkpoints).

Inputs may be uint8 images: they are normalized per channel on the fly. On a GPU the
pack runs in channels_last with bf16 autocast by default (`precision: auto`);
BatchNorm keeps float32 parameters and statistics, and the loss is taken in float32.

A member narrower than the pack's width (ddsweep.models.padding.conv_padded_width)
keeps its extra channels at exactly zero: their weights and BatchNorm scale start at
0, so they output 0, and every gradient reaching them is 0.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from ddsweep.models.arch import ARCHS, Arch

BN_MOMENTUM, BN_EPS = 0.1, 1e-5
EVAL_BYTES = {"cpu": 256 << 20, "cuda": 2 << 30}  # activations of one evaluation chunk


def resolve_precision(precision: str, device) -> str:
    """auto -> bf16 on a GPU, fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if str(device).startswith("cuda") else "fp32"
    return precision


class PackedConvNet:
    arch_name = ""

    def __init__(self, members: int, width: int, num_classes: int, channels: int = 3,
                 mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), precision: str = "fp32", device="cpu"):
        self.members, self.width, self.num_classes, self.channels = members, width, num_classes, channels
        self.device = torch.device(device)
        self.arch: Arch = ARCHS[self.arch_name](width, channels, num_classes)
        self.sizes = [math.prod(p.shape) for p in self.arch.params]
        self.offsets = [0]
        for s in self.sizes:
            self.offsets.append(self.offsets[-1] + s)
        self.flat = torch.zeros(members, self.offsets[-1], device=device)
        self.grad = torch.zeros_like(self.flat)
        # running statistics of each BatchNorm layer, [K*C] each, updated in place by F.batch_norm
        self.running = {name: (torch.zeros(members * c, device=device), torch.ones(members * c, device=device))
                        for name, c in self.arch.bn}
        self.training = True
        cuda = self.device.type == "cuda"
        self.precision = resolve_precision(precision, device)
        self.amp_dtype = torch.bfloat16 if self.precision == "bf16" else None
        self.channels_last = cuda
        if cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
        # x_normalized = x * scale + shift, per channel of [B, K*C, H, W], for uint8 (0..255) input
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).repeat(members)
        std_t = torch.tensor(std, dtype=torch.float32, device=device).repeat(members)
        self._scale = (1.0 / (255.0 * std_t)).view(-1, 1, 1)
        self._shift = (-mean_t / std_t).view(-1, 1, 1)
        self._float_scale = (1.0 / std_t).view(-1, 1, 1)

    @classmethod
    def from_config(cls, config: dict, members: int, width: int, input_dim: int, num_classes: int, device="cpu"):
        from ddsweep.data.vision import IMAGE_SIZE, VISION

        info = VISION[config["dataset"]["name"]]
        if input_dim != info.channels * IMAGE_SIZE * IMAGE_SIZE:
            raise ValueError(f"{cls.arch_name} expects {info.channels}x{IMAGE_SIZE}x{IMAGE_SIZE} images, "
                             f"got {input_dim} values per sample")
        return cls(members, width, num_classes, info.channels, info.mean, info.std,
                   config["train"].get("precision", "auto"), device)

    # ------------------------------------------------------------------ state

    def train(self, mode: bool = True):
        """Training mode (batch statistics, running statistics updated) or evaluation (running statistics)."""
        self.training = mode
        return self

    @property
    def buffers(self) -> torch.Tensor:
        """Every BatchNorm layer's running mean and variance, one row per member: [K, Q] (a copy)."""
        K = self.members
        parts = [t.view(K, -1) for name, _ in self.arch.bn for t in self.running[name]]
        return torch.cat(parts, dim=1) if parts else torch.zeros(K, 0, device=self.flat.device)

    @buffers.setter
    def buffers(self, value: torch.Tensor) -> None:
        K, off = self.members, 0
        with torch.no_grad():
            for name, c in self.arch.bn:
                for t in self.running[name]:
                    t.view(K, c).copy_(value[:, off:off + c])
                    off += c

    @torch.no_grad()
    def init_member(self, k: int, generator: torch.Generator, width: int | None = None) -> None:
        """PyTorch's default init for a member of `width` (<= the pack's): conv and linear weights and
        biases U(+-1/sqrt(fan_in)), BatchNorm scale 1 and shift 0; padded channels stay 0."""
        width = width or self.width
        own = ARCHS[self.arch_name](width, self.channels, self.num_classes)
        self.flat[k].zero_()
        for i, (p, q) in enumerate(zip(self.arch.params, own.params)):
            block = self.flat[k, self.offsets[i]:self.offsets[i + 1]].view(p.shape)
            corner = block[tuple(slice(0, n) for n in q.shape)]
            if q.init == "uniform":
                bound = 1.0 / math.sqrt(q.fan_in)
                corner.copy_((torch.rand(q.shape, generator=generator) * 2 - 1).mul_(bound))
            elif q.init == "ones":
                corner.fill_(1.0)
        self.reset_stats(k)

    @torch.no_grad()
    def reset_stats(self, k: int) -> None:
        """Member k's BatchNorm running statistics back to mean 0, variance 1."""
        for name, c in self.arch.bn:
            mean, var = self.running[name]
            mean.view(self.members, c)[k].zero_()
            var.view(self.members, c)[k].fill_(1.0)

    # ------------------------------------------------------------------ compute

    def _weights(self, p: torch.Tensor) -> dict[str, torch.Tensor]:
        """The layers' weights from the flat [K, P] parameters (differentiable through `p`).

        Conv weights become [K*out, in, kh, kw] for groups=K, BatchNorm's [K*C], the linear
        layer's [K, out, in] and [K, 1, out].
        """
        K, out = self.members, {}
        for spec, piece in zip(self.arch.params, torch.split(p, self.sizes, dim=1)):
            if len(spec.shape) == 4:
                w = piece.reshape(K * spec.shape[0], *spec.shape[1:])
                out[spec.name] = w.contiguous(memory_format=torch.channels_last) if self.channels_last else w
            elif len(spec.shape) == 2:
                out[spec.name] = piece.view(K, *spec.shape)
            elif spec.name.startswith(self._linear_name):
                out[spec.name] = piece.view(K, 1, spec.shape[0])
            else:
                out[spec.name] = piece.reshape(-1)
        return out

    _linear_name = "fc."

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        """[K, B, C, H, W] (uint8 or float) -> normalized float [B, K*C, H, W] (channels_last on a GPU)."""
        K, B, C, H, W = x.shape
        if self.channels_last:
            x = x.permute(1, 3, 4, 0, 2).reshape(B, H, W, K * C).permute(0, 3, 1, 2)
        else:
            x = x.transpose(0, 1).reshape(B, K * C, H, W)
        if x.dtype == torch.uint8:
            return x.float().mul_(self._scale).add_(self._shift)
        return x.float().mul(self._float_scale).add_(self._shift)

    def _conv(self, x, w, b=None, stride: int = 1, padding: int = 1):
        return F.conv2d(x, w, b, stride, padding, 1, self.members)

    def _bn(self, x, W: dict, name: str):
        mean, var = self.running[name]
        return F.batch_norm(x, mean, var, W[f"{name}.weight"], W[f"{name}.bias"], self.training,
                            BN_MOMENTUM, BN_EPS)

    def _head(self, h, W: dict, name: str):
        """[B, K*F, 1, 1] -> logits [K, B, classes] through each member's linear layer."""
        B = h.shape[0]
        h = h.reshape(B, self.members, -1).transpose(0, 1)
        return torch.baddbmm(W[f"{name}.bias"], h, W[f"{name}.weight"].transpose(1, 2))

    def _forward(self, W: dict, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images [K, B, C, H, W] -> float32 logits [K, B, classes] (BatchNorm per the mode set by train())."""
        with self._autocast():
            logits = self._forward(self._weights(self.flat), self._prep(x))
        return logits.float()

    __call__ = forward

    def loss_and_grad(self, x: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
        """Per-member mean loss [K] on a batch (batch statistics); writes its gradient into `grad`."""
        p = self.flat.detach().requires_grad_(True)
        with self._autocast():
            logits = self._forward(self._weights(p), self._prep(x))
        per_member = member_loss(logits.float(), y, loss)
        (g,) = torch.autograd.grad(per_member.sum(), p)
        self.grad.copy_(g)
        return per_member.detach()

    def layer_slices(self) -> list[tuple[int, int]]:
        """Column ranges [a, b) of `flat` holding each parameter tensor of a member (for LARS)."""
        return list(zip(self.offsets[:-1], self.offsets[1:]))

    def flops_per_sample(self) -> int:
        """Multiply-adds x 2 of one forward pass of one member (at the pack's width)."""
        return 2 * self.arch.macs

    @property
    def eval_chunk(self) -> int:
        """Samples per member in one evaluation forward pass: as many as fit EVAL_BYTES of activations
        (a few float32 copies of the largest layer's output: nothing is kept for a backward pass)."""
        per_sample = 4 * self.arch.peak * 4 * self.members
        budget = EVAL_BYTES["cuda" if self.device.type == "cuda" else "cpu"]
        return int(max(16, min(8192, budget // max(1, per_sample))))


def member_loss(logits: torch.Tensor, y: torch.Tensor, name: str) -> torch.Tensor:
    """Per-member mean loss: logits [K, b, C], y [K, b] -> [K]."""
    K, b, C = logits.shape
    if name == "mse":
        return (logits - F.one_hot(y, C).to(logits.dtype)).square().mean(dim=(1, 2))
    return F.cross_entropy(logits.reshape(K * b, C), y.reshape(K * b), reduction="none").view(K, b).mean(1)
