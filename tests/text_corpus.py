"""A generated labelled corpus for the text tests: reviews built from positive / negative word
lists plus filler words and noise (an opposite-sentiment word in some reviews), so a model can
learn it but not trivially from one token."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

POSITIVE = [
    "great",
    "wonderful",
    "superb",
    "brilliant",
    "moving",
    "delightful",
    "excellent",
    "charming",
    "gripping",
    "fine",
]
NEGATIVE = ["awful", "boring", "terrible", "dull", "clumsy", "tedious", "dreadful", "weak", "lifeless", "poor"]
FILLER = [
    "the",
    "a",
    "movie",
    "film",
    "plot",
    "actor",
    "story",
    "scene",
    "it",
    "was",
    "and",
    "but",
    "very",
    "really",
    "quite",
    "this",
    "of",
    "cast",
]


def reviews(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (text, label) pairs, alternating pos / neg, with punctuation and ``<br />`` breaks."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 else "neg"
        own, other = (POSITIVE, NEGATIVE) if label == "pos" else (NEGATIVE, POSITIVE)
        words = rng.choices(FILLER, k=rng.randint(6, 14)) + rng.choices(own, k=rng.randint(2, 3))
        if rng.random() < 0.3:
            words.append(rng.choice(other))
        rng.shuffle(words)
        rows.append((" ".join(words).capitalize() + "!<br /><br />" + rng.choice(FILLER) + ".", label))
    return rows


def write_table(path: Path, rows: list[tuple[str, str]], *, text: str = "text", label: str = "label") -> Path:
    """Write rows as .csv, .tsv or .jsonl (by suffix) with the given column names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps({label: y, text: x}) + "\n" for x, y in rows), encoding="utf-8")
        return path
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, delimiter="\t" if path.suffix == ".tsv" else ",")
        writer.writerow([text, label])
        writer.writerows(rows)
    return path


def write_aclimdb(root: Path, train: list[tuple[str, str]], test: list[tuple[str, str]]) -> Path:
    """The IMDB download's layout: root/aclImdb/{train,test}/{pos,neg}/<id>_<stars>.txt."""
    base = root / "aclImdb"
    for part, rows in (("train", train), ("test", test)):
        for i, (text, label) in enumerate(rows):
            folder = base / part / label
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}_{8 if label == 'pos' else 2}.txt").write_text(text, encoding="utf-8")
    (base / "train" / "unsup").mkdir()
    (base / "train" / "unsup" / "0_0.txt").write_text("unlabelled review", encoding="utf-8")
    return base
