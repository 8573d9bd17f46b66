"""Run the kdlab CLI in-process (fast) or as a real subprocess, capturing exit code and output."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

TINY_COMPARE = [
    "name=tiny",
    "teacher.model=mlp-teacher",
    "teacher.epochs=1",
    "student.epochs=1",
    "data.train_limit=300",
    "device=cpu",
]
"""``--set`` overrides of the digits preset for a comparison of tiny models (a second or so per seed)."""

RUN_FILES = [
    "config.resolved.yaml",
    "env.json",
    "history.csv",
    "results.json",
    "teacher.safetensors",
    "student-scratch.safetensors",
    "student-distilled.safetensors",
    "plots/accuracy.png",
]
"""The files every complete lab run folder holds (docs/run-folder.md)."""


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> CliResult:
    from kdlab.cli import main

    old = sys.argv
    sys.argv = ["kdlab", *args]
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def run_subprocess(args: list[str], cwd: str | None = None, timeout: float = 300) -> CliResult:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "160"}
    p = subprocess.run(
        [sys.executable, "-m", "kdlab", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env
    )
    return CliResult(p.returncode, p.stdout, p.stderr)


def assert_one_line_error(res: CliResult, match: str | None = None) -> str:
    assert res.code == 2, f"exit {res.code}, stderr: {res.err}"
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line, got: {res.err!r}"
    assert "Traceback" not in res.err
    assert lines[0].startswith("error: ")
    if match is not None:
        import re

        assert re.search(match, lines[0]), lines[0]
    return lines[0]
