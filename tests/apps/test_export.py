"""ONNX export of a trained student, checked against PyTorch with onnxruntime; and the report of
a single run (one seed: no intervals, and it says so)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kdlab.apps.export import export_onnx, load_arm
from kdlab.config import load_experiment
from kdlab.errors import ConfigError, KdlabError
from kdlab.lab.run import run_lab

pytestmark = pytest.mark.e2e  # whole lab runs: `pytest -m "not e2e"` skips them

TINY = ["name=tiny", "teacher.model=mlp-teacher", "teacher.epochs=1", "student.epochs=1", "data.train_limit=200"]
ATOL = 1e-4  # float32 logits; onnxruntime and PyTorch kernels sum in different orders


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return run_lab(load_experiment("digits", TINY), out=tmp_path_factory.mktemp("run"))


def test_onnx_output_matches_pytorch(run_dir: Path) -> None:
    import onnxruntime as ort

    result = export_onnx(run_dir, arm="distilled")
    assert result.path == run_dir / "export" / "distilled.onnx" and result.max_abs_diff <= ATOL
    model, _ = load_arm(run_dir, "distilled")
    # a batch size the export never saw (the batch axis is dynamic), and inputs off the data
    x = torch.rand(13, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = model(x).numpy()
    assert got.shape == (13, 10)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)
    assert not np.allclose(want, want[0])  # the check compares real, input-dependent outputs


def test_export_unknown_arm_and_missing_onnxruntime(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"'student' is not an arm .*teacher, scratch, distilled"):
        export_onnx(run_dir, arm="student")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(KdlabError, match=r"needs onnxruntime \(not installed\): pip install 'kdlab\[onnx\]'"):
        export_onnx(run_dir)


def test_single_run_report_has_no_intervals_and_says_why(run_dir: Path) -> None:
    from kdlab.report.render import write_report

    html = write_report(run_dir).read_text(encoding="utf-8")
    assert 'data-arm="distilled"' in html and 'data-arm="teacher"' in html
    assert "one seed: no spread to estimate" in html
    assert '<td class="ci">—</td>' in html
