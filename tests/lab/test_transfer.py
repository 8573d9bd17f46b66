"""Transfer sets (data.unlabeled) in the lab: ``rest`` and ``train_limit`` select disjoint samples whose
labels are withheld (a label-corrupting run proves they are never read), the scratch arm never sees
them, the distilled arm trains on them through the teacher cache, the teacher can train on every
label (teacher.train_on: all); image-folder and text-file transfer sets, the held-out leak guard,
and one-line refusals."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from clihelp import assert_one_line_error, run_cli
from view_fixtures import write_csv, write_images

import kdlab.data.bundle as bundle_mod
from kdlab.config import load_experiment
from kdlab.data import build_data
from kdlab.data.tensors import Split
from kdlab.kd.losses import UNLABELED
from kdlab.lab.compare import run_comparison
from kdlab.lab.run import run_lab

pytestmark = pytest.mark.e2e

QUICK = ["teacher.model=mlp-teacher", "student.model=mlp-student", "teacher.epochs=2", "student.epochs=2"]
REST = [*QUICK, "data.train_limit=200", "data.unlabeled=rest"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_rest_and_train_limit_select_disjoint_samples_covering_the_training_split() -> None:
    x = torch.arange(300).view(300, 1).float()
    y = torch.arange(300) % 3
    keep, rest = bundle_mod.subset_train(Split(x, y), 60, seed=0)
    a, b = set(keep.x.view(-1).tolist()), set(rest.x.view(-1).tolist())
    assert len(keep) == 60 and len(rest) == 240 and not a & b and a | b == set(range(300))

    cfg = load_experiment("digits", REST)
    data = build_data(cfg.data, cfg.seed)
    assert data.unlabeled is not None and data.full_train is not None
    assert len(data.train) == 200 and len(data.train) + len(data.unlabeled) == len(data.full_train)
    assert torch.all(data.unlabeled.y == UNLABELED)
    rows = {r.numpy().tobytes() for r in data.full_train.x}
    assert {r.numpy().tobytes() for r in data.train.x} | {r.numpy().tobytes() for r in data.unlabeled.x} <= rows
    summary = data.summary()
    assert summary["unlabeled"]["samples"] == len(data.unlabeled) and summary["full_train"] == len(data.full_train)


@pytest.fixture(scope="module")
def rest_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_lab(load_experiment("digits", REST), out=tmp_path_factory.mktemp("rest"))


def test_withheld_labels_are_never_read(rest_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = bundle_mod.subset_train

    def corrupting(train: Split, limit: int, seed: int) -> tuple[Split, Split]:
        keep, rest = original(train, limit, seed)
        wrong = (rest.y + 1 + torch.randint(0, 8, rest.y.shape)) % 10  # every withheld label changed
        return keep, Split(rest.x, wrong, rest.source)

    monkeypatch.setattr(bundle_mod, "subset_train", corrupting)
    corrupted = run_lab(load_experiment("digits", REST), out=tmp_path)
    for name in ("teacher.safetensors", "student-scratch.safetensors", "student-distilled.safetensors"):
        assert sha(corrupted / name) == sha(rest_run / name), name


def test_the_distilled_arm_trains_on_the_transfer_set_and_scratch_does_not(rest_run: Path) -> None:
    results = json.loads((rest_run / "results.json").read_text())
    n_rest = results["data"]["unlabeled"]["samples"]
    assert results["data"]["train"] == 200 and n_rest == results["data"]["full_train"] - 200
    arms = results["arms"]
    assert arms["scratch"]["train_samples"] == 200 and arms["distilled"]["train_samples"] == 200 + n_rest
    assert arms["teacher"]["train_samples"] == 200  # teacher.train_on: budget (the default)
    assert arms["distilled"]["teacher_outputs"] == "cached" and results["teacher_cache"]["rows"] == 200 + n_rest
    history = (rest_run / "history.csv").read_text().splitlines()
    header = history[0].split(",")
    distilled = [dict(zip(header, r.split(","), strict=False)) for r in history[1:] if r.startswith("distilled")]
    assert all(int(r["samples"]) == 200 + n_rest and int(r["labelled_samples"]) == 200 for r in distilled)


def test_a_transfer_run_stopped_mid_epoch_resumes_to_the_same_weights(rest_run: Path, tmp_path: Path) -> None:
    from kdlab.errors import RunInterrupted
    from kdlab.lab.resume import resume_lab

    calls = 0

    def stop() -> bool:  # asked before every step: teacher 14, scratch 14, then the distilled arm's
        nonlocal calls
        calls += 1
        return calls > 14 + 14 + 60  # mid-way through the distilled arm's second epoch (45 steps each)

    with pytest.raises(RunInterrupted):
        run_lab(load_experiment("digits", REST), out=tmp_path, stop=stop)
    (run,) = tmp_path.glob("*-digits")
    assert (run / "checkpoints" / "distilled").is_dir()
    resume_lab(run)
    for name in ("student-scratch.safetensors", "student-distilled.safetensors", "teacher-logits.safetensors"):
        assert sha(run / name) == sha(rest_run / name), name


def test_teacher_train_on_all_trains_the_teacher_on_every_label(tmp_path: Path) -> None:
    run = run_lab(load_experiment("digits", [*REST, "teacher.train_on=all", "student.epochs=1"]), out=tmp_path)
    results = json.loads((run / "results.json").read_text())
    assert results["arms"]["teacher"]["train_samples"] == results["data"]["full_train"] > 200
    assert results["arms"]["scratch"]["train_samples"] == 200


def test_compare_pairs_kd_with_and_without_the_transfer_set(tmp_path: Path) -> None:
    cfg = load_experiment("digits", [*REST, "student.epochs=1"])
    comp = run_comparison(cfg, "kd,kd:use_unlabeled=false", 1, out=tmp_path)
    seed = json.loads(next(comp.glob("seed-*/results.json")).read_text())
    n = seed["data"]["unlabeled"]["samples"]
    assert seed["arms"]["kd"]["train_samples"] == 200 + n
    assert seed["arms"]["kd:use_unlabeled=false"]["train_samples"] == 200


def test_an_image_folder_transfer_set_without_class_folders(tmp_path: Path) -> None:
    data_dir = write_images(tmp_path / "imgs", n_per_class=12, size=20)
    loose = tmp_path / "loose"
    write_images(loose / "x", n_per_class=5, size=24)  # any layout: x/a/*.png, x/b/*.jpg
    (loose / "notes.txt").write_text("not an image")  # skipped and listed
    # A copy of a held-out image would leak its teacher answer: dropped.
    sets = [*QUICK, "data.name=image-folder", f"data.path={data_dir}", "data.image_size=16", f"data.unlabeled={loose}"]
    cfg = load_experiment("digits", sets)
    data = build_data(cfg.data, cfg.seed)
    assert data.unlabeled is not None and len(data.unlabeled) == 10
    assert data.unlabeled.x.shape[1:] == (3, 16, 16) and data.unlabeled.x.dtype == torch.uint8
    assert str(loose / "notes.txt") in data.meta["skipped_files"]
    run = run_lab(cfg, out=tmp_path / "runs")
    results = json.loads((run / "results.json").read_text())
    assert results["arms"]["distilled"]["train_samples"] == len(data.train) + 10


def test_a_text_file_transfer_set_and_the_held_out_leak_guard(tmp_path: Path) -> None:
    table = write_csv(tmp_path / "reviews.csv", n=80)
    base = ["data.name=text-csv", f"data.path={table}", "data.max_len=32", "teacher.epochs=1", "student.epochs=1"]
    cfg0 = load_experiment("text-csv", base)
    data0 = build_data(cfg0.data, cfg0.seed)
    held_out = list(data0.test.source.texts[:3])  # type: ignore[union-attr]
    lines = ["an unlabelled review that is rather good", "", "another one, dull and slow", *held_out]
    txt = tmp_path / "more.txt"
    txt.write_text("\n".join(lines) + "\n")
    data = build_data(load_experiment("text-csv", [*base, f"data.unlabeled={txt}"]).data, cfg0.seed)
    assert data.unlabeled is not None and len(data.unlabeled) == 2  # blank skipped, 3 test texts dropped
    assert data.meta["unlabeled_dropped_heldout"] == 3
    assert list(data.unlabeled.source.texts) == lines[:1] + lines[2:3]  # type: ignore[union-attr]
    assert torch.equal(data.unlabeled.x, data.meta["vocab"].encode(lines[:1] + lines[2:3]))
    jsonl = tmp_path / "more.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "label": "ignored"}) + "\n" for t in lines[:3] if t))
    data = build_data(load_experiment("text-csv", [*base, f"data.unlabeled={jsonl}"]).data, cfg0.seed)
    assert data.unlabeled is not None and len(data.unlabeled) == 2
    run = run_lab(load_experiment("text-csv", [*base, f"data.unlabeled={txt}"]), out=tmp_path / "runs")
    assert json.loads((run / "results.json").read_text())["data"]["unlabeled"]["dropped_heldout"] == 3


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["data.unlabeled=rest"], "unlabeled: rest is the training samples data.train_limit leaves out"),
        (["data.unlabeled_limit=10"], "unlabeled_limit: there is no transfer set"),
        (["teacher.train_on=all"], "teacher.train_on: all means the labelled samples before data.train_limit"),
        (["data.unlabeled={tmp}/missing"], "does not exist"),
        (["data.unlabeled={tmp}/file.txt"], "is a file, but digits is an image dataset"),
        (["data.train_limit=2000", "data.unlabeled=rest"], "rest is empty"),
    ],
)
def test_bad_transfer_settings_are_one_line(
    tmp_path: Path, sets: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file.txt").write_text("a\n")
    args = ["run", "digits", *(a for s in sets for a in ("--set", s.format(tmp=tmp_path))), "--out", str(tmp_path)]
    result = run_cli(args, capsys)
    assert_one_line_error(result, message)
    assert not list(tmp_path.glob("*digits*"))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("pipe.txt", None, r"pipe\.txt is a FIFO \(named pipe\), not a folder of images"),
        ("bytes.txt", b"\xff\xfe\n", r"bytes\.txt: not UTF-8 text \(line 1"),
        ("rows.jsonl", b'{"body": "a text"}\n', r"no text column 'text'"),
    ],
)
def test_a_hostile_text_transfer_set_is_one_line_and_never_blocks(
    tmp_path: Path, name: str, content: bytes | None, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    table = write_csv(tmp_path / "reviews.csv", n=40)
    target = tmp_path / name
    if content is None:
        os.mkfifo(target)  # opened without blocking and refused, never read
    else:
        target.write_bytes(content)
    sets = ["data.name=text-csv", f"data.path={table}", f"data.unlabeled={target}"]
    args = ["run", "text-csv", *(a for s in sets for a in ("--set", s)), "--out", str(tmp_path / "runs")]
    assert_one_line_error(run_cli(args, capsys), message)
    assert not (tmp_path / "runs").exists()


def test_unlabeled_limit_keeps_a_seeded_subset() -> None:
    cfg = load_experiment("digits", [*REST, "data.unlabeled_limit=50"])
    a, b = build_data(cfg.data, 0), build_data(cfg.data, 0)
    assert a.unlabeled is not None and b.unlabeled is not None and len(a.unlabeled) == 50
    assert torch.equal(a.unlabeled.x, b.unlabeled.x)
    assert np.unique(a.unlabeled.x.reshape(50, -1).numpy(), axis=0).shape[0] >= 45


def test_an_hf_teacher_on_its_own_tokenizer_labels_a_text_transfer_set(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from hf_fixtures import bert_folder, hf_logits
    from safetensors.torch import load_file

    folder = bert_folder(tmp_path_factory, labels=("neg", "pos"))
    table = write_csv(tmp_path / "reviews.csv", n=120)
    txt = tmp_path / "more.txt"
    txt.write_text("a superb and wonderful film\ndull, awful and slow\nquite good really\n")
    keys = [f"data.path={table}", "data.max_len=24", "student.model=bag-student", "student.epochs=1"]
    cfg = load_experiment(
        "text-csv", [*keys, f"teacher.model=hf:{folder}", "teacher.epochs=0", f"data.unlabeled={txt}"]
    )
    run = run_lab(cfg, out=tmp_path / "runs")
    results = json.loads((run / "results.json").read_text())
    data = build_data(cfg.data, cfg.seed)
    texts = [*data.train.source.texts, *txt.read_text().splitlines()]  # type: ignore[union-attr]
    own = hf_logits(folder, texts, max_length=results["inputs"]["teacher"]["max_length"])
    order = [("neg", "pos").index(c) for c in data.classes]
    cached = load_file(str(run / "teacher-logits.safetensors"))["logits"]
    assert cached.shape[0] == len(data.train) + 3 == results["arms"]["distilled"]["train_samples"]
    torch.testing.assert_close(cached, own[:, order], rtol=0, atol=1e-5)  # the transfer rows on its own tokenizer
