"""The packed MLP's hand-written backward pass and its width padding, against autograd and torch.nn."""

import pytest
import torch
import torch.nn.functional as F

from ddsweep.models.mlp import PackedMLP
from ddsweep.models.padding import padded_width
from ddsweep.train.optim import PackedAdam, PackedSGD


def autograd_reference(model: PackedMLP, x, y, loss):
    flat = model.flat.detach().clone().requires_grad_(True)
    weights, biases = model.matrices(flat)
    h = x
    for i, (w, b) in enumerate(zip(weights, biases)):
        h = torch.baddbmm(b, h, w)
        if i < len(weights) - 1:
            h = torch.relu(h)
    K, B, C = h.shape
    if loss == "mse":
        per = ((h - F.one_hot(y, C).float()) ** 2).mean(dim=(1, 2))
    else:
        per = F.cross_entropy(h.reshape(K * B, C), y.reshape(K * B), reduction="none").view(K, B).mean(1)
    per.sum().backward()
    return per.detach(), flat.grad


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_manual_backward_matches_autograd(loss, depth):
    torch.manual_seed(0)
    m = PackedMLP(3, 40, 24, 10, depth=depth)
    for k in range(3):
        m.init_member(k, torch.Generator().manual_seed(k), width=[24, 7, 13][k])  # two padded members
    x, y = torch.randn(3, 50, 40), torch.randint(0, 10, (3, 50))
    per = m.loss_and_grad(x, y, loss)
    ref_per, ref_grad = autograd_reference(m, x, y, loss)
    torch.testing.assert_close(per, ref_per, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m.grad, ref_grad, rtol=1e-4, atol=1e-6)


def test_padding_keeps_extra_units_at_zero_and_matches_the_narrow_model():
    torch.manual_seed(1)
    x, y = torch.randn(1, 100, 40), torch.randint(0, 10, (1, 100))
    wide, narrow = PackedMLP(1, 40, 32, 10), PackedMLP(1, 40, 11, 10)
    wide.init_member(0, torch.Generator().manual_seed(5), width=11)
    narrow.init_member(0, torch.Generator().manual_seed(5))
    opts = [PackedSGD(m.flat, m.grad, [0.05], [0.9], [1e-3]) for m in (wide, narrow)]
    for _ in range(30):
        for m, opt in zip((wide, narrow), opts):
            m.loss_and_grad(x, y, "cross_entropy")
            opt.step()
    for i in range(len(wide.weights)):
        fan_in = 40 if i == 0 else 11
        fan_out = 10 if i == len(wide.weights) - 1 else 11
        w, b = wide.weights[i][0], wide.biases[i][0]
        torch.testing.assert_close(w[:fan_in, :fan_out], narrow.weights[i][0], rtol=1e-4, atol=1e-6)
        assert w[fan_in:].abs().sum() == 0 and w[:, fan_out:].abs().sum() == 0  # exactly zero
        assert b[:, fan_out:].abs().sum() == 0
    torch.testing.assert_close(wide(x), narrow(x), rtol=1e-4, atol=1e-5)


def test_padded_width_depends_only_on_width_and_device():
    assert [padded_width(w) for w in (2, 32, 33, 64, 100, 128, 129, 300)] == [32, 32, 64, 64, 128, 128, 129, 300]
    assert padded_width(300, "cuda") == 512 and padded_width(600, "cuda") == 600


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_packed_optimizers_match_torch_optim(optimizer):
    """A member trained with our flat-buffer optimizer equals nn.Linear + torch.optim, step for step."""
    torch.manual_seed(2)
    m = PackedMLP(1, 40, 16, 10)
    m.init_member(0, torch.Generator().manual_seed(3))
    layers = [torch.nn.Linear(40, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)]
    net = torch.nn.Sequential(*layers)
    with torch.no_grad():
        for lin, w, b in zip(net[0::2], m.weights, m.biases):
            lin.weight.copy_(w[0].T)
            lin.bias.copy_(b[0, 0])
    if optimizer == "sgd":
        ours = PackedSGD(m.flat, m.grad, [0.05], [0.9], [1e-3])
        ref = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    else:
        ours = PackedAdam(m.flat, m.grad, [1e-3], [1e-3])
        ref = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-3)
    for step in range(25):
        x, y = torch.randn(1, 64, 40), torch.randint(0, 10, (1, 64))
        m.loss_and_grad(x, y, "cross_entropy")
        ours.step()
        ref.zero_grad()
        F.cross_entropy(net(x[0]), y[0]).backward()
        ref.step()
    torch.testing.assert_close(m(x)[0], net(x[0]), rtol=1e-4, atol=1e-5)


def test_epoch_shuffle_is_each_members_own_permutation():
    import torch

    from ddsweep.train.loop import _shuffled

    g = torch.Generator().manual_seed(0)
    for shape in ((3, 50, 7), (2, 40, 3, 4, 4)):
        x = torch.randn(*shape, generator=g)
        order = torch.stack([torch.randperm(shape[1], generator=g) for _ in range(shape[0])])
        expected = torch.stack([x[k][order[k]] for k in range(shape[0])])
        assert torch.equal(_shuffled(x, order), expected)
