"""Small data for the tests of per-model views: image folders of PNG / JPEG files and a review CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_images(root: Path, n_per_class: int = 12, size: int = 20) -> Path:
    """Small RGB PNG / JPEG files in two class folders: class a bright on the left, b on the right."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label, side in (("a", 0), ("b", 1)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            arr = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
            arr[:, side * size // 2 : (side + 1) * size // 2] += 150
            suffix = "png" if i % 2 else "jpg"
            Image.fromarray(arr).save(root / label / f"{i:02d}.{suffix}")
    return root


def write_csv(path: Path, n: int = 60) -> Path:
    from text_corpus import reviews, write_table

    return write_table(path, reviews(n))
