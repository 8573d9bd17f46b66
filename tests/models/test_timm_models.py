"""timm: specs — a timm teacher distilled into a timm student on a small image folder, then predicted,
exported to ONNX, and the student's weights loaded strictly into timm's own model; the one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from clihelp import assert_one_line_error, run_cli
from PIL import Image

from kdlab.errors import ConfigError
from kdlab.models import create_model
from kdlab.models.specs import declared_inputs

timm = pytest.importorskip("timm")

TEACHER, STUDENT = "timm:test_resnet", "timm:test_efficientnet"


def _image_folder(root: Path, n: int = 24, size: int = 16) -> Path:
    """Two classes told apart by colour (red vs blue), with noise: a task a tiny CNN learns in one epoch."""
    rng = np.random.default_rng(0)
    for cls, channel in (("blue", 2), ("red", 0)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
            arr[..., channel] = rng.integers(160, 255, (size, size), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.png")
    return root


def _args(root: Path, out: Path) -> list[str]:
    sets = {
        "device": "cpu",
        "data.name": "image-folder",
        "data.path": str(root),
        "data.image_size": "16",
        "data.val_fraction": "0.2",
        "data.test_fraction": "0.2",
        "teacher.model": TEACHER,
        "teacher.epochs": "1",
        "student.model": STUDENT,
        "student.epochs": "1",
        "train.batch_size": "16",
    }
    args = ["run", "digits", "-q", "--out", str(out)]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    return args


@pytest.fixture(scope="module")
def timm_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("timm")
    root = _image_folder(tmp / "images")
    from kdlab.cli import main

    old = sys.argv
    sys.argv = ["kdlab", *_args(root, tmp / "runs")]
    try:
        main()
    except SystemExit as e:
        assert not e.code, e.code
    finally:
        sys.argv = old
    (run_dir,) = (tmp / "runs").iterdir()
    return run_dir, root


@pytest.mark.e2e
def test_timm_teacher_to_timm_student_run(timm_run: tuple[Path, Path]) -> None:
    run_dir, _ = timm_run
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "complete"
    assert results["arms"]["teacher"]["model"] == TEACHER
    assert results["arms"]["distilled"]["model"] == STUDENT
    probe = timm.create_model("test_efficientnet", num_classes=2, in_chans=3)
    assert results["arms"]["distilled"]["params"] == sum(p.numel() for p in probe.parameters())
    assert "timm:test_efficientnet" in (run_dir / "config.resolved.yaml").read_text()


@pytest.mark.e2e
def test_timm_student_weights_load_strictly_into_timm(timm_run: tuple[Path, Path]) -> None:
    from safetensors.torch import load_file

    run_dir, _ = timm_run
    state = load_file(str(run_dir / "student-distilled.safetensors"))
    model = timm.create_model("test_efficientnet", num_classes=2, in_chans=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(state, strict=True)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())  # trained weights, not init
    teacher = timm.create_model("test_resnet", num_classes=2, in_chans=3)
    teacher.load_state_dict(load_file(str(run_dir / "teacher.safetensors")), strict=True)


@pytest.mark.e2e
def test_predict_and_onnx_export_of_a_timm_run(timm_run: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    import kdlab
    from kdlab.apps.predict import load_images

    run_dir, root = timm_run
    files = [str(p) for p in sorted(root.glob("*/*.png"))[::6]]
    res = run_cli(["predict", str(run_dir), *files, "--json"], capsys)
    assert res.code == 0, res.err
    preds = json.loads(res.out)
    assert [p["input"] for p in preds] == files
    run = kdlab.load_run(run_dir)
    want = run.models["distilled"](load_images([Path(f) for f in files], (3, 16, 16)))
    got = torch.tensor([[p["probabilities"][c] for c in run.classes] for p in preds])
    torch.testing.assert_close(got, torch.softmax(want, dim=1), atol=1e-5, rtol=0)

    res = run_cli(["export", str(run_dir)], capsys)
    assert res.code == 0, res.err
    onnx_file = run_dir / "export" / "distilled.onnx"
    assert onnx_file.is_file()
    res = run_cli(["predict", str(onnx_file), *files, "--json"], capsys)
    assert res.code == 0, res.err
    assert [p["label"] for p in json.loads(res.out)] == [p["label"] for p in preds]


def test_timm_model_is_timms_own_module() -> None:
    model = create_model(STUDENT, num_classes=3, input_shape=(1, 8, 8))
    plain = timm.create_model("test_efficientnet", num_classes=3, in_chans=1)
    assert type(model) is type(plain)
    assert list(model.state_dict()) == list(plain.state_dict())
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 3)


def test_unknown_timm_name_suggests_close_names() -> None:
    with pytest.raises(ConfigError, match=r"^teacher\.model: timm has no model 'resnt18': did you mean timm:resnet18"):
        create_model("timm:resnt18", num_classes=2, input_shape=(3, 16, 16), key="teacher.model")


def test_timm_on_text_inputs_is_one_line() -> None:
    with pytest.raises(ConfigError, match=r"student\.model: timm:test_resnet takes images \(C, H, W\)"):
        create_model("timm:test_resnet", num_classes=2, input_shape=(200,), vocab_size=100, key="student.model")


def test_timm_declares_its_pretrained_view_only_with_weights() -> None:
    fresh = declared_inputs("timm:resnet18", pretrained=False, has_checkpoint=False, key="teacher.model")
    assert fresh.is_empty()  # trained on the data: the data's view
    known = declared_inputs("timm:resnet18", pretrained=False, has_checkpoint=True, key="teacher.model")
    assert (known.image_size, known.channels) == (224, 3)
    assert known.mean == pytest.approx((0.485, 0.456, 0.406)) and known.std == pytest.approx((0.229, 0.224, 0.225))
    assert known.tokenizer is None and known.labels is None


def test_pretrained_offline_is_one_line_exit_2(tmp_path: Path) -> None:
    """HF_HUB_OFFLINE=1 makes the weights fetch fail at once, as on a machine without a network."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONUNBUFFERED": "1"}
    args = ["run", "digits", "--set", "device=cpu", "--set", "teacher.model=timm:test_resnet"]
    args += ["--set", "teacher.pretrained=true", "--set", "data.train_limit=100", "--out", str(tmp_path / "runs")]
    p = subprocess.run(
        [sys.executable, "-m", "kdlab", *args], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
    )
    from clihelp import CliResult

    line = assert_one_line_error(
        CliResult(p.returncode, p.stdout, p.stderr), r"^error: teacher\.model: timm:test_resnet"
    )
    assert "offline" in line and "teacher.pretrained=false" in line
    assert not (tmp_path / "runs").exists()
