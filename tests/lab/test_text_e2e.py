"""End to end through the CLI: `kdlab run` on generated labelled text (CSV and aclImdb layouts),
`kdlab predict` on the saved runs (text and image), and bad inputs exiting 2 with one line."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from clihelp import assert_one_line_error, run_cli
from text_corpus import reviews, write_aclimdb, write_table

import kdlab
from kdlab.apps.predict import load_images
from kdlab.cli import main
from kdlab.config import load_experiment
from kdlab.data import build_data
from kdlab.data.text import load_vocab
from kdlab.train.loop import evaluate

pytestmark = pytest.mark.e2e  # whole lab runs: `pytest -m "not e2e"` skips them

QUICK = ["--set", "teacher.model=bag-teacher", "--set", "student.model=bag-student", "--set", "data.max_len=24"]
QUICK += ["--set", "teacher.epochs=4", "--set", "student.epochs=4", "--set", "train.lr=0.02", "-q"]


def cli(args: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(sys, "argv", ["kdlab", *args])
    try:
        main()
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def only_run(out: Path) -> Path:
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return run


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("csv-run")
    data = write_table(root / "reviews.csv", reviews(300))
    with pytest.MonkeyPatch.context() as mp:
        code = cli(["run", "text-csv", "--set", f"data.path={data}", "--out", str(root / "runs"), *QUICK], mp)
    assert code == 0
    return only_run(root / "runs")


def test_text_csv_run_writes_a_complete_run_folder(csv_run: Path) -> None:
    names = {p.name for p in csv_run.iterdir()}
    assert {"config.resolved.yaml", "results.json", "history.csv", "vocab.json", "teacher.safetensors"} <= names
    assert {"student-scratch.safetensors", "student-distilled.safetensors"} <= names
    results = json.loads((csv_run / "results.json").read_text())
    assert results["status"] == "complete" and results["data"]["name"] == "text-csv"
    assert (results["data"]["train"], results["data"]["val"], results["data"]["test"]) == (240, 30, 30)
    assert results["data"]["input_shape"] == [24] and results["data"]["classes"] == ["neg", "pos"]
    for arm in ("teacher", "scratch", "distilled"):
        assert results["arms"][arm]["test_accuracy"] >= 0.8, arm  # chance is 0.5
    vocab = load_vocab(csv_run / "vocab.json")
    assert vocab.tokens[:2] == ("<pad>", "<oov>") and vocab.max_len == 24
    assert results["arms"]["scratch"]["params"] == len(vocab) * 16 + 16 * 2 + 2


def test_load_run_reproduces_the_recorded_test_accuracy(csv_run: Path) -> None:
    run = kdlab.load_run(csv_run)
    assert set(run.models) == {"teacher", "scratch", "distilled"} and run.is_text
    assert run.classes == ["neg", "pos"] and run.input_shape == (24,)
    # rebuild the test split from the saved config: same seed -> same split and vocabulary
    data = build_data(run.config.data, run.config.seed)
    assert data.meta["vocab"] == run.vocab
    results = json.loads((csv_run / "results.json").read_text())
    for arm, model in run.models.items():
        acc = evaluate(model, (data.test.x, data.test.y))["accuracy"]
        assert acc == pytest.approx(results["arms"][arm]["test_accuracy"])


def test_predict_texts_and_text_file(
    csv_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = tmp_path / "lines.txt"
    lines.write_text("dreadful tedious boring plot\n\nsuperb film, brilliant cast!\n", encoding="utf-8")
    assert cli(["predict", str(csv_run), "--json", "wonderful excellent movie", str(lines)], monkeypatch) == 0
    preds = json.loads(capsys.readouterr().out)
    assert [p["label"] for p in preds] == ["pos", "neg", "pos"]
    assert preds[1]["input"] == "dreadful tedious boring plot"
    for p in preds:
        assert sum(p["probabilities"].values()) == pytest.approx(1.0)
        assert p["probability"] == max(p["probabilities"].values()) > 0.5
    assert cli(["predict", str(csv_run), "--arm", "teacher", "awful and dull"], monkeypatch) == 0
    out = capsys.readouterr().out.splitlines()
    assert (
        len(out) == 1 and re.match(r"neg  [01]\.\d{3}  awful and dull$", out[0]) and out[0].endswith("awful and dull")
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO("superb delightful\n\nterrible weak\n"))
    assert cli(["predict", str(csv_run), "-"], monkeypatch) == 0
    assert [line.split()[0] for line in capsys.readouterr().out.splitlines()] == ["pos", "neg"]
    # the Python API gives the same numbers as the CLI
    api = kdlab.load_run(csv_run).predict(["wonderful excellent movie"])[0]
    assert api.label == "pos" and api.probability == pytest.approx(preds[0]["probability"])


def test_aclimdb_run_with_the_rnn_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_aclimdb(tmp_path, reviews(120), reviews(40, seed=9))
    args = ["run", "imdb", "--set", f"data.path={tmp_path}", "--out", str(tmp_path / "runs"), "-q"]
    args += ["--set", "data.max_len=16", "--set", "teacher.model=lab-rnn-student", "--set", "teacher.epochs=2"]
    args += ["--set", "student.epochs=1", "--set", "train.lr=0.01"]
    assert cli(args, monkeypatch) == 0
    run = only_run(tmp_path / "runs")
    results = json.loads((run / "results.json").read_text())
    assert results["data"]["name"] == "aclimdb" and (results["data"]["train"], results["data"]["test"]) == (108, 40)
    assert results["arms"]["scratch"]["model"] == "lab-rnn-student" and results["distill"]["temperature"] == 10.0
    assert results["arms"]["teacher"]["test_accuracy"] >= 0.75
    assert kdlab.load_run(run).predict(["superb superb brilliant wonderful"], arm="teacher")[0].label == "pos"


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ("body,label\nnice,pos\n", [], "no text column 'text'"),
        (b"text,label\n\xff\xfe,pos\n", [], "not UTF-8 text"),
        ("", [], "the file is empty"),
        ("text,label\n" + "a b,pos\n" * 30, [], "has 1 class"),
        ("text,label\na,pos\n", ["--set", "data.max_len=0"], "data.max_len"),
    ],
)
def test_bad_text_inputs_exit_2_with_one_line(
    content: str | bytes,
    extra: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "d.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    res = run_cli(["run", "text-csv", "--set", f"data.path={path}", "--out", str(tmp_path / "runs"), *extra], capsys)
    assert message in assert_one_line_error(res)
    assert not (tmp_path / "runs").exists()  # a bad input leaves no run folder behind


def test_predict_bad_inputs_exit_2(
    csv_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for args, message in [
        (["predict", str(tmp_path), "text"], "has no results.json"),
        (["predict", str(csv_run), "--arm", "student", "text"], "'student' is not an arm of"),
    ]:
        assert message in assert_one_line_error(run_cli(args, capsys))


def test_text_presets_are_listed_and_valid() -> None:
    imdb = load_experiment("imdb")
    assert (imdb.data.name, imdb.data.vocab_size, imdb.data.max_len) == ("aclimdb", 20000, 200)
    assert (imdb.teacher.model, imdb.student.model) == ("lab-rnn-teacher", "lab-rnn-student")
    assert (imdb.distill.alpha, imdb.distill.temperature, imdb.teacher.epochs, imdb.train.batch_size) == (
        0.1,
        10.0,
        3,
        32,
    )
    generic = load_experiment("text-csv")
    assert generic.data.name == "text-csv" and generic.student.model == "bag-student"


# --------------------------------------------------------------------------------------------
# Image runs


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("digits-run")
    args = ["run", "digits", "--set", "teacher.model=mlp-teacher", "--set", "teacher.epochs=2"]
    args += ["--set", "student.epochs=1", "--set", "data.train_limit=400", "--out", str(root), "-q"]
    with pytest.MonkeyPatch.context() as mp:
        assert cli(args, mp) == 0
    return only_run(root)


def test_predict_image_files_matches_the_model_on_the_training_pixels(
    digits_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    paths = []
    for i in range(8):
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray(np.round(d.images[i] * 255 / 16).astype(np.uint8), mode="L").save(paths[-1])
    assert cli(["predict", str(digits_run), "--arm", "teacher", "--json", *map(str, paths)], monkeypatch) == 0
    preds = json.loads(capsys.readouterr().out)
    teacher = kdlab.load_run(digits_run).model("teacher")
    with torch.no_grad():
        probs = torch.softmax(teacher(torch.tensor(d.images[:8] / 16.0, dtype=torch.float32).unsqueeze(1)), -1)
    got = torch.tensor([[p["probabilities"][str(c)] for c in range(10)] for p in preds])
    assert torch.allclose(got, probs, atol=0.03)  # uint8 PNG rounding only
    assert [p["label"] for p in preds] == [str(int(k)) for k in probs.argmax(-1)]
    assert cli(["predict", str(digits_run), str(tmp_path / "missing.png")], monkeypatch) == 2
    assert "no such image file" in capsys.readouterr().err


def test_load_images_converts_mode_and_resizes(tmp_path: Path) -> None:
    from PIL import Image

    gray = np.zeros((6, 10), dtype=np.uint8)
    gray[:, 5:] = 255
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    rgb = load_images([tmp_path / "g.png"], (3, 4, 4))
    assert rgb.shape == (1, 3, 4, 4) and rgb.dtype == torch.float32
    assert torch.equal(rgb[0, 0], rgb[0, 2])  # grayscale -> RGB: equal channels
    assert rgb[0, 0, :, 0].tolist() == [0.0] * 4 and rgb[0, 0, :, 3].tolist() == [1.0] * 4
    Image.fromarray(np.full((5, 5, 3), (255, 0, 0), dtype=np.uint8)).save(tmp_path / "red.png")
    red = load_images([tmp_path / "red.png"], (1, 8, 8))
    assert red.shape == (1, 1, 8, 8) and red[0, 0, 0, 0].item() == pytest.approx(76 / 255)  # ITU-R 601 luma
