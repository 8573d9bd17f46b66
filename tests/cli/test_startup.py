"""`kdlab --help`, `kdlab presets` and each command's `--help` answer without importing torch,
numpy or matplotlib (checked on the interpreter's own import list, not on a time)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "numpy", "matplotlib")


def _imported(args: list[str]) -> set[str]:
    p = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "kdlab", *args], capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr[-2000:]
    # importtime lines: "import time: self [us] | cumulative | <indented module name>"
    return {line.rsplit("|", 1)[1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize(
    "args", [["--help"], ["presets"], ["run", "--help"], ["compare", "--help"], ["predict", "--help"]]
)
def test_answers_without_heavy_imports(args: list[str]) -> None:
    modules = _imported(args)
    assert "kdlab.cli" in modules  # the check sees kdlab's own imports
    assert not {m for m in modules if m.split(".")[0] in HEAVY}


def test_the_api_is_still_one_import_away() -> None:
    import kdlab

    assert kdlab.Distiller.__module__ == "kdlab.train.distiller"
    assert callable(kdlab.fit) and callable(kdlab.load_run)
    with pytest.raises(AttributeError):
        _ = kdlab.no_such_name
