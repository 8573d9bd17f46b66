"""TF-IDF + logistic regression (what a user tries first) at the label budgets of
``benchmarks.label_budgets``, on exactly kdlab's splits of each seed (``build_data``: the budget is
the stratified ``data.train_limit`` subset), scored on the same test split.

    python -m benchmarks.tfidf_budgets CORPUS.csv --budgets 38,384,all --seeds 3

Word 1-2 grams, sublinear tf, ``LogisticRegression(C=1)`` fitted on the budget's texts only.
Never part of ``make test``.
"""

from __future__ import annotations

import argparse

from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from kdlab.config import load_experiment
from kdlab.data import build_data
from kdlab.report.stats import summarize


def accuracy(path: str, budget: str, seed: int) -> float:
    sets = [f"data.path={path}", f"seed={seed}", *([] if budget == "all" else [f"data.train_limit={budget}"])]
    data = build_data(load_experiment("text-csv", sets).data, seed)
    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    train_x = vec.fit_transform(data.train.source.texts)  # type: ignore[union-attr]
    clf = LogisticRegression(C=1.0, max_iter=1000).fit(train_x, data.train.y.numpy())
    predicted = clf.predict(vec.transform(data.test.source.texts))  # type: ignore[union-attr]
    return 100 * float((predicted == data.test.y.numpy()).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("corpus")
    p.add_argument("--budgets", default="38,384,all")
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    print("| labels | TF-IDF + LR test accuracy % (mean ± 95 % CI) | per seed |")
    print("|---|---|---|")
    for budget in args.budgets.split(","):
        accs = [accuracy(args.corpus, budget, seed) for seed in range(args.seeds)]
        s = summarize(accs)
        half = s["ci95_high"] - s["mean"] if s["ci95_high"] is not None else float("nan")
        print(f"| {budget} | {s['mean']:.2f} ± {half:.2f} | {', '.join(f'{a:.2f}' for a in accs)} |")


if __name__ == "__main__":
    main()
