"""preact_resnet18(k): pre-activation ResNet18 with stage widths k, 2k, 4k, 8k, as a pack.

kuangliu's PreActResNet18 (pytorch-cifar), which Deep Double Descent widened by k:
3x3 stem (no bias); four stages of two pre-activation blocks, strides 1, 2, 2, 2
(block: BN-ReLU, then conv3x3 (stride) - BN-ReLU - conv3x3, plus the input, or a 1x1
conv of the pre-activated input where the shape changes); average-pool 4; linear.
k=64 is the usual ResNet18, 11,171,146 parameters on CIFAR-10 (ddsweep.models.arch).
Packing as in ddsweep.models.conv.
"""

from __future__ import annotations

import torch.nn.functional as F

from ddsweep.models.conv import PackedConvNet


class PackedPreActResNet18(PackedConvNet):
    arch_name = "preact_resnet18"
    _linear_name = "linear."

    def _forward(self, W: dict, x):
        out = self._conv(x, W["conv1.weight"], None, 1, 1)
        for stage, stride in enumerate((1, 2, 2, 2), 1):
            for block in range(2):
                pre = f"layer{stage}.{block}"
                s = stride if block == 0 else 1
                o = F.relu(self._bn(out, W, f"{pre}.bn1"), inplace=True)
                shortcut = W.get(f"{pre}.shortcut.0.weight")
                shortcut = out if shortcut is None else self._conv(o, shortcut, None, s, 0)
                o = self._conv(o, W[f"{pre}.conv1.weight"], None, s, 1)
                o = self._conv(F.relu(self._bn(o, W, f"{pre}.bn2"), inplace=True), W[f"{pre}.conv2.weight"],
                               None, 1, 1)
                out = o + shortcut
        out = F.avg_pool2d(out, 4)
        return self._head(out, W, "linear")
