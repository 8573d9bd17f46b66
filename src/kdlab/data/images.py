"""Image datasets: scikit-learn's digits, Fashion-MNIST IDX files, and folders of image files.

All return uint8 or float32 tensors in ``(N, C, H, W)`` layout; uint8 pixels are scaled to [0, 1]
per batch by the loader. Image folders are decoded once with Pillow into a uint8 array cache.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import struct
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdlab.config.schema import DataConfig
from kdlab.data.bundle import DATASETS, DataBundle, three_way, train_val
from kdlab.data.decode import decode_image
from kdlab.data.files import open_regular, shorten
from kdlab.data.tensors import Split
from kdlab.errors import DataError
from kdlab.io import atomic_write_bytes, atomic_write_text

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
    if (root / "train").is_dir() and (root / "test").is_dir():
        classes = _class_names(root / "train")
        tr_x, tr_y, skipped = decode_folder(root / "train", classes, size, cfg)
        tr_src = ImageFiles.of(root / "train", classes, cfg, skipped)
        te_x, te_y, sk_te = decode_folder(root / "test", classes, size, cfg)
        te_src = ImageFiles.of(root / "test", classes, cfg, sk_te)
        skipped += sk_te
        if (root / "val").is_dir():
            va_x, va_y, sk_va = decode_folder(root / "val", classes, size, cfg)
            va_src = ImageFiles.of(root / "val", classes, cfg, sk_va)
            skipped += sk_va
            train = Split(tr_x, torch.from_numpy(tr_y), tr_src)
            val = Split(va_x, torch.from_numpy(va_y), va_src)
        else:
            train, val = train_val(tr_x, tr_y, cfg, seed, str(root), source=tr_src)
        test = Split(te_x, torch.from_numpy(te_y), te_src)
    else:
        classes = _class_names(root)
        x, y, skipped = decode_folder(root, classes, size, cfg)
        train, val, test = three_way(x, y, cfg, seed, str(root), source=ImageFiles.of(root, classes, cfg, skipped))
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
    def of(cls, root: Path, classes: list[str], cfg: DataConfig, skipped: list[str]) -> ImageFiles:
        """Every decoded file of ``root`` (its listing less ``skipped``), one row each."""
        gone = set(skipped)
        paths = tuple(str(p) for p, _ in _list_files(root, classes) if str(p) not in gone)
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

    def decode(self, size: int, rows: torch.Tensor | None = None) -> torch.Tensor:
        """uint8 ``[N, 3, size, size]`` of this split's files (or of its rows ``rows`` only), decoded
        from the originals as the data were (RGB, bilinear resize with Pillow)."""
        if rows is not None and len(rows) <= 64:  # a few samples (a dry run): no need to decode the folder
            out = np.empty((len(rows), 3, size, size), dtype=np.uint8)
            for i, r in enumerate(self.rows[rows].tolist()):
                try:
                    out[i] = decode_image(Path(self.paths[r]), "RGB", (size, size)).transpose(2, 0, 1)
                except Exception as e:
                    raise DataError(f"{self.paths[r]}: cannot decode this image again ({type(e).__name__})") from None
            return torch.from_numpy(out)
        pool, _, _ = decode_folder(self.root, list(self.classes), size, self.cfg)
        if len(pool) != len(self.paths):
            raise DataError(
                f"data.path: {self.root} changed while the run was starting ({len(self.paths)} images decoded, "
                f"now {len(pool)}); start the run again"
            )
        return pool[self.rows if rows is None else self.rows[rows]]


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


def decode_folder(
    root: Path, classes: list[str], size: int, cfg: DataConfig
) -> tuple[torch.Tensor, np.ndarray, list[str]]:
    """Decode every file under ``root/<class>/`` once; later calls read the uint8 array cache.

    The cache key hashes the image size and every file's path, byte size and modification time,
    so adding, removing or editing a file re-decodes. Returns ``(x uint8 [N,3,S,S], y, skipped)``.
    """
    files = _list_files(root, classes)
    if not files:
        raise DataError(f"data.path: no files under {root}'s class folders")
    from PIL import Image

    # v2: images over Pillow's pixel limit are skipped (v1 decoded those below twice the limit)
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
            x = np.load(arr_path, allow_pickle=False, mmap_mode=None)
            if len(x) == len(meta["labels"]):
                return torch.from_numpy(x), np.asarray(meta["labels"], dtype=np.int64), meta["skipped"]
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt below
    x, y, skipped = _decode_all(files, size, root)
    if len(y) == 0:
        raise DataError(f"data.path: none of the {len(files)} files under {root} could be decoded as an image")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        import io

        buf = io.BytesIO()
        np.save(buf, x, allow_pickle=False)
        atomic_write_bytes(arr_path, buf.getvalue())
        atomic_write_text(meta_path, json.dumps({"labels": y.tolist(), "skipped": skipped, "root": str(root)}))
    except OSError:
        pass  # caching is an optimisation: an unwritable cache folder only costs a re-decode
    return torch.from_numpy(x), y, skipped


def _decode_all(files: list[tuple[Path, int]], size: int, root: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from kdlab.data.memory import check_memory

    # The decoded array, then its train/val/test copies: refuse before allocating what cannot fit.
    check_memory(2 * len(files) * 3 * size * size, "data.image_size", f"{len(files):,} images of 3×{size}×{size} px")
    out = np.empty((len(files), 3, size, size), dtype=np.uint8)
    labels: list[int] = []
    skipped: list[str] = []
    for p, label in files:
        try:
            arr = decode_image(p, "RGB", (size, size))
        except Exception:  # corrupt, truncated, empty, not an image, too large, a FIFO: skipped and listed
            skipped.append(str(p))
            continue
        out[len(labels)] = arr.transpose(2, 0, 1)
        labels.append(label)
    return out[: len(labels)], np.asarray(labels, dtype=np.int64), skipped
