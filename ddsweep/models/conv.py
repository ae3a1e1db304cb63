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

GPU speed paths (each measured on an H100; numbers in the GPU notes of the report):
- every training step (forward + backward) replays a CUDA graph captured once per batch
  shape (ddsweep.models.cuda_graphs); SpeedSettings(cuda_graphs=False) steps eagerly, same numbers;
- with SpeedSettings(compile=True), wide bf16 members (width >= DENSE_WIDTH) run one after
  another as dense networks (cuDNN's grouped convolution copies every group's channels out and back);
- SpeedSettings(compile=True) runs the network through torch.compile (fuses BatchNorm, ReLU, pooling
  and the bias gradients; about 30 s of compilation per shape, so opt-in: it pays in long runs).
The settings (ddsweep.models.speed) come from `ddsweep work`'s options (--compile, ...; their
defaults from the DDSWEEP_* variables, read once by ddsweep.env).

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
from ddsweep.models.speed import SpeedSettings

BN_MOMENTUM, BN_EPS = 0.1, 1e-5
EVAL_BYTES = {"cpu": 256 << 20, "cuda": 2 << 30}  # activations of one evaluation chunk
# Width from which a GPU pack runs its members as dense networks one after another (see
# PackedConvNet.dense_members); narrower members train as one grouped network. Measured on an
# H100 (bf16, packs of 32, CUDA graphs): mcnn k=64 dense 74K samples/s vs grouped 73K eager,
# 117K vs 97K compiled; k=32 dense 126K vs grouped 150K eager, 190K vs 200K compiled.
# preact_resnet18 is not measured: it stays grouped.
DENSE_WIDTH = {"mcnn": 64}


def resolve_precision(precision: str, device) -> str:
    """auto -> bf16 on a GPU, fp32 elsewhere."""
    if precision == "auto":
        return "bf16" if str(device).startswith("cuda") else "fp32"
    return precision


class PackedConvNet:
    """A ddsweep.models.PackedModel; subclasses name their architecture (ddsweep.models.arch)."""

    arch_name = ""
    LAYOUT = None  # `flat` holds the architecture's parameter tensors in order
    has_running_stats = True  # BatchNorm: evaluation uses the running statistics (`buffers`)

    def __init__(self, members: int, width: int, num_classes: int, channels: int = 3,
                 mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), precision: str = "fp32", device="cpu",
                 speed: SpeedSettings | None = None):
        self.members, self.width, self.num_classes, self.channels = members, width, num_classes, channels
        self.speed = speed if speed is not None else SpeedSettings()
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
        # a training step (forward + backward) replays a CUDA graph captured once per batch shape
        self.cuda_graphs = cuda and self.speed.cuda_graphs
        self._graphs: dict = {}
        self._graph_pool = None
        # x_normalized = x * scale + shift, per channel of [B, K*C, H, W], for uint8 (0..255) input
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).repeat(members)
        std_t = torch.tensor(std, dtype=torch.float32, device=device).repeat(members)
        self._scale = (1.0 / (255.0 * std_t)).view(-1, 1, 1)
        self._shift = (-mean_t / std_t).view(-1, 1, 1)
        self._float_scale = (1.0 / std_t).view(-1, 1, 1)

    @classmethod
    def from_config(cls, config: dict, members: int, width: int, input_dim: int, num_classes: int, device="cpu",
                    speed: SpeedSettings | None = None):
        from ddsweep.data import image_info
        from ddsweep.data.vision import IMAGE_SIZE

        info = image_info(config["dataset"])
        if input_dim != info.channels * IMAGE_SIZE * IMAGE_SIZE:
            raise ValueError(f"{cls.arch_name} expects {info.channels}x{IMAGE_SIZE}x{IMAGE_SIZE} images, "
                             f"got {input_dim} values per sample")
        return cls(members, width, num_classes, info.channels, info.mean, info.std,
                   config["train"].get("precision", "auto"), device, speed)

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

    def configure(self, recipes: list[dict]) -> None:
        """Nothing per member beyond the optimizer's and the knobs' settings."""

    def token_metrics(self, x: torch.Tensor) -> None:
        """A classifier: evaluated from its logits."""
        return None

    @torch.no_grad()
    def reset_stats(self, k: int) -> None:
        """Member k's BatchNorm running statistics back to mean 0, variance 1."""
        for name, c in self.arch.bn:
            mean, var = self.running[name]
            mean.view(self.members, c)[k].zero_()
            var.view(self.members, c)[k].fill_(1.0)

    # ------------------------------------------------------------------ compute

    def _weights(self, p: torch.Tensor, k: int | None = None) -> dict[str, torch.Tensor]:
        """The layers' weights from flat parameters p [G, P] (differentiable through `p`), and the
        BatchNorm running statistics they update: G = K members as one grouped network, or
        (k given) G = 1, member k alone.

        Conv weights become [G*out, in, kh, kw] for groups=G, BatchNorm's [G*C], the linear
        layer's [G, out, in] and [G, 1, out]; "<bn>.running" holds (mean, var) views [G*C].
        """
        G, out = p.shape[0], {}
        for spec, piece in zip(self.arch.params, torch.split(p, self.sizes, dim=1)):
            if len(spec.shape) == 4:
                w = piece.reshape(G * spec.shape[0], *spec.shape[1:])
                out[spec.name] = w.contiguous(memory_format=torch.channels_last) if self.channels_last else w
            elif len(spec.shape) == 2:
                out[spec.name] = piece.view(G, *spec.shape)
            elif spec.name.startswith(self._linear_name):
                out[spec.name] = piece.view(G, 1, spec.shape[0])
            else:
                out[spec.name] = piece.reshape(-1)
        for name, c in self.arch.bn:
            mean, var = self.running[name]
            out[f"{name}.running"] = (mean, var) if k is None else (
                mean.view(self.members, c)[k], var.view(self.members, c)[k])
        return out

    _linear_name = "fc."

    def _prep(self, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """[G, B, C, H, W] (uint8 or float) -> normalized float [B, G*C, H, W] (channels_last on a GPU);
        G = K, or 1 for member k alone."""
        G, B, C, H, W = x.shape
        if self.channels_last:
            x = x.permute(1, 3, 4, 0, 2).reshape(B, H, W, G * C).permute(0, 3, 1, 2)
        else:
            x = x.transpose(0, 1).reshape(B, G * C, H, W)
        own = slice(None) if k is None else slice(k * C, (k + 1) * C)
        if x.dtype == torch.uint8:
            return x.float().mul_(self._scale[own]).add_(self._shift[own])
        return x.float().mul(self._float_scale[own]).add_(self._shift[own])

    def _conv(self, x, w, b=None, stride: int = 1, padding: int = 1):
        return F.conv2d(x, w, b, stride, padding, 1, x.shape[1] // w.shape[1])

    def _bn(self, x, W: dict, name: str):
        mean, var = W[f"{name}.running"]
        return F.batch_norm(x, mean, var, W[f"{name}.weight"], W[f"{name}.bias"], self.training,
                            BN_MOMENTUM, BN_EPS)

    def _head(self, h, W: dict, name: str):
        """[B, G*F, 1, 1] -> logits [G, B, classes] through each member's linear layer."""
        B, G = h.shape[0], W[f"{name}.weight"].shape[0]
        h = h.reshape(B, G, -1).transpose(0, 1)
        return torch.baddbmm(W[f"{name}.bias"], h, W[f"{name}.weight"].transpose(1, 2))

    def _forward(self, W: dict, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _net(self, W: dict, x: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self._forward(W, x)

    @property
    def dense_members(self) -> bool:
        """Whether members run one after another as dense networks rather than as one grouped network:
        on a GPU at widths >= DENSE_WIDTH[arch] (cuDNN's grouped convolution copies each group's
        channels out and back; a wide member fills the GPU alone). SpeedSettings(dense_members=...) forces it."""
        forced = self.speed.dense_members
        if forced is not None:
            return forced and self.members > 1
        # Only with torch.compile (opt-in), the one place it pays (eager: 74K vs 73K samples/s
        # at k=64), and bf16 only: float32 dense members on a GPU failed with a CUDA error once
        # (H100, k=64, not yet understood), so everything else stays grouped.
        return (self.device.type == "cuda" and self.members > 1 and self.amp_dtype is not None
                and self.speed.compile
                and self.width >= DENSE_WIDTH.get(self.arch_name, 1 << 30))

    def _logits(self, ps, x: torch.Tensor) -> torch.Tensor:
        """Logits [K, B, classes] from parameters (a [K, P] tensor, or K rows [P] in dense-member mode)."""
        net = self._compiled_net()
        if not self.dense_members:
            return net(self._weights(ps), self._prep(x))
        return torch.cat([net(self._weights(p.unsqueeze(0), k), self._prep(x[k:k + 1], k))
                          for k, p in enumerate(ps)])

    def _compiled_net(self):
        if not self.speed.compile or self.device.type != "cuda":
            return self._net
        if getattr(self, "_compiled", None) is None:
            self._compiled = torch.compile(self._net, dynamic=False)
        return self._compiled

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images [K, B, C, H, W] -> float32 logits [K, B, classes] (BatchNorm per the mode set by train())."""
        ps = self.flat.unbind(0) if self.dense_members else self.flat
        return self._logits(ps, x).float()

    __call__ = forward

    def loss_and_grad(self, x: torch.Tensor, y: torch.Tensor, loss: str, with_loss: bool = True) -> torch.Tensor:
        """Per-member mean loss [K] on a batch (batch statistics); writes its gradient into `grad`.
        (The loss comes free with autograd's backward pass: returned whatever `with_loss` says.)

        On a GPU the step replays a CUDA graph of itself, captured at the first batch of each
        shape (ddsweep.models.cuda_graphs): the same kernels, without their launch costs."""
        if self.cuda_graphs and x.is_cuda:
            from ddsweep.models.cuda_graphs import graphed_loss_and_grad

            out = graphed_loss_and_grad(self, x, y, loss)
            if out is not None:
                return out
        return self._loss_and_grad(x, y, loss)

    def _loss_and_grad(self, x: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
        if self.dense_members:  # one leaf per member: each gradient is its own row, no [K, P] zeros per member
            ps = [row.detach().requires_grad_(True) for row in self.flat.unbind(0)]
        else:
            ps = self.flat.detach().requires_grad_(True)
        per_member = member_loss(self._logits(ps, x).float(), y, loss)
        grads = torch.autograd.grad(per_member.sum(), ps)
        if self.dense_members:
            torch.stack(grads, out=self.grad)
        else:
            self.grad.copy_(grads[0])
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
