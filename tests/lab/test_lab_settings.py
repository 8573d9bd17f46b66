"""Settings reach the code that uses them: ``train.eval_batch_size`` for validation, and each
compared arm's own ``teacher_cache``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kdlab.config import load_experiment
from kdlab.lab.compare import run_comparison
from kdlab.lab.run import run_lab
from kdlab.train import loop

pytestmark = pytest.mark.e2e  # whole lab runs: `pytest -m "not e2e"` skips them

TINY = ["teacher.model=mlp-teacher", "teacher.epochs=1", "student.epochs=2", "data.train_limit=200", "device=cpu"]


def test_eval_batch_size_reaches_validation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    real = loop.predict

    def spy(model: Any, loader: Any, *args: Any, **kwargs: Any) -> Any:
        seen.extend(len(b.y) for b in loader)
        return real(model, loader, *args, **kwargs)

    monkeypatch.setattr(loop, "predict", spy)
    cfg = load_experiment("digits", [*TINY, "train.eval_batch_size=7"])
    run_lab(cfg, out=tmp_path)
    # Validation (180 samples), test and the teacher cache are all scored in batches of at most 7;
    # before the fix validation used loop.fit's default of 512 (a 180-sample batch).
    assert seen and max(seen) == 7
    assert 180 not in seen


def test_compare_arm_teacher_cache_off_runs_a_live_teacher(tmp_path: Path) -> None:
    cfg = load_experiment("digits", [*TINY, "student.epochs=1"])
    comp = run_comparison(cfg, "kd,kd:teacher_cache=off", 1, out=tmp_path)
    results = json.loads((comp / "seed-0" / "results.json").read_text())
    arms = results["arms"]
    assert arms["kd"]["teacher_outputs"] == "cached"
    assert arms["kd:teacher_cache=off"]["teacher_outputs"] == "live"
    # Same teacher, same data order, same initial weights: cached and live logits train alike.
    assert arms["kd:teacher_cache=off"]["test_accuracy"] == pytest.approx(arms["kd"]["test_accuracy"], abs=1e-6)


def test_a_users_checkpoint_may_store_another_float_precision(tmp_path: Path) -> None:
    import torch

    from kdlab.errors import CheckpointError
    from kdlab.io import load_weights, save_weights
    from kdlab.models import create_model

    src = create_model("mlp-teacher", num_classes=10, input_shape=(1, 8, 8))
    save_weights(src.to(torch.float16), tmp_path / "half.safetensors")
    model = create_model("mlp-teacher", num_classes=10, input_shape=(1, 8, 8))
    with pytest.raises(CheckpointError, match=r"stored as F16 but the model 'x' model's is F32|stored as F16"):
        load_weights(model, tmp_path / "half.safetensors", what="model 'x'")  # a run's own record: exact
    load_weights(model, tmp_path / "half.safetensors", convert_floats=True)  # a user's checkpoint: converted
    for (name, got), want in zip(model.state_dict().items(), src.state_dict().values(), strict=True):
        assert got.dtype == torch.float32, name
        torch.testing.assert_close(got, want.float())
