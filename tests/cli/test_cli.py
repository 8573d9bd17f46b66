"""End to end through the CLI: the digits lab, an image-folder lab, and bad inputs (exit 2, one line)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from clihelp import RUN_FILES, assert_one_line_error, run_cli, run_subprocess
from PIL import Image

from kdlab.io import load_weights, save_weights
from kdlab.models import count_params, create_model
from kdlab.train.loop import evaluate

pytestmark = pytest.mark.e2e  # whole lab runs: `pytest -m "not e2e"` skips them

FAST = ["--set", "teacher.epochs=2", "--set", "student.epochs=2", "--quiet"]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    res = run_subprocess(["run", "digits", "--out", str(out), *FAST])
    assert res.code == 0, res.err
    (run_dir,) = out.iterdir()
    assert f"run folder: {run_dir}" in res.out
    return run_dir


def test_digits_run_folder_is_complete(digits_run: Path) -> None:
    files = {p.relative_to(digits_run).as_posix() for p in digits_run.rglob("*") if p.is_file()}
    assert set(RUN_FILES) <= files
    assert {"report.html", "plots/tradeoff.png"} <= files  # `kdlab run` writes the report as well
    assert not [f for f in files if f.endswith(".tmp")]
    assert not (digits_run / "tensorboard").exists()  # no train.log key: no event files

    cfg = yaml.safe_load((digits_run / "config.resolved.yaml").read_text())
    assert cfg["teacher"]["epochs"] == 2 and cfg["data"]["name"] == "digits"

    env = json.loads((digits_run / "env.json").read_text())
    assert {"kdlab_version", "torch", "device", "seed", "git"} <= set(env) and env["device"] == "cpu"

    with (digits_run / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["arm"], r["epoch"]) for r in rows] == [
        (a, e) for a in ("teacher", "scratch", "distilled") for e in ("1", "2")
    ]
    assert all(r["train_kd"] for r in rows if r["arm"] == "distilled")
    assert not any(r.get("train_kd") for r in rows if r["arm"] != "distilled")

    results = json.loads((digits_run / "results.json").read_text())
    assert results["status"] == "complete"
    assert results["data"] == {**results["data"], "name": "digits", "train": 1437, "val": 180, "test": 180}
    assert results["data"]["skipped_files"] == []
    assert list(results["arms"]) == ["teacher", "scratch", "distilled"]
    for arm in ("teacher", "scratch", "distilled"):
        a = results["arms"][arm]
        for key in ("test_accuracy", "test_loss", "params", "size_bytes", "train_seconds", "ms_per_step"):
            assert a[key] is not None, (arm, key)
        assert {"ece", "confusion_matrix", "latency_ms_per_sample", "latency_ms_per_batch32"} <= set(a), arm
        assert a["size_bytes"] == (digits_run / a["weights"]).stat().st_size
    assert {"teacher_agreement", "kl_to_teacher"} <= set(results["arms"]["distilled"])
    assert results["arms"]["teacher"]["params"] == 200_778
    gain = results["comparison"]["distilled_minus_scratch_points"]
    arms = results["arms"]
    assert gain == pytest.approx(100 * (arms["distilled"]["test_accuracy"] - arms["scratch"]["test_accuracy"]))

    png = digits_run / "plots" / "accuracy.png"
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] > 300


def test_saved_weights_reproduce_reported_accuracy(digits_run: Path) -> None:
    """The safetensors files hold exactly the evaluated models: reload and re-score the test split."""
    from kdlab.config import load_experiment
    from kdlab.data import build_data

    results = json.loads((digits_run / "results.json").read_text())
    cfg = load_experiment(digits_run / "config.resolved.yaml")
    data = build_data(cfg.data, cfg.seed)
    for arm, name in (("teacher", cfg.teacher.model), ("distilled", cfg.student.model)):
        model = create_model(name, num_classes=10, input_shape=data.input_shape)
        load_weights(model, digits_run / results["arms"][arm]["weights"])
        acc = evaluate(model, data.test)["accuracy"]
        assert acc == pytest.approx(results["arms"][arm]["test_accuracy"], abs=1e-6)
        assert count_params(model) == results["arms"][arm]["params"]


def test_show_reprints_table(digits_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    res = run_cli(["show", str(digits_run)], capsys)
    assert res.code == 0
    results = json.loads((digits_run / "results.json").read_text())
    acc = 100 * results["arms"]["distilled"]["test_accuracy"]
    assert f"{acc:.2f}%" in res.out and "distilled" in res.out and "scratch" in res.out


def test_same_seed_same_numbers(digits_run: Path, tmp_path: Path) -> None:
    res = run_subprocess(["run", "digits", "--out", str(tmp_path), *FAST])
    assert res.code == 0
    (again,) = tmp_path.iterdir()
    a = json.loads((digits_run / "results.json").read_text())["arms"]
    b = json.loads((again / "results.json").read_text())["arms"]
    for arm in a:
        assert a[arm]["test_accuracy"] == b[arm]["test_accuracy"]
        assert a[arm]["test_loss"] == b[arm]["test_loss"]


def _digit_pngs(root: Path) -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    for cls in (3, 8):
        folder = root / f"digit{cls}"
        folder.mkdir(parents=True)
        for k, i in enumerate(np.flatnonzero(d.target == cls)[:40]):
            Image.fromarray((d.images[i] * 255 / 16).astype(np.uint8), mode="L").save(folder / f"{k}.png")


def test_image_folder_run_reports_skipped_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "pets"
    _digit_pngs(root)
    (root / "digit8" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF truncated")
    args = ["run", "cats-vs-dogs", "--out", str(tmp_path / "runs"), "--set", f"data.path={root}"]
    args += ["--set", "data.image_size=16", "--set", f"data.cache_dir={tmp_path / 'cache'}", *FAST]
    args += ["--set", "teacher.model=mlp-teacher", "--set", "teacher.epochs=8"]
    res = run_cli(args, capsys)
    assert res.code == 0, res.err
    (run_dir,) = (tmp_path / "runs").iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["data"]["skipped_files"] == [str(root / "digit8" / "corrupt.jpg")]
    assert results["data"]["skipped_count"] == 1
    assert results["data"]["train"] + results["data"]["val"] + results["data"]["test"] == 80
    assert results["data"]["classes"] == ["digit3", "digit8"]
    assert "1 data files could not be decoded" in res.out
    assert results["arms"]["teacher"]["test_accuracy"] > 0.7


def test_teacher_checkpoint_used_instead_of_training(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    teacher = create_model("mlp-teacher", num_classes=10, input_shape=(1, 8, 8))
    ckpt = tmp_path / "t.safetensors"
    save_weights(teacher, ckpt)
    args = ["run", "--out", str(tmp_path / "runs"), "--set", "teacher.model=mlp-teacher"]
    args += ["--set", f"teacher.checkpoint={ckpt}", "--set", "teacher.epochs=0", "--set", "student.epochs=1", "-q"]
    res = run_cli(args, capsys)
    assert res.code == 0, res.err
    (run_dir,) = (tmp_path / "runs").iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["arms"]["teacher"]["source"] == str(ckpt)
    assert results["arms"]["teacher"]["train_seconds"] == 0
    # the untrained teacher scores near chance: it really was loaded, not trained
    assert results["arms"]["teacher"]["test_accuracy"] < 0.3


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["run", "no-such-preset"], r"neither a preset nor a YAML file"),
        (["run", "digits", "--set", "distill.alpha=2"], r"distill\.alpha"),
        (["run", "digits", "--set", "distill.temprature=2"], r"distill\.temprature: unknown key"),
        (["run", "digits", "--set", "teacher.model=resnet"], r"unknown model 'resnet'"),
        (["run", "digits", "--set", "data.name=cifar"], r"unknown dataset 'cifar'"),
        (["run", "cats-vs-dogs"], r"data\.path: image-folder needs"),
        (["run", "cats-vs-dogs", "--set", "data.path=/no/such/dir"], r"data\.path: /no/such/dir is not a folder"),
        (["run", "fashion-mnist", "--set", "data.path=/no/such/dir"], r"apt-get install dataset-fashion-mnist"),
        (["run", "digits", "--set", "teacher.checkpoint=/no/such.safetensors"], r"no such weights file"),
        (["show", "/no/such/run"], r"not a run folder"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    args: list[str], match: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    res = run_cli([*args, *(["--out", str(tmp_path / "runs")] if args[0] == "run" else [])], capsys)
    assert_one_line_error(res, match)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), "a run folder was left behind"


def test_unreadable_yaml_and_misfit_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "exp.yaml"
    bad.write_text("teacher: {model: [\n")
    assert_one_line_error(run_cli(["run", str(bad)], capsys), r"exp\.yaml: line \d+: not valid YAML")
    other = tmp_path / "mlp.safetensors"
    save_weights(create_model("mlp-student", num_classes=10, input_shape=(1, 8, 8)), other)
    res = run_cli(["run", "--set", f"teacher.checkpoint={other}", "--out", str(tmp_path / "runs")], capsys)
    assert_one_line_error(res, r"does not fit the teacher 'lab-cnn-teacher' architecture")
    assert not (tmp_path / "runs").exists()


def test_presets_and_models_listed(capsys: pytest.CaptureFixture[str]) -> None:
    res = run_cli(["presets"], capsys)
    assert res.code == 0 and "fashion-mnist" in res.out and "cats-vs-dogs" in res.out
    res = run_cli(["models"], capsys)
    assert "lab-cnn-teacher" in res.out and "mlp-student" in res.out
