"""Labelled text datasets: ``text-csv`` (CSV / TSV / JSONL files) and ``aclimdb`` (the IMDB
download's ``aclImdb/{train,test}/{pos,neg}/*.txt`` folders).

Both split the raw documents first (seeded, stratified), build the vocabulary on the training
split only (:class:`~kdlab.data.text.Vocab`), then encode every split to ``[N, max_len]`` int64
token ids. Rows with an empty text or label are skipped and counted; a missing column, bytes that
are not UTF-8, an empty file, a malformed row or a single class are one-line
:class:`~kdlab.errors.DataError`\\ s naming the file (and line). Files are read line by line with
bounded lines and fields (:mod:`kdlab.data.files`); FIFOs and devices are refused, never read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kdlab.config.schema import DataConfig
from kdlab.data.bundle import DATASETS, DataBundle
from kdlab.data.files import (
    MAX_LINE_BYTES,
    TextLines,
    cannot_open,
    name_list,
    open_regular,
    read_bounded,
    shorten,
    special_kind,
)
from kdlab.data.splits import stratified_split
from kdlab.data.tables import csv_rows, jsonl_rows
from kdlab.data.tensors import Split
from kdlab.data.text import Texts, Vocab
from kdlab.errors import DataError

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"


@dataclass
class Corpus:
    """Raw texts and string labels of one file or folder, plus what was skipped and why."""

    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def extend(self, other: Corpus) -> None:
        self.texts += other.texts
        self.labels += other.labels
        self.skipped += other.skipped


# --------------------------------------------------------------------------------------------
# Reading


def read_table(path: Path, text_column: str, label_column: str) -> Corpus:
    """Rows of a ``.csv``, ``.tsv`` (header row) or ``.jsonl`` (one object per line) file.

    Read line by line with bounded lines (:data:`~kdlab.data.files.MAX_LINE_BYTES`) and fields;
    only the text and label of each row are kept.
    """
    try:
        f = open_regular(path)
    except OSError as e:
        raise cannot_open(path, e) from None
    with f:
        lines = TextLines(f, str(path))
        if path.suffix.lower() == ".jsonl":
            columns, rows = jsonl_rows(path, lines, text_column, label_column)
        else:
            columns, rows = csv_rows(path, lines, text_column, label_column)
    if not lines.seen_text:
        raise DataError(f"{path}: the file is empty; it needs a header and labelled rows")
    for key, what in ((text_column, "text"), (label_column, "label")):
        if key not in columns:
            raise DataError(
                f"{path}: no {what} column '{shorten(key)}' (columns: {name_list(columns) or 'none'}); "
                f"set data.{what}_column"
            )
    corpus = Corpus()
    for line, doc, label in rows:
        if not doc.strip() or not label.strip():
            corpus.skipped.append(f"{path}:{line} (empty {'text' if not doc.strip() else 'label'})")
            continue
        corpus.texts.append(doc)
        corpus.labels.append(label.strip())
    return corpus


def read_acl_folder(folder: Path) -> Corpus:
    """``folder/{neg,pos}/*.txt``, one review per file; undecodable, empty, oversized (> 16 MiB)
    or non-regular files (FIFOs, devices, folders) are skipped."""
    corpus = Corpus()
    for label in ("neg", "pos"):
        sub = folder / label
        if not sub.is_dir():
            raise DataError(
                f"data.path: {folder} has no '{label}' folder (expected aclImdb/{{train,test}}/{{pos,neg}})"
            )
        for p in sorted(sub.glob("*.txt")):
            try:
                data = read_bounded(p, MAX_LINE_BYTES)
                doc = data.decode("utf-8-sig") if data is not None else ""
            except (OSError, UnicodeDecodeError):
                doc = ""
            if not doc.strip():
                corpus.skipped.append(str(p))
                continue
            corpus.texts.append(doc)
            corpus.labels.append(label)
    return corpus


# --------------------------------------------------------------------------------------------
# From corpora to a DataBundle

_INTEGER = re.compile(r"-?[0-9]+")


def class_names(labels: list[str], where: str) -> list[str]:
    """Sorted distinct labels; fewer than 2 is a DataError.

    Labels are class names and any string works. When every label is an ASCII integer
    (``-?[0-9]+``) they sort numerically (``2`` before ``10``; equal values such as ``7`` and ``07``
    by their text), otherwise as strings: other Unicode digits (``²``, ``٣``) are names like any other.
    """
    names = set(labels)
    if len(names) < 2:
        found = f" ('{shorten(next(iter(names)))}')" if names else ""
        raise DataError(f"{where}: the label column has {len(names)} class{found}; classification needs >= 2")
    if all(_INTEGER.fullmatch(n) for n in names):
        return sorted(names, key=lambda n: (int(n), n))
    return sorted(names)


def encode_splits(parts: dict[str, Corpus], classes: list[str], cfg: DataConfig, name: str, meta: dict) -> DataBundle:
    """Build the vocabulary on ``parts['train']``, encode every part, wrap in a DataBundle."""
    from kdlab.data.memory import check_memory

    total = sum(len(c.texts) for c in parts.values())  # encoded as [N, max_len] int64
    check_memory(total * cfg.max_len * 8, "data.max_len", f"{total:,} texts of {cfg.max_len:,} int64 token ids")
    vocab, train_x = Vocab.fit_encode(parts["train"].texts, vocab_size=cfg.vocab_size, max_len=cfg.max_len)
    index = {c: i for i, c in enumerate(classes)}
    splits = {}
    for key, corpus in parts.items():
        unknown = sorted(set(corpus.labels) - set(index))
        if unknown:
            raise DataError(f"{name}: {key} has labels not seen in train: {name_list(unknown, most=5)}")
        y = torch.tensor([index[label] for label in corpus.labels], dtype=torch.int64)
        x = train_x if key == "train" else vocab.encode(corpus.texts)
        splits[key] = Split(x, y, Texts(tuple(corpus.texts)))  # the raw texts, for a model with its own tokenizer
    skipped = [s for c in parts.values() for s in c.skipped]
    meta = {**meta, "skipped_files": skipped, "vocab": vocab, "vocab_size": len(vocab), "max_len": cfg.max_len}
    return DataBundle(name, splits["train"], splits["val"], splits["test"], classes, (cfg.max_len,), meta)


def split_corpus(corpus: Corpus, fractions: tuple[float, ...], seed: int, where: str) -> list[Corpus]:
    """Seeded, stratified parts of a corpus (one per fraction)."""
    classes = class_names(corpus.labels, where)
    index = {c: i for i, c in enumerate(classes)}
    y = np.asarray([index[c] for c in corpus.labels])
    out = []
    for idx in stratified_split(y, fractions, seed=seed, what=where):
        out.append(Corpus([corpus.texts[i] for i in idx], [corpus.labels[i] for i in idx]))
    out[0].skipped = list(corpus.skipped)
    return out


def _train_val(train: Corpus, cfg: DataConfig, seed: int, where: str) -> tuple[Corpus, Corpus]:
    tr, va = split_corpus(train, (1 - cfg.val_fraction, cfg.val_fraction), seed, where)
    return tr, va


@DATASETS.register("text-csv")
def load_text_csv(cfg: DataConfig, seed: int) -> DataBundle:
    """One CSV/TSV/JSONL file (split train/val/test by the configured fractions, 80/10/10 by default),
    or a folder with ``train.*`` and ``test.*`` (and optionally ``val.*``; else val is split off train)."""
    if cfg.path is None:
        raise DataError("data.path: text-csv needs a .csv/.tsv/.jsonl file or a folder with train.* and test.*")
    root = Path(cfg.path)

    def read(p: Path) -> Corpus:
        return read_table(p, cfg.text_column, cfg.label_column)

    special = special_kind(root)
    if special is not None:
        raise DataError(f"data.path: {root} is {special}, not a .csv/.tsv/.jsonl file or a folder")
    if root.is_file():
        if root.suffix.lower() not in TABLE_SUFFIXES:
            raise DataError(f"data.path: {root} is not a {', '.join(TABLE_SUFFIXES)} file")
        corpus = read(root)
        _check_rows(corpus, root)
        val_f, test_f = cfg.val_fraction, cfg.test_fraction
        tr, va, te = split_corpus(corpus, (1 - val_f - test_f, val_f, test_f), seed, str(root))
    elif root.is_dir():
        files = {k: _find_table(root, k) for k in ("train", "val", "test")}
        if files["train"] is None or files["test"] is None:
            raise DataError(
                f"data.path: {root} needs train.* and test.* files ({', '.join(TABLE_SUFFIXES)}), or give one file"
            )
        full_train, te = read(files["train"]), read(files["test"])
        _check_rows(full_train, files["train"])
        _check_rows(te, files["test"])
        if files["val"] is not None:
            tr, va = full_train, read(files["val"])
            class_names(tr.labels, str(files["train"]))
        else:
            tr, va = _train_val(full_train, cfg, seed, str(files["train"]))
        tr.skipped += te.skipped + va.skipped
        te.skipped = va.skipped = []
    else:
        raise DataError(f"data.path: {root} does not exist (a .csv/.tsv/.jsonl file or a folder with train.*, test.*)")
    classes = class_names(tr.labels, str(root))
    return encode_splits({"train": tr, "val": va, "test": te}, classes, cfg, "text-csv", {"source": str(root)})


def _find_table(root: Path, stem: str) -> Path | None:
    # exists(), not is_file(): a FIFO or folder named train.csv is refused by name when read
    found = [root / f"{stem}{s}" for s in TABLE_SUFFIXES if (root / f"{stem}{s}").exists()]
    if len(found) > 1:
        raise DataError(f"data.path: {root} has several {stem} files ({', '.join(p.name for p in found)}); keep one")
    return found[0] if found else None


def _check_rows(corpus: Corpus, path: Path) -> None:
    if not corpus.texts:
        raise DataError(f"{path}: no rows with both a text and a label ({len(corpus.skipped)} empty rows skipped)")


@DATASETS.register("aclimdb")
def load_aclimdb(cfg: DataConfig, seed: int) -> DataBundle:
    """The IMDB reviews as downloaded (``aclImdb/train/{pos,neg}``, ``aclImdb/test/{pos,neg}``;
    ``train/unsup`` is ignored): 25,000 train (val split off it, seeded, stratified), 25,000 test."""
    if cfg.path is None:
        raise DataError(f"data.path: aclimdb needs the extracted aclImdb folder (download {IMDB_URL})")
    root = Path(cfg.path)
    if not (root / "train").is_dir() and (root / "aclImdb" / "train").is_dir():
        root = root / "aclImdb"
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise DataError(
            f"data.path: {root} is not an aclImdb folder (expected train/ and test/ with pos/ and neg/); "
            f"download and extract {IMDB_URL}"
        )
    train, test = read_acl_folder(root / "train"), read_acl_folder(root / "test")
    for part, corpus in (("train", train), ("test", test)):
        if not corpus.texts:
            raise DataError(f"data.path: {root / part} holds no readable .txt reviews in pos/ and neg/")
    tr, va = _train_val(train, cfg, seed, str(root / "train"))
    tr.skipped += test.skipped
    test.skipped = []
    return encode_splits({"train": tr, "val": va, "test": test}, ["neg", "pos"], cfg, "aclimdb", {"source": str(root)})
