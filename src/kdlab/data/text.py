"""Text to token ids: the tokenizer, the vocabulary (built on the training split only) and
fixed-length encoding.

Tokenizing is the classic lab's (Keras ``TextVectorization`` defaults): lower-case, HTML line
breaks (``<br />``) become spaces, punctuation is removed (``don't`` -> ``dont``), split on
whitespace. The vocabulary keeps the most frequent training words, ties broken by the word itself
(count descending, then word ascending), so it is the same on every machine and every run.

Ids: ``0`` = padding, ``1`` = out of vocabulary, ``2..`` = words by rank. ``vocab_size`` counts the
two reserved ids, as Keras' ``num_words`` does, so ``vocab_size=20000`` gives an embedding table of
20,000 rows. Sequences hold the first ``max_len`` tokens of a text, padding goes at the end.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdlab.errors import DataError
from kdlab.io import atomic_write_json
from kdlab.runs import VOCAB_FILE

PAD, OOV = 0, 1
PAD_TOKEN, OOV_TOKEN = "<pad>", "<oov>"

_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_PUNCT = re.compile(r"[^\w\s]|_")  # \w is Unicode-aware: accented and non-Latin letters stay


def tokenize(text: str) -> list[str]:
    """Lower-case, ``<br />`` -> space, remove punctuation, split on whitespace.

    Example:
        >>> tokenize("Great movie!<br /><br />Don't miss it.")
        ['great', 'movie', 'dont', 'miss', 'it']
    """
    return _PUNCT.sub("", _BREAK.sub(" ", text.lower())).split()


@dataclass(frozen=True)
class Vocab:
    """Token list (index = id, ``tokens[0] = "<pad>"``, ``tokens[1] = "<oov>"``) and the encoding length."""

    tokens: tuple[str, ...]
    max_len: int

    def __post_init__(self) -> None:
        if self.tokens[:2] != (PAD_TOKEN, OOV_TOKEN):
            raise DataError(f"vocabulary must start with {PAD_TOKEN!r}, {OOV_TOKEN!r} (got {list(self.tokens[:2])})")
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.tokens)})

    def __len__(self) -> int:
        return len(self.tokens)

    @classmethod
    def build(cls, texts: Iterable[str], *, vocab_size: int, max_len: int) -> Vocab:
        """The ``vocab_size - 2`` most frequent words of ``texts`` (pass the training split only)."""
        return cls.fit_encode(list(texts), vocab_size=vocab_size, max_len=max_len)[0]

    @classmethod
    def fit_encode(cls, texts: Sequence[str], *, vocab_size: int, max_len: int) -> tuple[Vocab, torch.Tensor]:
        """Build the vocabulary of ``texts`` and encode them, tokenizing each text once.

        Words get a provisional id in order of first appearance while counting; the ranking then
        maps provisional ids to final ones (or to 1, out of vocabulary) with one array lookup.
        Only the first ``max_len`` ids of each text are kept; the counts are summed in chunks of
        ids, so memory follows the encoded size, not the corpus's token count.
        """
        if vocab_size < 3:
            raise DataError(
                f"data.vocab_size: must be >= 3 (padding, out-of-vocabulary and one word; got {vocab_size})"
            )
        first_seen: dict[str, int] = {}
        rows: list[np.ndarray] = []
        counts = np.zeros(0, np.int64)
        pending: list[np.ndarray] = []
        pending_ids = 0
        for text in texts:
            ids = np.fromiter((first_seen.setdefault(w, len(first_seen)) for w in tokenize(text)), np.int64)
            rows.append(ids[:max_len].copy() if len(ids) > max_len else ids)
            pending.append(ids)
            pending_ids += len(ids)
            if pending_ids >= _COUNT_CHUNK:
                counts, pending, pending_ids = _add_counts(counts, pending, len(first_seen)), [], 0
        counts = _add_counts(counts, pending, len(first_seen))
        words = list(first_seen)
        kept = sorted(range(len(words)), key=lambda i: (-counts[i], words[i]))[: vocab_size - 2]
        remap = np.full(len(words), OOV, dtype=np.int64)
        remap[kept] = np.arange(2, len(kept) + 2)
        vocab = cls((PAD_TOKEN, OOV_TOKEN, *(words[i] for i in kept)), max_len)
        return vocab, vocab._pad([remap[row] for row in rows])

    def ids(self, text: str) -> list[int]:
        """Token ids of ``text``, unknown words -> 1, not truncated or padded."""
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        return [index.get(w, OOV) for w in tokenize(text)]

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """``[N, max_len]`` int64: the first ``max_len`` ids of each text, then zeros (padding)."""
        return self._pad([self.ids(text) for text in texts])

    def _pad(self, rows: Sequence[Sequence[int] | np.ndarray]) -> torch.Tensor:
        out = np.zeros((len(rows), self.max_len), dtype=np.int64)
        for i, ids in enumerate(rows):
            ids = ids[: self.max_len]
            out[i, : len(ids)] = ids
        return torch.from_numpy(out)

    def to_json(self) -> dict[str, Any]:
        return {"format": 1, "pad": PAD, "oov": OOV, "max_len": self.max_len, "tokens": list(self.tokens)}

    @classmethod
    def from_json(cls, obj: Any, where: str = VOCAB_FILE) -> Vocab:
        """A vocabulary from :meth:`to_json`'s dict, validated (:class:`kdlab.records.VocabRecord`:
        strings only, at most ``data.vocab_size``'s and ``data.max_len``'s upper bounds)."""
        from kdlab.records import DAMAGED, VocabRecord, check_record

        record = check_record(VocabRecord, obj, Path(where), error=DataError, hint=DAMAGED, what="a kdlab vocabulary")
        return cls(tuple(record.tokens), record.max_len)


@dataclass(frozen=True)
class Texts:
    """The raw texts behind a text split's rows (row ``i`` encodes ``texts[i]``), kept so that a model
    with its own tokenizer (:mod:`kdlab.data.views`) encodes the same samples its way."""

    texts: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)

    def take(self, idx: torch.Tensor) -> Texts:
        return Texts(tuple(self.texts[i] for i in idx.tolist()))

    def join(self, other: object) -> Texts | None:
        """These texts followed by ``other``'s (None when ``other`` keeps no texts)."""
        return Texts(self.texts + other.texts) if isinstance(other, Texts) else None


_COUNT_CHUNK = 1 << 22  # token ids counted per np.bincount (32 MiB of int64)


def _add_counts(counts: np.ndarray, pending: list[np.ndarray], n_words: int) -> np.ndarray:
    """``counts`` (one entry per word seen so far) plus the occurrences in ``pending``, sized ``n_words``."""
    out = np.bincount(np.concatenate(pending), minlength=n_words) if pending else np.zeros(n_words, np.int64)
    out[: len(counts)] += counts
    return out


def save_vocab(run_dir: Path, vocab: Vocab) -> Path:
    """Write ``vocab.json`` into the run folder (atomically)."""
    path = Path(run_dir) / VOCAB_FILE
    atomic_write_json(path, vocab.to_json())
    return path


def load_vocab(path: Path) -> Vocab:
    """Read a ``vocab.json`` written by :func:`save_vocab`."""
    from kdlab.records import DAMAGED, read_json_record

    if not Path(path).exists():
        raise DataError(f"{path}: no such vocabulary file (a text run folder holds vocab.json)")
    obj = read_json_record(Path(path), error=DataError, hint=DAMAGED)
    return Vocab.from_json(obj, str(path))
