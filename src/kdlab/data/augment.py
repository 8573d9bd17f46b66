"""Image augmentation as tensor ops on whole batches, on the training device.

Each op takes a float batch ``x [N, C, H, W]`` and a ``torch.Generator`` and draws one random
decision per sample from it, so an epoch's augmentations are fixed by the loader's seed and epoch.
No per-sample Python: a batch of 512 costs a handful of kernel launches.

* :func:`random_hflip` — mirror each image left-right with probability 1/2.
* :func:`random_crop` — zero-pad ``p`` px on every side, then cut an ``H × W`` window at a random
  offset ``(dy, dx) ∈ {0..2p}²``: a random translation by up to ``p`` px, empty border filled with 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Augment = Callable[[Tensor, torch.Generator], Tensor]
"""``(x [N, C, H, W], generator) -> augmented x`` (same shape, dtype and device)."""


def random_hflip(x: Tensor, gen: torch.Generator) -> Tensor:
    """Flip each sample along the width axis with probability 0.5."""
    flip = torch.rand(x.shape[0], device=x.device, generator=gen) < 0.5
    return torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)


def random_crop(x: Tensor, gen: torch.Generator, *, padding: int) -> Tensor:
    """Zero-pad by ``padding`` px per side, then crop back to ``H × W`` at a random offset per sample."""
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=gen)
    dx = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=gen)
    rows = (dy[:, None] + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chans = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, chans, rows, cols]


def build_augment(*, hflip: bool = False, crop_padding: int = 0) -> Augment | None:
    """The batch augmentation for the given settings (crop, then flip), or None when all are off."""
    if not hflip and crop_padding <= 0:
        return None

    def augment(x: Tensor, gen: torch.Generator) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"image augmentation needs [N, C, H, W] batches, got shape {tuple(x.shape)}")
        if crop_padding > 0:
            x = random_crop(x, gen, padding=crop_padding)
        if hflip:
            x = random_hflip(x, gen)
        return x

    return augment
