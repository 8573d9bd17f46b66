"""The ``text-csv`` preset on real corpora, against TF-IDF + logistic regression on the same splits.

    python -m benchmarks.text_corpora corpora/
    python -m benchmarks.text_defaults corpora/ [--seeds 3] [--set KEY=VALUE ...] [--out FILE.json]

For every ``*.csv`` corpus in ``CORPUS_DIR`` and every seed ``s`` (0 .. seeds − 1): the preset is
loaded with ``data.path=<corpus>``, ``seed=s`` and the ``--set`` overrides
(:func:`kdlab.config.load_experiment`) and run through :func:`kdlab.lab.run.run_lab`, giving the
teacher's, the scratch student's and the distilled student's test accuracy. On exactly the same
split (:func:`kdlab.data.bundle.build_data` with the same config and seed: the raw texts of each
split are its ``.source.texts``), a TF-IDF vectorizer (word 1–2 grams, sublinear tf
``1 + log tf``, l2-normalised rows) and a multinomial ``LogisticRegression`` (C = 1, lbfgs) are fitted
on the training split only (the validation split only selects the students' epoch, so neither
baseline nor students learn from it) and scored on the test split.

Printed per corpus: mean ± 95 % t-interval across seeds of each arm in points
(:func:`kdlab.report.stats.summarize`), the paired difference distilled − scratch with its interval
(:func:`kdlab.report.stats.paired_difference`) and TF-IDF + LR's mean. The JSON file (default
``benchmarks/results/text-defaults.json``) records the
command line, the commit, the torch and scikit-learn versions, the overrides and every per-seed number.
Runs use one thread (``torch.set_num_threads(1)``) unless ``--threads`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdlab.config import load_experiment
from kdlab.config.schema import ExperimentConfig
from kdlab.data.bundle import build_data
from kdlab.data.text import Texts
from kdlab.lab.run import run_lab
from kdlab.report.stats import paired_difference, summarize

ARMS = ("teacher", "scratch", "distilled")
PRESET = "text-csv"


def tfidf_lr_accuracy(cfg: ExperimentConfig, seed: int) -> float:
    """Test accuracy of TF-IDF (word 1–2 grams, sublinear tf) + logistic regression fitted on the
    training split of ``build_data(cfg.data, seed)``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    data = build_data(cfg.data, seed)
    train, test = data.train.source, data.test.source
    if not isinstance(train, Texts) or not isinstance(test, Texts):
        raise SystemExit(f"error: {cfg.data.path}: the splits carry no raw texts (data.name must be text-csv)")
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = LogisticRegression(C=1.0, max_iter=2000)
    model.fit(vec.fit_transform(train.texts), data.train.y.numpy())
    pred = model.predict(vec.transform(test.texts))
    return float(np.mean(pred == data.test.y.numpy()))


def run_seed(corpus: Path, seed: int, sets: Sequence[str], work: Path) -> dict[str, Any]:
    """One seed of one corpus: the three arms' test accuracies, TF-IDF + LR's, split sizes, seconds."""
    cfg = load_experiment(PRESET, [f"data.path={corpus}", f"seed={seed}", *sets])
    start = time.perf_counter()
    run_dir = run_lab(cfg, out=work)
    lab_seconds = time.perf_counter() - start
    results = json.loads((run_dir / "results.json").read_text())
    start = time.perf_counter()
    baseline = tfidf_lr_accuracy(cfg, seed)
    row: dict[str, Any] = {a: results["arms"][a]["test_accuracy"] for a in ARMS}
    row |= {
        "tfidf_lr": baseline,
        "epochs_selected": {a: results["arms"][a].get("selected_epoch") for a in ARMS},
        "lab_seconds": round(lab_seconds, 1),
        "tfidf_lr_seconds": round(time.perf_counter() - start, 1),
        "split": {k: results["data"][k] for k in ("train", "val", "test")},
        "classes": len(results["data"]["classes"]),
    }
    return row


def points(values: Sequence[float]) -> list[float]:
    return [100.0 * v for v in values]


def interval(s: dict[str, Any]) -> str:
    if s["ci95_low"] is None:
        return f"{s['mean']:6.2f}"
    half = (s["ci95_high"] - s["ci95_low"]) / 2
    return f"{s['mean']:6.2f} ± {half:4.2f}"


def summarize_corpus(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per arm :func:`summarize` in points, and distilled − scratch by :func:`paired_difference`."""
    out: dict[str, Any] = {a: summarize(points([r[a] for r in rows])) for a in (*ARMS, "tfidf_lr")}
    out["distilled_minus_scratch"] = paired_difference(
        points([r["distilled"] for r in rows]), points([r["scratch"] for r in rows])
    )
    out["distilled_minus_tfidf_lr"] = paired_difference(
        points([r["distilled"] for r in rows]), points([r["tfidf_lr"] for r in rows])
    )
    return out


def table(report: dict[str, Any]) -> str:
    head = f"{'corpus':<24} {'rows':>5} {'cls':>3} {'teacher':>13} {'scratch':>13} {'distilled':>13} "
    head += f"{'dist-scratch (CI)':>24} {'tfidf+lr':>8}"
    lines = [head]
    for name, c in report["corpora"].items():
        s, d = c["summary"], c["summary"]["distilled_minus_scratch"]
        ci = "" if d["ci95_low"] is None else f" [{d['ci95_low']:+.2f}, {d['ci95_high']:+.2f}]"
        lines.append(
            f"{name:<24} {c['rows']:>5} {c['classes']:>3} {interval(s['teacher']):>13} {interval(s['scratch']):>13} "
            f"{interval(s['distilled']):>13} {d['mean']:>+7.2f}{ci:<17} {s['tfidf_lr']['mean']:>8.2f}"
        )
    return "\n".join(lines)


def commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return done.stdout.strip() or None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus_dir", type=Path, help="folder of text,label CSV files (benchmarks.text_corpora)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="preset override")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/text-defaults.json"))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    corpora = sorted(args.corpus_dir.glob("*.csv"))
    if not corpora:
        print(f"error: {args.corpus_dir}: no .csv corpora; write them with python -m benchmarks.text_corpora DIR")
        return 2
    torch.set_num_threads(args.threads)
    import sklearn

    report: dict[str, Any] = {
        "command": shlex.join([sys.executable.rsplit("/", 1)[-1], "-m", "benchmarks.text_defaults", *sys.argv[1:]])
        if argv is None
        else shlex.join(["python", "-m", "benchmarks.text_defaults", *argv]),
        "commit": commit(),
        "torch": torch.__version__,
        "sklearn": sklearn.__version__,
        "threads": args.threads,
        "preset": PRESET,
        "overrides": list(args.sets),
        "baseline": "TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True) + LogisticRegression(C=1), fit on train",
        "corpora": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for corpus in corpora:
            rows = []
            for seed in range(args.seeds):
                row = run_seed(corpus, seed, args.sets, Path(tmp))
                rows.append({"seed": seed, **row})
                print(
                    f"{corpus.stem} seed {seed}: teacher {100 * row['teacher']:.2f} scratch {100 * row['scratch']:.2f}"
                    f" distilled {100 * row['distilled']:.2f} tfidf+lr {100 * row['tfidf_lr']:.2f}"
                    f" ({row['lab_seconds']:.0f} s)",
                    flush=True,
                )
            split = rows[0]["split"]
            report["corpora"][corpus.stem] = {
                "path": str(corpus),
                "rows": sum(split.values()),
                "classes": rows[0]["classes"],
                "seeds": rows,
                "summary": summarize_corpus(rows),
            }
    print(table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
