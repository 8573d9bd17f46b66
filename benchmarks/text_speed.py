"""Seconds per epoch of the text lab's models on a generated corpus (CPU or whatever device is found).

A corpus of ``--rows`` labelled texts of ``--tokens`` words each is drawn from a Zipf-distributed
vocabulary of 30,000 words (so the 20,000-word vocabulary fills up as on real reviews), written as
CSV, and run through the ``text-csv`` preset with the chosen teacher and student. Prints, per arm,
seconds per epoch and ms per step, and the distilled/scratch step-time ratio measured in the same run.

    python -m benchmarks.text_speed --rows 5000 --tokens 200 --teacher bag-teacher --student bag-student
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import numpy as np

from kdlab.config import load_experiment
from kdlab.lab.run import run_lab


def write_corpus(path: Path, rows: int, tokens: int, seed: int = 0) -> None:
    """``rows`` texts of exactly ``tokens`` words: Zipf-drawn filler, one word in ten a label cue."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(30_000)], dtype=object)
    labels = rng.integers(0, 2, size=rows)
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["text", "label"])
        for r in range(rows):
            row = words[np.minimum(rng.zipf(1.2, size=tokens) - 1, len(words) - 1)]
            cues = rng.choice(tokens, size=max(1, tokens // 10), replace=False)
            row[cues] = [f"cue{c + 10 * labels[r]}" for c in rng.integers(0, 10, size=len(cues))]
            out.writerow([" ".join(row), "pos" if labels[r] else "neg"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=5000)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--teacher", default="bag-teacher")
    ap.add_argument("--student", default="bag-student")
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "corpus.csv"
        write_corpus(data, args.rows, args.tokens)
        cfg = load_experiment(
            "text-csv",
            [
                f"data.path={data}",
                f"teacher.model={args.teacher}",
                f"student.model={args.student}",
                f"teacher.epochs={args.epochs}",
                f"student.epochs={args.epochs}",
            ],
        )
        run = run_lab(cfg, out=Path(tmp) / "runs")
        results = json.loads((run / "results.json").read_text())
    arms = results["arms"]
    print(f"{args.rows} rows x {args.tokens} tokens, train {results['data']['train']}, device {results['device']}")
    for arm, a in arms.items():
        print(
            f"{arm:<10} {a['model']:<18} {a['train_seconds'] / a['epochs']:6.2f} s/epoch "
            f"{a['ms_per_step']:7.2f} ms/step  test acc {100 * a['test_accuracy']:.1f}%"
        )
    print(f"distilled / scratch step time: {arms['distilled']['ms_per_step'] / arms['scratch']['ms_per_step']:.2f}")


if __name__ == "__main__":
    main()
