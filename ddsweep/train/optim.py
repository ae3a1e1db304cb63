"""SGD, Adam and LARS over a pack's flat parameters [K, P], with per-member hyperparameters.

Each hyperparameter is a [K, 1] tensor, so members of one pack can differ in lr,
momentum and weight decay. The update rules are torch.optim's (SGD with dampening
0, Adam with L2 weight decay) written out so they broadcast over members; the
whole pack updates in a few elementwise ops. LARS (You et al. 2017) is the paper's
Algorithm 1, per member and per layer tensor (see PackedLARS).
"""

from __future__ import annotations

import torch

from ddsweep.models.protocol import PackedModel


def _per_member(values, device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1)


class PackedSGD:
    """torch.optim.SGD (dampening 0), per member; `nesterov` (per member, default none): the step
    along g + momentum * buf instead of buf, torch's Nesterov rule."""

    def __init__(self, params: torch.Tensor, grad: torch.Tensor, lr, momentum, weight_decay, nesterov=None):
        self.params, self.grad = params, grad
        self.lr = _per_member(lr, params.device)
        self.momentum = _per_member(momentum, params.device)
        self.weight_decay = _per_member(weight_decay, params.device)
        self.use_momentum = any(m > 0 for m in momentum)
        self.use_wd = any(w > 0 for w in weight_decay)
        nesterov = list(nesterov or [False] * len(lr))
        self.use_nesterov = any(nesterov)
        self.nesterov = torch.tensor(nesterov, device=params.device).view(-1, 1)
        self.state = {"buf": torch.zeros_like(params)} if self.use_momentum else {}

    @torch.no_grad()
    def step(self) -> None:
        g = self.grad
        if self.use_wd:
            g = g.addcmul(self.params, self.weight_decay)
        if self.use_momentum:
            buf = self.state["buf"]
            # buf = g + momentum * buf in one pass (buf starts at 0, so step 1 gives buf = g as in torch)
            d = torch.addcmul(g, buf, self.momentum, out=buf)
            if self.use_nesterov:  # Nesterov: g + momentum * buf (the new buf)
                d = torch.where(self.nesterov, g.addcmul(buf, self.momentum), buf)
            g = d
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


class PackedLARS:
    """LARS (You, Gitman, Ginsburg 2017, Algorithm 1), per member and per layer tensor l:

        local_lr = trust * ||w_l|| / (||g_l|| + wd * ||w_l||)     (1 where a norm is 0)
        v_l     <- momentum * v_l + lr * local_lr * (g_l + wd * w_l)
        w_l     <- w_l - v_l

    Every weight matrix and every bias vector is its own layer tensor (the model's `layer_slices()`);
    lr is the global (scheduled) learning rate. Padded entries (0 weight, 0 gradient)
    neither change the norms nor move.
    """

    def __init__(self, params: torch.Tensor, grad: torch.Tensor, slices, lr, momentum, weight_decay, trust):
        self.params, self.grad, self.slices = params, grad, list(slices)
        self.lr = _per_member(lr, params.device)
        self.momentum = _per_member(momentum, params.device)
        self.weight_decay = _per_member(weight_decay, params.device)
        self.trust = _per_member(trust, params.device)
        self.state = {"buf": torch.zeros_like(params)}

    @torch.no_grad()
    def step(self) -> None:
        buf = self.state["buf"]
        for a, b in self.slices:
            w, g, v = self.params[:, a:b], self.grad[:, a:b], buf[:, a:b]
            w_norm = w.norm(dim=1, keepdim=True)
            denom = g.norm(dim=1, keepdim=True) + self.weight_decay * w_norm
            ratio = torch.where((w_norm > 0) & (denom > 0), self.trust * w_norm / denom, torch.ones_like(w_norm))
            v.mul_(self.momentum).add_(g.addcmul(w, self.weight_decay).mul_(self.lr * ratio))
            w.sub_(v)


def build_optimizer(name: str, model: PackedModel, members: list[dict]):
    """The packed optimizer for the members' train configs (same optimizer name)."""
    lr = [m["lr"] for m in members]
    wd = [m["weight_decay"] for m in members]
    if name == "lars":
        return PackedLARS(model.flat, model.grad, model.layer_slices(), lr, [m["momentum"] for m in members], wd,
                          [m.get("trust", 0.001) for m in members])
    if name == "sgd":
        return PackedSGD(model.flat, model.grad, lr, [m["momentum"] for m in members], wd,
                         [bool(m.get("nesterov", False)) for m in members])
    if name == "adam":
        return PackedAdam(model.flat, model.grad, lr, wd)
    raise ValueError(f"unknown optimizer {name!r}")
