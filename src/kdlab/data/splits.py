"""Seeded, stratified, non-overlapping splits."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from kdlab.errors import DataError


def stratified_split(
    labels: np.ndarray, fractions: tuple[float, ...], *, seed: int, what: str = "dataset"
) -> list[np.ndarray]:
    """Split sample indices into parts with the given fractions, stratified by label.

    Args:
        labels: ``[N]`` integer labels.
        fractions: one fraction per part, summing to 1 (e.g. ``(0.8, 0.1, 0.1)``).
        seed: fixes the split.
        what: named in error messages.

    Returns:
        One sorted index array per part; together they cover 0..N-1 exactly once.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if not np.isclose(sum(fractions), 1.0) or any(f < 0 for f in fractions):
        raise DataError(f"{what}: split fractions {fractions} must be >= 0 and sum to 1")
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise DataError(f"{what}: needs at least 2 classes to classify (found {len(classes)})")
    parts: list[np.ndarray] = []
    rest = np.arange(n)
    remaining = 1.0
    for i, frac in enumerate(fractions[:-1]):
        share = frac / remaining if remaining > 0 else 0.0
        if share <= 0:
            parts.append(np.array([], dtype=np.int64))
            continue
        if share >= 1:
            parts.append(np.sort(rest))
            rest = np.array([], dtype=np.int64)
            continue
        try:
            take, rest = train_test_split(
                rest, train_size=share, random_state=(seed + i) % 2**32, stratify=labels[rest], shuffle=True
            )
        except ValueError as e:
            smallest = classes[np.argmin(counts)]
            raise DataError(
                f"{what}: cannot split {n} samples {fractions} stratified by class (class {smallest} has "
                f"{counts.min()} samples): add samples or change the split fractions ({e})"
            ) from None
        parts.append(np.sort(take))
        remaining -= frac
    parts.append(np.sort(rest))
    check_disjoint(parts, n)
    return parts


def check_disjoint(parts: list[np.ndarray], n: int) -> None:
    """Raise if the parts overlap or do not cover 0..n-1 exactly once (a leak guard)."""
    allidx = np.concatenate(parts) if parts else np.array([], dtype=np.int64)
    if len(allidx) != n or len(np.unique(allidx)) != n:
        raise AssertionError("split parts overlap or miss samples")
