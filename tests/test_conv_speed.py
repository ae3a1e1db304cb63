"""The GPU speed paths of conv packs compute what the plain grouped step computes.

- dense-member mode (wide members run one after another as dense networks) == grouped mode;
- on a GPU, the CUDA-graphed step == the eager step, bit for bit, over several steps
  (with an epoch's shorter last batch), and capture leaves BatchNorm's running statistics alone.
"""

import pytest
import torch

from ddsweep.models.mcnn import PackedMCNN
from ddsweep.models.resnet import PackedPreActResNet18
from ddsweep.models.speed import SpeedSettings
from ddsweep.train.optim import PackedAdam

PACKED = {"mcnn": PackedMCNN, "preact_resnet18": PackedPreActResNet18}
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def _steps(name, dense, device="cpu", graphs=False, precision="fp32", monkeypatch=None, steps=3, update=True):
    widths = [1, 2, 3]
    model = PACKED[name](len(widths), 3, 10, precision=precision, device=device,
                         speed=SpeedSettings(dense_members=dense))
    model.cuda_graphs = graphs
    for k, w in enumerate(widths):
        model.init_member(k, torch.Generator().manual_seed(k), w)
    opt = PackedAdam(model.flat, model.grad, [1e-3] * 3, [0.0] * 3)
    g = torch.Generator().manual_seed(0)
    losses = []
    for b in [8] * (steps - 1) + [5]:
        x = torch.randint(0, 256, (3, b, 3, 32, 32), dtype=torch.uint8, generator=g).to(device)
        y = torch.randint(0, 10, (3, b), generator=g).to(device)
        losses.append(model.loss_and_grad(x, y, "cross_entropy"))
        if update:
            opt.step()
    model.train(False)
    logits = model(x)
    assert model.dense_members == dense
    return torch.stack(losses).cpu(), model.grad.cpu(), model.buffers.cpu(), model.flat.cpu(), logits.cpu(), model


@pytest.mark.parametrize("name", ["mcnn", "preact_resnet18"])
def test_dense_members_equal_grouped(name, monkeypatch):
    # no optimizer steps: Adam turns the conv biases' rounding-noise gradients (exactly 0 in exact
    # arithmetic, BatchNorm follows) into lr-sized steps, so any change of summation order shows there
    grouped = _steps(name, False, monkeypatch=monkeypatch, update=False)
    dense = _steps(name, True, monkeypatch=monkeypatch, update=False)
    for a, b in zip(dense[:-1], grouped[:-1]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)  # conv-bias grads are rounding noise
    assert torch.equal(dense[3] == 0, grouped[3] == 0)  # padding stays exactly zero


@cuda
@pytest.mark.parametrize("dense", [False, True])
def test_cuda_graphed_steps_equal_eager(dense, monkeypatch):
    torch.backends.cudnn.deterministic = True
    try:
        eager = _steps("mcnn", dense, "cuda", graphs=False, precision="bf16", monkeypatch=monkeypatch, steps=4)
        graphed = _steps("mcnn", dense, "cuda", graphs=True, precision="bf16", monkeypatch=monkeypatch, steps=4)
    finally:
        torch.backends.cudnn.deterministic = False
    assert len(graphed[-1]._graphs) == 2 and not eager[-1]._graphs  # full batches and the short one
    for a, b in zip(graphed[:-1], eager[:-1]):
        assert torch.equal(a, b)
