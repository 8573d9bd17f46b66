"""The DataBundle every dataset loader returns, and the dataset registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from kdlab.config.schema import DataConfig
from kdlab.data import transfer
from kdlab.data.mapped import MappedRows
from kdlab.data.splits import stratified_split
from kdlab.data.tensors import Source, Split
from kdlab.errors import ConfigError, DataError
from kdlab.registry import Registry


@dataclass
class DataBundle:
    """Train / validation / test splits (disjoint), class names and what models need to size.

    Attributes:
        name: the dataset's registered name.
        train, val, test: the splits as tensors.
        classes: class names, index = label.
        input_shape: shape of one input (``(C, H, W)`` for images, ``(L,)`` for token ids).
        meta: extra facts for the run record: ``skipped_files`` (paths), ``source``, ``vocab``...
        unlabeled: the transfer set (``data.unlabeled``; labels all ``UNLABELED``), or None.
        full_train: every training sample before ``data.train_limit`` (``teacher.train_on: all``),
            or None when no limit applied (then it is ``train``).
    """

    name: str
    train: Split
    val: Split
    test: Split
    classes: list[str]
    input_shape: tuple[int, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    unlabeled: Split | None = None
    full_train: Split | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def summary(self) -> dict[str, Any]:
        """The ``data`` section of results.json."""
        skipped = list(self.meta.get("skipped_files", []))
        return {
            "name": self.name,
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "classes": self.classes,
            "input_shape": list(self.input_shape),
            "source": self.meta.get("source"),
            "skipped_files": skipped,
            "skipped_count": len(skipped),
            **({"full_train": len(self.full_train)} if self.full_train is not None else {}),
            **({"unlabeled": transfer.summary(self)} if self.unlabeled is not None else {}),
        }


DatasetLoader = Callable[[DataConfig, int], DataBundle]
DATASETS: Registry[DatasetLoader] = Registry("dataset")


# The ``data.*`` keys each built-in dataset reads, besides those every dataset reads (COMMON_KEYS).
# A dataset registered without an entry here is not checked.
COMMON_KEYS = frozenset({"name", "val_fraction", "train_limit", "max_memory_gb", "unlabeled", "unlabeled_limit"})
DATASET_KEYS: dict[str, frozenset[str]] = {
    "digits": frozenset({"test_fraction"}),
    "fashion-mnist": frozenset({"path"}),  # its own 10,000-image test split: no test_fraction
    "image-folder": frozenset({"path", "image_size", "cache_dir", "test_fraction"}),
    "text-csv": frozenset({"path", "text_column", "label_column", "vocab_size", "max_len", "test_fraction"}),
    "aclimdb": frozenset({"path", "vocab_size", "max_len"}),  # its own 25,000-review test split
}


def check_keys(cfg: DataConfig) -> None:
    """Refuse a ``data.*`` key that was set (in a preset, a YAML file or ``--set``) to a value other
    than its default and that the dataset ``cfg.name`` does not read: it would be silently ignored
    (``kdlab run digits --set data.path=reviews.csv`` would train on digits)."""
    reads = DATASET_KEYS.get(cfg.name)
    if reads is None:
        return
    if cfg.unlabeled not in (None, "rest"):
        reads = reads | {"text_column"}  # a .csv/.tsv/.jsonl transfer set's text column
    for key in DataConfig.model_fields:  # in the schema's order, so the first one named is stable
        if key in COMMON_KEYS or key in reads or key not in cfg.model_fields_set:
            continue
        if getattr(cfg, key) == DataConfig.model_fields[key].get_default(call_default_factory=True):
            continue
        users = [name for name, keys in DATASET_KEYS.items() if key in keys]
        if key == "test_fraction":
            why, fix = " (it has its own test split)", "remove it; the test split is the dataset's"
        else:
            why = " (it is built in)" if key == "path" and cfg.name == "digits" else ""
            fix = f"it is read by {', '.join(users)}: set data.name to one of them, or remove it"
        if key == "path":
            fix += " (data.name=text-csv for a .csv/.tsv/.jsonl file, image-folder for a folder of images)"
        raise ConfigError(f"data.{key}: the {cfg.name} dataset does not read it{why}; {fix}")


def build_data(cfg: DataConfig, seed: int) -> DataBundle:
    """Load the dataset named ``cfg.name`` and split it with ``seed`` (a new run first calls
    :func:`check_keys`; a recorded run's config is loaded as it was written)."""
    bundle = DATASETS.get(cfg.name)(cfg, seed)
    if len(bundle.test) == 0:  # before any run folder exists (lab.check_inputs calls this first)
        raise DataError(
            f"data.test_fraction: the test split of {cfg.name} is empty (test_fraction={cfg.test_fraction:g});"
            " the arms are compared on it: set data.test_fraction > 0, e.g. 0.1"
        )
    rest: Split | None = None
    if cfg.train_limit is not None and cfg.train_limit < len(bundle.train):
        bundle.full_train = bundle.train
        bundle.train, rest = subset_train(bundle.train, cfg.train_limit, seed)
    if cfg.unlabeled is not None:
        bundle.unlabeled = transfer.transfer_set(cfg, bundle, rest, seed)
    return bundle


def subset_train(train: Split, limit: int, seed: int) -> tuple[Split, Split]:
    """A stratified subset of ``limit`` training samples (for data-starved students and quick runs),
    and the samples it left out (``data.unlabeled: rest``); the two are disjoint."""
    y = train.y.numpy()
    frac = limit / len(y)
    keep, rest = stratified_split(y, (frac, 1 - frac), seed=seed + 7, what="data.train_limit")
    return train.take(torch.from_numpy(keep)), train.take(torch.from_numpy(rest))


def three_way(
    x: torch.Tensor | MappedRows, y: np.ndarray, cfg: DataConfig, seed: int, what: str, source: Source | None = None
) -> tuple[Split, Split, Split]:
    """Split one pool of samples (and their ``source``) into train / val / test with the configured fractions."""
    val_f, test_f = cfg.val_fraction, cfg.test_fraction
    tr, va, te = stratified_split(y, (1 - val_f - test_f, val_f, test_f), seed=seed, what=what)
    pool = Split(x, torch.from_numpy(np.asarray(y, dtype=np.int64)), source)
    return tuple(pool.take(torch.from_numpy(i)) for i in (tr, va, te))  # type: ignore[return-value]


def train_val(
    x: torch.Tensor | MappedRows, y: np.ndarray, cfg: DataConfig, seed: int, what: str, source: Source | None = None
) -> tuple[Split, Split]:
    """Split a training pool (and its ``source``) into train / val, val taking ``val_fraction`` of the pool."""
    tr, va = stratified_split(y, (1 - cfg.val_fraction, cfg.val_fraction), seed=seed, what=what)
    pool = Split(x, torch.from_numpy(np.asarray(y, dtype=np.int64)), source)
    return pool.take(torch.from_numpy(tr)), pool.take(torch.from_numpy(va))
