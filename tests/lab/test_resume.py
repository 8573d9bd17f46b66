"""Kill a real `kdlab run` (SIGKILL, SIGTERM) mid-epoch, resume it, and compare with an uninterrupted run."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from clihelp import run_cli

pytestmark = pytest.mark.e2e  # whole lab runs: `pytest -m "not e2e"` skips them

HERE = Path(__file__).parents[1]  # tests/, where slow_kdlab.py lives
WEIGHTS = ("teacher.safetensors", "student-scratch.safetensors", "student-distilled.safetensors")
TIMING_ARM_KEYS = {"train_seconds", "ms_per_step", "latency_ms_per_sample", "latency_ms_per_batch32"}
TIMING_HISTORY_KEYS = {"seconds", "samples_per_s"}
TINY = """\
base: digits
name: tiny
device: cpu
data: {train_limit: 300}
teacher: {model: mlp-teacher, epochs: 2}
student: {model: mlp-student, epochs: 3}
train: {batch_size: 32}
"""


def kdlab(*args: str, delay: float = 0.0) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "KDLAB_TEST_STEP_DELAY": str(delay)}
    return subprocess.Popen(
        [sys.executable, str(HERE / "slow_kdlab.py"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def only_run(parent: Path) -> Path:
    runs = [p for p in parent.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def comparable(run: Path) -> tuple[dict[str, Any], list[dict[str, str]], list[bytes]]:
    """results.json, history.csv and weight bytes of a run, minus run id and timings."""
    results = json.loads((run / "results.json").read_text())
    results.pop("run_id")
    results.pop("teacher_cache", None)  # hit or miss and its seconds: facts of the run, like timings
    for arm in results["arms"].values():
        for key in TIMING_ARM_KEYS:
            arm.pop(key)
    with (run / "history.csv").open() as f:
        history = [{k: v for k, v in row.items() if k not in TIMING_HISTORY_KEYS} for row in csv.DictReader(f)]
    return results, history, [(run / w).read_bytes() for w in WEIGHTS]


def wait_for_checkpoint(proc: subprocess.Popen[str], parent: Path, arm: str, epoch: int) -> Path:
    """Poll until `arm`'s checkpoint of `epoch` is the latest one; returns the run folder."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        for pointer in parent.glob(f"*/checkpoints/{arm}/latest.json"):
            try:
                if json.loads(pointer.read_text())["epoch"] == epoch:
                    return pointer.parents[2]
            except (OSError, ValueError):
                pass  # replaced while being read: look again
        time.sleep(0.01)
    raise AssertionError("checkpoint never appeared")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """An uninterrupted run of the tiny lab, the yardstick for every resumed one."""
    root = tmp_path_factory.mktemp("reference")
    (root / "tiny.yaml").write_text(TINY)
    proc = kdlab("run", str(root / "tiny.yaml"), "--out", str(root / "runs"), "-q")
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    run = only_run(root / "runs")
    return run, comparable(run)


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(reference, tmp_path) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY)
    proc = kdlab("run", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "runs"), "-q", delay=0.1)
    run = wait_for_checkpoint(proc, tmp_path / "runs", "scratch", 1)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    # Killed inside scratch epoch 2: epoch 1's checkpoint is the latest, the teacher is on record.
    assert json.loads((run / "checkpoints/scratch/latest.json").read_text())["epoch"] == 1
    killed = json.loads((run / "results.json").read_text())
    assert killed["status"] == "running" and list(killed["arms"]) == ["teacher"]
    assert not (run / WEIGHTS[1]).exists()

    proc = kdlab("run", "--resume", str(run), "-q")
    _out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert comparable(run) == reference[1]
    assert not (run / "checkpoints").exists(), "finished arms leave no training checkpoints behind"
    env = json.loads((run / "env.json").read_text())
    assert [r["argv"][1:] for r in env["resumes"]] == [["run", "--resume", str(run), "-q"]]


def test_sigterm_stops_cleanly_says_how_to_resume_and_resumes(reference, tmp_path) -> None:
    (tmp_path / "tiny.yaml").write_text(TINY)
    proc = kdlab("run", str(tmp_path / "tiny.yaml"), "--out", str(tmp_path / "runs"), "-q", delay=0.1)
    run = wait_for_checkpoint(proc, tmp_path / "runs", "scratch", 1)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"interrupted; resume with: kdlab run --resume {run}"
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "interrupted"
    assert results["interrupted"] == {"resume": f"kdlab run --resume {run}", "signal": int(signal.SIGTERM)}
    # No partial checkpoint: the stop came in epoch 2, so epoch 1's pair is the only one.
    names = sorted(p.name for p in (run / "checkpoints/scratch").iterdir())
    assert names == ["epoch-0001.json", "epoch-0001.safetensors", "latest.json"]

    # The stop request was honoured at a step boundary: resuming needs nothing else (the SIGKILL
    # test shows a resumed run equals an uninterrupted one).
    assert list(results["arms"]) == ["teacher"]


def test_resuming_a_complete_run_changes_nothing_and_a_busy_run_is_refused(reference, tmp_path, capsys) -> None:
    run = reference[0]
    before = (run / "results.json").read_bytes()
    code, _out, err = _cli(["run", "--resume", str(run), "-q"], capsys)
    assert code == 0, err
    assert (run / "results.json").read_bytes() == before

    from kdlab.lab.recovery import RunLock

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "config.resolved.yaml").write_text((run / "config.resolved.yaml").read_text())
    with RunLock(busy):  # as if another kdlab process were training in this folder
        code, _out, err = _cli(["run", "--resume", str(busy), "-q"], capsys)
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: {busy}: another kdlab process is using this run folder; wait for it or stop it"
    ]
    assert not (busy / "results.json").exists()


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    res = run_cli(args, capsys)
    return res.code, res.out, res.err
