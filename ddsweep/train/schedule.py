"""Learning-rate schedules, per member, as a factor on the member's base lr.

`factor(recipe, step, total_steps)` is the multiplier for the update with 0-based
index `step`:

- constant:      1
- step:          step_factor ** (number of milestones m with step >= m * total_steps)
- cosine:        (1 + cos(pi * min(step, total_steps) / total_steps)) / 2
- inverse_sqrt:  1 / sqrt(1 + floor(step / inv_sqrt_steps))    (Deep Double Descent's SGD:
                 lr0 / sqrt(1 + floor(step / 512)))

times linear warmup min(1, (step + 1) / warmup) when warmup > 0. total_steps is the
horizon in steps (epochs x steps per epoch); a run continued past it (a longer horizon
planned later) stays at the schedule's final value.

`Schedule` turns the factors of a pack into one [steps, K, 1] table per epoch, built
once per epoch on the device, so a step only swaps the optimizer's lr for a row of it.
A pack whose members all train at a constant lr without warmup gets no Schedule at all.
"""

from __future__ import annotations

import math

import torch


def is_constant(recipe: dict) -> bool:
    return recipe["schedule"] == "constant" and not recipe["warmup"]


def factor(recipe: dict, step: int, total_steps: int) -> float:
    """The lr multiplier of update number `step` (0-based) of a run `total_steps` long."""
    kind = recipe["schedule"]
    f = 1.0
    if kind == "step":
        f = recipe["step_factor"] ** sum(step >= m * total_steps for m in recipe["step_milestones"])
    elif kind == "cosine":
        f = 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    elif kind == "inverse_sqrt":
        f = 1.0 / math.sqrt(1 + step // recipe["inv_sqrt_steps"])
    if recipe["warmup"]:
        f *= min(1.0, (step + 1) / recipe["warmup"])
    return f


class Schedule:
    """Per-member lr for every step of an epoch: base lr x factor, as a [steps, K, 1] table."""

    def __init__(self, recipes: list[dict], base_lr: list[float], steps_per_epoch: int, horizon: int,
                 device):
        self.recipes, self.steps_per_epoch, self.device = recipes, steps_per_epoch, device
        self.base = list(base_lr)  # a diverged member's entry is set to 0
        # a horizon-dependent schedule's own horizon is in its recipe; the others never use it
        self.total = [(r["epochs"] or horizon) * steps_per_epoch for r in recipes]

    def lr(self, step: int) -> list[float]:
        """Each member's lr for update `step` (0-based)."""
        return [b * factor(r, step, t) for r, b, t in zip(self.recipes, self.base, self.total)]

    def epoch(self, epoch: int) -> torch.Tensor:
        """The lr table [steps, K, 1] for epoch `epoch` (1-based)."""
        first = (epoch - 1) * self.steps_per_epoch
        rows = [self.lr(first + s) for s in range(self.steps_per_epoch)]
        return torch.tensor(rows, dtype=torch.float32).unsqueeze(-1).to(self.device)
