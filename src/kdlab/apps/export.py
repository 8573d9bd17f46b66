"""Export a trained arm of a run folder to ONNX, and check it against PyTorch.

The model is rebuilt from the run's record (model name, classes, input shape) and its
safetensors weights, exported with ``torch.onnx.export`` (dynamo exporter, dynamic batch axis),
written atomically to ``<run>/export/<arm>.onnx``, then run with onnxruntime on the run's own
test inputs (or zeros when the data is not at hand) and compared with PyTorch's logits.
Needs the optional packages of ``kdlab[onnx]`` (onnx, onnxruntime, onnxscript).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdlab.apps.predict import load_run
from kdlab.config.schema import ExperimentConfig
from kdlab.errors import KdlabError
from kdlab.runs import read_config

FORMATS = ("onnx",)
PARITY_ATOL = 1e-4
"""Largest |ONNX − PyTorch| logit difference accepted (float32 kernels differ in summation order)."""


@dataclass(frozen=True)
class ExportResult:
    path: Path
    arm: str
    max_abs_diff: float
    """max |onnxruntime logits − PyTorch logits| over the parity batch."""


def require_onnx() -> Any:
    """Import onnxruntime (and check onnx, onnxscript), or fail with one line saying how to install them."""
    missing = []
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise KdlabError(f"ONNX export needs {', '.join(missing)} (not installed): pip install 'kdlab[onnx]'")
    return importlib.import_module("onnxruntime")


def load_arm(run_dir: Path, arm: str) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild ``arm``'s network from a run folder and load its weights (eval mode, on CPU)."""
    run = load_run(run_dir, arms=[arm])
    return run.models[arm], run.results


def example_inputs(
    run_dir: Path, results: dict[str, Any], n: int = 8, *, config: ExperimentConfig | None = None
) -> torch.Tensor:
    """``n`` test inputs of the run (rebuilt from its validated config), or zeros of the input shape.

    ``results`` is a validated results.json (:func:`kdlab.runs.read_results`), so the shape is
    bounded (``docs/reliability.md``).
    """
    shape = tuple(results["data"]["input_shape"])
    try:
        from kdlab.data.bundle import build_data
        from kdlab.data.tensors import prepare_inputs

        cfg = config if config is not None else read_config(run_dir)
        data = build_data(cfg.data, int(results.get("seed", cfg.seed)))
        return prepare_inputs(data.test.x[:n]).cpu()
    except (KdlabError, OSError):
        dtype = torch.long if len(shape) == 1 else torch.float32
        return torch.zeros((n, *shape), dtype=dtype)


@contextlib.contextmanager
def _quiet(*names: str) -> Iterator[None]:
    """Raise the given loggers (and their children without a level of their own) to ERROR."""
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_onnx(run_dir: Path, *, arm: str = "distilled", out: Path | None = None) -> ExportResult:
    """Export ``arm`` of ``run_dir`` to ONNX and verify it with onnxruntime.

    Args:
        run_dir: a run folder (or a comparison's ``seed-<s>`` folder).
        arm: ``distilled``, ``scratch``, ``teacher`` or a method arm of a comparison.
        out: the .onnx file (default ``<run_dir>/export/<arm>.onnx``).

    Raises:
        KdlabError: onnx packages missing, unknown arm, or outputs that differ beyond
            :data:`PARITY_ATOL`.
    """
    ort = require_onnx()
    run_dir = Path(run_dir)
    run = load_run(run_dir, arms=[arm])  # every record of the folder validated, weights checked
    model, results = run.models[arm], run.results
    x = example_inputs(run_dir, results, config=run.config)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", arm)
    path = Path(out) if out is not None else run_dir / "export" / f"{safe}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # The exporter narrates its steps on stdout and warns about optional torchvision ops.
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), _quiet("torch.onnx", "onnxscript"):
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(
                    model,
                    (x,),
                    tmp,
                    input_names=["input"],
                    output_names=["logits"],
                    dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                    dynamo=True,
                    external_data=False,
                    verbose=False,
                )
            except Exception as e:  # an untraceable model: say which, in one line, not a long trace
                text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()  # drop terminal colour codes
                first = text.splitlines()[0] if text else ""
                raise KdlabError(
                    f"{arm} '{results['arms'][arm]['model']}': ONNX export failed ({type(e).__name__}: {first[:160]}); "
                    "torch.export cannot trace this model (the lab RNNs' packed sequences, for one)"
                ) from None
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        want = model(x).float().numpy()
    diff = float(np.max(np.abs(got - want)))
    if not diff <= PARITY_ATOL:
        raise KdlabError(f"{path}: ONNX output differs from PyTorch by {diff:.2e} (> {PARITY_ATOL:g}); do not use it")
    return ExportResult(path=path, arm=arm, max_abs_diff=diff)
