"""Real labelled text corpora from Debian's fortune packages, written as ``text,label`` CSV files.

    python -m benchmarks.text_corpora OUT_DIR [--root /usr/share/games/fortunes] [--per-class 600] [--seed 0]

Two corpora (needs ``apt-get install -y fortunes fortunes-de fortunes-es fortunes-it fortunes-br
fortunes-pl fortunes-cs fortunes-ru``):

* ``fortunes-topics.csv``: English fortunes labelled by their category file, six topical
  categories with more than 500 usable records each (:data:`TOPICS`: computers, politics, science,
  work, men-women, songs-poems), at most ``--per-class`` records per category.
* ``fortunes-languages.csv``: language identification over the eight languages of the packages
  (:data:`LANGUAGES`): every language subsampled to the same number of records,
  ``min(--per-class, records of the smallest language)``.

A fortune file holds records separated by lines that contain only ``%``. Skipped: the ``.dat``
index files, the ``.u8`` links, every other symbolic link (the top-level Italian links point into
``it/``), the rot13 offensive files (names ending in ``-o``) and every ``off/`` folder. Each record
is cleaned (overstrike ``X\\bY`` sequences, ANSI escapes and control characters removed, all
whitespace runs collapsed to one space) and kept when it has at least :data:`MIN_WORDS` words and at
most :data:`MAX_CHARS` characters and decodes as UTF-8. Texts are deduplicated across the whole
corpus: the first copy of a text is kept, and a text found under two labels is dropped entirely.
Subsampling uses ``numpy.random.default_rng(seed)``; the same packages and seed give the same bytes.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

ROOT = Path("/usr/share/games/fortunes")
INSTALL = (
    "apt-get install -y fortunes fortunes-de fortunes-es fortunes-it fortunes-br fortunes-pl fortunes-cs fortunes-ru"
)
TOPICS: tuple[str, ...] = ("computers", "politics", "science", "work", "men-women", "songs-poems")
"""English category files (top level of the fortunes folder, package ``fortunes``)."""

ENGLISH = "."
"""The top level of the fortunes folder: the English package's regular files (not its links)."""

LANGUAGES: dict[str, tuple[str, ...]] = {
    "en": (ENGLISH,),
    "de": ("de",),
    "es": ("es",),
    "it": ("it",),
    "pt": ("brasil",),
    "pl": ("pl",),
    "cs": ("cs",),
    "ru": ("ru",),
}
"""Language -> files or folders (relative to the fortunes folder) holding its fortunes."""

NOT_LANGUAGE: dict[str, frozenset[str]] = {
    "en": frozenset({"brasil"}),  # Portuguese, from fortunes-br, lies at the top level too
    "cs": frozenset({"klasik-sk"}),  # Slovak (fortunes-cs is "Czech and Slovak")
    "pl": frozenset({"linuxfr"}),  # translated French IRC logs, mixed languages
}
"""Files inside a language's folders that are not in that language."""

MIN_WORDS = 3
MAX_CHARS = 1000
DEFAULT_PER_CLASS = 600
MIN_TOPIC = 300
"""A topic category needs at least this many usable records."""

_OVERSTRIKE = re.compile(r".\x08")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b.")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_SPACE = re.compile(r"\s+")
_SEPARATOR = re.compile(r"^%[ \t]*$", re.MULTILINE)


class MissingFortunes(Exception):
    """The fortune files a corpus needs are not installed."""


def clean(record: str) -> str | None:
    """One record as one line of text, or None when it is unusable (see the module docstring)."""
    text = _CONTROL.sub(" ", _ANSI.sub("", _OVERSTRIKE.sub("", record)))
    text = _SPACE.sub(" ", text).strip()
    if "\ufffd" in text or len(text) > MAX_CHARS or len(text.split()) < MIN_WORDS:
        return None
    return text


def read_fortunes(path: Path) -> list[str]:
    """The cleaned, usable records of one fortune file, in file order (duplicates kept)."""
    raw = path.read_bytes().decode("utf-8", errors="replace").replace("\r\n", "\n")
    return [t for t in (clean(r) for r in _SEPARATOR.split(raw)) if t is not None]


def skipped(path: Path) -> bool:
    """True for index files, links, rot13 offensive files and anything that is not a regular file."""
    return path.suffix in (".dat", ".u8") or path.is_symlink() or path.name.endswith("-o") or not path.is_file()


def fortune_files(root: Path, rel: str, exclude: frozenset[str] = frozenset()) -> list[Path]:
    """The fortune files of ``root/rel``: the file itself, a folder's files (recursively), or for
    :data:`ENGLISH` the regular files directly in ``root``; sorted by path, ``exclude`` names left out."""
    where = root / rel
    if rel == ENGLISH:
        found = [p for p in where.iterdir() if not p.is_dir()]
    elif where.is_dir():
        found = [p for p in where.rglob("*") if "off" not in p.relative_to(where).parts]
    else:
        found = [where]
    return sorted(p for p in found if not skipped(p) and p.name not in exclude)


def dedupe(rows: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """First copy of each text; a text seen under two different labels is dropped altogether."""
    labels: dict[str, set[str]] = {}
    order: list[tuple[str, str]] = []
    for text, label in rows:
        if text not in labels:
            labels[text] = set()
            order.append((text, label))
        labels[text].add(label)
    return [(t, lab) for t, lab in order if len(labels[t]) == 1]


def balance(rows: Sequence[tuple[str, str]], per_class: int | None, seed: int, *, equal: bool) -> list[tuple[str, str]]:
    """At most ``per_class`` rows per label (all labels the same size when ``equal``: the smallest
    label's count if lower), drawn without replacement by ``default_rng(seed)``, then shuffled."""
    by_label: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        by_label.setdefault(row[1], []).append(row)
    smallest = min(len(v) for v in by_label.values())
    rng = np.random.default_rng(seed)
    out: list[tuple[str, str]] = []
    for label in sorted(by_label):
        pool = by_label[label]
        n = min(len(pool), per_class if per_class is not None else len(pool))
        if equal:
            n = min(n, smallest)
        keep = np.sort(rng.choice(len(pool), size=n, replace=False))
        out += [pool[i] for i in keep]
    return [out[i] for i in rng.permutation(len(out))]


def topic_rows(
    root: Path = ROOT,
    topics: Sequence[str] = TOPICS,
    per_class: int | None = DEFAULT_PER_CLASS,
    seed: int = 0,
    min_count: int = MIN_TOPIC,
) -> list[tuple[str, str]]:
    """``(text, category)`` rows of the English category files ``topics`` (see the module docstring)."""
    missing = [t for t in topics if not (root / t).is_file()]
    if missing:
        raise MissingFortunes(f"{root}: category files {', '.join(missing)} are missing; install them: {INSTALL}")
    rows = dedupe((text, t) for t in topics for text in read_fortunes(root / t))
    counts = {t: sum(1 for _, lab in rows if lab == t) for t in topics}
    few = [f"{t} ({n})" for t, n in counts.items() if n < min_count]
    if few:
        raise MissingFortunes(f"{root}: categories with fewer than {min_count} usable records: {', '.join(few)}")
    return balance(rows, per_class, seed, equal=False)


def language_rows(
    root: Path = ROOT,
    languages: Mapping[str, Sequence[str]] = LANGUAGES,
    per_class: int | None = DEFAULT_PER_CLASS,
    seed: int = 0,
) -> list[tuple[str, str]]:
    """``(text, language)`` rows, every language subsampled to the same count (see the module docstring)."""
    missing = [
        f"{lang} ({root / rel})" for lang, rels in languages.items() for rel in rels if not (root / rel).exists()
    ]
    if missing:
        raise MissingFortunes(f"fortune files missing for {', '.join(missing)}; install them: {INSTALL}")
    pairs = (
        (text, lang)
        for lang, rels in languages.items()
        for rel in rels
        for path in fortune_files(root, rel, NOT_LANGUAGE.get(lang, frozenset()))
        for text in read_fortunes(path)
    )
    rows = dedupe(pairs)
    empty = [lang for lang in languages if not any(lab == lang for _, lab in rows)]
    if empty:
        raise MissingFortunes(f"no usable fortunes for {', '.join(empty)} under {root}; install them: {INSTALL}")
    return balance(rows, per_class, seed + 1, equal=True)


def write_csv(path: Path, rows: Sequence[tuple[str, str]]) -> Path:
    """``rows`` as a UTF-8 CSV file with the header ``text,label``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["text", "label"])
        out.writerows(rows)
    return path


def summary(name: str, rows: Sequence[tuple[str, str]]) -> str:
    """``name: N rows, K classes (label n, ...)``."""
    counts: dict[str, int] = {}
    for _, label in rows:
        counts[label] = counts.get(label, 0) + 1
    per = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    return f"{name}: {len(rows)} rows, {len(counts)} classes ({per})"


def build(out_dir: Path, root: Path = ROOT, per_class: int | None = DEFAULT_PER_CLASS, seed: int = 0) -> list[Path]:
    """Write both corpora into ``out_dir``; returns their paths (topics, languages)."""
    paths = []
    for name, rows in (
        ("fortunes-topics.csv", topic_rows(root, per_class=per_class, seed=seed)),
        ("fortunes-languages.csv", language_rows(root, per_class=per_class, seed=seed)),
    ):
        paths.append(write_csv(Path(out_dir) / name, rows))
        print(summary(str(paths[-1]), rows))
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--root", type=Path, default=ROOT, help="the fortunes folder (default %(default)s)")
    ap.add_argument("--per-class", type=int, default=DEFAULT_PER_CLASS, help="records per class at most")
    ap.add_argument("--seed", type=int, default=0, help="subsampling seed")
    args = ap.parse_args(argv)
    if not args.root.is_dir():
        print(f"error: {args.root} does not exist: install the fortune packages: {INSTALL}", file=sys.stderr)
        return 2
    try:
        build(args.out_dir, args.root, args.per_class, args.seed)
    except MissingFortunes as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
