"""Per-step knobs on a pack's gradient: flooding, the gradient-norm penalty, clipping.

After ddsweep.train.passes has written the batch gradient g of each member into `model.grad`
[K, P] (and, where a member has a penalty, the Hessian-vector product H g), `StepKnobs.apply`
turns it into the direction the optimizer steps along, member by member (each member's own flood
level, penalty strength and clipping norm as [K, 1] tensors; a member with a knob at 0 is left
exactly as it was):

1. Gradient penalty (Geiping et al. 2021, their forward-difference form). With
   strength a and the step's lr eta, the direction gets a * eta / 4 * H g added, H the
   Hessian of the batch loss L. H g is the gradient of ||g||^2 / 2, taken by one
   extra forward/backward at a point a fixed distance r = FD_RADIUS along g:
       H g ~ (g(theta + e g) - g(theta)) / e,    e = r / ||g||.
   So the step descends L + (a * eta / 8) * ||grad L||^2, exactly Geiping et al.'s
   update (their code adds eta / 4 * a * H g; they use a = 0.5; eta / 4 is the size of
   SGD's implicit regulariser in Smith et al. 2021). r = 1e-3 (Geiping et al.: 1e-2 on
   ResNets): on these small MLPs a step of 1e-2 often crosses a ReLU kink, where the
   difference quotient is no Hessian-vector product; at 1e-3 it matches autograd's
   double backward to about 0.05% in float32 (tests/test_knobs.py asserts < 1%).
   With `penalty_block: B` the penalty is Geiping et al.'s: the mean over blocks of B
   samples of each block's ||grad L_j||^2, H g the mean of the blocks' H_j g_j, each by its
   own difference (ddsweep.train.passes); 0 takes it over the step's whole batch. A
   model's BatchNorm running statistics are put back after the extra forwards.
2. Flooding (Ishida et al. 2020): the objective |L - b| + b has gradient sign(L - b) g,
   so a member whose mini-batch loss is below its flood level b steps uphill (gradient
   ascent) on that step. The penalty term is not flipped (||grad |L - b| || = ||g||).
3. Clipping: the resulting direction d of each member is scaled by
   min(1, c / (||d|| + 1e-6)), c its grad_clip (torch.nn.utils.clip_grad_norm_'s rule,
   over all of the member's parameters: one global 2-norm per member).

Weight decay is added afterwards by the optimizer, so it is neither clipped nor
flipped. Zero entries of g (a padded unit's weights) stay zero through all three.

Per epoch it counts, per member, the steps with L < b (ascent_fraction), the steps
clipped (clip_rate) and the mean flooded objective |L - b| + b (flooded_loss).
"""

from __future__ import annotations

import torch

from ddsweep.models.protocol import PackedModel
from ddsweep.train.passes import FD_RADIUS

CLIP_EPS = 1e-6


def _column(values, device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1)


class StepKnobs:
    def __init__(self, recipes: list[dict], device):
        self.flood_on = any(r["flood"] > 0 for r in recipes)
        self.penalty_on = any(r["grad_penalty"] > 0 for r in recipes)
        self.clip_on = any(r["grad_clip"] > 0 for r in recipes)
        self.active = self.flood_on or self.penalty_on or self.clip_on
        self.has = {"flood": [r["flood"] > 0 for r in recipes], "clip": [r["grad_clip"] > 0 for r in recipes]}
        self.flood = _column([r["flood"] for r in recipes], device)[:, 0]  # [K]
        self.strength = _column([r["grad_penalty"] for r in recipes], device)
        # the members whose penalty term ddsweep.train.passes computes (None: no member has one)
        self.penalty = self.strength > 0 if self.penalty_on else None
        # no clipping is clipping at infinity: the factor is exactly 1
        self.clip = _column([r["grad_clip"] if r["grad_clip"] > 0 else float("inf") for r in recipes], device)
        K = len(recipes)
        self.ascents = torch.zeros(K, device=device)
        self.clipped = torch.zeros(K, device=device)
        self.flooded = torch.zeros(K, device=device)
        self.steps = 0

    def start_epoch(self) -> None:
        if self.active:
            self.ascents.zero_()
            self.clipped.zero_()
            self.flooded.zero_()
        self.steps = 0

    @torch.no_grad()
    def apply(self, model: PackedModel, loss: torch.Tensor, hg, lr: torch.Tensor) -> None:
        """Turn model.grad (the batch gradients g, losses `loss` [K], the penalty's term (diff, norm)
        with H g ~ diff * norm / FD_RADIUS, from ddsweep.train.passes) into the step directions."""
        g = model.grad
        self.steps += 1
        if self.penalty_on:
            diff, norm = hg
            # d = g + a * eta / 4 * H g; the coefficient is exactly 0 without a penalty
            coef = torch.where(self.penalty, self.strength * lr * 0.25 * norm / FD_RADIUS, torch.zeros_like(norm))
            d = diff.mul_(coef).add_(g)
            if self.flood_on:  # flip only the loss gradient: d = s g + (penalty term)
                below = loss < self.flood
                d.sub_(g * (2.0 * below.to(g.dtype)).unsqueeze(1))
            g.copy_(d)
        elif self.flood_on:
            below = loss < self.flood
            g.mul_(torch.where(below, -1.0, 1.0).to(g.dtype).unsqueeze(1))
        if self.flood_on:
            self.ascents += below
            self.flooded += (loss - self.flood).abs() + self.flood
        if self.clip_on:
            norm = g.norm(dim=1, keepdim=True)
            g.mul_((self.clip / (norm + CLIP_EPS)).clamp(max=1.0))
            self.clipped += (norm > self.clip)[:, 0]

    def epoch_stats(self) -> list[dict]:
        """Per member: ascent_fraction, flooded_loss, clip_rate over the epoch's steps (None where off)."""
        K = len(self.has["flood"])
        if not self.steps or not self.active:
            return [{} for _ in range(K)]
        s = float(self.steps)
        asc, fl, cl = (self.ascents / s).tolist(), (self.flooded / s).tolist(), (self.clipped / s).tolist()
        out = []
        for k in range(K):
            row = {}
            if self.has["flood"][k]:
                row["ascent_fraction"], row["flooded_loss"] = asc[k], fl[k]
            if self.has["clip"][k]:
                row["clip_rate"] = cl[k]
            out.append(row)
        return out
