"""Export a trained arm of a run folder to ONNX, and check it against PyTorch.

The model is rebuilt from the run's record (model name, classes, input shape) and its
safetensors weights, exported with ``torch.onnx.export`` (dynamo exporter, dynamic batch axis),
written atomically to ``<run>/export/<arm>.onnx``, then run with onnxruntime on the run's own
test inputs (or zeros when the data is not at hand) and compared with PyTorch's logits.

The file stands alone: its ``metadata_props`` (:data:`METADATA_KEYS`, ``docs/report.md``) carry the
class names, the input shape and the preprocessing ``kdlab predict`` applies to raw inputs (for
text runs the whole vocabulary), so ``kdlab predict MODEL.onnx INPUTS…`` needs no run folder.
Needs the optional packages of ``kdlab[onnx]`` (onnx, onnxruntime, onnxscript).

``--format hf`` (:func:`export_hf`) writes an ``hf:`` arm as a Hugging Face ``save_pretrained``
folder instead, with its tokenizer or image processor, checked after ``from_pretrained``.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kdlab.apps.predict import (
    IMAGE_SCALE,
    META_ARM,
    META_CLASSES,
    META_INPUT_SHAPE,
    META_MODEL,
    META_PREPROCESSING,
    META_VERSION,
    META_VOCAB,
    LoadedRun,
    load_run,
)
from kdlab.config.schema import ExperimentConfig
from kdlab.errors import KdlabError
from kdlab.io import make_temp
from kdlab.runs import read_config
from kdlab.version import __version__

FORMATS = ("onnx", "hf")
PARITY_ATOL = 1e-4
"""Largest |ONNX − PyTorch| logit difference accepted (float32 kernels differ in summation order)."""

METADATA_KEYS = (META_VERSION, META_ARM, META_MODEL, META_CLASSES, META_INPUT_SHAPE, META_PREPROCESSING, META_VOCAB)
"""The ``metadata_props`` keys of an exported file (``kdlab.vocab`` for text runs only)."""

SOURCE_SCALE = {"digits": 16.0}
"""Data sets whose raw arrays are not 0..255 pixels: scikit-learn's digits are 0..16."""


def onnx_metadata(run: LoadedRun, arm: str) -> dict[str, str]:
    """The ``metadata_props`` of an export of ``arm``: what ``kdlab predict`` needs, as strings (JSON)."""
    shape = list(run.input_shape)
    meta = {
        META_VERSION: __version__,
        META_ARM: arm,
        META_MODEL: str(run.results["arms"][arm].get("model") or ""),
        META_CLASSES: json.dumps(run.classes, ensure_ascii=False),
        META_INPUT_SHAPE: json.dumps(shape),
    }
    if run.vocab is not None:
        pre: dict[str, Any] = {
            "kind": "text",
            "input": "input",
            "dtype": "int64",
            "tokenizer": "lower-case; <br /> -> space; remove punctuation ([^\\w\\s]|_); split on whitespace",
            "vocab": META_VOCAB,
            "max_len": run.vocab.max_len,
            "pad_id": 0,
            "oov_id": 1,
            "truncate": "keep the first max_len token ids",
            "padding": "pad_id at the end, to max_len",
        }
        meta[META_VOCAB] = json.dumps(run.vocab.to_json(), ensure_ascii=False, separators=(",", ":"))
    else:
        c, h, w = shape
        pre = {
            "kind": "image",
            "input": "input",
            "dtype": "float32",
            "layout": "NCHW",
            "color": "L" if c == 1 else "RGB",
            "size": [h, w],
            "resize": "bilinear",
            "divide_by": IMAGE_SCALE,
            "mean": None,
            "std": None,
        }
        name = str(run.results["data"].get("name") or "")
        if name in SOURCE_SCALE:
            pre["source_divide_by"] = SOURCE_SCALE[name]
            pre["note"] = (
                f"image files are divided by {IMAGE_SCALE:g}; the {name} data set's own arrays "
                f"(values 0..{SOURCE_SCALE[name]:g}) by {SOURCE_SCALE[name]:g}"
            )
    meta[META_PREPROCESSING] = json.dumps(pre, ensure_ascii=False)
    return meta


def _set_metadata(path: str, meta: dict[str, str]) -> None:
    import onnx
    from onnx import helper

    proto = onnx.load(path)
    helper.set_model_props(proto, meta)
    onnx.save(proto, path)


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
    from kdlab.lab.compare import refuse_comparison_folder

    refuse_comparison_folder(Path(run_dir), "export", arm=arm)  # before the onnx check: names its seed runs
    ort = require_onnx()
    run_dir = Path(run_dir)
    run = load_run(run_dir, arms=[arm])  # every record of the folder validated, weights checked
    model, results = run.models[arm], run.results
    x = example_inputs(run_dir, results, config=run.config)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", arm)
    path = Path(out) if out is not None else run_dir / "export" / f"{safe}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = make_temp(path)
    os.close(fd)
    try:
        # The exporter narrates its steps on stdout (and, for some models, natively on stderr) and
        # warns about optional torchvision ops.
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
            _quiet("torch.onnx", "onnxscript", "onnx_ir"),
        ):
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
        _set_metadata(tmp, onnx_metadata(run, arm))
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


# ---------------------------------------------------------------------------------------------- --format hf
HF_PARITY_ATOL = 1e-4
"""Largest |reloaded − kdlab| logit difference accepted for a ``--format hf`` folder."""


@dataclass(frozen=True)
class HFExportResult:
    path: Path
    arm: str
    max_abs_diff: float
    """max |from_pretrained(path) logits − kdlab logits| over the parity batch (data order)."""
    preprocessing: str
    """``tokenizer``, ``image processor`` or ``none`` (what was written beside the model)."""


def _arm_view(run: LoadedRun, arm: str) -> Any:
    """``<teacher|student>.input`` of the run's resolved config: the view the arm was trained on."""
    mc = run.config.teacher if arm == "teacher" else run.config.student
    return mc.input


def _data_order_model(wrapper: Any, classes: list[str]) -> Any:
    """A copy of the wrapped Hugging Face model whose output ``j`` is ``classes[j]``: the classifier's
    output rows reordered when the wrapper reorders its logits, and ``id2label`` = the data's classes.
    When the output layer cannot be found the rows stay, and ``id2label`` names each row's class."""
    import copy

    from kdlab.models.from_hf import head_linear

    model = copy.deepcopy(wrapper.model).cpu().eval()
    order = wrapper.data_order()  # order[j] = the model's own row for class j
    names = {row: classes[j] for j, row in enumerate(order)}
    if order != list(range(len(order))):
        head = head_linear(model, len(order))
        if head is not None:
            with torch.no_grad():
                head.weight.copy_(head.weight[order].clone())
                if head.bias is not None:
                    head.bias.copy_(head.bias[order].clone())
            names = dict(enumerate(classes))
    model.config.id2label = {i: names[i] for i in range(len(order))}
    model.config.label2id = {name: i for i, name in model.config.id2label.items()}
    return model


def _hf_parity_inputs(wrapper: Any, view: Any, tokenizer: Any, n: int = 8) -> torch.Tensor:
    """A fixed batch the parity check runs: token ids of the tokenizer's vocabulary at the view's
    length (some rows padded), or pixels of the view's shape."""
    gen = torch.Generator().manual_seed(0)
    if wrapper.kind == "text":
        length = int(view.max_length or 16)
        vocab = int(getattr(wrapper.model.config, "vocab_size", 0) or len(tokenizer))
        ids = torch.randint(1, max(vocab, 2), (n, length), generator=gen)
        pad = wrapper.pad_token_id
        if pad is not None:
            for i in range(n):
                ids[i, length - i * length // (2 * n) :] = pad
        return ids
    cfg = wrapper.model.config
    channels = int(view.channels or getattr(cfg, "num_channels", 3))
    size = int(view.image_size or getattr(cfg, "image_size", 32))
    return torch.rand((n, channels, size, size), generator=gen)


def export_hf(run_dir: Path, *, arm: str = "distilled", out: Path | None = None) -> HFExportResult:
    """Write ``arm`` of ``run_dir`` as a Hugging Face ``save_pretrained`` folder and check it.

    The folder holds the model with the run's trained weights (``model.safetensors``), ``id2label``
    = the data's classes in the data's order (the classifier rows reordered when the model's own
    labels were in another order), and the tokenizer the arm read (text: ``<arm>.input.tokenizer`` of
    config.resolved.yaml, its ``model_max_length`` set to the arm's ``max_length``) or the image
    processor of the model's folder with the arm's size / mean / std (images). It is written to a
    temporary folder beside ``out`` and renamed into place; an existing export at ``out`` is replaced.
    The folder is then loaded with ``AutoModelFor….from_pretrained`` and its logits compared with
    kdlab's on a fixed batch (:data:`HF_PARITY_ATOL`).

    Args:
        run_dir: a run folder (or a comparison's ``seed-<s>`` folder).
        arm: an arm whose model is an ``hf:`` spec.
        out: the folder to write (default ``<run_dir>/export/<arm>-hf``).

    Raises:
        KdlabError: the arm is not an ``hf:`` model, a text arm that reads kdlab's vocabulary instead
            of a tokenizer, ``out`` is something other than an earlier export, or outputs differ.
    """
    import shutil
    import tempfile

    from kdlab.lab.compare import refuse_comparison_folder
    from kdlab.models.from_hf import HFClassifier, quiet_transformers

    run_dir = Path(run_dir)
    refuse_comparison_folder(run_dir, "export", arm=arm)
    run = load_run(run_dir, arms=[arm])
    wrapper = run.models[arm]
    spec = str(run.results["arms"][arm].get("model") or "")
    if not isinstance(wrapper, HFClassifier):
        raise KdlabError(
            f"--format hf: arm '{arm}' is '{spec}', not an hf: model; export it with --format onnx instead"
        )
    view = _arm_view(run, arm)
    if wrapper.kind == "text" and view.tokenizer is None:
        raise KdlabError(
            f"--format hf: arm '{arm}' ('{spec}') reads kdlab's vocabulary ids, which no Hugging Face tokenizer "
            "reproduces; export it with --format onnx instead"
        )
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", arm)
    path = Path(out) if out is not None else run_dir / "export" / f"{safe}-hf"
    if path.exists() and not (path.is_dir() and (not any(path.iterdir()) or (path / "config.json").is_file())):
        raise KdlabError(f"--out: {path} exists and is not an earlier model export; choose another folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    model = _data_order_model(wrapper, run.classes)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    old: Path | None = None
    try:
        with quiet_transformers() as transformers:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer = None
            if wrapper.kind == "text":
                tokenizer = transformers.AutoTokenizer.from_pretrained(view.tokenizer, trust_remote_code=False)
                if view.max_length:
                    tokenizer.model_max_length = int(view.max_length)
                tokenizer.save_pretrained(tmp)
                written = "tokenizer"
            elif (Path(wrapper.source) / "preprocessor_config.json").is_file():
                processor = transformers.AutoImageProcessor.from_pretrained(wrapper.source, trust_remote_code=False)
                if view.image_size:
                    processor.size = {"height": int(view.image_size), "width": int(view.image_size)}
                    if getattr(processor, "do_center_crop", False):
                        processor.crop_size = dict(processor.size)
                if view.mean is not None and view.std is not None:
                    processor.image_mean, processor.image_std = list(view.mean), list(view.std)
                processor.save_pretrained(tmp)
                written = "image processor"
            else:
                written = "none"
        if path.exists():  # an earlier export: moved aside, replaced, then removed
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    diff = _check_hf_export(path, wrapper, view, tokenizer, run.classes)
    return HFExportResult(path=path, arm=arm, max_abs_diff=diff, preprocessing=written)


def _check_hf_export(path: Path, wrapper: Any, view: Any, tokenizer: Any, classes: list[str]) -> float:
    """max |from_pretrained(path) − kdlab| over :func:`_hf_parity_inputs`, the exported outputs taken
    by their ``id2label`` names in the data's class order."""
    from kdlab.models.from_hf import quiet_transformers

    x = _hf_parity_inputs(wrapper, view, tokenizer)
    with quiet_transformers() as transformers:
        auto = (
            transformers.AutoModelForSequenceClassification
            if wrapper.kind == "text"
            else transformers.AutoModelForImageClassification
        )
        loaded = auto.from_pretrained(path, trust_remote_code=False).eval()
    with torch.no_grad():
        want = wrapper.cpu().eval()(x).float()
        if wrapper.kind == "text":
            mask = torch.ones_like(x) if wrapper.pad_token_id is None else (x != wrapper.pad_token_id).long()
            got = loaded(input_ids=x, attention_mask=mask).logits.float()
        else:
            got = loaded(pixel_values=x).logits.float()
    if got.shape != want.shape:
        raise KdlabError(f"{path}: the exported model gives {list(got.shape)} logits, kdlab {list(want.shape)}")
    got = got[:, [int(loaded.config.label2id[c]) for c in classes]]
    diff = float((got - want).abs().max())
    if not diff <= HF_PARITY_ATOL:
        raise KdlabError(f"{path}: the exported model's logits differ from kdlab's by {diff:.2e}; do not use it")
    return diff
