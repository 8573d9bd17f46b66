"""Batch-tensor augmentation, seeded per epoch, and the loader's data-parallel shards."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdlab.data.augment import build_augment, random_crop, random_hflip
from kdlab.data.tensors import TensorLoader


def _images(n: int = 64, h: int = 6, w: int = 5) -> torch.Tensor:
    return torch.arange(n * 2 * h * w, dtype=torch.float32).view(n, 2, h, w)


def test_hflip_mirrors_each_sample_or_leaves_it() -> None:
    x = _images()
    out = random_hflip(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, s.flip(-1)) for o, s in zip(out, x, strict=True)]
    kept = [torch.equal(o, s) for o, s in zip(out, x, strict=True)]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))  # exactly one of the two per sample
    assert 16 <= sum(flipped) <= 48  # p = 0.5 over 64 samples
    again = random_hflip(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def test_crop_is_a_shift_within_the_zero_padding() -> None:
    x, p = _images(), 2
    out = random_crop(x, torch.Generator().manual_seed(1), padding=p)
    assert out.shape == x.shape
    padded = F.pad(x, (p, p, p, p))
    offsets = set()
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(2 * p + 1)
            for dx in range(2 * p + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + 6, dx : dx + 5])
        ]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) > 5  # offsets differ from sample to sample


def test_augmenting_loader_is_seeded_per_epoch_and_leaves_labels_and_indices() -> None:
    x = torch.randint(0, 256, (40, 1, 4, 4), dtype=torch.uint8)
    y = torch.arange(40)
    aug = build_augment(hflip=True, crop_padding=1)
    assert build_augment() is None

    def epochs(seed: int) -> list[list[torch.Tensor]]:
        loader = TensorLoader(x, y, batch_size=16, shuffle=True, seed=seed, augment=aug)
        return [[b.x for b in loader] for _ in range(2)]

    a, b = epochs(3), epochs(3)
    assert all(torch.equal(u, v) for ea, eb in zip(a, b, strict=True) for u, v in zip(ea, eb, strict=True))
    assert not torch.equal(torch.cat(a[0]), torch.cat(a[1]))  # epoch 2 draws new augmentations
    plain = TensorLoader(x, y, batch_size=16, shuffle=True, seed=3, augment=aug)
    for batch in plain:
        assert batch.index is not None and torch.equal(batch.y, y[batch.index])
        assert batch.x.dtype == torch.float32 and float(batch.x.max()) <= 1.0


def test_shards_partition_each_global_batch() -> None:
    x, y = torch.arange(70.0).view(70, 1), torch.zeros(70, dtype=torch.long)
    full = TensorLoader(x, y, batch_size=16, shuffle=True, seed=2)
    shards = [TensorLoader(x, y, batch_size=16, shuffle=True, seed=2, shard=(r, 3)) for r in range(3)]
    assert len(full) == 5 and [len(s) for s in shards] == [5, 5, 5]
    for ref, *parts in zip(full, *shards, strict=True):
        assert sorted(torch.cat([p.index for p in parts]).tolist()) == sorted(ref.index.tolist())
        assert [len(p.y) for p in parts] == ([6, 5, 5] if len(ref.y) == 16 else [2, 2, 2])
    # A last batch smaller than the number of ranks is dropped: 65 = 4 × 16 + 1.
    short = TensorLoader(x[:65], y[:65], batch_size=16, shard=(0, 2))
    assert len(short) == 4
