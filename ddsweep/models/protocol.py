"""What the training loop, the optimizers and the checkpoints ask of a packed model.

A packed model trains K independent members at once: member k's parameters are row
k of `flat`, and nothing a member computes depends on the other rows. PackedMLP
(ddsweep.models.mlp) and the conv nets (ddsweep.models.conv: PackedMCNN,
PackedPreActResNet18) and the Transformer (ddsweep.models.transformer) implement it; a new model does too, and the loop then needs
no change. Imports no torch at run time (ddsweep.models is read when planning).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch


@runtime_checkable
class PackedModel(Protocol):
    members: int  # K
    width: int  # the width the pack trains at (a member may be narrower: its extra units stay zero)
    flat: torch.Tensor  # [K, P]: every parameter of each member, one row per member
    grad: torch.Tensor  # [K, P]: written by loss_and_grad, stepped by the optimizers
    # Version of the layout of `flat`'s rows, kept in checkpoints so that one of another
    # layout is not resumed as if it were this one; None: the parameter tensors in order.
    LAYOUT: int | None
    # True for models with BatchNorm: evaluation (train(False)) then uses running statistics,
    # a different function from the one trained, so the loop measures no grad_norm there.
    has_running_stats: bool
    # [K, Q] running statistics, one row per member (a copy; assign to restore), or None.
    buffers: torch.Tensor | None

    @property
    def eval_chunk(self) -> int:
        """Samples per member in one evaluation forward pass (a function of the model, not the pack-mates)."""
        ...

    def init_member(self, k: int, generator: torch.Generator, width: int | None = None) -> None:
        """Initialize member k as the plain model of `width` (default: the pack's) would be."""
        ...

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [K, B, ...] -> logits [K, B, classes]."""
        ...

    def loss_and_grad(self, x: torch.Tensor, y: torch.Tensor, loss: str,
                      with_loss: bool = True) -> torch.Tensor | None:
        """Write each member's mean-loss gradient into `grad`; its [K] losses if `with_loss` (else may be None)."""
        ...

    def train(self, mode: bool = True) -> PackedModel:
        """Training (True) or evaluation mode; a no-op for models without running statistics."""
        ...

    def reset_stats(self, k: int) -> None:
        """Member k's running statistics back to their initial values (no-op without any)."""
        ...

    def layer_slices(self) -> list[tuple[int, int]]:
        """Column ranges [a, b) of `flat` holding each parameter tensor of a member (for LARS)."""
        ...

    def configure(self, recipes: list[dict]) -> None:
        """Per-member settings the model applies itself, from each member's training recipe (the
        transformer's label smoothing); a no-op for models without such."""
        ...

    def token_metrics(self, x: torch.Tensor) -> torch.Tensor | None:
        """Text models, whose rows x [K, N, ...] are sentence pairs: [K, 3] per member, the summed token
        cross-entropy (no smoothing), the wrongly predicted tokens and the tokens. None for the
        classification models, which the loop evaluates from their logits."""
        ...

    def flops_per_sample(self) -> int:
        """Multiply-adds x 2 of one forward pass of one member (at the pack's width)."""
        ...
