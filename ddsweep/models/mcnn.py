"""mcnn(k): Deep Double Descent's 5-layer CNN, as a pack (see ddsweep.models.conv).

conv3x3(C -> k)-BN-ReLU; conv(k -> 2k)-BN-ReLU-maxpool2; conv(2k -> 4k)-BN-ReLU-maxpool2;
conv(4k -> 8k)-BN-ReLU-maxpool2; maxpool 4; flatten; linear(8k -> classes). Convs have a
bias. 1,558,026 parameters at k=64 on CIFAR-10 (ddsweep.models.arch.mcnn).
"""

from __future__ import annotations

import torch.nn.functional as F

from ddsweep.models.conv import PackedConvNet


class PackedMCNN(PackedConvNet):
    arch_name = "mcnn"
    _linear_name = "fc."

    def _forward(self, W: dict, x):
        for i in range(1, 5):
            x = self._conv(x, W[f"conv{i}.weight"], W[f"conv{i}.bias"], 1, 1)
            x = self._bn(x, W, f"bn{i}")
            if i > 1:
                # ReLU after the pooling, on a quarter of the values: max-pooling commutes with
                # ReLU, and the gradients are the same bit for bit (tested). Measured on a CPU
                # (1 thread, batch 128, k=16..64): 1-6% off a training step.
                x = F.max_pool2d(x, 2)
            x = F.relu(x, inplace=True)
        x = F.max_pool2d(x, 4)
        return self._head(x, W, "fc")
