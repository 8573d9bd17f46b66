"""torchrun data parallelism: 2 gloo processes on the CPU match one process with the same global batch.

Both runs load the same (untrained) teacher checkpoint and train a dropout-free student, so the
only differences are floating-point summation order and the weighting of the last, uneven batch
(29 samples split 15 / 14: DDP averages the two ranks' means). Stated tolerance: per-epoch training
loss within 1e-3 (absolute), test accuracy within 2 points (about 3 of the 180 test digits).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdlab.config import load_experiment
from kdlab.io import read_state_dict, save_weights
from kdlab.lab.run import run_lab
from kdlab.models import create_model
from kdlab.train import distributed

pytestmark = pytest.mark.e2e  # whole lab runs: `pytest -m "not e2e"` skips them

LOSS_TOL = 1e-3
ACC_TOL = 0.02


def _history(run_dir: Path) -> dict[tuple[str, str], float]:
    with open(run_dir / "history.csv", encoding="utf-8") as f:
        return {(r["arm"], r["epoch"]): float(r["train_loss"]) for r in csv.DictReader(f)}


def one_process_run(tmp_path: Path, monkeypatch) -> tuple[Path, list[str]]:
    """The one-process reference run (a fixed random teacher, 2 student epochs) and its ``--set`` list."""
    torch.manual_seed(0)
    ckpt = tmp_path / "teacher.safetensors"
    save_weights(create_model("mlp-teacher", num_classes=10, input_shape=(1, 8, 8)), ckpt)
    sets = [
        f"teacher.checkpoint={ckpt}",
        "teacher.model=mlp-teacher",
        "teacher.epochs=0",
        "student.epochs=2",
        "train.select=last",
    ]
    monkeypatch.setenv("KDLAB_CACHE", str(tmp_path / "cache-one"))
    return run_lab(load_experiment("digits", sets), out=tmp_path / "one"), sets


def test_two_gloo_processes_match_one_process(tmp_path: Path, monkeypatch) -> None:
    one, sets = one_process_run(tmp_path, monkeypatch)

    env = {**os.environ, "KDLAB_CACHE": str(tmp_path / "cache-two"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "kdlab", "run", "digits", "-q", "--out", str(tmp_path / "two")]
    cmd += [arg for s in sets for arg in ("--set", s)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("run folder:") == 1, "only rank 0 may report"
    (two,) = list((tmp_path / "two").iterdir())  # only rank 0 wrote a run folder
    assert_matches_one_process(two, one)


def assert_matches_one_process(run: Path, one: Path) -> None:
    """``run`` (2 processes, or 2 nodes of one) equals the one-process run ``one`` within the
    tolerances: the same cached teacher logits, training losses within LOSS_TOL, test accuracies
    within ACC_TOL."""
    r1 = json.loads((one / "results.json").read_text())
    r2 = json.loads((run / "results.json").read_text())
    assert r2["performance"]["world_size"] == 2 and r1["performance"]["world_size"] == 1
    # Both built the cache (the 2-process run split the teacher pass and gathered the rows).
    assert r1["teacher_cache"]["status"] == r2["teacher_cache"]["status"] == "miss"
    torch.testing.assert_close(
        read_state_dict(run / "teacher-logits.safetensors")["logits"],
        read_state_dict(one / "teacher-logits.safetensors")["logits"],
    )
    h1, h2 = _history(one), _history(run)
    assert h1.keys() == h2.keys() and len(h1) == 4
    for key, loss in h1.items():
        assert abs(h2[key] - loss) < LOSS_TOL, (key, loss, h2[key])
    for arm in ("scratch", "distilled"):
        assert abs(r2["arms"][arm]["test_accuracy"] - r1["arms"][arm]["test_accuracy"]) <= ACC_TOL + 1e-9
        assert r2["arms"][arm]["epochs"] == 2


def test_gather_rows_and_reduce_are_identity_outside_a_process_group() -> None:
    t = torch.arange(6.0).view(3, 2)
    assert distributed.gather_rows(t, 3) is t
    assert torch.equal(distributed.all_reduce_sum(t.clone()), t)
    assert distributed.info() == distributed.DistInfo(0, 1, 0)
