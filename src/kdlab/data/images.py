"""Image datasets: scikit-learn's digits, Fashion-MNIST IDX files, and folders of image files.

All return uint8 or float32 tensors in ``(N, C, H, W)`` layout; uint8 pixels are scaled to [0, 1]
per batch by the loader. Image folders are decoded once with Pillow into a uint8 array cache.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import math
import os
import struct
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdlab.config.schema import DataConfig
from kdlab.data.bundle import DATASETS, DataBundle, three_way, train_val
from kdlab.data.decode import decode_image
from kdlab.data.files import open_regular, shorten
from kdlab.data.mapped import MappedRows, reserve
from kdlab.data.memory import GB, check_disk, usable_cores
from kdlab.data.tensors import Split
from kdlab.errors import DataError
from kdlab.io import atomic_write_text

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


@DATASETS.register("digits")
def load_digits(cfg: DataConfig, seed: int) -> DataBundle:
    """scikit-learn's bundled 8×8 handwritten digits (1,797 images, 10 classes; no download)."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    # Pixel values are 0..16 in this set; scale to [0, 1] like the other image sets.
    x = torch.from_numpy((d.images / 16.0).astype(np.float32)).unsqueeze(1)
    train, val, test = three_way(x, d.target, cfg, seed, "digits")
    return DataBundle("digits", train, val, test, [str(c) for c in range(10)], (1, 8, 8), {"source": "sklearn"})


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(cfg: DataConfig, seed: int) -> DataBundle:
    """Fashion-MNIST from its IDX ``.gz`` files: 60,000 train (val split off it), 10,000 test."""
    root = Path(cfg.path) if cfg.path is not None else FASHION_MNIST_DIR
    files = {
        "train_x": "train-images-idx3-ubyte",
        "train_y": "train-labels-idx1-ubyte",
        "test_x": "t10k-images-idx3-ubyte",
        "test_y": "t10k-labels-idx1-ubyte",
    }
    found = {k: _find_idx(root, stem) for k, stem in files.items()}
    missing = [files[k] for k, p in found.items() if p is None]
    if missing:
        raise DataError(
            f"data.path: Fashion-MNIST files not found in {root} (missing {', '.join(missing)}[.gz]); "
            "install them with `apt-get install dataset-fashion-mnist` or set data.path to a folder holding them"
        )
    arrays = {k: read_idx(p) for k, p in found.items() if p is not None}
    if (
        arrays["train_x"].shape[0] != arrays["train_y"].shape[0]
        or arrays["test_x"].shape[0] != arrays["test_y"].shape[0]
    ):
        raise DataError(f"data.path: Fashion-MNIST images and labels in {root} differ in count")
    x_pool = torch.from_numpy(arrays["train_x"]).unsqueeze(1)
    train, val = train_val(x_pool, arrays["train_y"].astype(np.int64), cfg, seed, "fashion-mnist")
    test = Split(torch.from_numpy(arrays["test_x"]).unsqueeze(1), torch.from_numpy(arrays["test_y"].astype(np.int64)))
    return DataBundle("fashion-mnist", train, val, test, list(FASHION_CLASSES), (1, 28, 28), {"source": str(root)})


def _find_idx(root: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (root / name).is_file():
            return root / name
    return None


MAX_IDX_VALUES = 2**31
"""The most values an IDX file may claim (2 Gi bytes; Fashion-MNIST's largest holds 47 M, EMNIST's 0.55 G):
a header claiming more is refused before anything is allocated, so a small gzip cannot inflate into GBs."""


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes into an array of its shape.

    Bounded: the header is read first, the body must hold exactly the values the header claims
    (at most :data:`MAX_IDX_VALUES`), and nothing beyond them is decompressed.
    """
    try:
        with open_regular(path) as raw:
            f: Any = gzip.GzipFile(fileobj=raw, mode="rb") if path.suffix == ".gz" else raw
            head = f.read(4)
            if len(head) < 4 or head[:3] != b"\0\0\x08":
                raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
            ndim = head[3]
            dims_raw = f.read(4 * ndim)
            if len(dims_raw) < 4 * ndim:
                raise DataError(f"{path}: IDX header is truncated ({len(dims_raw)} of {4 * ndim} bytes of dimensions)")
            dims = struct.unpack(f">{ndim}I", dims_raw)
            n = math.prod(dims)
            if n > MAX_IDX_VALUES:
                raise DataError(
                    f"{path}: IDX header claims {n:,} values, more than the {MAX_IDX_VALUES:,} kdlab reads; "
                    "re-download the file"
                )
            body = bytearray(n)
            view, got = memoryview(body), 0
            while got < n:
                k = f.readinto(view[got:])
                if not k:
                    break
                got += k
            if got < n:
                raise DataError(f"{path}: IDX file is truncated ({got} of {n} values)")
            if f.read(1):
                raise DataError(f"{path}: IDX file holds more than the {n:,} values its header claims; re-download it")
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read IDX file ({e}); re-download or reinstall it") from None
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


# --------------------------------------------------------------------------------------------
# Folders of image files


@DATASETS.register("image-folder")
def load_image_folder(cfg: DataConfig, seed: int) -> DataBundle:
    """One sub-folder per class, or ``train/`` + ``test/`` (+ optional ``val/``) each with class folders.

    Files are decoded with Pillow, converted to RGB and resized to ``image_size`` square; files that
    fail to decode are skipped, counted and listed. Without ``train/``/``test/`` the pool is split
    by the configured fractions (80/10/10 by default).
    """
    if cfg.path is None:
        raise DataError("data.path: image-folder needs the dataset folder, e.g. --set data.path=PetImages")
    root = Path(cfg.path)
    if not root.is_dir():
        raise DataError(f"data.path: {root} is not a folder (expected one sub-folder per class)")
    size = cfg.image_size
    budget = cfg.max_memory_gb * GB
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes = _class_names(root / "train")
        tr_x, tr_y, skipped, tr_src = _decode_source(root / "train", classes, size, cfg)
        te_x, te_y, sk_te, te_src = _decode_source(root / "test", classes, size, cfg)
        skipped += sk_te
        (test,) = _held([Split(te_x, torch.from_numpy(te_y), te_src)], te_x, budget)
        if (root / "val").is_dir():
            va_x, va_y, sk_va, va_src = _decode_source(root / "val", classes, size, cfg)
            skipped += sk_va
            (train,) = _held([Split(tr_x, torch.from_numpy(tr_y), tr_src)], tr_x, budget)
            (val,) = _held([Split(va_x, torch.from_numpy(va_y), va_src)], va_x, budget)
        else:
            train, val = _held(train_val(tr_x, tr_y, cfg, seed, str(root), source=tr_src), tr_x, budget)
    else:
        classes = _class_names(root)
        x, y, skipped, src = _decode_source(root, classes, size, cfg)
        train, val, test = _held(three_way(x, y, cfg, seed, str(root), source=src), x, budget)
    meta = {"source": str(root), "skipped_files": skipped}
    return DataBundle("image-folder", train, val, test, classes, (3, size, size), meta)


@dataclass(frozen=True)
class ImageFiles:
    """The image files behind a split's rows: row ``i`` was decoded from ``paths[rows[i]]``.

    ``paths`` are the files of one decoded folder in decoding order (those that decoded), so
    :meth:`decode` can decode the same files at another size with the data's own decoding
    (:func:`decode_folder`, cached by size) and pick the split's rows from it.
    """

    root: Path
    classes: tuple[str, ...]
    cfg: DataConfig
    paths: tuple[str, ...]
    rows: torch.Tensor

    @classmethod
    def of(
        cls,
        root: Path,
        classes: list[str],
        cfg: DataConfig,
        skipped: list[str],
        files: list[tuple[Path, int]] | None = None,
    ) -> ImageFiles:
        """Every decoded file of ``root`` (its listing ``files``, listed again when not given, less
        ``skipped``), one row each."""
        gone = set(skipped)
        listing = _list_files(root, classes) if files is None else files
        paths = tuple(str(p) for p, _ in listing if str(p) not in gone)
        return cls(root, tuple(classes), cfg, paths, torch.arange(len(paths)))

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, idx: torch.Tensor) -> ImageFiles:
        return replace(self, rows=self.rows[idx.to(self.rows.device)])

    def join(self, other: object) -> ImageFiles | None:
        """These rows followed by ``other``'s, when both are rows of the same decoded folder, else None."""
        if not isinstance(other, ImageFiles) or (other.root, other.paths) != (self.root, self.paths):
            return None
        return replace(self, rows=torch.cat([self.rows, other.rows.to(self.rows.device)]))

    def decode_files(self, files: list[Path], root: Path, size: int) -> tuple[torch.Tensor | MappedRows, list[str]]:
        """Other ``files`` under ``root`` (a transfer set) decoded as the data were: uint8 ``[N, 3,
        size, size]`` through the decode cache (:func:`decode_listing`, label 0 for every file), a
        tensor when it fits ``data.max_memory_gb``, else mapped rows; and the paths that did not decode."""
        x, _, skipped = decode_listing([(p, 0) for p in files], root, size, self.cfg)
        return _in_memory(x, self.cfg.max_memory_gb * GB), skipped

    def decode(self, size: int, rows: torch.Tensor | None = None) -> torch.Tensor | MappedRows:
        """uint8 ``[N, 3, size, size]`` of this split's files (or of its rows ``rows`` only), decoded
        from the originals as the data were (RGB, bilinear resize with Pillow); mapped rows when the
        folder decoded at ``size`` is larger than ``data.max_memory_gb``."""
        if rows is not None and len(rows) <= 64:  # a few samples (a dry run): no need to decode the folder
            out = np.empty((len(rows), 3, size, size), dtype=np.uint8)
            for i, r in enumerate(self.rows[rows].tolist()):
                try:
                    out[i] = decode_image(Path(self.paths[r]), "RGB", (size, size)).transpose(2, 0, 1)
                except Exception as e:
                    raise DataError(f"{self.paths[r]}: cannot decode this image again ({type(e).__name__})") from None
            return torch.from_numpy(out)
        pool, _, _, _ = _decode_mapped(self.root, list(self.classes), size, self.cfg)
        if len(pool) != len(self.paths):
            raise DataError(
                f"data.path: {self.root} changed while the run was starting ({len(self.paths)} images decoded, "
                f"now {len(pool)}); start the run again"
            )
        picked = self.rows if rows is None else self.rows[rows]
        if not isinstance(pool, MappedRows):
            return pool[picked]
        # only the picked rows are read into memory (the whole folder at this size never is)
        part = pool.take(picked)
        return part.materialise() if _fits(pool, self.cfg.max_memory_gb * GB) else part


def _class_names(root: Path) -> list[str]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(
            f"data.path: {root} has {len(classes)} class folder(s); image-folder needs one sub-folder per class (>= 2)"
        )
    return classes


def _list_files(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    """Every entry under each class folder that is not a folder or a dot-file, sorted.

    Symlinked folders are not descended into (``rglob`` does not follow them, so a symlink loop
    costs nothing); FIFOs, devices and broken links are listed so that decoding skips and lists
    them instead of hiding them.
    """
    files = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            raise DataError(f"data.path: {root} has no folder '{shorten(name)}' (class folders must match train/)")
        for p in sorted(folder.rglob("*")):
            if not p.name.startswith(".") and not p.is_dir():
                files.append((p, label))
    return files


def cache_root(cfg: DataConfig) -> Path:
    if cfg.cache_dir is not None:
        return Path(cfg.cache_dir)
    env = os.environ.get("KDLAB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "kdlab"


DECODE_CHUNK = 64
"""Files per task of the parallel decode (each worker holds one chunk's pixels at a time)."""


def decode_workers() -> int:
    """Processes the image decode uses: the cores this process may run on."""
    return usable_cores()


def decode_folder(
    root: Path, classes: list[str], size: int, cfg: DataConfig
) -> tuple[torch.Tensor | MappedRows, np.ndarray, list[str]]:
    """Decode every file under ``root/<class>/`` once; later calls read the uint8 array cache.

    The cache key hashes the image size and every file's path, byte size and modification time,
    so adding, removing or editing a file re-decodes. Files are decoded by :func:`decode_workers`
    processes straight into the cache's ``.npy`` file (written under a temporary name and renamed
    when complete), so decoding never holds the whole array. Returns ``(x uint8 [N,3,S,S], y,
    skipped)``; ``x`` is a tensor when the array is at most ``data.max_memory_gb``, else
    :class:`~kdlab.data.mapped.MappedRows` over the memory-mapped cache file.
    """
    x, y, skipped, _ = _decode_mapped(root, classes, size, cfg)
    return _in_memory(x, cfg.max_memory_gb * GB), y, skipped


def _decode_source(
    root: Path, classes: list[str], size: int, cfg: DataConfig
) -> tuple[torch.Tensor | MappedRows, np.ndarray, list[str], ImageFiles]:
    """:func:`_decode_mapped` and the :class:`ImageFiles` behind its rows (from the same listing)."""
    x, y, skipped, files = _decode_mapped(root, classes, size, cfg)
    return x, y, skipped, ImageFiles.of(root, classes, cfg, skipped, files)


def _decode_mapped(
    root: Path, classes: list[str], size: int, cfg: DataConfig
) -> tuple[torch.Tensor | MappedRows, np.ndarray, list[str], list[tuple[Path, int]]]:
    """:func:`decode_folder`, but the array is returned mapped whatever its size (read into memory
    only where it could not be written to a file), with the folder's listing: a caller that splits
    it reads each split's rows out of the map once (:func:`_held`), instead of reading the whole
    array and then copying the splits out of it."""
    files = _list_files(root, classes)
    if not files:
        raise DataError(f"data.path: no files under {root}'s class folders")
    x, y, skipped = decode_listing(files, root, size, cfg)
    if len(y) == 0:
        raise _none_decoded(files, root)
    return x, y, skipped, files


def decode_listing(
    files: list[tuple[Path, int]], root: Path, size: int, cfg: DataConfig
) -> tuple[torch.Tensor | MappedRows, np.ndarray, list[str]]:
    """Decode the listing ``files`` (``(path, label)`` pairs under ``root``) to uint8 ``[N, 3, size,
    size]`` once; later calls with the same listing read the array cache in ``data.cache_dir``.

    The cache key hashes ``size``, ``root`` and every file's path (relative to ``root``), label,
    kind, byte size and modification time. Files are decoded by :func:`decode_to_file` (one process
    per usable core) straight into the cache's ``.npy``; where the cache folder cannot be written,
    into a temporary file that is mapped and removed, and where nothing can be written, in memory
    by this process. Returns ``(x, labels, skipped paths)``: ``x`` mapped whatever its size (a
    tensor only in that last case), rows of the files that decoded in listing order. When no file
    decoded, ``x`` is an empty tensor and nothing is cached."""
    from PIL import Image

    # v2: images over Pillow's pixel limit are skipped (v1 decoded those below twice the limit).
    # The parallel decode writes the same .npy + .json files as the one-process decode did: still v2.
    h = hashlib.sha256(f"v2|{size}|{root.resolve()}|{Image.MAX_IMAGE_PIXELS}".encode())
    for p, label in files:
        try:
            st = p.stat()
            stamp = f"{st.st_mode >> 12}|{st.st_size}|{st.st_mtime_ns}"
        except OSError:  # a broken link or a symlink loop: skipped when decoding
            stamp = "-"
        h.update(f"{p.relative_to(root)}|{label}|{stamp}\n".encode())
    key = h.hexdigest()[:24]
    cache = cache_root(cfg)
    arr_path, meta_path = cache / f"images-{key}.npy", cache / f"images-{key}.json"
    if arr_path.is_file() and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
            hit = _open_mapped(arr_path, size)
            if len(hit) == len(meta["labels"]):
                return hit, np.asarray(meta["labels"], dtype=np.int64), meta["skipped"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt below
    upper = len(files) * 3 * size * size
    if upper <= cfg.max_memory_gb * GB:  # to be held in memory, with its train/val/test copies: refuse before decoding
        from kdlab.data.memory import check_memory

        check_memory(2 * upper, "data.image_size", f"{len(files):,} images of 3×{size}×{size} px")
    x: torch.Tensor | MappedRows
    try:
        cache.mkdir(parents=True, exist_ok=True)
        y, skipped = decode_to_file(files, size, arr_path)
        kept: Path | None = arr_path
    except OSError:  # an unwritable cache folder: decode into the temporary folder, map it, remove it
        kept = None
        try:
            fd, tmp = tempfile.mkstemp(prefix=".kdlab-images-", suffix=".npy")
            os.close(fd)
        except OSError:  # nowhere to write at all: the one-process decode in memory
            x_mem, y, skipped = _decode_all(files, size, root)
            return torch.from_numpy(x_mem), y, skipped
        try:
            y, skipped = decode_to_file(files, size, Path(tmp))
            x = _open_mapped(Path(tmp), size) if len(y) else torch.empty(0)
        finally:
            Path(tmp).unlink(missing_ok=True)  # a mapping keeps its data until closed
    if len(y) == 0:  # nothing to cache: the caller says which setting holds no image
        return torch.empty((0, 3, size, size), dtype=torch.uint8), y, skipped
    if kept is not None:
        with contextlib.suppress(OSError):  # caching is an optimisation: without the labels file it re-decodes
            atomic_write_text(meta_path, json.dumps({"labels": y.tolist(), "skipped": skipped, "root": str(root)}))
        x = _open_mapped(kept, size)
    return x, y, skipped


def _none_decoded(files: list[tuple[Path, int]], root: Path) -> DataError:
    return DataError(f"data.path: none of the {len(files)} files under {root} could be decoded as an image")


def _open_mapped(path: Path, size: int) -> MappedRows:
    """The decoded array at ``path``, memory-mapped; ValueError when it is not one."""
    mapped = MappedRows.open(path)
    if mapped.dim() != 4 or tuple(mapped.shape[1:]) != (3, size, size) or mapped.dtype != torch.uint8:
        raise ValueError(f"{path}: not a decoded uint8 array of 3×{size}×{size} images")
    return mapped


def _fits(x: torch.Tensor | MappedRows, budget: float) -> bool:
    """Whether the decoded array ``x`` is to be held in memory: at most ``budget`` bytes (then
    refused with a one-line error when the host cannot hold it twice), or already a tensor."""
    if not isinstance(x, MappedRows):
        return True
    if x.nbytes > budget:
        return False
    from kdlab.data.memory import check_memory

    check_memory(2 * x.nbytes, "data.image_size", f"{len(x):,} images of {'×'.join(map(str, x.shape[1:]))} px")
    return True


def _in_memory(x: torch.Tensor | MappedRows, budget: float) -> torch.Tensor | MappedRows:
    """``x`` read into memory when it fits the budget (:func:`_fits`), else left mapped."""
    return x.materialise() if isinstance(x, MappedRows) and _fits(x, budget) else x


def _held(parts: Sequence[Split], pool: torch.Tensor | MappedRows, budget: float) -> list[Split]:
    """Splits of the decoded ``pool`` as they are held: each split's rows read out of the map into
    memory when the pool fits the budget (one forward read of its sorted rows; the whole array is
    never read into memory beside them), else still mapped. Decided once for the pool."""
    if not _fits(pool, budget):
        return list(parts)
    return [Split(p.x.materialise(), p.y, p.source) if isinstance(p.x, MappedRows) else p for p in parts]


def decode_to_file(
    files: list[tuple[Path, int]], size: int, path: Path, *, workers: int | None = None, chunk: int = DECODE_CHUNK
) -> tuple[np.ndarray, list[str]]:
    """Decode ``files`` into the ``.npy`` file ``path`` (uint8 ``[N, 3, size, size]``, rows of the
    files that decoded, in order); returns ``(labels, skipped paths)``, exactly as the one-process
    :func:`_decode_all` gives them.

    ``workers`` processes (default :func:`decode_workers`; one, or fewer than four chunks: in this
    process) each decode
    ``chunk`` files at a time into their rows of a temporary ``.npy`` beside ``path``
    (``numpy.lib.format.open_memmap``); when some files were skipped, the decoded rows are then
    copied, in order, into a second temporary file. The finished file is renamed to ``path``, so
    ``path`` is never half-written. Raises OSError when the folder cannot hold the file.
    """
    from kdlab.io import make_temp

    workers = decode_workers() if workers is None else max(1, workers)
    n = len(files)
    row_bytes = 3 * size * size
    need = n * row_bytes
    check_disk(
        need, path.parent, "data.cache_dir", f"{n:,} decoded images of 3×{size}×{size} px",
        "set data.cache_dir to a folder with more space or lower data.image_size",
    )  # fmt: skip
    fd, raw = make_temp(path)
    os.close(fd)
    tmp = Path(raw)
    done: Path | None = None
    try:
        header = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 3, size, size))
        header.flush()
        offset = int(header.offset)
        del header
        reserve(tmp, offset + need)  # blocks first: a sparse file's first writes cost ~9× more
        tasks = [(str(tmp), offset, i, [str(p) for p, _ in files[i : i + chunk]], size) for i in range(0, n, chunk)]
        ok: list[bool] = []
        if workers == 1 or len(tasks) < 4:  # a few chunks: starting processes costs more than it saves
            for t in tasks:
                ok += _decode_chunk(t)
        else:
            import multiprocessing
            import warnings
            from concurrent.futures import ProcessPoolExecutor

            # fork: the workers need only Pillow and numpy, already imported here (a spawned worker
            # would import torch again, seconds per worker).
            methods = multiprocessing.get_all_start_methods()
            ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # fork of a threaded process (Python 3.12+)
                with ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=ctx) as pool:
                    for part in pool.map(_decode_chunk, tasks):
                        ok += part
        labels, skipped = _labels_and_skipped(files, ok)
        done = tmp
        if skipped:
            fd, compact = make_temp(path)
            os.close(fd)
            done = Path(compact)
            _copy_rows(tmp, done, [i for i, good in enumerate(ok) if good], row_bytes, size)
            tmp.unlink(missing_ok=True)
        os.replace(done, path)
        done = None
    finally:
        tmp.unlink(missing_ok=True)
        if done is not None:
            done.unlink(missing_ok=True)
    return labels, skipped


def _decode_rows(names: list[str], size: int) -> tuple[np.ndarray, list[bool]]:
    """uint8 ``[len(names), 3, size, size]`` of these files, and which decoded (a row that did not
    is left zero): corrupt, truncated, empty, not an image, too large, a FIFO are skipped."""
    out = np.empty((len(names), 3, size, size), dtype=np.uint8)
    ok = []
    for i, name in enumerate(names):
        try:
            out[i] = decode_image(Path(name), "RGB", (size, size)).transpose(2, 0, 1)
        except Exception:  # skipped and listed by the caller
            out[i] = 0
            ok.append(False)
            continue
        ok.append(True)
    return out, ok


def _labels_and_skipped(files: list[tuple[Path, int]], ok: list[bool]) -> tuple[np.ndarray, list[str]]:
    """The labels of the files that decoded (in order) and the paths of those that did not."""
    labels = np.asarray([label for (_, label), good in zip(files, ok, strict=True) if good], dtype=np.int64)
    return labels, [str(p) for (p, _), good in zip(files, ok, strict=True) if not good]


def _decode_chunk(task: tuple[str, int, int, list[str], int]) -> list[bool]:
    """Decode one chunk of files into rows ``start..`` of the ``.npy`` at ``path``, whose data begin at
    byte ``offset`` (a worker's task); returns which files decoded (a row that did not is left zero)."""
    path, offset, start, names, size = task
    out, ok = _decode_rows(names, size)
    # A plain positioned write (no map, no msync): the page cache serves the reader that follows.
    with open(path, "r+b") as f:
        f.seek(offset + start * out[0].nbytes)
        f.write(out.data)  # the array's own buffer, no copy
    return ok


def _copy_rows(src: Path, dst: Path, rows: list[int], row_bytes: int, size: int) -> None:
    """Rows ``rows`` (ascending) of the ``.npy`` ``src`` into a new ``.npy`` ``dst``, read and written
    in blocks through plain file I/O (nothing mapped, so nothing stays resident)."""
    head = np.load(src, mmap_mode="r", allow_pickle=False)
    offset = head.offset
    del head
    np.lib.format.open_memmap(dst, mode="w+", dtype=np.uint8, shape=(len(rows), 3, size, size)).flush()
    dst_offset = np.load(dst, mmap_mode="r", allow_pickle=False).offset
    with open(src, "rb") as fin, open(dst, "r+b") as fout:
        fout.seek(dst_offset)
        i = 0
        while i < len(rows):  # one read per run of consecutive rows (at most DECODE_CHUNK rows)
            j = i + 1
            while j < len(rows) and rows[j] == rows[j - 1] + 1 and j - i < DECODE_CHUNK:
                j += 1
            fin.seek(offset + rows[i] * row_bytes)
            fout.write(fin.read((j - i) * row_bytes))
            i = j


def _decode_all(files: list[tuple[Path, int]], size: int, root: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from kdlab.data.memory import check_memory

    # The decoded array, then its train/val/test copies: refuse before allocating what cannot fit.
    check_memory(2 * len(files) * 3 * size * size, "data.image_size", f"{len(files):,} images of 3×{size}×{size} px")
    out, ok = _decode_rows([str(p) for p, _ in files], size)
    labels, skipped = _labels_and_skipped(files, ok)
    return (out if not skipped else out[np.flatnonzero(ok)]), labels, skipped
