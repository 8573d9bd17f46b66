"""In-memory batches: the whole split lives as tensors, shuffled with ``randperm``.

Every batch is a :class:`Batch` carrying the *sample indices* it holds, so per-sample state kept
elsewhere (a cache of teacher outputs, say) lines up exactly with the batch even under shuffling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from kdlab.data.mapped import MappedRows
from kdlab.errors import DataError


@dataclass(frozen=True)
class Batch:
    """One batch: inputs, integer labels and, when known, the sample indices in the split."""

    x: Tensor
    y: Tensor
    index: Tensor | None = None


class Loader(Protocol):
    """What the training loop iterates: re-iterable, yields :class:`Batch`, knows its size."""

    def __iter__(self) -> Iterator[Batch]: ...

    def __len__(self) -> int: ...


@dataclass
class Split:
    """One split of a dataset as tensors: ``x`` inputs (uint8 pixels, float features or int64
    token ids) and ``y`` int64 labels. ``uint8`` inputs are image pixels and are scaled to [0, 1]
    float32 per batch, so large image sets stay 4× smaller in memory. ``x`` is a
    :class:`~kdlab.data.mapped.MappedRows` (rows of a memory-mapped array) when the decoded images
    are larger than ``data.max_memory_gb``: indexing it reads the rows into a tensor."""

    x: Tensor | MappedRows
    y: Tensor
    source: Source | None = None
    """Where each row came from, for a model that sees the samples its own way
    (:mod:`kdlab.data.views`): an image folder's files or a text set's raw texts. None: the rows of
    ``x`` are themselves the source (pixels in [0, 1] once scaled, as digits and Fashion-MNIST keep them)."""

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise DataError(f"inputs and labels differ in length ({len(self.x)} vs {len(self.y)})")
        if self.source is not None and len(self.source) != len(self.y):
            raise DataError(f"inputs and their sources differ in length ({len(self.y)} vs {len(self.source)})")

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device), self.source)

    def take(self, idx: Tensor) -> Split:
        """The rows ``idx`` (int64 indices) of inputs, labels and sources, in that order (mapped
        inputs: the indices are composed, nothing is read)."""
        x = self.x.take(idx) if isinstance(self.x, MappedRows) else self.x[idx]
        return Split(x, self.y[idx], None if self.source is None else self.source.take(idx))


class Source(Protocol):
    """The raw origin of a split's rows (file paths, texts), subset together with the rows."""

    def __len__(self) -> int: ...

    def take(self, idx: Tensor) -> Source:
        """The sources of rows ``idx``, in that order."""
        ...


def prepare_inputs(x: Tensor) -> Tensor:
    """uint8 pixels -> float32 in [0, 1]; anything else unchanged."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


class TensorLoader:
    """Batches of an in-memory split, with a seeded order per epoch.

    The order of epoch ``e`` depends only on ``(seed, e)``, so a run resumed at epoch ``e`` (or a
    process holding one shard of it) sees exactly the batches an uninterrupted run would.
    Each pass over the loader advances ``epoch`` by one; set it to choose the next order.

    Args:
        x, y: the split (already on the wanted device, or moved there with ``device``); ``x`` may be
            :class:`~kdlab.data.mapped.MappedRows`, read batch by batch (each batch's rows gathered
            in file order from the map).
        batch_size: samples per batch; the last batch may be smaller unless ``drop_last``.
        shuffle: draw a new permutation each epoch.
        seed: base seed of the permutations.
        device: where the split is stored (moved there once).
        augment: batch augmentation ``(x, generator) -> x`` applied to training batches, drawing from
            a generator seeded by ``(seed, epoch, shard rank)``.
        shard: ``(rank, world)``: in data-parallel training each step's batch of ``batch_size``
            samples is split across ranks and this loader yields rank's part ``batch[rank::world]``
            (a last batch with fewer samples than ranks is dropped).
        batch_device: where batches are sent when it differs from where the split is stored (a split
            too large for the device stays in host memory and is streamed batch by batch).
    """

    def __init__(
        self,
        x: Tensor | MappedRows,
        y: Tensor,
        *,
        batch_size: int = 32,
        shuffle: bool = False,
        seed: int = 0,
        device: torch.device | str | None = None,
        drop_last: bool = False,
        augment: Callable[[Tensor, torch.Generator], Tensor] | None = None,
        shard: tuple[int, int] = (0, 1),
        batch_device: torch.device | str | None = None,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1 (got {batch_size})")
        split = Split(x, y)
        if len(split) == 0:
            raise DataError("cannot iterate an empty split: the dataset has no samples here")
        if device is not None:
            split = split.to(device)
        self.x, self.y = split.x, split.y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.augment = augment
        self.shard = shard
        self.batch_device = torch.device(batch_device) if batch_device is not None else self.x.device
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        return len(self.y)

    @property
    def device(self) -> torch.device:
        return self.x.device

    def order(self, epoch: int) -> Tensor:
        """The sample order of ``epoch`` (a permutation when shuffling, else 0..N-1)."""
        n = self.num_samples
        if not self.shuffle:
            return torch.arange(n, device=self.device)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        # Drawn on the CPU so the order is the same on every device, then moved.
        return torch.randperm(n, generator=gen).to(self.device)

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        short_last = rest == 0 or self.drop_last or rest < self.shard[1]
        return full if short_last else full + 1

    def __iter__(self) -> Iterator[Batch]:
        order = self.order(self.epoch)
        rank, world = self.shard
        gen = None
        if self.augment is not None:
            gen = torch.Generator(device=self.batch_device)
            gen.manual_seed((self.seed * 1_000_003 + self.epoch) * 1_009 + rank + 1)
        self.epoch += 1
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            if world > 1:
                idx = idx[rank::world]
            x, y = self.x[idx], self.y[idx]
            if self.batch_device != self.x.device:
                x, y, idx = (t.to(self.batch_device, non_blocking=True) for t in (x, y, idx))
            x = prepare_inputs(x)
            if gen is not None and self.augment is not None:
                x = self.augment(x, gen)
            yield Batch(x, y, idx)


class IterableLoader:
    """Wraps a DataLoader or any re-iterable of ``(x, y)`` or ``(index, x, y)`` batches."""

    def __init__(self, data: Iterable[Any], device: torch.device | str | None = None) -> None:
        if iter(data) is data:
            raise DataError("data is a one-shot iterator (a generator?): pass a list, a DataLoader or an (X, y) pair")
        self.data = data
        self.device = device

    def __len__(self) -> int:
        try:
            return len(self.data)  # type: ignore[arg-type]
        except TypeError:
            return 0

    def __iter__(self) -> Iterator[Batch]:
        for item in self.data:
            if isinstance(item, Batch):
                x, y, index = item.x, item.y, item.index
            elif isinstance(item, (tuple, list)) and len(item) == 2:
                (x, y), index = item, None
            elif isinstance(item, (tuple, list)) and len(item) == 3:
                index, x, y = item
            else:
                raise DataError("each batch must be (inputs, labels) or (index, inputs, labels)")
            x, y = torch.as_tensor(x), torch.as_tensor(y)
            if self.device is not None:
                x, y = x.to(self.device), y.to(self.device)
                index = None if index is None else torch.as_tensor(index).to(self.device)
            yield Batch(prepare_inputs(x), y.long(), index)


def as_loader(
    data: Any,
    *,
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> Loader:
    """Turn what a user passes as data into a :class:`Loader`.

    Accepts a :class:`TensorLoader` (returned as is), a :class:`Split`, an ``(X, y)`` pair of
    tensors or numpy arrays (batched here, shuffled if asked), a DataLoader, or any re-iterable of
    ``(inputs, labels)`` batches.
    """
    if isinstance(data, TensorLoader):
        return data
    if isinstance(data, Split):
        data = (data.x, data.y)
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(_is_array(a) for a in data):
        x = data[0] if isinstance(data[0], MappedRows) else torch.as_tensor(data[0])
        y = torch.as_tensor(data[1])
        if x.dim() == 0 or y.dim() != 1:
            raise DataError(f"(X, y) must be X [N, ...] and y [N]; got X {tuple(x.shape)}, y {tuple(y.shape)}")
        return TensorLoader(x, y.long(), batch_size=batch_size, shuffle=shuffle, seed=seed, device=device)
    if isinstance(data, Iterable):
        return IterableLoader(data, device=device)
    raise DataError(f"cannot use {type(data).__name__} as data: pass a DataLoader, batches or an (X, y) pair")


def _is_array(a: object) -> bool:
    return isinstance(a, (Tensor, np.ndarray, MappedRows))
