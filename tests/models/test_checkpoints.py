"""Checkpoints of both models: .safetensors and weights-only .pt/.pth/.bin state dicts (plain, under
``state_dict`` / ``model``, DDP ``module.`` / torch.compile ``_orig_mod.`` prefixes); both student arms start
from ``student.checkpoint``; anything else is one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hostile.bounded import assert_clean_error, assert_nothing_written, run_bounded, run_in_process

from kdlab.errors import CheckpointError
from kdlab.io import load_weights, read_state_dict
from kdlab.models import create_model

SHAPE: dict[str, Any] = {"num_classes": 10, "input_shape": (1, 8, 8)}
TINY = ["--set", "device=cpu", "--set", "teacher.model=mlp-teacher", "--set", "student.model=mlp-student"]
TINY += ["--set", "student.epochs=1", "--set", "data.train_limit=100", "-q"]

LAYOUTS: dict[str, Callable[[dict[str, torch.Tensor]], object]] = {
    "plain": lambda sd: sd,
    "state_dict": lambda sd: {"state_dict": sd, "epoch": 3},
    "model": lambda sd: {"model": sd, "optimizer": {"lr": 0.1}, "epoch": 3},
    "module.": lambda sd: {f"module.{k}": v for k, v in sd.items()},
    "module._orig_mod.": lambda sd: {"state_dict": {f"module._orig_mod.{k}": v for k, v in sd.items()}},
}


def _weights(name: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return create_model(name, **SHAPE).state_dict()


@pytest.mark.parametrize("suffix", [".pt", ".pth", ".bin"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_torch_state_dict_layouts_load(layout: str, suffix: str, tmp_path: Path) -> None:
    want = _weights("mlp-student", 123)
    path = tmp_path / f"w{suffix}"
    torch.save(LAYOUTS[layout](want), path)
    torch.manual_seed(0)
    model = load_weights(create_model("mlp-student", **SHAPE), path, convert_floats=True)
    got = model.state_dict()
    assert list(got) == list(want) and all(torch.equal(got[k], want[k]) for k in want)


def test_a_model_whose_own_keys_carry_module_keeps_them(tmp_path: Path) -> None:
    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = torch.nn.Linear(3, 2)

    want = Wrapped().state_dict()
    torch.save(want, tmp_path / "w.pt")
    got = load_weights(Wrapped(), tmp_path / "w.pt").state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_pickled_whole_model_is_refused_never_unpickled(tmp_path: Path) -> None:
    torch.save(create_model("mlp-student", **SHAPE), tmp_path / "model.pt")  # a pickled nn.Module
    with pytest.raises(CheckpointError, match=r"model\.pt: refused or unreadable .*save model\.state_dict\(\)"):
        read_state_dict(tmp_path / "model.pt")


@pytest.mark.parametrize(
    ("obj", "match"),
    [({"epoch": 3, "lr": 0.1}, "does not hold a state dict of tensors"), ({}, "does not hold a state dict")],
)
def test_non_tensor_dicts_are_refused(obj: object, match: str, tmp_path: Path) -> None:
    torch.save(obj, tmp_path / "x.pt")
    with pytest.raises(CheckpointError, match=match):
        read_state_dict(tmp_path / "x.pt")


def test_unknown_suffix_is_refused(tmp_path: Path) -> None:
    torch.save(_weights("mlp-student", 0), tmp_path / "w.ckpt")
    with pytest.raises(CheckpointError, match=r"unknown weights file type '\.ckpt'"):
        read_state_dict(tmp_path / "w.ckpt")


def test_shape_mismatch_prints_both_sides(tmp_path: Path) -> None:
    sd = _weights("mlp-student", 0)
    torch.save({"model": sd}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match=r"does not fit the student 'x' architecture \(shape .*\(\d+, 64\) vs"):
        load_weights(
            create_model("mlp-student", num_classes=10, input_shape=(1, 4, 4)), tmp_path / "w.pt", what="student 'x'"
        )


@pytest.mark.e2e
@pytest.mark.parametrize("layout", ["plain", "state_dict", "model", "module."])
def test_teacher_and_student_checkpoints_in_a_run(layout: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """teacher.checkpoint is the teacher; both student arms start from student.checkpoint, with identical weights."""
    from safetensors.torch import load_file

    from kdlab.lab.run import LabSession

    teacher_sd, student_sd = _weights("mlp-teacher", 11), _weights("mlp-student", 22)
    torch.save(LAYOUTS[layout](teacher_sd), tmp_path / "teacher.pt")
    torch.save(LAYOUTS[layout](student_sd), tmp_path / "student.pth")
    initial: dict[str, dict[str, torch.Tensor]] = {}
    train = LabSession.train

    def spy(self: LabSession, arm: str, model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        initial[arm] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return train(self, arm, model, *args, **kwargs)

    monkeypatch.setattr(LabSession, "train", spy)
    args = [
        "run",
        "digits",
        *TINY,
        "--set",
        f"teacher.checkpoint={tmp_path / 'teacher.pt'}",
        "--set",
        "teacher.epochs=0",
    ]
    args += ["--set", f"student.checkpoint={tmp_path / 'student.pth'}", "--out", str(tmp_path / "runs")]
    assert run_in_process(args) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert set(initial) == {"scratch", "distilled"}  # the teacher was loaded, not trained
    for arm in ("scratch", "distilled"):
        assert all(torch.equal(initial[arm][k], student_sd[k]) for k in student_sd), arm
    saved = load_file(str(run_dir / "teacher.safetensors"))
    assert all(torch.equal(saved[k], teacher_sd[k]) for k in teacher_sd)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["arms"]["teacher"]["source"] == str(tmp_path / "teacher.pt")


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: torch.save(_weights("mlp-teacher", 0), p), r"student\.pt: does not fit the student 'mlp-student'"),
        (lambda p: torch.save(create_model("mlp-student", **SHAPE), p), r"student\.pt: refused or unreadable"),
        (lambda p: torch.save({"epoch": 1}, p), r"student\.pt: does not hold a state dict of tensors"),
        (lambda p: None, r"student\.pt: no such weights file"),
    ],
)
def test_bad_student_checkpoint_is_one_line_before_any_run_folder(
    make: Callable[[Path], None], match: str, tmp_path: Path
) -> None:
    make(tmp_path / "student.pt")
    args = ["run", "digits", *TINY, "--set", f"student.checkpoint={tmp_path / 'student.pt'}"]
    res = run_bounded([*args, "--out", str(tmp_path / "runs")])
    assert_clean_error(res, match)
    assert_nothing_written(tmp_path)
    assert not (tmp_path / "runs").exists()
