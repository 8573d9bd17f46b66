"""Lab runs whose teacher (or student) sees its own inputs: trained, validated and tested on its own
view of the same samples; the distilled arm's teacher logits come from the cache built on the
teacher's view; the resolved views on record; what would run the teacher on the student's batches
refused in one line before anything is written; a run whose views are the data's own unchanged."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from clihelp import assert_one_line_error, run_cli
from hf_fixtures import bert_folder, hf_logits
from safetensors.torch import load_file
from view_fixtures import write_csv, write_images

import kdlab
from kdlab.config import load_experiment
from kdlab.data import build_data
from kdlab.data.views import build_view, resolve_view
from kdlab.io import load_weights
from kdlab.lab.run import run_lab
from kdlab.models.registry import create_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.e2e  # whole lab runs

QUICK = ["teacher.model=mlp-teacher", "student.model=mlp-student", "teacher.epochs=2", "student.epochs=2"]
TEACHER_16 = ["teacher.input.image_size=16", "teacher.input.mean=[0.5]", "teacher.input.std=[0.25]"]


def cached_logits(run: Path) -> torch.Tensor:
    return load_file(str(run / "teacher-logits.safetensors"))["logits"]


def teacher_of(run: Path, shape: tuple[int, ...], name: str = "mlp-teacher", **kw: object) -> torch.nn.Module:
    model = create_model(name, num_classes=kw.pop("num_classes", 10), input_shape=shape, **kw)  # type: ignore[arg-type]
    load_weights(model, run / "teacher.safetensors", what="teacher")
    return model.eval()


@pytest.fixture(scope="module")
def digits16(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    cfg = load_experiment("digits", [*QUICK, *TEACHER_16])
    return run_lab(cfg, out=tmp_path_factory.mktemp("views") / "runs"), cfg


def test_teacher_trains_and_is_tested_on_its_own_16px_view(digits16) -> None:
    run, cfg = digits16
    weights = load_file(str(run / "teacher.safetensors"))
    assert {tuple(t.shape) for t in weights.values()} >= {(256, 256)}  # the teacher's input is 1×16×16
    assert any(t.shape == (16, 64) for t in load_file(str(run / "student-distilled.safetensors")).values())
    data = build_data(cfg.data, cfg.seed)
    view = resolve_view(cfg.teacher.input, None, data)
    teacher = teacher_of(run, (1, 16, 16))
    with torch.no_grad():
        expected = teacher(build_view(view, data, "train"))
        test_logits = teacher(build_view(view, data, "test"))
    # the cache holds the teacher's logits on its own view of the training split, row for row
    torch.testing.assert_close(cached_logits(run), expected, rtol=0, atol=1e-6)
    results = json.loads((run / "results.json").read_text())
    acc = (test_logits.argmax(1) == data.test.y).float().mean().item()
    assert results["arms"]["teacher"]["test_accuracy"] == pytest.approx(acc)
    assert results["arms"]["distilled"]["teacher_outputs"] == "cached"
    assert results["teacher_cache"]["status"] in {"miss", "hit"}
    assert 0 <= results["arms"]["distilled"]["teacher_agreement"] <= 1
    assert results["inputs"]["teacher"] == {
        "kind": "image", "image_size": 16, "mean": [0.5], "std": [0.25], "channels": 1,
        "from": {"image_size": "config", "mean": "config", "std": "config", "channels": "data"},
    }  # fmt: skip
    assert results["inputs"]["student"]["image_size"] == 8 and set(results["inputs"]["student"]["from"].values()) == {
        "data"
    }
    resolved = yaml.safe_load((run / "config.resolved.yaml").read_text())
    assert resolved["teacher"]["input"]["image_size"] == 16 and resolved["student"]["input"]["std"] == [1.0]


def test_predict_uses_each_arms_own_view(digits16, tmp_path: Path) -> None:
    from PIL import Image

    run, cfg = digits16
    data = build_data(cfg.data, cfg.seed)
    paths = []
    for i in range(4):
        p = tmp_path / f"{i}.png"
        Image.fromarray((data.test.x[i, 0].numpy() * 255).round().astype("uint8")).save(p)
        paths.append(str(p))
    loaded = kdlab.load_run(run)
    assert loaded.encode(paths, arm="teacher").shape == (4, 1, 16, 16)
    assert loaded.encode(paths, arm="distilled").shape == (4, 1, 8, 8)
    assert len(loaded.predict(paths, arm="teacher")) == 4 and len(loaded.predict(paths)) == 4


def test_the_cache_of_one_view_is_not_reused_for_another(digits16, tmp_path: Path) -> None:
    run, _ = digits16
    first = json.loads((run / "results.json").read_text())["teacher_cache"]["fingerprint"]
    cfg = load_experiment("digits", [*QUICK, *TEACHER_16[:1], "teacher.input.mean=[0.4]", "teacher.input.std=[0.25]"])
    other = run_lab(cfg, out=tmp_path)
    assert json.loads((other / "results.json").read_text())["teacher_cache"]["fingerprint"] != first


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_views_equal_to_the_data_leave_the_run_bit_identical(tmp_path: Path) -> None:
    plain = run_lab(load_experiment("digits", QUICK), out=tmp_path / "a")
    same = ["student.input.image_size=8", "student.input.mean=[0.0]", "student.input.std=[1.0]"]
    explicit = run_lab(load_experiment("digits", [*QUICK, *same, "teacher.input.channels=1"]), out=tmp_path / "b")
    for name in ("teacher.safetensors", "student-scratch.safetensors", "student-distilled.safetensors"):
        assert sha(plain / name) == sha(explicit / name), name
    assert "inputs" in json.loads((plain / "results.json").read_text())


def test_image_folder_teacher_decodes_the_files_at_its_own_size(tmp_path: Path) -> None:
    root = write_images(tmp_path / "imgs", n_per_class=15)
    data_keys = [f"data.path={root}", "data.image_size=8", f"data.cache_dir={tmp_path / 'cache'}"]
    cfg = load_experiment(
        "cats-vs-dogs", [*QUICK, *data_keys, "teacher.input.image_size=20", "train.augment.hflip=false"]
    )
    run = run_lab(cfg, out=tmp_path / "runs")
    data = build_data(cfg.data, cfg.seed)
    view = resolve_view(cfg.teacher.input, None, data)
    x = build_view(view, data, "train")
    assert x.shape[1:] == (3, 20, 20)
    teacher = teacher_of(run, (3, 20, 20), num_classes=2)
    with torch.no_grad():
        torch.testing.assert_close(cached_logits(run), teacher(x), rtol=0, atol=1e-6)
    assert len(list((tmp_path / "cache").glob("images-*.npy"))) == 2  # the data's 8 px and the teacher's 20 px


@pytest.mark.parametrize("labels", [("neg", "pos"), ("pos", "neg")])
def test_hf_teacher_with_its_own_tokenizer_caches_its_own_logits(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, labels: tuple[str, str]
) -> None:
    folder = bert_folder(tmp_path_factory, labels=labels)
    csv = write_csv(tmp_path / "reviews.csv", n=120)
    keys = [f"data.path={csv}", "data.max_len=24", "student.model=bag-student", "student.epochs=2"]
    cfg = load_experiment("text-csv", [*keys, f"teacher.model=hf:{folder}", "teacher.epochs=0"])
    run = run_lab(cfg, out=tmp_path / "runs")
    results = json.loads((run / "results.json").read_text())
    teacher_in = results["inputs"]["teacher"]
    assert teacher_in["tokenizer"] == str(folder.resolve()) and teacher_in["from"]["tokenizer"] == "model"
    assert results["inputs"]["student"] == {
        "kind": "text", "tokenizer": None, "max_length": 24, "from": {"tokenizer": "data", "max_length": "data"}
    }  # fmt: skip
    data = build_data(cfg.data, cfg.seed)
    own = hf_logits(folder, list(data.train.source.texts), max_length=teacher_in["max_length"])
    order = [labels.index(c) for c in data.classes]  # the model's outputs matched to the data's classes by name
    assert own.std(0).min() > 0.1  # a decisive teacher: its outputs vary across inputs
    torch.testing.assert_close(cached_logits(run), own[:, order], rtol=0, atol=1e-5)
    assert results["arms"]["teacher"]["test_accuracy"] > 0.8
    loaded = kdlab.load_run(run)
    texts = ["a wonderful superb film", "dull and awful"]
    assert loaded.encode(texts, arm="teacher").shape == (2, teacher_in["max_length"])
    assert loaded.encode(texts, arm="distilled").shape == (2, 24)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["distill.teacher_cache=off"], r"distill\.teacher_cache=off: the teacher sees its own inputs"),
        (["train.augment.hflip=true"], r"train\.augment\.hflip: random augmentation needs the live teacher"),
        (
            ["distill.method=fitnet", "distill.feature_pairs={net.1: net.1}"],
            r"distill\.method: 'fitnet' needs the teacher's live features",
        ),
        (["teacher.input.tokenizer=/no/such"], r"teacher\.input\.tokenizer: the digits data are images"),
        (["student.input.mean=[0.1, 0.2]"], r"student\.input\.mean: 2 value\(s\) for 1 channel"),
    ],
)
def test_refusals_are_one_line_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], match: str
) -> None:
    sets = [a for kv in [*QUICK, *TEACHER_16, *extra] for a in ("--set", kv)]
    res = run_cli(["run", "digits", *sets, "--out", str(tmp_path / "runs"), "-q"], capsys)
    assert_one_line_error(res, match)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_tokenizer_folder_that_cannot_load_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "tok").mkdir()
    csv = write_csv(tmp_path / "r.csv")
    sets = [
        f"data.path={csv}",
        "teacher.model=bag-teacher",
        "student.model=bag-student",
        f"teacher.input.tokenizer={tmp_path / 'tok'}",
    ]
    res = run_cli(
        ["run", "text-csv", *(a for kv in sets for a in ("--set", kv)), "--out", str(tmp_path / "runs")], capsys
    )
    assert_one_line_error(res, r"teacher\.input\.tokenizer: cannot load a tokenizer")
    res = run_cli(
        [
            "run",
            "text-csv",
            "--set",
            f"data.path={csv}",
            "--set",
            "student.input.image_size=32",
            "--out",
            str(tmp_path / "runs"),
        ],
        capsys,
    )
    assert_one_line_error(res, r"student\.input\.image_size: the text-csv data are text")
    assert not (tmp_path / "runs").exists()
