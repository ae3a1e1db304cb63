"""Data augmentation on the device, batched over a pack: random crop with padding + horizontal flip.

torchvision's RandomCrop(32, padding=4) followed by RandomHorizontalFlip(), per image,
but done for a whole pack's batch [K, B, C, H, W] of uint8 images in one gather: output
pixel (r, c) is input pixel (r + dy, c' + dx) with c' = W-1-c when flipped, else c, and
0 (the zero padding) where that falls outside the image.

The random draws are each member's own: per epoch, a member draws one code per
position of its epoch (crop offsets and flip) from its own generator, on the CPU like
its data order, so its augmentations never depend on its pack-mates, and the same seed
gives the same crops and flips. The generator's state is checkpointed with the member.
"""

from __future__ import annotations

import torch

PAD = 4


class CropFlip:
    """Random crop (zero padding `pad`) and horizontal flip, per sample, for a pack."""

    def __init__(self, pad: int = PAD, flip: bool = True):
        self.pad, self.flip = pad, flip
        self.sides = 2 * pad + 1
        self.codes = self.sides * self.sides * (2 if flip else 1)

    def draw(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """One member's codes for an epoch of n samples: int16 [n] (crop offsets and flip, packed)."""
        return torch.randint(0, self.codes, (n,), generator=generator, dtype=torch.int64).to(torch.int16)

    def decode(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """codes -> (dy, dx, flip): offsets in -pad..pad, flip bool."""
        c = codes.long()
        flip = (c % 2).bool() if self.flip else torch.zeros_like(c, dtype=torch.bool)
        c = c // 2 if self.flip else c
        return c // self.sides - self.pad, c % self.sides - self.pad, flip

    def __call__(self, x: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """x [K, B, C, H, W] (any dtype), codes [K, B] -> augmented images, same shape and dtype."""
        K, B, C, H, W = x.shape
        dy, dx, flip = self.decode(codes.to(x.device))
        rows = torch.arange(H, device=x.device)
        cols = torch.arange(W, device=x.device)
        yy = rows + dy[..., None]  # [K, B, H]
        xx = torch.where(flip[..., None], W - 1 - cols, cols) + dx[..., None]  # [K, B, W]
        inside = ((yy >= 0) & (yy < H))[..., :, None] & ((xx >= 0) & (xx < W))[..., None, :]  # [K, B, H, W]
        index = yy.clamp(0, H - 1)[..., :, None] * W + xx.clamp(0, W - 1)[..., None, :]
        out = torch.gather(x.reshape(K * B, C, H * W), 2, index.reshape(K * B, 1, H * W).expand(K * B, C, H * W))
        out = out.view(K, B, C, H, W)
        return out * inside[:, :, None].to(out.dtype)


def augmentation(dataset: dict) -> CropFlip | None:
    """The augmentation a job's dataset config asks for (`augment: true`), or None."""
    return CropFlip() if dataset.get("augment") else None
