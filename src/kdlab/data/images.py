"""Image datasets: scikit-learn's digits, Fashion-MNIST IDX files, and folders of image files.

All return uint8 or float32 tensors in ``(N, C, H, W)`` layout; uint8 pixels are scaled to [0, 1]
per batch by the loader. Image folders are decoded once with Pillow into a uint8 array cache.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdlab.config.schema import DataConfig
from kdlab.data.bundle import DATASETS, DataBundle, three_way, train_val
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


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) of unsigned bytes into an array of its shape."""
    opener: Any = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read IDX file ({e}); re-download or reinstall it") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(bytearray(data), dtype=np.uint8, offset=4 + 4 * ndim)  # writable copy
    if body.size != int(np.prod(dims)):
        raise DataError(f"{path}: IDX file is truncated ({body.size} of {int(np.prod(dims))} values)")
    return body.reshape(dims)


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
        te_x, te_y, sk_te = decode_folder(root / "test", classes, size, cfg)
        skipped += sk_te
        if (root / "val").is_dir():
            va_x, va_y, sk_va = decode_folder(root / "val", classes, size, cfg)
            skipped += sk_va
            train, val = Split(tr_x, torch.from_numpy(tr_y)), Split(va_x, torch.from_numpy(va_y))
        else:
            train, val = train_val(tr_x, tr_y, cfg, seed, str(root))
        test = Split(te_x, torch.from_numpy(te_y))
    else:
        classes = _class_names(root)
        x, y, skipped = decode_folder(root, classes, size, cfg)
        train, val, test = three_way(x, y, cfg, seed, str(root))
    meta = {"source": str(root), "skipped_files": skipped}
    return DataBundle("image-folder", train, val, test, classes, (3, size, size), meta)


def _class_names(root: Path) -> list[str]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise DataError(
            f"data.path: {root} has {len(classes)} class folder(s); image-folder needs one sub-folder per class (>= 2)"
        )
    return classes


def _list_files(root: Path, classes: list[str]) -> list[tuple[Path, int]]:
    files = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            raise DataError(f"data.path: {root} has no folder '{name}' (class folders must match train/)")
        for p in sorted(folder.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
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
    h = hashlib.sha256(f"v1|{size}|{root.resolve()}".encode())
    for p, label in files:
        st = p.stat()
        h.update(f"{p.relative_to(root)}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
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
    from PIL import Image

    out = np.empty((len(files), 3, size, size), dtype=np.uint8)
    labels: list[int] = []
    skipped: list[str] = []
    for p, label in files:
        try:
            with Image.open(p) as img:
                img.draft("RGB", (size, size))  # JPEG: decode at reduced scale when much larger (fast)
                rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
                arr = np.asarray(rgb, dtype=np.uint8)
        except Exception:
            skipped.append(str(p))
            continue
        out[len(labels)] = arr.transpose(2, 0, 1)
        labels.append(label)
    return out[: len(labels)], np.asarray(labels, dtype=np.int64), skipped
