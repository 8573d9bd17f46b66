"""``hf:`` models through whole lab runs: a DistilBERT-style student (``student.config`` +
``student.init_from_teacher``) and ``kdlab export --format hf``, whose folder
``AutoModelForSequenceClassification.from_pretrained`` loads and which predicts what ``kdlab predict``
predicts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from clihelp import assert_one_line_error, run_cli
from hf_fixtures import bert_folder
from text_corpus import reviews, write_table

from kdlab.apps.export import export_hf
from kdlab.apps.predict import load_run
from kdlab.config import load_experiment
from kdlab.errors import ConfigError
from kdlab.lab.run import run_lab

pytestmark = pytest.mark.e2e  # whole lab runs: `pytest -m "not e2e"` skips them

TEXTS = [
    "A wonderful, superb film; the cast was brilliant.",
    "Boring and dull, a tedious plot and weak actors.",
    "it was fine but clumsy",
    "great great great",
    "the movie",
]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def text_sets(tmp: Path, teacher: Path, *more: str) -> list[str]:
    data = write_table(tmp / "reviews.csv", reviews(160))
    return [
        f"data.path={data}",
        "data.vocab_size=300",
        "data.max_len=40",
        f"teacher.model=hf:{teacher}",
        f"teacher.checkpoint={teacher}",
        "teacher.epochs=0",
        "student.epochs=1",
        "train.batch_size=32",
        *more,
    ]


@pytest.fixture(scope="module")
def distilbert_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """hf: teacher -> 1-layer hf: student of its family, started from the teacher's layers."""
    teacher = bert_folder(tmp_path_factory)
    tmp = tmp_path_factory.mktemp("distilbert")
    sets = text_sets(
        tmp,
        teacher,
        f"student.model=hf:{teacher}",
        "student.config={num_hidden_layers: 1}",
        "student.init_from_teacher=true",
    )
    return run_lab(load_experiment("text-csv", sets), out=tmp / "runs"), teacher


@pytest.fixture(scope="module")
def reversed_teacher_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An hf: teacher whose labels are the data's in reverse order -> a kdlab bag-student."""
    teacher = bert_folder(tmp_path_factory, labels=("pos", "neg"))
    tmp = tmp_path_factory.mktemp("reversed")
    return run_lab(load_experiment("text-csv", text_sets(tmp, teacher, "student.model=bag-student")), out=tmp / "runs")


def hf_predict(folder: Path, texts: list[str]) -> tuple[list[str], torch.Tensor]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        probs = model(**tokenizer(texts, padding=True, truncation=True, return_tensors="pt")).logits.softmax(-1)
    return [model.config.id2label[int(i)] for i in probs.argmax(-1)], probs


def test_init_from_teacher_is_recorded_and_both_arms_start_there(distilbert_run: tuple[Path, Path]) -> None:
    run, _ = distilbert_run
    results = json.loads((run / "results.json").read_text())
    record = results["init_from_teacher"]
    assert record["layers"] == {"0": 0} and record["teacher_layers"] == 2 and record["student_layers"] == 1
    assert record["embeddings"] and record["classifier"]
    assert set(results["arms"]) == {"teacher", "scratch", "distilled"}


def test_export_hf_loads_and_predicts_what_kdlab_predicts(distilbert_run: tuple[Path, Path]) -> None:
    run, _ = distilbert_run
    result = export_hf(run, arm="distilled")
    assert result.path == run / "export" / "distilled-hf" and result.max_abs_diff <= 1e-4
    assert result.preprocessing == "tokenizer"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in result.path.iterdir()}
    labels, probs = hf_predict(result.path, TEXTS)
    want = load_run(run, arms=["distilled"]).predict(TEXTS, arm="distilled")
    assert labels == [p.label for p in want]
    torch.testing.assert_close(probs[:, 1], torch.tensor([p.probabilities["pos"] for p in want]), atol=1e-5, rtol=0)
    config = json.loads((result.path / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["num_hidden_layers"] == 1
    assert not any(p.name.startswith(".") for p in result.path.parent.iterdir())  # no temporary folder left
    again = export_hf(run, arm="distilled")  # an earlier export is replaced
    assert again.path == result.path and hf_predict(again.path, TEXTS)[0] == labels


def test_export_hf_of_a_teacher_with_labels_in_another_order(reversed_teacher_run: Path, tmp_path: Path) -> None:
    """The exported classifier rows are in the data's order, so id2label is the data's classes."""
    result = export_hf(reversed_teacher_run, arm="teacher", out=tmp_path / "teacher-hf")
    config = json.loads((result.path / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"}
    labels, probs = hf_predict(result.path, TEXTS)
    want = load_run(reversed_teacher_run, arms=["teacher"]).predict(TEXTS, arm="teacher")
    assert labels == [p.label for p in want] and len(set(labels)) == 2
    torch.testing.assert_close(probs[:, 0], torch.tensor([p.probabilities["neg"] for p in want]), atol=1e-5, rtol=0)


def test_export_hf_refuses_a_kdlab_arm_in_one_line(
    reversed_teacher_run: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    res = run_cli(["export", str(reversed_teacher_run), "--format", "hf", "--arm", "distilled"], capsys)
    msg = assert_one_line_error(res)
    assert "arm 'distilled' is 'bag-student', not an hf: model" in msg and "--format onnx" in msg
    assert not (reversed_teacher_run / "export" / "distilled-hf").exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    res = run_cli(
        ["export", str(reversed_teacher_run), "--format", "hf", "--arm", "teacher", "--out", str(busy)], capsys
    )
    assert "is not an earlier model export" in assert_one_line_error(res)
    assert (busy / "notes.txt").read_text() == "mine"
    res = run_cli(["export", str(reversed_teacher_run), "--format", "tflite"], capsys)
    assert "known: onnx, hf" in assert_one_line_error(res)


def test_init_from_teacher_with_a_kdlab_teacher_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs hf: models for both"):
        load_experiment("text-csv", ["student.model=hf:/x", "student.init_from_teacher=true"])
