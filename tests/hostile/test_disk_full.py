"""Hostile corpus: the disk fills up at any write of a run. Every case makes the N-th atomic write
of a tiny `kdlab run` fail with ENOSPC, and every write after it too (a full disk stays full), for
each N over all the writes of the run and its report. Then:

* the CLI printed one `error: ` line (exit 2) saying what could not be written and how to go on;
* the run folder never says `complete` while a file it promises is missing, and holds no temporary file;
* `kdlab show` says the run is unfinished and how to resume it;
* once there is space, `kdlab run --resume` completes it: every file there, the weights byte for byte
  and the results (timings aside) equal to those of an uninterrupted run.

The figures are stubbed to a fixed 1-pixel PNG (same files, same order of writes, no drawing), so
a case costs a fraction of a second. One more case fills a real (tmpfs) disk, where mounting is allowed.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import subprocess
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from bounded import assert_clean_error, run_bounded, run_in_process
from clihelp import RUN_FILES

import kdlab.io as kio
from kdlab.report import figures, render

pytestmark = pytest.mark.e2e  # whole lab runs: `pytest -m "not e2e"` skips them

TINY = ["--set", "device=cpu", "--set", "teacher.model=mlp-teacher", "--set", "teacher.epochs=1"]
TINY += ["--set", "student.epochs=1", "--set", "data.train_limit=100", "-q"]
REPORT_FILES = ["report.html", "plots/accuracy_curves.png", "plots/loss_parts.png", "plots/tradeoff.png"]
REPORT_FILES += ["plots/confusion.png"]
# The tiny run's atomic writes in order: config, env, results (running); per arm its epoch-1
# checkpoint (tensors, meta, pointer), weights, history.csv, results.json (the teacher-logit cache
# before the distilled arm); the accuracy plot, results.json (complete); the report's four figures
# and report.html. A change in this count means a new write: give it its case.
WRITES = 29
RUN_WRITES = 24  # the writes of `run_lab`; the rest are the report's
TIMING = {"train_seconds", "ms_per_step", "latency_ms_per_sample", "latency_ms_per_batch32"}


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    ihdr = (1).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b"")
    )


PNG = _png()


class Disk:
    """Counts atomic writes; from write number ``full_at`` on, each fails with ENOSPC."""

    full_at: int | None = None
    count = 0
    paths: ClassVar[list[str]] = []


def _atomic(original: Callable[..., None]) -> Callable[..., None]:
    def full(_f: Any) -> None:  # the disk is full: the data never lands
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def write(path: Path, fill: Callable[[Any], None], mode: str) -> None:
        Disk.count += 1
        Disk.paths.append(str(path))
        full_now = Disk.full_at is not None and Disk.count >= Disk.full_at
        original(path, full if full_now else fill, mode)

    return write


def _stub_save(_fig: Any, folder: Path, name: str) -> bytes:
    (folder / "plots").mkdir(exist_ok=True)
    kio.atomic_write_bytes(folder / "plots" / f"{name}.png", PNG)
    return PNG


def _stub_figure(name: str) -> Callable[[Any], bytes]:
    return lambda data: _stub_save(None, data.folder, name)


@pytest.fixture(scope="module")
def patched() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kio, "_atomic", _atomic(kio._atomic))
        mp.setattr(figures, "_save", _stub_save)
        mp.setattr(figures, "accuracy_figure", lambda panels: None)
        names = {"confusion_matrices": "confusion"}  # plots/<name>.png of each figure
        stubs = tuple((title, _stub_figure(names.get(draw.__name__, draw.__name__))) for title, draw in figures.FIGURES)
        mp.setattr(render, "FIGURES", stubs)
        yield


@pytest.fixture(scope="module")
def reference(patched: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted tiny run, its writes counted."""
    tmp = tmp_path_factory.mktemp("reference")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KDLAB_CACHE", str(tmp / "cache"))
        Disk.full_at, Disk.count, Disk.paths = None, 0, []
        assert run_in_process(["run", "digits", *TINY, "--out", str(tmp / "runs")]) == 0
    assert Disk.count == WRITES, "the tiny run's writes changed:\n" + "\n".join(Disk.paths)
    assert Disk.paths[RUN_WRITES - 1].endswith("results.json") and Disk.paths[RUN_WRITES].endswith(".png")
    (run,) = (tmp / "runs").iterdir()
    return run


def _results(run: Path) -> dict[str, Any]:
    res = json.loads((run / "results.json").read_text())
    arms = {a: {k: v for k, v in e.items() if k not in TIMING} for a, e in res["arms"].items()}
    keep = ("status", "seed", "data", "distill", "comparison", "name")
    return {"arms": arms, **{k: res.get(k) for k in keep}}


def _history(run: Path) -> list[dict[str, str]]:
    with (run / "history.csv").open() as f:
        return [{k: v for k, v in row.items() if k not in ("seconds", "samples_per_s")} for row in csv.DictReader(f)]


def _tmp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize("n", range(1, WRITES + 1))
def test_disk_full_at_write_n_then_resume_completes(
    n: int, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KDLAB_CACHE", str(tmp_path / "cache"))
    runs = tmp_path / "runs"
    Disk.full_at, Disk.count = n, 0
    try:
        res = run_bounded(["run", "digits", *TINY, "--out", str(runs)], timeout=60)
    finally:
        Disk.full_at = None
    line = assert_clean_error(res, match=r"No space left on device")
    folders = [p for p in runs.iterdir()] if runs.is_dir() else []
    assert _tmp_files(tmp_path) == []
    if n == 1:  # config.resolved.yaml, the first write: no folder is left behind
        assert folders == []
        return
    (run,) = folders
    status = json.loads((run / "results.json").read_text())["status"] if (run / "results.json").is_file() else None
    if n <= RUN_WRITES:
        assert status != "complete", "complete, with a file it promises not written"
        if n > 2:  # env.json's failure comes before the run can be resumed in its own words
            assert f"resume with: kdlab run --resume {run}" in line
        if status is not None:
            show = run_bounded(["show", str(run)], timeout=30)
            assert show.code == 0 and "Traceback" not in show.err
            text = " ".join(show.out.split())
            assert "run status: " in text and f"resume with: kdlab run --resume {run}" in text, show.out
            if n > 3:  # the failure could not be recorded in results.json: the marker beside it says it
                assert status == "running" and "No space left" in (run / ".failed").read_text()
                assert "run status: failed" in text and "No space left on device" in text, show.out
    else:  # the run is recorded; only the report is missing
        assert status == "complete"
        assert all((run / f).is_file() for f in RUN_FILES)
        assert f"kdlab report {run}" in line
    again = run_bounded(["run", "--resume", str(run), "-q"], timeout=60)
    assert again.code == 0, again.err[-2000:]
    assert "Traceback" not in again.err
    for f in RUN_FILES + REPORT_FILES:
        assert (run / f).is_file(), f"{f} missing after resume"
    assert not (run / ".failed").exists() and not (run / "checkpoints").exists()
    assert _tmp_files(run) == []
    for f in ("teacher.safetensors", "student-scratch.safetensors", "student-distilled.safetensors"):
        assert (run / f).read_bytes() == (reference / f).read_bytes(), f
    assert _results(run) == _results(reference)
    assert _history(run) == _history(reference)
    env = json.loads((run / "env.json").read_text())
    assert env["kdlab_version"]
    assert bool(env.get("resumes")) == (n <= RUN_WRITES)  # a complete run is not resumed: its report is written


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    disk = tmp_path / "disk"
    disk.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(disk)], check=True, capture_output=True
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("cannot mount a tmpfs here (needs root): the simulated cases above cover every write")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False, capture_output=True)


def test_a_real_full_disk_fails_in_one_line_and_resume_completes(
    patched: None, reference: Path, small_disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1.2 MB of tmpfs: the teacher's checkpoint (weights and two Adam moments, ~1 MB) fills it."""
    monkeypatch.setenv("KDLAB_CACHE", str(small_disk.parent / "cache"))
    res = run_bounded(["run", "digits", *TINY, "--out", str(small_disk / "runs")], timeout=60)
    line = assert_clean_error(res, match=r"No space left on device")
    (run,) = (small_disk / "runs").iterdir()
    assert f"resume with: kdlab run --resume {run}" in line
    assert json.loads((run / "results.json").read_text())["status"] != "complete"
    assert _tmp_files(run) == []
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True, capture_output=True)
    again = run_bounded(["run", "--resume", str(run), "-q"], timeout=60)
    assert again.code == 0, again.err[-2000:]
    for f in RUN_FILES + REPORT_FILES:
        assert (run / f).is_file(), f
    for f in ("teacher.safetensors", "student-scratch.safetensors", "student-distilled.safetensors"):
        assert (run / f).read_bytes() == (reference / f).read_bytes(), f
    assert _results(run) == _results(reference)


COMPARE = ["compare", "digits", "--methods", "kd", "--seeds", "1", *TINY]


@pytest.fixture(scope="module")
def compare_writes(patched: None, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    tmp = tmp_path_factory.mktemp("compare-reference")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KDLAB_CACHE", str(tmp / "cache"))
        Disk.full_at, Disk.count, Disk.paths = None, 0, []
        assert run_in_process([*COMPARE, "--out", str(tmp / "runs")]) == 0
    return list(Disk.paths)


@pytest.mark.parametrize("last", ["comparison.csv", "comparison.json"])
def test_disk_full_at_the_end_of_a_comparison_then_resume_completes(
    last: str, compare_writes: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The final comparison.csv, then the final comparison.json ("complete"): the folder stays
    "running" until both are written, and `kdlab compare --resume` finishes it."""
    monkeypatch.setenv("KDLAB_CACHE", str(tmp_path / "cache"))
    n = max(i for i, p in enumerate(compare_writes, start=1) if p.endswith("/" + last))
    Disk.full_at, Disk.count = n, 0
    try:
        res = run_bounded([*COMPARE, "--out", str(tmp_path / "runs")], timeout=60)
    finally:
        Disk.full_at = None
    assert_clean_error(res, match=rf"{last}: cannot write \(No space left on device\)")
    (comp,) = (tmp_path / "runs").iterdir()
    assert json.loads((comp / "comparison.json").read_text())["status"] == "running"
    assert _tmp_files(comp) == []
    again = run_bounded([*COMPARE, "--resume", str(comp)], timeout=60)
    assert again.code == 0, again.err[-2000:]
    assert json.loads((comp / "comparison.json").read_text())["status"] == "complete"
    assert all((comp / f).is_file() for f in ("comparison.csv", "report.html", "seed-0/plots/accuracy.png"))
