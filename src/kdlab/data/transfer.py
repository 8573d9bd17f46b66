"""Transfer sets (``data.unlabeled``): inputs without labels that only the KD term trains on.

Three sources, each read into a :class:`~kdlab.data.tensors.Split` whose labels are all
:data:`~kdlab.kd.losses.UNLABELED` (the labels are never there to be read):

* ``rest`` — the training samples ``data.train_limit`` left out (:func:`kdlab.data.bundle.build_data`
  keeps them; their labels are replaced, not carried);
* an image folder (any layout; class folders are not needed and their names are not read), decoded
  like the data (Pillow, RGB or grey to the data's channels, bilinear to the data's size); for an
  image folder's data (RGB, square) through its decode cache, memory-mapped over ``data.max_memory_gb``;
* a text file: ``.txt`` with one text per line, or ``.csv`` / ``.tsv`` / ``.jsonl`` whose
  ``data.text_column`` is read (any label column is not), encoded with the data's vocabulary.

Leak guard: a transfer-set input identical to a validation or test input (same pixels, same text)
is dropped and counted (``meta["unlabeled"]["dropped_heldout"]``), so the student never sees the
teacher's answer on a sample it is scored on. ``data.unlabeled_limit`` keeps a seeded subset.
Unreadable image files are skipped and listed like the data's own.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdlab.config.schema import DataConfig
from kdlab.data import mapped
from kdlab.data.files import TextLines, cannot_open, open_regular, shorten, special_kind
from kdlab.data.mapped import MappedRows
from kdlab.data.tensors import Split
from kdlab.errors import DataError
from kdlab.kd.losses import UNLABELED

TEXT_SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl")
KEY = "data.unlabeled"


def unlabeled_split(x: torch.Tensor | MappedRows, source: Any = None) -> Split:
    """A transfer-set split: inputs ``x`` (and their sources), every label :data:`UNLABELED`."""
    return Split(x, torch.full((len(x),), UNLABELED, dtype=torch.int64), source)


def withhold_labels(part: Split) -> Split:
    """``part`` with its labels replaced by :data:`UNLABELED` (``data.unlabeled: rest``)."""
    return unlabeled_split(part.x, part.source)


def transfer_set(cfg: DataConfig, bundle: Any, rest: Split | None, seed: int) -> Split:
    """The transfer set ``cfg.unlabeled`` names — ``rest`` (the training samples ``data.train_limit``
    left out, labels withheld) or a folder or file (:func:`load_unlabeled`) — at most
    ``cfg.unlabeled_limit`` rows (seeded with ``seed + 8``); where it came from and what was skipped
    go into ``bundle.meta``."""
    if cfg.unlabeled == "rest":
        if rest is None:
            raise DataError(
                f"data.unlabeled: rest is empty: data.train_limit={cfg.train_limit} keeps all "
                f"{len(bundle.train)} training samples; lower data.train_limit"
            )
        part = withhold_labels(rest)
        bundle.meta["unlabeled_source"] = "rest"
    else:
        part = load_unlabeled(cfg, bundle)
        bundle.meta["unlabeled_source"] = str(cfg.unlabeled)
        bundle.meta["skipped_files"] = [*bundle.meta.get("skipped_files", []), *bundle.meta["unlabeled_skipped"]]
    if cfg.unlabeled_limit is not None and cfg.unlabeled_limit < len(part):
        keep = np.sort(np.random.default_rng(seed + 8).choice(len(part), cfg.unlabeled_limit, replace=False))
        part = part.take(torch.from_numpy(keep))
    return part


def load_unlabeled(cfg: DataConfig, bundle: Any) -> Split:
    """The transfer set in the folder or file ``cfg.unlabeled``, in the data's input format,
    validation/test duplicates dropped (counted in ``bundle.meta``)."""
    path = Path(str(cfg.unlabeled))
    special = special_kind(path)
    if special is not None:
        raise DataError(f"{KEY}: {path} is {special}, not a folder of images or a text file")
    is_text = "vocab" in bundle.meta
    if path.is_dir():
        if is_text:
            raise DataError(
                f"{KEY}: {path} is a folder, but {bundle.name} is a text dataset; give a .txt file (one text per "
                "line) or a .csv/.tsv/.jsonl file with the text column"
            )
        part, skipped = _images(path, bundle)
    elif path.is_file():
        if not is_text:
            raise DataError(f"{KEY}: {path} is a file, but {bundle.name} is an image dataset; give a folder of images")
        if path.suffix.lower() not in TEXT_SUFFIXES:
            raise DataError(f"{KEY}: {path} is not a {', '.join(TEXT_SUFFIXES)} file")
        part, skipped = _texts(path, cfg, bundle), []
    else:
        raise DataError(f"{KEY}: {path} does not exist (a folder of images, a text file, or rest)")
    part, dropped = _drop_heldout(part, bundle)
    if len(part) == 0:
        raise DataError(
            f"{KEY}: {path} holds no usable inputs ({len(skipped)} unreadable, {dropped} identical to "
            "validation/test inputs)"
        )
    bundle.meta["unlabeled_skipped"] = skipped
    bundle.meta["unlabeled_dropped_heldout"] = dropped
    return part


def _images(root: Path, bundle: Any) -> tuple[Split, list[str]]:
    """Every file under ``root`` (any layout; dot-files skipped; sorted) decoded to the data's input
    shape, and the paths of those that did not decode. RGB square data of an image folder go through
    its decode cache (:meth:`kdlab.data.images.ImageFiles.decode_files`: cached, decoded in parallel,
    a tensor within ``data.max_memory_gb``, else :class:`MappedRows`); grey or non-square data are
    decoded here, in memory."""
    from kdlab.data.decode import decode_image
    from kdlab.data.memory import check_memory

    channels, h, w = (int(v) for v in bundle.input_shape)
    if channels not in (1, 3):
        raise DataError(f"{KEY}: images can fill 1 (grey) or 3 (RGB) channels, the data has {channels}")
    files = sorted(p for p in root.rglob("*") if not p.name.startswith(".") and not p.is_dir())
    if not files:
        raise DataError(f"{KEY}: no files under {root}")
    decode_files = getattr(bundle.train.source, "decode_files", None)  # ImageFiles: an image folder's rows
    if (channels, h) == (3, w) and decode_files is not None:
        x, skipped = decode_files(files, root, h)
        return unlabeled_split(x), skipped
    check_memory(len(files) * channels * h * w, KEY, f"{len(files):,} images of {channels}×{h}×{w} px")
    out = np.empty((len(files), channels, h, w), dtype=np.uint8)
    n, skipped = 0, []
    mode = "L" if channels == 1 else "RGB"
    for p in files:
        try:
            arr = decode_image(p, mode, (w, h))
        except Exception:  # corrupt, not an image, too large, a FIFO: skipped and listed
            skipped.append(str(p))
            continue
        out[n] = arr[None] if channels == 1 else arr.transpose(2, 0, 1)
        n += 1
    x = torch.from_numpy(out[:n])
    if bundle.train.x.dtype != torch.uint8:  # digits: float pixels in [0, 1]
        x = x.to(bundle.train.x.dtype) / 255.0
    return unlabeled_split(x), skipped


def _texts(path: Path, cfg: DataConfig, bundle: Any) -> Split:
    from kdlab.data.memory import check_memory
    from kdlab.data.tables import csv_rows, jsonl_rows
    from kdlab.data.text import Texts

    try:
        f = open_regular(path)
    except OSError as e:
        raise cannot_open(path, e, KEY) from None
    with f:
        lines = TextLines(f, str(path))
        suffix = path.suffix.lower()
        if suffix == ".txt":
            texts = [line.strip() for line in lines]
        else:  # the text column only: passing it as the "label" column too means no label is ever read
            reader = jsonl_rows if suffix == ".jsonl" else csv_rows
            columns, rows = reader(path, lines, cfg.text_column, cfg.text_column)
            if cfg.text_column not in columns:
                raise DataError(
                    f"{path}: no text column '{shorten(cfg.text_column)}' (columns: {', '.join(columns[:8]) or 'none'})"
                    "; set data.text_column"
                )
            texts = [text.strip() for _, text, _ in rows]
    texts = [t for t in texts if t]
    check_memory(len(texts) * cfg.max_len * 8, KEY, f"{len(texts):,} texts of {cfg.max_len:,} int64 token ids")
    vocab = bundle.meta["vocab"]
    return unlabeled_split(vocab.encode(texts), Texts(tuple(texts)))


def _row_keys(part: Split) -> list[bytes]:
    """One digest per row: its text when the split keeps texts, else its input bytes."""
    texts = getattr(part.source, "texts", None)
    if texts is not None:
        return [hashlib.sha1(t.encode()).digest() for t in texts]
    keys: list[bytes] = []
    x = part.x
    # in blocks: a mapped split is read block by block (about 32 MiB each), never whole
    blocks = x.chunks() if isinstance(x, MappedRows) else ((i, x[i : i + 4096]) for i in range(0, len(x), 4096))
    for _, block in blocks:
        flat = block.reshape(len(block), -1).contiguous().numpy()
        keys += [hashlib.sha1(row.tobytes()).digest() for row in flat]
    return keys


def _drop_heldout(part: Split, bundle: Any) -> tuple[Split, int]:
    heldout = set(_row_keys(bundle.val)) | set(_row_keys(bundle.test))
    keep = [i for i, k in enumerate(_row_keys(part)) if k not in heldout]
    if len(keep) == len(part):
        return part, 0
    return part.take(torch.tensor(keep, dtype=torch.int64)), len(part) - len(keep)


def summary(bundle: Any) -> dict[str, Any] | None:
    """The ``data.unlabeled`` record of results.json: where the transfer set came from and its size."""
    part = bundle.unlabeled
    if part is None:
        return None
    return {
        "source": bundle.meta.get("unlabeled_source"),
        "samples": len(part),
        "skipped_files": list(bundle.meta.get("unlabeled_skipped", [])),
        "dropped_heldout": int(bundle.meta.get("unlabeled_dropped_heldout", 0)),
    }


def with_transfer(train: Split, unlabeled: Split) -> Split:
    """The distilled arm's training split: the labelled samples, then the transfer set (rows
    ``len(train)..``, labels :data:`UNLABELED`). Sources are joined when both have the same kind
    (texts; rows of the same image folder), else dropped (a view is then resized from the pixels)."""
    if isinstance(train.x, MappedRows) or isinstance(unlabeled.x, MappedRows):
        # mapped rows stay mapped: indices joined, or both copied block by block into a new mapped file
        x: torch.Tensor | MappedRows = mapped.concat(train.x, unlabeled.x)
    else:
        x = torch.cat([train.x, unlabeled.x.to(train.x.device, train.x.dtype)])
    y = torch.cat([train.y, unlabeled.y.to(train.y.device)])
    return Split(x, y, _join_sources(train.source, unlabeled.source))


def _join_sources(a: Any, b: Any) -> Any:
    join = getattr(a, "join", None)  # Texts.join, ImageFiles.join: None when the two cannot be joined
    return None if a is None or b is None or join is None else join(b)
