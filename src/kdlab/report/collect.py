"""Run and comparison folders -> the records a report shows. Reads results.json,
comparison.json and history.csv only (never rendered text), through :mod:`kdlab.runs`; imports
nothing from the loop."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdlab.errors import KdlabError
from kdlab.records import DAMAGED
from kdlab.report import stats
from kdlab.runs import (
    ARMS,
    COMPARISON_FILE,
    RESULTS_FILE,
    has_results,
    is_comparison,
    read_comparison,
    read_config_text,
    read_history_rows,
    read_results,
    read_run_env,
    seed_dir,
)

METRIC = "test_accuracy"
BASE_ARMS = ARMS[:2]  # teacher, scratch: the arms every distilled arm is measured against
# Per-arm numbers summarized across seeds besides the test accuracy (see docs/compare.md).
EXTRA_METRICS = (
    "test_loss",
    "teacher_agreement",
    "kl_to_teacher",
    "ece",
    "params",
    "size_bytes",
    "latency_ms_per_sample",
    "latency_ms_per_batch32",
    "train_seconds",
    "selected_epoch",
)


def summarize_arms(per_seed: dict[int, dict[str, Any]], arms: Sequence[str]) -> dict[str, Any]:
    """Per arm: stats of the test accuracy over the seeds where it is recorded, the other metrics'
    summaries, and for distilled arms the paired difference to scratch on the shared seeds."""
    out: dict[str, Any] = {}
    for arm in arms:
        seeds = [s for s, r in per_seed.items() if arm in r.get("arms", {})]
        values = [per_seed[s]["arms"][arm][METRIC] for s in seeds]
        entry: dict[str, Any] = {**stats.summarize(values), "seeds": seeds}
        entry["model"] = per_seed[seeds[0]]["arms"][arm].get("model") if seeds else None
        entry["metrics"] = {}
        for key in EXTRA_METRICS:
            vals = [per_seed[s]["arms"][arm].get(key) for s in seeds]
            if vals and all(isinstance(v, int | float) for v in vals):
                entry["metrics"][key] = stats.summarize([float(v) for v in vals])
        if arm not in BASE_ARMS:
            paired = [s for s in seeds if "scratch" in per_seed[s].get("arms", {})]
            a = [per_seed[s]["arms"][arm][METRIC] for s in paired]
            b = [per_seed[s]["arms"]["scratch"][METRIC] for s in paired]
            entry["diff_vs_scratch"] = {**stats.paired_difference(a, b), "seeds": paired}
        out[arm] = entry
    return out


@dataclass
class ReportData:
    """Everything a report shows, for a single run (one seed) or a comparison (several).

    Attributes:
        kind: ``"run"`` or ``"comparison"``.
        folder: the folder reported on.
        title: heading of the page.
        arms: per arm the summary of :func:`summarize_arms` (mean, interval, metrics, diff).
        seeds: seed -> that seed's results.json.
        history: seed -> history rows (arm, epoch, train/val metrics).
        classes: class names, for the confusion matrices.
        config_text, env: the resolved config (YAML text) and the environment record.
        methods: distilled arm -> its own distill settings (a comparison's ``methods``; the resolved
            config's ``distill:`` is only the base they were derived from).
        status: ``complete`` or how far an unfinished folder got.
    """

    kind: str
    folder: Path
    title: str
    arms: dict[str, Any]
    seeds: dict[int, dict[str, Any]]
    history: dict[int, list[dict[str, Any]]]
    classes: list[str] = field(default_factory=list)
    config_text: str = ""
    env: dict[str, Any] = field(default_factory=dict)
    status: str = "complete"
    methods: dict[str, dict[str, Any]] = field(default_factory=dict)

    def confusion(self, arm: str) -> list[list[int]] | None:
        """The arm's confusion matrices summed over the seeds (None when none were recorded)."""
        recorded = [r["arms"].get(arm, {}) for r in self.seeds.values()]
        mats = [a["confusion_matrix"] for a in recorded if "confusion_matrix" in a]
        return np.sum(np.asarray(mats, dtype=np.int64), axis=0).tolist() if mats else None


def load_report_data(folder: Path) -> ReportData:
    """Read a run folder (results.json) or a comparison folder (comparison.json + seed-*/)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise KdlabError(f"{folder}: not a folder; give a run or comparison folder")
    if is_comparison(folder):
        comp = read_comparison(folder)
        seeds: dict[int, dict[str, Any]] = {}
        history: dict[int, list[dict[str, Any]]] = {}
        for s in comp["seeds"]:
            if has_results(sub := seed_dir(folder, s)):
                seeds[s] = read_results(sub)
                history[s] = read_history_rows(sub, set(seeds[s]["arms"]))
        data = comp.get("data") or {}
        _same_classes(folder, data.get("classes"), seeds)
        title = f"{comp.get('name', 'comparison')} — {data.get('name', '?')}, {len(seeds)} seed(s)"
        return ReportData(
            kind="comparison",
            folder=folder,
            title=title,
            arms=comp["arms"],
            seeds=seeds,
            history=history,
            classes=list(data.get("classes", [])),
            config_text=read_config_text(folder),
            env=read_run_env(folder),
            status=str(comp.get("status")),
            methods={a: m for a, m in (comp.get("methods") or {}).items() if isinstance(m, dict)},
        )
    if not has_results(folder):
        raise KdlabError(
            f"{folder}: has no {RESULTS_FILE} or {COMPARISON_FILE}; give a folder written by run or compare"
        )
    res = read_results(folder)
    seed = int(res.get("seed", 0))
    data = res["data"]
    return ReportData(
        kind="run",
        folder=folder,
        title=f"{res.get('name', 'run')} — {data.get('name', '?')}, seed {seed}",
        arms=summarize_arms({seed: res}, list(res["arms"])),
        seeds={seed: res},
        history={seed: read_history_rows(folder, set(res["arms"]))},
        classes=list(data["classes"]),
        config_text=read_config_text(folder),
        env=read_run_env(folder),
        status=str(res.get("status")),
    )


def _same_classes(folder: Path, classes: list[str] | None, seeds: dict[int, dict[str, Any]]) -> None:
    """Every seed folder of a comparison has the comparison's classes (their confusion matrices add up)."""
    for s, res in seeds.items():
        if classes is not None and res["data"]["classes"] != classes:
            raise KdlabError(
                f"{seed_dir(folder, s) / RESULTS_FILE}: data.classes: differ from {COMPARISON_FILE}'s; {DAMAGED}"
            )
        classes = res["data"]["classes"]
