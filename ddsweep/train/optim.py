"""SGD and Adam over a pack's flat parameters [K, P], with per-member hyperparameters.

Each hyperparameter is a [K, 1] tensor, so members of one pack can differ in lr,
momentum and weight decay. The update rules are torch.optim's (SGD with dampening
0, Adam with L2 weight decay) written out so they broadcast over members; the
whole pack updates in a few elementwise ops.
"""

from __future__ import annotations

import torch


def _per_member(values, device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1)


class PackedSGD:
    def __init__(self, params: torch.Tensor, grad: torch.Tensor, lr, momentum, weight_decay):
        self.params, self.grad = params, grad
        self.lr = _per_member(lr, params.device)
        self.momentum = _per_member(momentum, params.device)
        self.weight_decay = _per_member(weight_decay, params.device)
        self.use_momentum = any(m > 0 for m in momentum)
        self.use_wd = any(w > 0 for w in weight_decay)
        self.state = {"buf": torch.zeros_like(params)} if self.use_momentum else {}

    @torch.no_grad()
    def step(self) -> None:
        g = self.grad
        if self.use_wd:
            g = g.addcmul(self.params, self.weight_decay)
        if self.use_momentum:
            buf = self.state["buf"]
            buf.mul_(self.momentum).add_(g)  # buf starts at 0, so step 1 gives buf = g as in torch
            g = buf
        self.params.addcmul_(g, self.lr, value=-1.0)


class PackedAdam:
    def __init__(self, params: torch.Tensor, grad: torch.Tensor, lr, weight_decay, betas=(0.9, 0.999),
                 eps=1e-8):
        self.params, self.grad = params, grad
        self.lr = _per_member(lr, params.device)
        self.weight_decay = _per_member(weight_decay, params.device)
        self.use_wd = any(w > 0 for w in weight_decay)
        self.betas, self.eps = betas, eps
        self.state = {"step": torch.zeros((), dtype=torch.float64),
                      "m": torch.zeros_like(params), "v": torch.zeros_like(params)}

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        self.state["step"] += 1
        t = float(self.state["step"])
        bias1, bias2_sqrt = 1 - b1**t, (1 - b2**t) ** 0.5
        g = self.grad
        if self.use_wd:
            g = g.addcmul(self.params, self.weight_decay)
        m, v = self.state["m"], self.state["v"]
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = v.sqrt().div_(bias2_sqrt).add_(self.eps)
        self.params.addcdiv_(m * (self.lr / bias1), denom, value=-1.0)


def build_optimizer(name: str, model, members: list[dict]):
    """The packed optimizer for the members' train configs (same optimizer name)."""
    lr = [m["lr"] for m in members]
    wd = [m["weight_decay"] for m in members]
    if name == "sgd":
        return PackedSGD(model.flat, model.grad, lr, [m["momentum"] for m in members], wd)
    if name == "adam":
        return PackedAdam(model.flat, model.grad, lr, wd)
    raise ValueError(f"unknown optimizer {name!r}")
