"""A training step's gradient, pass by pass: gradient accumulation and the penalty over blocks.

`model.loss_and_grad` writes the gradient of each member's *mean* loss over the samples it is
given. A step's batch of b samples may be taken in passes of m samples (`micro_batch`, or
`penalty_block`), the last one shorter where m does not divide b: the batch's mean loss is
sum_i (m_i / b) x (mean loss of pass i), so its gradient is the same weighted sum of the passes'
gradients, accumulated here into `model.grad` before the step's one optimizer update. Without
BatchNorm that is the full-batch gradient (to float rounding; tests/test_passes.py). A model with
BatchNorm normalises each pass with that pass's own statistics, and its running statistics move
once per pass: a split step is another function there (as in Geiping et al., whose full batch is
accumulated from 128-sample batches), which is why a split is part of the job's config.

The gradient penalty (ddsweep.train.knobs) needs H g, the gradient of ||g||^2 / 2, by the forward
difference H g ~ (g(theta + e g) - g(theta)) / e, e = FD_RADIUS / ||g||:
- penalty_block 0: g is the whole batch's gradient; one more round of passes at theta + e g;
- penalty_block B: the mean over blocks j of B samples (weighted by size) of H_j g_j, the gradient
  of the mean over blocks of ||g_j||^2 / 2, each by its own difference (Geiping et al.'s form):
  per block, its gradient g_j at theta, then at theta + e_j g_j. The blocks' gradients sum to the
  batch's, so a block penalty costs two passes per block and nothing more.
The difference quotient is taken only for members with a penalty (`penalty` [K, 1]); the others'
point is not moved (e = 0). BatchNorm running statistics are put back after each probe pass.
"""

from __future__ import annotations

from typing import Callable

import torch

from ddsweep.models.protocol import PackedModel

FD_RADIUS = 1e-3  # length of the finite-difference step along g, in parameter space (see knobs)


class StepPasses:
    """The gradient of a pack's step: `gradient(...)` fills model.grad with each member's
    full-batch gradient, taking the batch in passes of `samples` (blocks of the penalty where `blocks`)."""

    def __init__(self, model: PackedModel, loss_name: str, samples: int | None = None, blocks: bool = False,
                 augment: Callable | None = None):
        self.model, self.loss_name, self.augment = model, loss_name, augment
        self.samples, self.blocks = samples, blocks
        self._buffers: dict[str, torch.Tensor] = {}

    def _buffer(self, name: str) -> torch.Tensor:
        """A [K, P] work tensor, allocated at first use (a step that never splits allocates none)."""
        if name not in self._buffers:
            self._buffers[name] = torch.zeros_like(self.model.grad)
        return self._buffers[name]

    def _pass(self, xb, yb, codes, a: int, z: int, with_loss: bool):
        """model.grad <- the gradient of samples a:z of the batch (augmented here, per pass)."""
        x = xb[:, a:z]
        if self.augment is not None:
            x = self.augment(x, codes[:, a:z])
        return self.model.loss_and_grad(x, yb[:, a:z], self.loss_name, with_loss=with_loss)

    def gradient(self, xb, yb, codes=None, with_loss: bool = False, penalty: torch.Tensor | None = None):
        """Fill model.grad with the gradient of each member's mean loss over its batch xb [K, b, ...].

        Returns (losses [K] or None unless `with_loss`, the penalty's term or None unless `penalty`, a
        [K, 1] bool mask of the members whose term is wanted). The term is a pair (diff [K, P], norm
        [K, 1]) with H g ~ diff * norm / FD_RADIUS: for the whole batch diff = g(theta + e g) - g(theta)
        and norm = ||g|| (kept apart so the knobs scale it in the order they always did: the same
        bits as before blocks existed); for blocks diff = sum_j w_j ||g_j|| (g_j' - g_j), norm = 1. (Not under no_grad: the conv models'
        loss_and_grad runs autograd.)"""
        b = xb.shape[1]
        if penalty is not None and self.blocks and self.samples < b:
            return self._blocks(xb, yb, codes, penalty)
        loss = self._accumulate(xb, yb, codes, with_loss)
        if penalty is None:
            return loss, None
        # the whole batch's penalty: one more round of passes at theta + e g
        g0 = self._buffer("g0")
        g0.copy_(self.model.grad)
        e, norm = _radius(g0, penalty)
        with _probe_point(self.model, g0, e):
            self._accumulate(xb, yb, codes, with_loss=False)  # g(theta + e g) into model.grad
        diff = self.model.grad - g0
        self.model.grad.copy_(g0)
        return loss, (diff, norm)

    def _accumulate(self, xb, yb, codes, with_loss: bool):
        """model.grad <- the batch's gradient: one pass, or the passes' gradients weighted by size."""
        b = xb.shape[1]
        m = self.samples or b
        if m >= b:  # no split: exactly the unsplit step
            return self._pass(xb, yb, codes, 0, b, with_loss)
        total = self._buffer("total")
        total.zero_()
        loss = None
        for a in range(0, b, m):
            z = min(a + m, b)
            part = self._pass(xb, yb, codes, a, z, with_loss)
            total.add_(self.model.grad, alpha=(z - a) / b)  # sync point: none (device-side accumulation)
            if with_loss:
                loss = part * ((z - a) / b) if loss is None else loss.add_(part, alpha=(z - a) / b)
        self.model.grad.copy_(total)
        return loss

    def _blocks(self, xb, yb, codes, penalty):
        """The penalty over blocks of `samples`: per block its gradient g_j and g_j at theta + e_j g_j.
        model.grad <- sum_j w_j g_j (the batch's gradient); returns (losses, sum_j w_j H_j g_j)."""
        b, m = xb.shape[1], self.samples
        total, hg, gj = self._buffer("total"), self._buffer("hg"), self._buffer("g0")
        total.zero_()
        hg.zero_()
        loss = None
        for a in range(0, b, m):
            z = min(a + m, b)
            w = (z - a) / b
            part = self._pass(xb, yb, codes, a, z, with_loss=True)
            loss = part * w if loss is None else loss.add_(part, alpha=w)
            gj.copy_(self.model.grad)
            total.add_(gj, alpha=w)
            e, norm = _radius(gj, penalty)
            with _probe_point(self.model, gj, e):
                self._pass(xb, yb, codes, a, z, with_loss=False)  # g_j(theta + e_j g_j)
            hg.add_((self.model.grad - gj).mul_(norm * w))
        self.model.grad.copy_(total)
        return loss, (hg.clone(), torch.ones_like(total[:, :1]))


def _radius(g: torch.Tensor, penalty: torch.Tensor):
    """(e [K, 1]: FD_RADIUS / ||g|| for members with a penalty, 0 for the others; ||g|| [K, 1])."""
    norm = g.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return torch.where(penalty, FD_RADIUS / norm, torch.zeros_like(norm)), norm


class _probe_point:
    """Within: the model's parameters at theta + e g; after: theta and the BatchNorm running
    statistics exactly as before (a probe pass must not move them)."""

    def __init__(self, model: PackedModel, g: torch.Tensor, e: torch.Tensor):
        self.model, self.g, self.e = model, g, e

    def __enter__(self):
        self.theta = self.model.flat.clone()
        self.stats = self.model.buffers
        self.model.flat.add_(self.g * self.e)

    def __exit__(self, *exc):
        self.model.flat.copy_(self.theta)
        if self.stats is not None:
            self.model.buffers = self.stats
        return False
