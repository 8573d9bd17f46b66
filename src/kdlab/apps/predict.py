"""Use a finished run: load its models (and vocabulary) and classify new texts or image files.

A run folder holds everything needed: ``config.resolved.yaml`` (data settings), ``results.json``
(classes, input shape, model name and weights file per arm), the weights (``teacher.safetensors``,
``student-scratch.safetensors``, ``student-distilled.safetensors``; a ``kdlab compare`` seed
folder also ``student-<method>.safetensors`` per compared method) and, for text runs,
``vocab.json``. Inputs are prepared exactly as in training: texts through the run's tokenizer and
vocabulary (first ``max_len`` tokens, padding at the end); images converted to RGB or grayscale
to match the run's input channels, resized to its input size (bilinear) and scaled to [0, 1].

Example:
    >>> run = kdlab.load_run("runs/20250101-120000-imdb")
    >>> run.predict(["A wonderful film.", "Dull and far too long."])[0].label
    'pos'
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from kdlab.config.schema import ExperimentConfig
from kdlab.data import views
from kdlab.data.decode import ImageTooLarge, decode_image
from kdlab.data.files import NotRegularFile, TextLines, cannot_open, kind_of, open_regular
from kdlab.data.text import VOCAB_FILE, Vocab, load_vocab
from kdlab.errors import ConfigError, DataError, KdlabError, first_line
from kdlab.io import check_weights, load_weights
from kdlab.kd.losses import softmax_probs
from kdlab.models.registry import create_model
from kdlab.records import DAMAGED
from kdlab.runs import RESULTS_FILE, read_config, read_results

BATCH = 256

IMAGE_SCALE = 255.0
"""Image files are decoded to 0..255 pixels and divided by this (:func:`load_images`)."""

META_VERSION = "kdlab.version"
META_ARM = "kdlab.arm"
META_MODEL = "kdlab.model"
META_CLASSES = "kdlab.classes"
META_INPUT_SHAPE = "kdlab.input_shape"
META_PREPROCESSING = "kdlab.preprocessing"
META_VOCAB = "kdlab.vocab"
"""``metadata_props`` keys of a ``kdlab export`` ONNX file (``docs/report.md``)."""


@dataclass(frozen=True)
class Prediction:
    """One input's predicted class, its probability and every class's probability."""

    input: str
    label: str
    probability: float
    probabilities: dict[str, float]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LoadedRun:
    """A finished run's models (eval mode, CPU), classes, input shape, vocabulary and config.

    Attributes:
        path: the run folder.
        config: the resolved experiment config the run used.
        results: ``results.json``.
        classes: class names, index = model output.
        input_shape: one input's shape, ``(L,)`` for text, ``(C, H, W)`` for images.
        vocab: the text vocabulary (None for image runs).
        models: arm -> model, for every loaded arm (``teacher``, ``scratch``, ``distilled``, and a
            comparison's method arms such as ``kd`` or ``dist``).
    """

    path: Path
    config: ExperimentConfig
    results: dict[str, Any]
    classes: list[str]
    input_shape: tuple[int, ...]
    vocab: Vocab | None
    models: dict[str, nn.Module] = field(default_factory=dict)

    @property
    def is_text(self) -> bool:
        return self.vocab is not None

    def model(self, arm: str = "distilled") -> nn.Module:
        if arm not in self.models:
            recorded = self.results.get("arms", {})
            if arm not in recorded:
                raise ConfigError(
                    f"--arm: '{arm}' is not an arm of {self.path} (arms: {', '.join(recorded) or 'none'})"
                )
            raise KdlabError(f"{self.path}: has no weights for arm '{arm}' (arms: {', '.join(self.models) or 'none'})")
        return self.models[arm]

    def encode(self, inputs: Sequence[str], *, arm: str = "distilled") -> Tensor:
        """Texts -> ``[N, max_len]`` token ids (text runs); image paths -> ``[N, C, H, W]`` floats in [0, 1]
        — as the model of ``arm`` saw its inputs in training: an arm whose model had its own view
        (``results.json`` ``inputs``: an HF tokenizer, another image size or normalisation) gets that view."""
        view = self.view(arm)
        if view is not None and view.kind == "text":
            return views.encode_texts(view, list(inputs), self.vocab)
        if view is not None:
            assert view.image_size is not None
            pixels = load_images([Path(p) for p in inputs], (self.input_shape[0], view.image_size, view.image_size))
            return views.normalise(view, pixels)
        if self.vocab is not None:
            return self.vocab.encode(list(inputs))
        return load_images([Path(p) for p in inputs], self.input_shape)

    def view(self, arm: str) -> views.View | None:
        """The view of the model of ``arm`` when it differs from the data's (teacher: ``inputs.teacher``,
        every student arm: ``inputs.student``), else None."""
        rec = (self.results.get("inputs") or {}).get("teacher" if arm == "teacher" else "student")
        if rec is None:
            return None
        try:
            view = views.from_record(rec)
        except ValueError as e:
            raise KdlabError(f"{self.path / RESULTS_FILE}: inputs of arm '{arm}': {e}; {DAMAGED}") from None
        if view.kind == "text":
            same = view.tokenizer is None and (view.max_length,) == tuple(self.input_shape)
        else:
            c = view.channels
            same = (c, view.image_size, view.image_size) == tuple(self.input_shape)
            same = same and view.mean == (0.0,) * (c or 0) and view.std == (1.0,) * (c or 0)
        return None if same else view

    @torch.no_grad()
    def predict(self, inputs: Sequence[str], *, arm: str = "distilled") -> list[Prediction]:
        """Classify texts (text runs) or image files (image runs) with the model of ``arm``."""
        model = self.model(arm)
        out: list[Prediction] = []
        for start in range(0, len(inputs), BATCH):
            chunk = list(inputs[start : start + BATCH])
            probs = softmax_probs(model(self.encode(chunk, arm=arm)))
            for text, row in zip(chunk, probs.tolist(), strict=True):
                best = int(np.argmax(row))
                out.append(Prediction(text, self.classes[best], row[best], dict(zip(self.classes, row, strict=True))))
        return out


def load_run(path: str | Path, *, arms: Sequence[str] | None = None) -> LoadedRun:
    """Load a run folder written by ``kdlab run`` / :func:`kdlab.run_lab`.

    Args:
        path: the run folder.
        arms: which arms to load (default: every arm recorded in ``results.json`` whose weights
            file exists).

    Raises:
        KdlabError: not a run folder, config or vocabulary unreadable, weights that do not fit.
    """
    from kdlab.lab.compare import refuse_comparison_folder

    run_dir = Path(path)
    refuse_comparison_folder(run_dir, "predict", arm=arms[0] if arms else None)  # names its seed runs
    results = read_results(run_dir)  # validated: classes, input shape, arms (kdlab.records.ResultsRecord)
    config = read_config(run_dir)
    classes = [str(c) for c in results["data"]["classes"]]
    shape = tuple(int(d) for d in results["data"]["input_shape"])
    vocab_path = run_dir / VOCAB_FILE
    vocab = load_vocab(vocab_path) if vocab_path.is_file() else None
    if vocab is None and len(shape) == 1:
        raise KdlabError(f"{run_dir}: a text run without {VOCAB_FILE}; it cannot encode new text")
    if vocab is not None and shape != (vocab.max_len,):
        raise KdlabError(
            f"{vocab_path}: max_len: {vocab.max_len} tokens, but {RESULTS_FILE} records the input shape "
            f"{list(shape)}; {DAMAGED}"
        )
    run = LoadedRun(run_dir, config, results, classes, shape, vocab)
    recorded: dict[str, Any] = results.get("arms") or {}
    for arm in arms or list(recorded):
        info = recorded.get(arm) or {}
        name = str(info.get("weights") or "")
        if name and Path(name).name != name:  # results.json names a file of the run folder, nothing else
            raise KdlabError(
                f"{run_dir / RESULTS_FILE}: arm '{arm}' names weights outside the run folder ({name}); {DAMAGED}"
            )
        weights = run_dir / name if name else None
        if weights is None or not weights.is_file():
            if arms:
                run.model(arm)  # raises the one-line "not an arm" / "no weights" error
            continue
        view = run.view(arm)  # a model with its own view was built for that view's input
        run.models[arm] = arm_model(
            str(info.get("model") or (config.teacher.model if arm == "teacher" else config.student.model)),
            weights,
            arm=arm,
            num_classes=len(classes),
            input_shape=view.input_shape() if view is not None else shape,
            vocab_size=_vocab_size(view, vocab),
            classes=classes,
            config=None if arm == "teacher" else dict(config.student.config),
            run_dir=run_dir,
        )
    return run


def _vocab_size(view: views.View | None, vocab: Vocab | None) -> int | None:
    if view is not None and view.tokenizer is not None:
        return len(views.load_tokenizer(view.tokenizer, "inputs.tokenizer"))
    return len(vocab) if vocab else None


def arm_model(
    name: str,
    weights: Path,
    *,
    arm: str,
    num_classes: int,
    input_shape: Sequence[int],
    vocab_size: int | None,
    classes: Sequence[str] | None = None,
    config: dict[str, Any] | None = None,
    run_dir: Path | None = None,
) -> nn.Module:
    """Rebuild the model spec ``name`` sized as recorded and load an arm's weights (eval mode, CPU).

    Never with pretrained weights (the arm's own are loaded). A spec read from the run folder
    ``run_dir`` that names code inside that folder, or a factory file by a relative path, is refused
    before anything is imported (:func:`kdlab.models.specs.check_recorded`). ``config``: the
    ``student.config`` overrides an ``hf:`` student was built with."""
    from kdlab.models.specs import check_recorded, parse_spec

    what = f"{arm} '{name}'"
    key = f"{'teacher' if arm == 'teacher' else 'student'}.model"
    if run_dir is not None:
        check_recorded(name, run_dir=run_dir, key=key)
    options: dict[str, Any] = dict(
        num_classes=num_classes, input_shape=input_shape, vocab_size=vocab_size, classes=classes, key=key
    )
    if config:
        options["config"] = config
    if parse_spec(name, key=key).kind == "registered":  # timm, hf and the user's code are built once, for real
        try:
            with torch.device("meta"):  # the architecture without its memory: any recorded size costs nothing
                skeleton = create_model(name, **options)
        except (RuntimeError, NotImplementedError):  # a model that cannot be built on the meta device
            skeleton = None
        if skeleton is not None:
            check_weights(skeleton, weights, what=what)  # a file that does not fit is refused before allocating
    model = create_model(name, **options)
    load_weights(model, weights, what=what)
    return model.eval()


MAX_INPUTS = 100_000
"""``kdlab predict`` classifies at most this many texts per call (from arguments, files and stdin)."""
MAX_INPUT_BYTES = 128 * 2**20
"""... and reads at most this much text from files and standard input (128 MiB)."""


def expand_inputs(run: LoadedRun | OnnxModel, items: Sequence[str]) -> list[str]:
    """CLI inputs -> what :meth:`LoadedRun.predict` takes.

    Text runs: an argument naming an existing regular file stands for its non-empty lines (one
    text per line), ``-`` for the lines of standard input, anything else is a text. Image runs:
    every argument is an image file.

    Bounded: at most :data:`MAX_INPUTS` texts and :data:`MAX_INPUT_BYTES` of text read, each line
    at most 16 MiB; files must be UTF-8. A path that is a FIFO or a device is refused, not read
    (pipe texts into ``-``).
    """
    if not items:
        raise DataError("no inputs: give texts, text files (one text per line) or image files")
    if not run.is_text:
        return list(items)
    out: list[str] = []
    read = 0  # bytes of text read from files and stdin so far
    for item in items:
        kind = _path_kind(item)
        if item == "-":
            if sys.stdin is None:
                raise DataError("-: there is no standard input to read texts from")
            stdin = getattr(sys.stdin, "buffer", None) or _EncodedText(sys.stdin)
            read += _add_lines(out, stdin, "standard input", read)
        elif kind == "file":
            try:
                f = open_regular(Path(item))
            except OSError as e:
                raise cannot_open(Path(item), e, "input") from None
            with f:
                read += _add_lines(out, f, item, read)
        elif kind is not None:
            raise DataError(f"{item}: is {kind}, not a text file; pipe its texts into `kdlab predict RUN -` instead")
        else:
            out.append(item)
            _check_count(out, "the arguments")
    if not out:
        raise DataError("no inputs: the given files hold no non-empty lines")
    return out


def _path_kind(item: str) -> str | None:
    """``'file'`` for an existing regular file, what it is for a FIFO / device / socket, else None (a text)."""
    try:
        mode = os.stat(item).st_mode
    except (OSError, ValueError):  # no such file, a name too long for a path, a NUL character: a text
        return None
    if stat.S_ISREG(mode):
        return "file"
    return None if stat.S_ISDIR(mode) else kind_of(mode)


def _add_lines(out: list[str], stream: Any, name: str, already_read: int) -> int:
    """Append the non-empty lines of ``stream`` to ``out``; return the bytes read."""
    hint = f"kdlab predict reads at most {MAX_INPUT_BYTES // 2**20} MiB of text per call; split the input"
    lines = TextLines(stream, name, max_total=MAX_INPUT_BYTES, total_hint=hint, already_read=already_read)
    for line in lines:
        text = line.rstrip("\r\n")
        if text.strip():
            out.append(text)
            _check_count(out, name)
    return lines.offset


def _check_count(out: list[str], name: str) -> None:
    if len(out) > MAX_INPUTS:
        raise DataError(
            f"{name}: more than {MAX_INPUTS:,} inputs; kdlab predict classifies at most that many per call, "
            "split them over several calls"
        )


class _EncodedText:
    """A text stream (``sys.stdin`` replaced by a ``StringIO``) read as UTF-8 bytes."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def readline(self, limit: int = -1) -> bytes:
        return str(self.stream.readline(limit)).encode("utf-8", "surrogatepass")


def load_images(paths: Sequence[Path], input_shape: tuple[int, ...]) -> Tensor:
    """Image files -> ``[N, C, H, W]`` float32 in [0, 1]: RGB (C=3) or grayscale (C=1), resized to H×W.

    Decoded as the image-folder loader decodes for training (:func:`kdlab.data.images.decode_image`):
    a file that is missing, not a regular file, not an image, or over Pillow's pixel limit
    (``PIL.Image.MAX_IMAGE_PIXELS``) is a one-line DataError naming it.
    """
    if len(input_shape) != 3 or input_shape[0] not in (1, 3):
        raise KdlabError(f"run input shape {input_shape} is not an image shape (1 or 3 channels)")
    c, h, w = input_shape
    mode = "L" if c == 1 else "RGB"
    out = np.empty((len(paths), c, h, w), dtype=np.float32)
    for i, p in enumerate(paths):
        try:
            arr = decode_image(p, mode, (w, h)).astype(np.float32)
        except FileNotFoundError:
            raise DataError(f"{p}: no such image file (an image run classifies image files)") from None
        except NotRegularFile as e:
            raise DataError(f"{p}: {e.strerror}; an image run classifies image files") from None
        except ImageTooLarge as e:
            raise DataError(f"{p}: image too large to decode ({e}); resize it") from None
        except MemoryError:
            raise DataError(f"{p}: not enough memory to decode this image; resize it") from None
        except Exception as e:  # whatever Pillow raises for a corrupt or unsupported file
            raise DataError(f"{p}: cannot read as an image ({type(e).__name__})") from None
        out[i] = (arr[None] if c == 1 else arr.transpose(2, 0, 1)) / 255.0
    return torch.from_numpy(out)


def print_predictions(preds: Sequence[Prediction], *, as_json: bool = False, width: int = 70) -> None:
    """``label  probability  input`` per line (input shortened to ``width``), or a JSON list."""
    if as_json:
        sys.stdout.write(json.dumps([p.to_json() for p in preds], ensure_ascii=False, indent=2) + "\n")
        return
    pad = max(len(p.label) for p in preds) if preds else 0
    for p in preds:
        shown = " ".join(p.input.split())
        shown = shown if len(shown) <= width else shown[: width - 1] + "…"
        sys.stdout.write(f"{p.label:<{pad}}  {p.probability:.3f}  {shown}\n")


@dataclass
class OnnxModel:
    """An ONNX file written by ``kdlab export``, ready to classify raw inputs on its own.

    Its ``metadata_props`` (``kdlab.classes``, ``kdlab.input_shape``, ``kdlab.preprocessing``,
    ``kdlab.vocab`` for text) say how to prepare inputs: exactly as :meth:`LoadedRun.predict` does.
    """

    path: Path
    arm: str
    classes: list[str]
    input_shape: tuple[int, ...]
    vocab: Vocab | None
    session: Any = field(repr=False)

    @property
    def is_text(self) -> bool:
        return self.vocab is not None

    def encode(self, inputs: Sequence[str]) -> Tensor:
        if self.vocab is not None:
            return self.vocab.encode(list(inputs))
        return load_images([Path(p) for p in inputs], self.input_shape)

    def predict(self, inputs: Sequence[str], *, arm: str | None = None) -> list[Prediction]:
        """Classify texts or image files; ``arm`` is ignored (the file holds one arm, :attr:`arm`)."""
        name = self.session.get_inputs()[0].name
        out: list[Prediction] = []
        for start in range(0, len(inputs), BATCH):
            chunk = list(inputs[start : start + BATCH])
            logits = self.session.run(None, {name: self.encode(chunk).numpy()})[0]
            probs = softmax_probs(torch.from_numpy(np.asarray(logits, dtype=np.float32)))
            for text, row in zip(chunk, probs.tolist(), strict=True):
                best = int(np.argmax(row))
                out.append(Prediction(text, self.classes[best], row[best], dict(zip(self.classes, row, strict=True))))
        return out


def load_onnx(path: str | Path) -> OnnxModel:
    """Open an ONNX file written by ``kdlab export`` (onnxruntime, CPU) and read its kdlab metadata.

    Raises:
        KdlabError: onnxruntime missing, a file that is not ONNX, or metadata missing or malformed.
    """
    path = Path(path)
    try:
        import onnxruntime as ort
    except ImportError:
        raise KdlabError("predicting with an ONNX file needs onnxruntime: pip install 'kdlab[onnx]'") from None
    if not path.is_file():
        raise DataError(f"{path}: no such ONNX file (export one with `kdlab export RUN_DIR`)")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's own errors for a file that is not a model it can run
        raise DataError(f"{path}: not a readable ONNX model ({type(e).__name__}: {first_line(e)})") from None
    meta = dict(session.get_modelmeta().custom_metadata_map)
    hint = "re-export it with `kdlab export RUN_DIR`"
    missing = [k for k in (META_CLASSES, META_INPUT_SHAPE, META_PREPROCESSING) if k not in meta]
    if missing:
        raise DataError(f"{path}: no {', '.join(missing)} metadata (not a kdlab export); {hint}")
    try:
        classes = json.loads(meta[META_CLASSES])
        shape = json.loads(meta[META_INPUT_SHAPE])
        pre = json.loads(meta[META_PREPROCESSING])
    except ValueError as e:
        raise DataError(f"{path}: kdlab metadata is not valid JSON ({e}); {hint}") from None
    if not (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) for c in classes)):
        raise DataError(f"{path}: {META_CLASSES} must be a list of at least 2 class names; {hint}")
    if not (
        isinstance(shape, list)
        and len(shape) in (1, 3)
        and all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 1 << 20 for d in shape)
    ):
        raise DataError(f"{path}: {META_INPUT_SHAPE} must be [L] or [C, H, W] of positive sizes; {hint}")
    kind = pre.get("kind") if isinstance(pre, dict) else None
    vocab: Vocab | None = None
    if kind == "text":
        if META_VOCAB not in meta:
            raise DataError(f"{path}: a text model without {META_VOCAB} metadata; {hint}")
        try:
            vocab = Vocab.from_json(json.loads(meta[META_VOCAB]), where=f"{path} {META_VOCAB}")
        except ValueError as e:
            raise DataError(f"{path}: {META_VOCAB} is not valid JSON ({e}); {hint}") from None
        if [vocab.max_len] != shape:
            raise DataError(f"{path}: {META_VOCAB} max_len {vocab.max_len} but {META_INPUT_SHAPE} {shape}; {hint}")
    elif kind == "image":
        if len(shape) != 3 or shape[0] not in (1, 3) or pre.get("divide_by") != IMAGE_SCALE:
            raise DataError(f"{path}: {META_PREPROCESSING} is not an image preprocessing kdlab applies; {hint}")
    else:
        raise DataError(f"{path}: {META_PREPROCESSING} kind must be 'text' or 'image' (got {kind!r}); {hint}")
    return OnnxModel(path, str(meta.get(META_ARM, "")), classes, tuple(shape), vocab, session)
