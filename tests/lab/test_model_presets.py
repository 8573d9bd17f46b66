"""The presets for your own models: ``timm-images`` (pretrained timm teacher, timm student) and
``hf-text`` (a Hugging Face teacher with its own tokenizer, a kdlab student). As shipped they ask for
published weights: offline that is one line naming the key, at once. With local models they run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hf_fixtures import bert_folder
from view_fixtures import write_csv, write_images

from kdlab.config import list_presets, load_experiment
from kdlab.lab.run import run_lab

pytestmark = pytest.mark.e2e


def _kdlab(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"}}
    return subprocess.run(
        [sys.executable, "-m", "kdlab", *args], capture_output=True, text=True, timeout=120, env={**clean, **env}
    )


def test_both_presets_are_listed() -> None:
    presets = list_presets()
    assert "timm" in presets["timm-images"] and "Hugging Face" in presets["hf-text"]


@pytest.mark.parametrize(
    ("preset", "data", "match"),
    [
        (
            "timm-images",
            "images",
            r"^error: teacher\.model: timm:resnet18 pretrained weights cannot be fetched: "
            r"the machine is offline \(hub\.invalid does not resolve.*teacher\.pretrained=false",
        ),
        (
            "hf-text",
            "reviews.csv",
            r"^error: teacher\.model: hf:distilbert-base-uncased-finetuned-sst-2-english is "
            r"a Hugging Face hub id and is not available offline \(hub\.invalid does not resolve",
        ),
    ],
)
def test_published_weights_offline_are_one_line_at_once(tmp_path: Path, preset: str, data: str, match: str) -> None:
    """No network (a hub host that never resolves): one line, exit 2, no retries, no run folder."""
    path = write_images(tmp_path / data, 12, 24) if data == "images" else write_csv(tmp_path / data, 40)
    start = time.perf_counter()
    p = _kdlab(
        ["run", preset, "--set", f"data.path={path}", "--out", str(tmp_path / "runs")],
        HF_ENDPOINT="https://hub.invalid",
    )
    seconds = time.perf_counter() - start
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1, p.stderr
    import re

    assert re.search(match, lines[0]), lines[0]
    assert seconds < 60
    assert not (tmp_path / "runs").exists()


def test_timm_images_runs_with_local_timm_models(tmp_path: Path) -> None:
    """The preset's recipe with fresh (not pretrained) tiny timm models: the teacher then takes the
    data's view (no pretrained_cfg applies), and the run completes with every arm on record."""
    root = write_images(tmp_path / "images", 12, 24)
    cfg = load_experiment(
        "timm-images",
        [
            f"data.path={root}",
            "data.image_size=16",
            "data.val_fraction=0.2",
            "data.test_fraction=0.2",
            "teacher.model=timm:test_resnet",
            "teacher.pretrained=false",
            "teacher.epochs=1",
            "student.model=timm:test_efficientnet",
            "student.epochs=1",
            "train.batch_size=8",
            "device=cpu",
            f"data.cache_dir={tmp_path / 'cache'}",
        ],
    )
    run = run_lab(cfg, out=tmp_path / "runs")
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    assert set(results["arms"]) == {"teacher", "scratch", "distilled"}
    assert results["arms"]["teacher"]["model"] == "timm:test_resnet"
    assert results["arms"]["distilled"]["teacher_outputs"] == "cached"


def test_hf_text_runs_with_a_local_teacher_folder(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """``--set teacher.model=hf:FOLDER``: the teacher is used as given (epochs 0), on its own tokenizer."""
    folder = bert_folder(tmp_path_factory, labels=("neg", "pos"))
    csv = write_csv(tmp_path / "reviews.csv", 120)
    cfg = load_experiment(
        "hf-text",
        [f"data.path={csv}", f"teacher.model=hf:{folder}", "data.max_len=24", "student.epochs=1", "device=cpu"],
    )
    run = run_lab(cfg, out=tmp_path / "runs")
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    teacher = results["arms"]["teacher"]
    assert teacher["source"] == f"hf:{folder}" and teacher["test_accuracy"] > 0.7
    seen = results["inputs"]["teacher"]
    assert seen["tokenizer"] == str(folder) and seen["from"]["tokenizer"] == "model"
    assert results["inputs"]["student"]["tokenizer"] is None  # kdlab's vocabulary
