"""Batch augmentation on tensors: random crop with zero padding and horizontal flip, done for
a whole batch at once (one gather, no per-image Python loop)."""

import torch
import torch.nn.functional as F


def random_crop_flip(images: torch.Tensor, padding: int, hflip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    n, _, h, w = images.shape
    out = images
    if padding > 0:
        padded = F.pad(images, (padding,) * 4)
        dy = torch.randint(0, 2 * padding + 1, (n, 1, 1), generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (n, 1, 1), generator=generator)
        rows = (torch.arange(h).view(1, h, 1) + dy).expand(n, h, w)
        cols = (torch.arange(w).view(1, 1, w) + dx).expand(n, h, w)
        batch = torch.arange(n).view(n, 1, 1).expand(n, h, w)
        out = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        out = torch.where(flip.view(n, 1, 1, 1), out.flip(3), out)
    return out.contiguous()
