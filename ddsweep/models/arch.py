"""The conv architectures of Deep Double Descent, described without torch.

Each architecture is a list of its parameters (name, per-member shape, how it is
initialized) plus its BatchNorm layers, as a function of the width k; the packed
torch models (ddsweep.models.mcnn, ddsweep.models.resnet) lay their flat [K, P]
parameters out from these lists, and the coordinator, which never imports torch,
sizes packs from the same numbers (parameters, multiply-adds and activations per
sample). Names follow the usual PyTorch modules (kuangliu's pytorch-cifar for the
ResNet), so a member's weights load into a plain nn.Module by name.

Images are C x 32 x 32 (ddsweep.data.vision pads MNIST to 32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

IMAGE = 32


@dataclass(frozen=True)
class Param:
    name: str
    shape: tuple[int, ...]  # per member
    init: str  # "uniform" (U(+-1/sqrt(fan_in)), torch's default for conv and linear), "ones", "zeros"
    fan_in: int = 0


@dataclass(frozen=True)
class Arch:
    params: list[Param]
    bn: list[tuple[str, int]]  # (name, channels) of each BatchNorm layer: running mean and variance
    macs: int  # multiply-adds of one forward pass of one sample
    activations: int  # elements of one sample's activations a training step keeps for the backward pass
    peak: int = 0  # elements of one sample's largest activation (what an evaluation pass holds at once, x a few)

    @property
    def size(self) -> int:
        return sum(math.prod(p.shape) for p in self.params)


def _conv(params: list, name: str, cin: int, cout: int, ksize: int, bias: bool) -> None:
    fan_in = cin * ksize * ksize
    params.append(Param(f"{name}.weight", (cout, cin, ksize, ksize), "uniform", fan_in))
    if bias:
        params.append(Param(f"{name}.bias", (cout,), "uniform", fan_in))


def _bn(params: list, bn: list, name: str, channels: int) -> None:
    params.append(Param(f"{name}.weight", (channels,), "ones"))
    params.append(Param(f"{name}.bias", (channels,), "zeros"))
    bn.append((name, channels))


def _linear(params: list, name: str, fin: int, fout: int) -> None:
    params.append(Param(f"{name}.weight", (fout, fin), "uniform", fin))
    params.append(Param(f"{name}.bias", (fout,), "uniform", fin))


def mcnn(k: int, channels: int = 3, classes: int = 10) -> Arch:
    """Nakkiran et al.'s 5-layer CNN: four conv3x3-BN-ReLU of widths k, 2k, 4k, 8k, max-pool 2 after
    the last three, max-pool 4, linear. 1,558,026 parameters at k=64 on CIFAR-10."""
    params: list[Param] = []
    bn: list = []
    macs = acts = 0
    cin, hw = channels, IMAGE
    for i, (cout, pool) in enumerate(((k, False), (2 * k, True), (4 * k, True), (8 * k, True)), 1):
        _conv(params, f"conv{i}", cin, cout, 3, bias=True)
        _bn(params, bn, f"bn{i}", cout)
        macs += cout * cin * 9 * hw * hw
        acts += 3 * cout * hw * hw  # conv output, BN output, ReLU output
        if pool:
            hw //= 2
            acts += cout * hw * hw
        cin = cout
    acts += cin  # max-pool 4
    _linear(params, "fc", cin, classes)
    macs += cin * classes
    return Arch(params, bn, macs, acts, peak=2 * k * IMAGE * IMAGE)


def preact_resnet18(k: int, channels: int = 3, classes: int = 10) -> Arch:
    """Pre-activation ResNet18 with stage widths k, 2k, 4k, 8k (kuangliu's PreActResNet18 at k=64,
    11,171,146 parameters on CIFAR-10): 3x3 stem, blocks [2, 2, 2, 2] with strides [1, 2, 2, 2],
    average-pool 4, linear. Convs have no bias."""
    params: list[Param] = []
    bn: list = []
    _conv(params, "conv1", channels, k, 3, bias=False)
    macs, acts, hw = channels * k * 9 * IMAGE * IMAGE, k * IMAGE * IMAGE, IMAGE
    cin = k
    for stage, (planes, stride) in enumerate(zip((k, 2 * k, 4 * k, 8 * k), (1, 2, 2, 2)), 1):
        for block in range(2):
            s = stride if block == 0 else 1
            pre = f"layer{stage}.{block}"
            hw_out = hw // s
            _bn(params, bn, f"{pre}.bn1", cin)
            _conv(params, f"{pre}.conv1", cin, planes, 3, bias=False)
            _bn(params, bn, f"{pre}.bn2", planes)
            _conv(params, f"{pre}.conv2", planes, planes, 3, bias=False)
            macs += planes * cin * 9 * hw_out * hw_out + planes * planes * 9 * hw_out * hw_out
            acts += 2 * cin * hw * hw + 5 * planes * hw_out * hw_out  # bn1, relu1, conv1, bn2, relu2, conv2, sum
            if s != 1 or cin != planes:
                _conv(params, f"{pre}.shortcut.0", cin, planes, 1, bias=False)
                macs += planes * cin * hw_out * hw_out
                acts += planes * hw_out * hw_out
            cin, hw = planes, hw_out
    acts += cin
    _linear(params, "linear", cin, classes)
    macs += cin * classes
    return Arch(params, bn, macs, acts, peak=k * IMAGE * IMAGE)


ARCHS = {"mcnn": mcnn, "preact_resnet18": preact_resnet18}


def arch_for(config: dict, width: int | None = None) -> Arch:
    """The architecture of a job config (at `width`, default the job's own), for its dataset's images."""
    from ddsweep.data import image_info

    info = image_info(config["dataset"])
    return ARCHS[config["model"]["name"]](width or config["width"], info.channels, info.classes)
