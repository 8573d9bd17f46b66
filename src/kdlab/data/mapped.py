"""Rows of a memory-mapped uint8 array: image data larger than the host-memory budget.

An image folder whose decoded array is larger than ``data.max_memory_gb`` is not loaded: its
``.npy`` cache is opened with ``np.load(mmap_mode="r")`` and every split holds a
:class:`MappedRows`, row indices into the one mapped array, instead of a copy. Indexing it with a
tensor of indices or a slice gathers those rows (sorted, so the reads go forward through the file)
into an ordinary tensor; :meth:`MappedRows.take` composes indices without reading anything. Rows
written here (:func:`write_rows`: a join of splits, a model's float32 view over the budget) are
mapped the same way from a temporary file that is unlinked once mapped.

Resident memory stays bounded: the rows read are copied out of the map, and after every
:data:`RELEASE_BYTES` read through one array its pages are dropped from this process
(``madvise(MADV_DONTNEED)``; they stay in the kernel's page cache, so a second epoch reads them
from RAM when the machine has it, from disk when not). The mapped pages a process holds are at
most ``RELEASE_BYTES`` plus one read.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

RELEASE_BYTES = 64 * 2**20
"""Bytes read through one mapped array after which its pages are dropped from this process."""
CHUNK_BYTES = 32 * 2**20
"""Bytes per read when a mapped split is copied whole (to a device, into a new file)."""


class _MapState:
    """One mapped array shared by every :class:`MappedRows` taken from it, and the bytes read since
    its pages were last dropped."""

    def __init__(self, array: np.memmap, path: Path | None) -> None:
        self.map = array
        self.array = np.asarray(array)  # a plain ndarray view of the mapping (indexing returns ndarrays)
        self.path = path
        self.row_bytes = int(np.prod(array.shape[1:], dtype=np.int64)) * array.itemsize
        self.read_since_release = 0

    def read(self, nbytes: int) -> None:
        self.read_since_release += nbytes
        if self.read_since_release >= RELEASE_BYTES:
            self.release()

    def release(self) -> None:
        """Drop the mapped pages from this process (they stay in the page cache)."""
        self.read_since_release = 0
        mm = getattr(self.map, "_mmap", None)
        if isinstance(mm, mmap.mmap) and hasattr(mm, "madvise"):
            with contextlib.suppress(OSError, ValueError):
                mm.madvise(mmap.MADV_DONTNEED)


@dataclass(frozen=True)
class MappedRows:
    """Rows ``rows`` of a memory-mapped array ``[M, ...]``, used where a split holds its inputs.

    Behaves like the CPU tensor ``torch.from_numpy(array)[rows]`` for what kdlab asks of a split's
    inputs: ``len``, ``shape``, ``dtype``, ``device``, ``dim()``, ``numel()``, ``element_size()``,
    ``x[index_tensor]`` / ``x[slice]`` / ``x[int]`` (a new tensor read from the map), ``take`` (new
    indices, nothing read) and ``to(device)`` (stays mapped on the CPU; a copy on another device).
    """

    state: _MapState
    rows: Tensor

    @classmethod
    def open(cls, path: Path) -> MappedRows:
        """Every row of the ``.npy`` file ``path``, memory-mapped read-only."""
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        return cls.of(arr, path)

    @classmethod
    def of(cls, array: np.memmap, path: Path | None = None) -> MappedRows:
        """Every row of an already mapped array."""
        return cls(_MapState(array, path), torch.arange(len(array)))

    # ------------------------------------------------------------------ tensor-like facts
    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.rows), *self.state.array.shape[1:]))

    @property
    def dtype(self) -> torch.dtype:
        return torch.from_numpy(np.empty(0, dtype=self.state.array.dtype)).dtype

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    @property
    def path(self) -> Path | None:
        """The mapped file (it may have been unlinked once mapped: a temporary file); None when unknown."""
        return self.state.path

    def dim(self) -> int:
        return self.state.array.ndim

    def numel(self) -> int:
        return len(self.rows) * int(np.prod(self.state.array.shape[1:], dtype=np.int64))

    def element_size(self) -> int:
        return int(self.state.array.itemsize)

    @property
    def nbytes(self) -> int:
        return len(self.rows) * self.state.row_bytes

    # ------------------------------------------------------------------ reading
    def take(self, idx: Tensor) -> MappedRows:
        """Rows ``idx`` of these rows (indices composed; nothing is read)."""
        return MappedRows(self.state, self.rows[idx.to("cpu")])

    def __getitem__(self, key: Tensor | slice | int | Sequence[int]) -> Tensor:
        """The rows ``key`` selects (index tensor, slice or int), read into a new CPU tensor."""
        if isinstance(key, int):
            return self._gather(self.rows[key : key + 1 if key != -1 else None])[0]
        if isinstance(key, slice):
            return self._gather(self.rows[key])
        return self._gather(self.rows[torch.as_tensor(key).to("cpu")])

    def _gather(self, rows: Tensor) -> Tensor:
        arr = self.state.array
        n = len(rows)
        if n == 0:
            return torch.from_numpy(np.empty((0, *arr.shape[1:]), dtype=arr.dtype))
        first, last = int(rows[0]), int(rows[-1])
        if last - first + 1 == n and (n == 1 or bool((rows[1:] - rows[:-1] == 1).all())):
            out = np.array(arr[first : last + 1])  # consecutive rows: one forward read
        elif bool((rows[1:] > rows[:-1]).all()):
            out = np.take(arr, rows.numpy(), axis=0)  # ascending: one forward read, one copy
        else:
            ordered, perm = torch.sort(rows)
            got = arr[ordered.numpy()]  # a sorted gather reads the file front to back
            out = np.empty_like(got)
            out[perm.numpy()] = got
        self.state.read(n * self.state.row_bytes)
        return torch.from_numpy(out)

    def chunks(self, chunk_bytes: int = CHUNK_BYTES) -> Any:
        """``(start, tensor)`` of consecutive row blocks of about ``chunk_bytes`` each, in row order."""
        step = max(1, chunk_bytes // max(1, self.state.row_bytes))
        for i in range(0, len(self), step):
            yield i, self[i : i + step]

    def materialise(self, device: torch.device | str = "cpu", dtype: torch.dtype | None = None) -> Tensor:
        """All these rows as one tensor on ``device`` (read in :data:`CHUNK_BYTES` blocks)."""
        out = torch.empty(tuple(self.shape), dtype=dtype or self.dtype, device=device)
        rows = self.rows.numpy()
        if out.device.type == "cpu" and out.dtype == self.dtype and bool((rows[1:] > rows[:-1]).all()):
            self._copy_ascending(rows, out.numpy())
            return out
        for i, part in self.chunks():
            out[i : i + len(part)] = part.to(device=device, dtype=out.dtype)
        return out

    def _copy_ascending(self, rows: np.ndarray, dst: np.ndarray) -> None:
        """Rows ``rows`` (ascending, a split's) copied from the map straight into ``dst``, in blocks of
        :data:`CHUNK_BYTES` spread over one thread per usable core (``np.take`` releases the GIL;
        most of the time is the kernel giving ``dst`` its fresh pages, which threads share out)."""
        from concurrent.futures import ThreadPoolExecutor

        from kdlab.data.memory import usable_cores

        step = max(1, CHUNK_BYTES // max(1, self.state.row_bytes))
        blocks = [slice(i, i + step) for i in range(0, len(rows), step)]

        def copy(block: slice) -> int:
            np.take(self.state.array, rows[block], axis=0, out=dst[block], mode="clip")
            return len(rows[block]) * self.state.row_bytes

        threads = min(usable_cores(), len(blocks))
        if threads <= 1:
            for block in blocks:
                self.state.read(copy(block))
            return
        with ThreadPoolExecutor(threads) as pool:
            for nbytes in pool.map(copy, blocks):
                self.state.read(nbytes)  # dropping the pages under a reader is safe: it faults them in again

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None, **_: Any) -> Any:
        """Itself on the CPU (still mapped); on another device, or as another dtype, a copy there."""
        same_dtype = dtype is None or dtype == self.dtype
        if (device is None or torch.device(device).type == "cpu") and same_dtype:
            return self
        return self.materialise(device if device is not None else "cpu", dtype)

    def __repr__(self) -> str:
        return f"MappedRows({len(self)} of {len(self.state.array)} rows, {tuple(self.shape)}, file={self.path})"


def concat(a: Tensor | MappedRows, b: Tensor | MappedRows) -> MappedRows:
    """Rows of ``a`` followed by rows of ``b``, mapped: indices composed when both are rows of one
    mapped array, else the rows are copied block by block into a new mapped file (next to ``a``'s
    file, or in the temporary folder) that is unlinked once mapped, so nothing is left behind."""
    if isinstance(a, MappedRows) and isinstance(b, MappedRows) and a.state is b.state:
        return MappedRows(a.state, torch.cat([a.rows, b.rows]))
    if tuple(a.shape[1:]) != tuple(b.shape[1:]):
        raise ValueError(f"cannot join rows of shape {tuple(a.shape[1:])} and {tuple(b.shape[1:])}")
    folder = a.path.parent if isinstance(a, MappedRows) and a.path is not None else Path(tempfile.gettempdir())
    blocks = (
        block
        for part in (a, b)
        for _, block in (part.chunks() if isinstance(part, MappedRows) else _tensor_chunks(part))
    )
    return write_rows((len(a) + len(b), *a.shape[1:]), a.dtype, blocks, folder)


def write_rows(shape: Sequence[int], dtype: torch.dtype, blocks: Iterable[Tensor], folder: Path) -> MappedRows:
    """Every row of ``shape`` (``[M, ...]`` of ``dtype``), written from ``blocks`` (consecutive row
    blocks, in row order, ``M`` rows in all) into a new ``.npy`` file in ``folder``
    (``numpy.lib.format.open_memmap``), mapped read-only and unlinked once mapped: nothing is left
    behind, and the mapping reads the rows until it is closed. The pages written are dropped from
    this process after every :data:`RELEASE_BYTES` (they stay in the page cache), so writing holds
    about one block plus ``RELEASE_BYTES``. Raises OSError when ``folder`` cannot hold the file,
    ValueError when the blocks are not ``M`` rows of the shape."""
    np_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    fd, name = tempfile.mkstemp(prefix=".kdlab-rows-", suffix=".npy", dir=folder)
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(name, mode="w+", dtype=np_dtype, shape=tuple(shape))
        reserve(Path(name), int(out.offset) + out.nbytes)
        writing = _MapState(out, None)
        at = 0
        for block in blocks:
            if at + len(block) > len(out) or tuple(block.shape[1:]) != tuple(out.shape[1:]):
                raise ValueError(f"a block of shape {tuple(block.shape)} does not fit at row {at} of {tuple(shape)}")
            out[at : at + len(block)] = block.to("cpu", dtype).numpy()
            at += len(block)
            writing.read(len(block) * writing.row_bytes)  # written pages dropped like read ones (still cached)
        if at != len(out):
            raise ValueError(f"{at} rows written of {len(out)}")
        out.flush()
        del writing, out
        mapped = np.load(name, mmap_mode="r", allow_pickle=False)
    finally:
        Path(name).unlink(missing_ok=True)  # the mapping keeps the data until it is closed
    return MappedRows.of(mapped, None)


def reserve(path: Path, nbytes: int) -> None:
    """The file's first ``nbytes`` reserved on disk before it is written (``posix_fallocate``).

    A new file is sparse, and every first write into it also allocates its blocks: on ext4 that made
    writing a decoded image's row about 9× dearer (260 against 30 µs per 224 px row on the development
    machine). Reserved first, a full disk raises OSError here, before anything is decoded or written
    through a map (where it would be a fault). A file system without the call is left sparse."""
    fallocate = getattr(os, "posix_fallocate", None)
    if fallocate is None or nbytes <= 0:
        return
    fd = os.open(path, os.O_RDWR)
    try:
        fallocate(fd, 0, nbytes)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP)):
            raise
    finally:
        os.close(fd)


def _tensor_chunks(x: Tensor) -> Any:
    row = max(1, x[0].numel() * x.element_size()) if len(x) else 1
    step = max(1, CHUNK_BYTES // row)
    for i in range(0, len(x), step):
        yield i, x[i : i + step]
