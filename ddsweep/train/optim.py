"""SGD and Adam over stacked parameters, with per-member hyperparameters.

Each hyperparameter is a [K, 1, 1] tensor, so members of one pack can differ in
lr, momentum and weight decay. The update rules are torch.optim's (SGD with
dampening 0, Adam with L2 weight decay), written out so they broadcast over K.
"""

from __future__ import annotations

import torch


def _per_member(values, device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1, 1)


class PackedSGD:
    def __init__(self, params, lr, momentum, weight_decay):
        device = params[0].device
        self.params = params
        self.lr = _per_member(lr, device)
        self.momentum = _per_member(momentum, device)
        self.weight_decay = _per_member(weight_decay, device)
        self.use_momentum = any(m > 0 for m in momentum)
        self.use_wd = any(w > 0 for w in weight_decay)
        self.state = {"buf": [torch.zeros_like(p) for p in params]} if self.use_momentum else {}

    @torch.no_grad()
    def step(self) -> None:
        for i, p in enumerate(self.params):
            g = p.grad
            if self.use_wd:
                g = g.add(p * self.weight_decay)
            if self.use_momentum:
                buf = self.state["buf"][i]
                buf.mul_(self.momentum).add_(g)  # buf starts at 0, so step 1 gives buf = g as in torch
                g = buf
            p.sub_(g * self.lr)


class PackedAdam:
    def __init__(self, params, lr, weight_decay, betas=(0.9, 0.999), eps=1e-8):
        device = params[0].device
        self.params = params
        self.lr = _per_member(lr, device)
        self.weight_decay = _per_member(weight_decay, device)
        self.use_wd = any(w > 0 for w in weight_decay)
        self.betas, self.eps = betas, eps
        self.state = {
            "step": torch.zeros((), dtype=torch.float64),
            "m": [torch.zeros_like(p) for p in params],
            "v": [torch.zeros_like(p) for p in params],
        }

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        self.state["step"] += 1
        t = float(self.state["step"])
        bias1, bias2_sqrt = 1 - b1**t, (1 - b2**t) ** 0.5
        for p, m, v in zip(self.params, self.state["m"], self.state["v"]):
            g = p.grad
            if self.use_wd:
                g = g.add(p * self.weight_decay)
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / bias2_sqrt).add_(self.eps)
            p.sub_(m / denom * (self.lr / bias1))


def build_optimizer(name: str, params, members: list[dict]):
    """The packed optimizer for the members' train configs (same optimizer name)."""
    lr = [m["lr"] for m in members]
    wd = [m["weight_decay"] for m in members]
    if name == "sgd":
        return PackedSGD(params, lr, [m["momentum"] for m in members], wd)
    if name == "adam":
        return PackedAdam(params, lr, wd)
    raise ValueError(f"unknown optimizer {name!r}")
