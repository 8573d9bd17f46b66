"""Where distillation pays: label budgets × {scratch, KD, KD with the rest as a transfer set, …}.

For every budget (a number of labelled training samples, or ``all``) one ``kdlab compare`` over
``--seeds`` seeds is run with a teacher that saw every training label: loaded from ``--teacher FILE``
(trained once, e.g. ``kdlab run fashion-mnist`` → ``RUN/teacher.safetensors``; right for a dataset
whose test split is its own, never trained on), or with ``--teacher train`` trained per seed on every
label of that seed's training split (``teacher.train_on: all``; needed where the splits move with the
seed, as text-csv's do). Arms:

* ``scratch`` — CE on the budget's labels only;
* ``kd:use_unlabeled=false`` — α·CE + (1−α)·KD on the budget's samples only;
* ``kd`` — the same with ``data.unlabeled=rest``: the training samples the budget left out, labels
  withheld, enter the KD term (budgets below ``all`` only);
* any ``--extra`` method specs (e.g. the setting ``kdlab tune`` found), paired on the same seeds.

Printed and saved (``--json``): per budget and arm the test accuracy mean ± 95 % CI and the paired
difference to scratch with its interval (points), with the command line and the commit.

    python -m benchmarks.label_budgets --teacher RUN/teacher.safetensors --budgets 540,5400,all --seeds 3

Never part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from kdlab.config import load_experiment
from kdlab.lab.compare import read_comparison, run_comparison


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def run_budget(args: argparse.Namespace, budget: str) -> dict[str, Any]:
    sets = [] if args.teacher == "train" else [f"teacher.checkpoint={args.teacher}"]
    sets += args.set
    methods = ["kd:use_unlabeled=false"]
    if budget != "all":
        sets += [f"data.train_limit={budget}", "data.unlabeled=rest"]
        sets += ["teacher.train_on=all"] if args.teacher == "train" else []
        methods.append("kd")
    methods += args.extra
    cfg = load_experiment(args.experiment, [*sets, f"name={args.experiment}-{budget}"])
    out = Path(args.out)
    existing = sorted(out.glob(f"*-{args.experiment}-{budget}-compare"))
    if existing:
        comp = run_comparison(cfg, methods, args.seeds, resume=existing[-1], log=print)
    else:
        comp = run_comparison(cfg, methods, args.seeds, out=out, log=print)
    record = read_comparison(comp)
    return {"budget": budget, "folder": str(comp), "arms": record["arms"], "verdicts": record.get("verdicts")}


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| labels | arm | test accuracy % (mean ± 95 % CI) | paired Δ vs scratch, points (95 % CI) |",
        "|---|---|---|---|",
    ]
    for row in rows:
        for arm, a in row["arms"].items():
            if arm == "teacher":
                continue
            half = 100 * (a["ci95_high"] - a["mean"]) if a.get("ci95_high") is not None else float("nan")
            d = a.get("diff_vs_scratch")
            diff = "—"
            if d and d.get("ci95_low") is not None:
                diff = f"{100 * d['mean']:+.2f} ({100 * d['ci95_low']:+.2f} to {100 * d['ci95_high']:+.2f})"
            lines.append(f"| {row['budget']} | {arm} | {100 * a['mean']:.2f} ± {half:.2f} | {diff} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--experiment", default="fashion-mnist")
    p.add_argument("--teacher", required=True, help="weights trained on every training label, or train (per seed)")
    p.add_argument("--budgets", default="540,5400,all", help="comma-separated label counts, or all")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--extra", action="append", default=[], help="another method spec to pair (repeatable)")
    p.add_argument("--set", action="append", default=[], help="a config override KEY=VALUE (repeatable)")
    p.add_argument("--out", default="runs/label-budgets")
    p.add_argument("--json", default="benchmarks/results/label-budgets.json")
    args = p.parse_args()
    rows = [run_budget(args, b.strip()) for b in args.budgets.split(",")]
    text = table(rows)
    print(text)
    result = {"command": " ".join(["python -m benchmarks.label_budgets", *sys.argv[1:]]), "commit": _commit()}
    Path(args.json).write_text(json.dumps({**result, "budgets": rows, "table": text}, indent=2) + "\n")


if __name__ == "__main__":
    main()
