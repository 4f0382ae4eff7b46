"""Batch augmentation on tensors: random crop with zero padding and horizontal flip, done for
a whole batch at once (one gather, no per-image Python loop). The draws are given, one row per
image (kdforge.train.data.randomness: a function of seed, epoch and sample index)."""

import torch
import torch.nn.functional as F

DRAWS = 3  # per image: vertical shift, horizontal shift, flip


def random_crop_flip(images: torch.Tensor, uniforms: torch.Tensor, padding: int, hflip: bool) -> torch.Tensor:
    """`uniforms` (N, DRAWS) in [0, 1)."""
    n, _, h, w = images.shape
    out = images
    uniforms = uniforms.to(images.device)
    if padding > 0:
        padded = F.pad(images, (padding,) * 4)
        dy = (uniforms[:, 0] * (2 * padding + 1)).long().view(n, 1, 1)
        dx = (uniforms[:, 1] * (2 * padding + 1)).long().view(n, 1, 1)
        rows = (torch.arange(h, device=images.device).view(1, h, 1) + dy).expand(n, h, w)
        cols = (torch.arange(w, device=images.device).view(1, 1, w) + dx).expand(n, h, w)
        batch = torch.arange(n, device=images.device).view(n, 1, 1).expand(n, h, w)
        out = padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
    if hflip:
        flip = uniforms[:, 2] < 0.5
        out = torch.where(flip.view(n, 1, 1, 1), out.flip(3), out)
    return out.contiguous()
