"""The same small lab run twice, with the data in memory and memory-mapped (``data.max_memory_gb``
far below any array): the check the tests of every mapped path end with."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

TINY_GB = 1e-6  # about 1 kB: every decoded array (and view) is over it, so it is mapped
QUICK = ["teacher.model=mlp-teacher", "student.model=mlp-student", "teacher.epochs=2", "student.epochs=2"]
WEIGHTS = ("teacher.safetensors", "student-scratch.safetensors", "student-distilled.safetensors")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def memory_and_mapped_runs(
    tmp_path: Path, sets: list[str], after_memory: Callable[[], None] | None = None
) -> dict[str, dict[str, Any]]:
    """``kdlab run digits`` with ``QUICK`` and ``sets`` (own decode and teacher caches per run), with
    ``data.max_memory_gb`` 4 and :data:`TINY_GB`; asserts byte-identical weight files and teacher
    logits and the same test accuracy per arm, and returns each run's ``results.json``."""
    from kdlab.config import load_experiment
    from kdlab.lab.run import run_lab

    runs = {}
    for how, budget in (("memory", 4.0), ("mapped", TINY_GB)):
        own = [
            f"data.cache_dir={tmp_path / how / 'cache'}",
            f"distill.teacher_cache_dir={tmp_path / how / 'logits'}",
            f"data.max_memory_gb={budget}",
        ]
        runs[how] = run_lab(load_experiment("digits", [*QUICK, *sets, *own]), out=tmp_path / how / "runs")
        if how == "memory" and after_memory is not None:
            after_memory()
    for w in (*WEIGHTS, "teacher-logits.safetensors"):
        assert sha(runs["memory"] / w) == sha(runs["mapped"] / w), w
    results = {k: json.loads((runs[k] / "results.json").read_text()) for k in runs}
    for arm in ("teacher", "scratch", "distilled"):
        assert results["memory"]["arms"][arm]["test_accuracy"] == results["mapped"]["arms"][arm]["test_accuracy"]
    return results
