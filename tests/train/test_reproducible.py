"""Reproducibility (same seed, same bytes), env.json, and safe disk writes under failure and concurrency."""

from __future__ import annotations

import errno
import json
import multiprocessing
from pathlib import Path

import pytest
import torch

from kdlab import load_experiment, run_lab
from kdlab.errors import StorageError
from kdlab.io import save_weights
from kdlab.runs import create_run_dir

pytestmark = pytest.mark.e2e  # whole lab runs: `pytest -m "not e2e"` skips them

TINY = [
    "device=cpu",
    "deterministic=true",
    "data.train_limit=120",
    "teacher.model=mlp-teacher",
    "teacher.epochs=1",
    "student.epochs=1",
    "train.batch_size=64",
]
WEIGHTS = ("teacher.safetensors", "student-scratch.safetensors", "student-distilled.safetensors")


def _comparable(run: Path) -> tuple[dict, list[bytes]]:
    results = json.loads((run / "results.json").read_text())
    results.pop("run_id")
    results.pop("teacher_cache", None)  # hit or miss and its seconds: facts of the run, like train_seconds
    for arm in results["arms"].values():
        for key in ("train_seconds", "ms_per_step", "latency_ms_per_sample", "latency_ms_per_batch32"):
            arm.pop(key)
    return results, [(run / w).read_bytes() for w in WEIGHTS]


def test_two_same_seed_runs_are_identical_and_env_records_how(tmp_path: Path) -> None:
    cfg = load_experiment("digits", TINY)
    assert not torch.are_deterministic_algorithms_enabled()
    a = run_lab(cfg, out=tmp_path)
    b = run_lab(cfg, out=tmp_path)
    assert a != b
    assert _comparable(a) == _comparable(b)
    assert not torch.are_deterministic_algorithms_enabled(), "the previous setting is restored after the run"
    env = json.loads((a / "env.json").read_text())
    assert env["deterministic"] is True and env["deterministic_algorithms"] is True
    assert env["seed"] == 0 and env["torch"] == torch.__version__ and env["threads"] >= 1
    assert {"numpy", "safetensors", "scikit-learn"} <= set(env["packages"])
    # A different seed gives different weights (the comparison above can fail).
    c = run_lab(load_experiment("digits", [*TINY, "seed=1"]), out=tmp_path)
    assert _comparable(c)[1][2] != _comparable(a)[1][2]


def _make_dirs(args: tuple[str, int]) -> list[str]:
    out, n = args
    return [create_run_dir(Path(out), "same-name").name for _ in range(n)]


def test_concurrent_processes_get_distinct_run_folders(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(3) as pool:
        names = [n for chunk in pool.map(_make_dirs, [(str(tmp_path), 15)] * 3) for n in chunk]
    assert len(names) == 45 and len(set(names)) == 45
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)


def test_failed_weight_write_leaves_the_previous_file_intact(tmp_path: Path, monkeypatch) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    path = tmp_path / "student.safetensors"
    save_weights(model, path)
    before = path.read_bytes()
    torch.nn.init.zeros_(model.weight)

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("kdlab.io.os.fsync", disk_full)
    with pytest.raises(StorageError) as err:
        save_weights(model, path)
    assert (
        str(err.value) == f"{path}: cannot write (No space left on device); free disk space or choose a writable folder"
    )
    assert isinstance(err.value, OSError)  # best-effort writers (the image cache) still treat it as an OSError
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["student.safetensors"], "no temporary file left behind"
