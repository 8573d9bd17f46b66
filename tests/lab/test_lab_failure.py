"""A failure in a later arm keeps the finished arms on record and marks the run failed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import kdlab.lab.run
from kdlab import load_experiment, run_lab

pytestmark = pytest.mark.e2e  # whole lab runs: `pytest -m "not e2e"` skips them


def test_failure_after_teacher_keeps_teacher_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_save = kdlab.lab.run.save_weights

    def failing_save(model, path, metadata=None):  # type: ignore[no-untyped-def]
        if "scratch" in Path(path).name:
            raise RuntimeError("simulated crash while saving the scratch student")
        return real_save(model, path, metadata)

    monkeypatch.setattr(kdlab.lab.run, "save_weights", failing_save)
    cfg = load_experiment("digits", ["teacher.model=mlp-teacher", "teacher.epochs=1", "student.epochs=1"])
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_lab(cfg, out=tmp_path)
    (run_dir,) = tmp_path.iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "failed"
    assert results["failed"]["error"] == "simulated crash while saving the scratch student"
    assert set(results["arms"]) == {"teacher"}
    assert results["arms"]["teacher"]["test_accuracy"] > 0.5
    assert (run_dir / "teacher.safetensors").is_file()
