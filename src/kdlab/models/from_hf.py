"""Hugging Face models as teachers and students: ``hf:<folder or hub id>`` (docs/models.md).

:func:`build_hf` wraps an ``AutoModelForSequenceClassification`` (text) or
``AutoModelForImageClassification`` (images) in :class:`HFClassifier`, an ``nn.Module`` whose
``forward(x)`` returns logits ``[B, classes]`` in the data's class order; :func:`declared_hf` says
what the model declares about its own inputs (tokenizer, max length, image size, mean/std, label
names); :func:`init_from_teacher` copies a BERT-like teacher's embeddings and evenly spaced layers
into a smaller student of its family (DistilBERT-style).

transformers is imported inside these functions only, so runs that use no ``hf:`` model never pay
its start-up cost. Remote code is never run (``trust_remote_code=False`` on every load).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from kdlab.errors import ConfigError, first_line
from kdlab.models.common import Declared

HF_PREFIX = "hf:"
HFKind = Literal["text", "image"]

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model")
"""A folder holding any of these is a tokenizer folder (``save_pretrained`` of a tokenizer)."""
PROCESSOR_FILE = "preprocessor_config.json"
MAX_JSON_BYTES = 16 * 2**20
"""tokenizer_config.json / preprocessor_config.json are read only up to this size."""
MAX_SANE_LENGTH = 100_000
"""A tokenizer's ``model_max_length`` above this is transformers' "no limit" (1e30), not a length."""
FIXED_KEYS = ("num_labels", "id2label", "label2id")
"""``student.config`` keys kdlab sets itself from the data's classes."""


class HFClassifier(nn.Module):
    """A Hugging Face classifier as a kdlab model: ``forward(x) -> logits [B, classes]``.

    Text: ``x`` are token ids ``[B, L]`` (int64) and ``attention_mask = (x != pad_token_id)``.
    Images: ``x`` are ``pixel_values`` ``[B, C, H, W]``. The logits are ``outputs.logits`` with
    their columns taken in ``index`` order (``out[:, j] = logits[:, index[j]]``), so output ``j`` is
    the data's class ``j`` even when the model's own ``id2label`` lists the classes in another order.
    The wrapped model (``.model``) keeps its own output order and its own state-dict names.
    """

    index: torch.Tensor | None

    def __init__(
        self,
        model: nn.Module,
        *,
        kind: HFKind,
        pad_token_id: int | None = None,
        index: Sequence[int] | None = None,
        source: str = "",
    ) -> None:
        super().__init__()
        self.model = model
        self.kind: HFKind = kind
        self.pad_token_id = pad_token_id
        self.source = source
        if index is not None and list(index) != list(range(len(index))):
            self.register_buffer("index", torch.tensor(list(index), dtype=torch.long), persistent=False)
        else:
            self.index = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "text":
            mask = torch.ones_like(x) if self.pad_token_id is None else (x != self.pad_token_id).long()
            logits = self.model(input_ids=x, attention_mask=mask).logits
        else:
            logits = self.model(pixel_values=x).logits
        return logits if self.index is None else logits.index_select(1, self.index)

    def data_order(self) -> list[int]:
        """``index`` as a list: the model's own output for each of the data's classes."""
        return list(range(num_labels(self.model))) if self.index is None else [int(i) for i in self.index.tolist()]


def num_labels(model: nn.Module) -> int:
    """A Hugging Face model's ``config.num_labels``."""
    return int(getattr(getattr(model, "config", None), "num_labels", 0))


# ---------------------------------------------------------------------------------------------- loading
@contextlib.contextmanager
def quiet_transformers() -> Iterator[Any]:
    """transformers, its log and its progress bars silenced for the duration (restored afterwards)."""
    import transformers
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield transformers
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def strip_prefix(target: str | Path) -> str:
    text = str(target)
    return text[len(HF_PREFIX) :] if text.startswith(HF_PREFIX) else text


def _offline() -> bool:
    """True when the Hugging Face hub is switched off (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return True
    return False


def _looks_like_path(text: str) -> bool:
    """A path rather than a hub id (``name`` or ``owner/name``): absolute, ``./`` ``../`` ``~``, or deeper."""
    return text.startswith(("/", ".", "~")) or "\\" in text or text.count("/") > 1 or text.endswith("/")


def _offline_message(key: str, hub_id: str, why: str) -> ConfigError:
    return ConfigError(
        f"{key}: hf:{hub_id} is a Hugging Face hub id and is not available offline ({why}); download it "
        f"where there is a network (save_pretrained or `hf download {hub_id} --local-dir DIR`) and set "
        f"{key}=hf:DIR"
    )


def resolve_folder(target: str | Path, *, key: str, files: Sequence[str] = ()) -> Path:
    """The local folder of ``target``: an existing ``save_pretrained`` folder, or a hub id's snapshot
    (fetched only when online; ``files`` are the file patterns fetched, default all)."""
    text = strip_prefix(target)
    if not text:
        raise ConfigError(f"{key}: hf: needs a folder or a hub id after the colon (hf:path/to/folder)")
    folder = Path(text).expanduser()
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ConfigError(
                f"{key}: {folder} has no config.json, so it is not a save_pretrained model folder; point "
                "hf: at the folder model.save_pretrained(...) wrote"
            )
        return folder
    if folder.exists():
        raise ConfigError(f"{key}: {folder} is a file, not a save_pretrained model folder")
    if _looks_like_path(text):
        raise ConfigError(f"{key}: {folder}: no such folder (hf: takes a save_pretrained folder or a hub id)")
    if _offline():
        raise _offline_message(key, text, "HF_HUB_OFFLINE is set, and there is no local folder of that name")
    from kdlab.models.common import hub_unreachable

    why = hub_unreachable()
    if why is not None:
        raise _offline_message(key, text, why)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(text, allow_patterns=list(files) or None))
    except Exception as e:  # no network, no such repository, gated: all one line
        raise _offline_message(key, text, f"{type(e).__name__}: {first_line(e)}") from None


def _read_json(path: Path, *, key: str) -> dict[str, Any]:
    """A small JSON object file of a model folder; {} when absent."""
    if not path.is_file():
        return {}
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ConfigError(f"{key}: {path} is larger than {MAX_JSON_BYTES // 2**20} MiB; not a model folder's file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{key}: {path} is not valid JSON ({e})") from None
    return data if isinstance(data, dict) else {}


def load_config(folder: Path, *, key: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """The folder's ``AutoConfig`` (remote code never run), with ``overrides`` applied after checking
    that each names an attribute the config has."""
    with quiet_transformers() as transformers:
        try:
            config = transformers.AutoConfig.from_pretrained(folder, trust_remote_code=False)
        except Exception as e:  # unknown model_type, malformed config.json
            raise ConfigError(
                f"{key}: cannot read {folder / 'config.json'} ({type(e).__name__}: {first_line(e, 200)})"
            ) from None
    if overrides:
        section = key.rsplit(".", 1)[0] + ".config"
        fixed = sorted(k for k in overrides if k in FIXED_KEYS)
        if fixed:
            raise ConfigError(f"{section}: {', '.join(fixed)} are set from the data's classes; remove them")
        unknown = sorted(str(k) for k in overrides if not hasattr(config, str(k)))
        if unknown:
            raise ConfigError(
                f"{section}: {', '.join(unknown)} not a setting of {type(config).__name__} "
                f"(model_type {config.model_type}); see {folder / 'config.json'} for its keys"
            )
        for k, v in overrides.items():
            setattr(config, str(k), v)
    return config


def model_kind(config: Any, *, key: str) -> HFKind:
    """Text or image classifier, by this rule: the config's ``architectures`` naming a
    ``…ForImageClassification`` / ``…ForSequenceClassification`` class decides; otherwise the
    ``model_type`` decides when transformers has an image-classification model for it and no
    sequence-classification one (image), or a sequence-classification one (text)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
        MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
    )

    for arch in getattr(config, "architectures", None) or []:
        if str(arch).endswith("ForImageClassification"):
            return "image"
        if str(arch).endswith("ForSequenceClassification"):
            return "text"
    model_type = str(getattr(config, "model_type", ""))
    image = model_type in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES
    text = model_type in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
    if image and not text:
        return "image"
    if text:
        return "text"
    raise ConfigError(
        f"{key}: model_type '{model_type}' has no sequence- or image-classification model in transformers; "
        "hf: takes a text or image classifier"
    )


def config_labels(config: Any) -> tuple[str, ...] | None:
    """The config's ``id2label`` names in output order, or None when they are the generic ``LABEL_i``."""
    id2label = getattr(config, "id2label", None) or {}
    try:
        names = [str(id2label[i]) for i in range(len(id2label))]
    except KeyError:
        names = [str(id2label[k]) for k in sorted(id2label, key=int)]
    generic = [f"LABEL_{i}" for i in range(len(names))]
    return None if not names or names == generic else tuple(names)


def label_index(
    names: Sequence[str] | None, classes: Sequence[str] | None, num_classes: int, *, key: str, where: str
) -> list[int]:
    """``index[j]`` = the model's output for the data's class ``j``: matched by name when the model
    has real label names, else taken in order; label sets that differ are an error (never a silent
    reordering)."""
    if names is None or classes is None:
        return list(range(num_classes))
    if sorted(names) != sorted(str(c) for c in classes) or len(set(names)) != len(names):
        raise ConfigError(
            f"{key}: the labels of {where} ({', '.join(names)}) are not the data's classes "
            f"({', '.join(str(c) for c in classes)}); use a model fine-tuned on these classes"
        )
    return [list(names).index(str(c)) for c in classes]


def _pad_token_id(config: Any, folder: Path, *, key: str) -> int | None:
    pad = getattr(config, "pad_token_id", None)
    if isinstance(pad, int):
        return pad
    tok = _read_json(folder / "tokenizer_config.json", key=key)
    pad_token = tok.get("pad_token")
    if isinstance(pad_token, dict):
        pad_token = pad_token.get("content")
    vocab = _read_json(folder / "tokenizer.json", key=key).get("model", {}).get("vocab") if pad_token else None
    if isinstance(vocab, dict) and isinstance(vocab.get(pad_token), int):
        return int(vocab[pad_token])
    return None


def build_hf(
    target: str | Path,
    *,
    num_classes: int,
    input_shape: tuple[int, ...],
    classes: Sequence[str] | None,
    pretrained: bool,
    config: Mapping[str, Any] | None,
    key: str,
) -> nn.Module:
    """The ``hf:`` model ``target`` (a ``save_pretrained`` folder or a hub id) as an :class:`HFClassifier`.

    Weights come from the folder (``from_pretrained``). With ``config`` overrides (``student.config``)
    the model is built fresh instead: ``from_config(AutoConfig.from_pretrained(folder, **overrides))``,
    randomly initialised (seeded by the caller), with ``num_labels = num_classes``. A model with
    weights must have ``num_labels == num_classes``; its outputs are matched to ``classes`` by name
    when its ``id2label`` holds real names (:func:`label_index`). ``pretrained`` changes nothing for
    ``hf:``: the folder or hub id is the weights. A hub id is fetched only when online.

    Raises:
        ConfigError: one line naming ``key`` — no such folder, no config.json, a hub id offline,
            an unknown override, a label mismatch, a model that is not a text / image classifier.
    """
    del pretrained  # the folder (or hub id) is the weights; kept for the common spec signature
    folder = resolve_folder(target, key=key)
    overrides = dict(config or {})
    cfg = load_config(folder, key=key, overrides=overrides)
    kind = model_kind(cfg, key=key)
    rank = len(tuple(input_shape))
    if (kind == "text") != (rank == 1):
        data = "token ids" if rank == 1 else "images"
        raise ConfigError(f"{key}: {folder} is a {kind} classifier, but this model is given {data}")
    fresh = bool(overrides) or torch.get_default_device().type == "meta"
    if overrides:
        cfg.num_labels = num_classes
        names = [str(c) for c in classes] if classes is not None else [f"LABEL_{i}" for i in range(num_classes)]
        cfg.id2label = dict(enumerate(names))
        cfg.label2id = {n: i for i, n in enumerate(names)}
        index = list(range(num_classes))
    else:
        if int(cfg.num_labels) != num_classes:
            shown = config_labels(cfg)
            labels = f" ({', '.join(shown)})" if shown else ""
            raise ConfigError(
                f"{key}: {folder} has {cfg.num_labels} labels{labels} but the data has {num_classes} classes; "
                f"use a model fine-tuned on these classes, or build a fresh head with "
                f"{key.rsplit('.', 1)[0]}.config"
            )
        index = label_index(config_labels(cfg), classes, num_classes, key=key, where=str(folder))
    with quiet_transformers() as transformers:
        auto = (
            transformers.AutoModelForSequenceClassification
            if kind == "text"
            else transformers.AutoModelForImageClassification
        )
        try:
            if fresh:
                model = auto.from_config(cfg, trust_remote_code=False)
            else:
                model = auto.from_pretrained(folder, config=cfg, trust_remote_code=False)
        except Exception as e:  # bad override values, damaged weights
            what = f" with {key.rsplit('.', 1)[0]}.config {overrides}" if overrides else ""
            raise ConfigError(
                f"{key}: cannot build {folder}{what} ({type(e).__name__}: {first_line(e, 200)})"
            ) from None
    pad = _pad_token_id(cfg, folder, key=key) if kind == "text" else None
    return HFClassifier(model, kind=kind, pad_token_id=pad, index=index, source=str(folder))


# ---------------------------------------------------------------------------------------------- declared inputs
def _tokenizer_max_length(folder: Path, config: Any, *, key: str) -> int | None:
    """The tokenizer's ``model_max_length`` when it is a real length, capped by the model's
    ``max_position_embeddings``; either alone when the other is missing."""
    raw = _read_json(folder / "tokenizer_config.json", key=key).get("model_max_length")
    own = int(raw) if isinstance(raw, int | float) and 0 < raw <= MAX_SANE_LENGTH else None
    positions = getattr(config, "max_position_embeddings", None)
    cap = int(positions) if isinstance(positions, int) and 0 < positions <= MAX_SANE_LENGTH else None
    if own is not None and cap is not None:
        return min(own, cap)
    return own if own is not None else cap


def _processor_size(proc: Mapping[str, Any]) -> int | None:
    """The side the image processor feeds the model: ``crop_size`` when it center-crops, else ``size``
    (``height``, or ``shortest_edge``)."""
    for name in (("crop_size",) if proc.get("do_center_crop") else ()) + ("size",):
        value = proc.get(name)
        if isinstance(value, int) and value > 0:
            return value
        if isinstance(value, dict):
            for k in ("height", "shortest_edge", "width"):
                if isinstance(value.get(k), int) and value[k] > 0:
                    return int(value[k])
    return None


def _floats(value: Any) -> tuple[float, ...] | None:
    if isinstance(value, list | tuple) and value and all(isinstance(v, int | float) for v in value):
        return tuple(float(v) for v in value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (float(value),)
    return None


def declared_hf(target: str | Path, *, key: str) -> Declared:
    """What the ``hf:`` model declares about its inputs.

    Text: ``tokenizer`` = the folder when it holds a tokenizer (:data:`TOKENIZER_FILES`),
    ``max_length`` = :func:`_tokenizer_max_length`. Images: ``image_size`` from the image processor
    (``crop_size`` when it center-crops, else ``size``; the config's ``image_size`` without one),
    ``mean`` / ``std`` = its ``image_mean`` / ``image_std``, ``channels`` = the config's
    ``num_channels``. ``labels`` = the ``id2label`` names (None when generic ``LABEL_i``).
    """
    folder = resolve_folder(target, key=key)
    cfg = load_config(folder, key=key)
    kind = model_kind(cfg, key=key)
    labels = config_labels(cfg)
    if kind == "text":
        has_tokenizer = any((folder / name).is_file() for name in TOKENIZER_FILES)
        return Declared(
            image_size=None,
            mean=None,
            std=None,
            channels=None,
            tokenizer=folder if has_tokenizer else None,
            max_length=_tokenizer_max_length(folder, cfg, key=key),
            labels=labels,
        )
    proc = _read_json(folder / PROCESSOR_FILE, key=key)
    size = _processor_size(proc)
    if size is None and isinstance(getattr(cfg, "image_size", None), int):
        size = int(cfg.image_size)
    channels = getattr(cfg, "num_channels", None)
    return Declared(
        image_size=size,
        mean=_floats(proc.get("image_mean")),
        std=_floats(proc.get("image_std")),
        channels=int(channels) if isinstance(channels, int) else None,
        tokenizer=None,
        max_length=None,
        labels=labels,
    )


# ---------------------------------------------------------------------------------------------- DistilBERT-style init
def teacher_layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """Student layer ``i`` <- teacher layer ``floor(i·(Lt−1)/(Ls−1) + ½)``: evenly spaced, the first and
    the last teacher layer always kept (12 -> 6: 0, 2, 4, 7, 9, 11; 4 -> 2: 0, 3); one student layer
    takes teacher layer 0."""
    if student_layers == 1:
        return [0]
    return [math.floor(i * (teacher_layers - 1) / (student_layers - 1) + 0.5) for i in range(student_layers)]


def _unwrap(model: nn.Module) -> nn.Module:
    """The module under DDP (``.module``) and ``torch.compile`` (``._orig_mod``) wrappers."""
    for _ in range(4):
        inner = getattr(model, "_orig_mod", None) or (
            model.module if isinstance(model, nn.parallel.DistributedDataParallel) else None
        )
        if inner is None:
            return model
        model = inner
    return model


def _encoder_parts(model: nn.Module, who: str) -> tuple[nn.Module, nn.Module, nn.ModuleList]:
    base = getattr(model, "base_model", None)
    embeddings = getattr(base, "embeddings", None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(embeddings, nn.Module) or not isinstance(layers, nn.ModuleList) or base is None:
        raise ConfigError(
            f"student.init_from_teacher: the {who} ({type(model).__name__}) is not a BERT-like encoder "
            "(base_model.embeddings and base_model.encoder.layer); set student.init_from_teacher: false"
        )
    return base, embeddings, layers


def _copy(dst: nn.Module, src: nn.Module, what: str) -> None:
    """Copy ``src``'s parameters and buffers into ``dst`` (same names and shapes), or fail naming the first
    difference."""
    want, have = dst.state_dict(), src.state_dict()
    if set(want) != set(have):
        extra = sorted(set(want) ^ set(have))[:3]
        raise ConfigError(
            f"student.init_from_teacher: {what} of teacher and student differ in structure ({', '.join(extra)})"
        )
    for name, tensor in want.items():
        if tensor.shape != have[name].shape:
            raise ConfigError(
                f"student.init_from_teacher: {what}.{name} is {list(have[name].shape)} in the teacher but "
                f"{list(tensor.shape)} in the student (a different hidden size?); only layer counts may differ"
            )
    with torch.no_grad():
        for name, tensor in want.items():
            tensor.copy_(have[name])


def head_linear(model: nn.Module, num_labels: int) -> nn.Linear | None:
    """The classifier's output layer: the last ``nn.Linear`` with ``num_labels`` outputs."""
    found = None
    for module in model.modules():
        if isinstance(module, nn.Linear) and module.out_features == num_labels:
            found = module
    return found


def init_from_teacher(student: nn.Module, teacher: nn.Module) -> dict[str, Any]:
    """DistilBERT-style start: copy the teacher's embeddings, the evenly spaced encoder layers of
    :func:`teacher_layer_map`, the pooler, and the classifier head when its shapes match, into the
    student (in place). Both must be ``hf:`` models of one BERT-like family (``base_model.embeddings``,
    ``base_model.encoder.layer``) with the same hidden size; only the number of layers may differ.

    Returns what went where, for results.json: ``{"layers": {"<student layer>": <teacher layer>, …},
    "embeddings": true, "pooler": bool, "classifier": bool, "teacher_layers": Lt, "student_layers": Ls}``.
    """
    s_wrap, t_wrap = _unwrap(student), _unwrap(teacher)
    s_model = s_wrap.model if isinstance(s_wrap, HFClassifier) else s_wrap
    t_model = t_wrap.model if isinstance(t_wrap, HFClassifier) else t_wrap
    s_base, s_emb, s_layers = _encoder_parts(s_model, "student")
    t_base, t_emb, t_layers = _encoder_parts(t_model, "teacher")
    if type(s_base) is not type(t_base):
        raise ConfigError(
            f"student.init_from_teacher: teacher ({type(t_base).__name__}) and student ({type(s_base).__name__}) "
            "are of different families; give the student the teacher's folder with student.config overrides"
        )
    ls, lt = len(s_layers), len(t_layers)
    if ls > lt:
        raise ConfigError(
            f"student.init_from_teacher: the student has {ls} layers, more than the teacher's {lt}; "
            "set student.config num_hidden_layers below the teacher's"
        )
    mapping = teacher_layer_map(ls, lt)
    _copy(s_emb, t_emb, "embeddings")
    for i, j in enumerate(mapping):
        _copy(s_layers[i], t_layers[j], f"encoder.layer.{i}")
    pooler = False
    s_pool, t_pool = getattr(s_base, "pooler", None), getattr(t_base, "pooler", None)
    if isinstance(s_pool, nn.Module) and isinstance(t_pool, nn.Module):
        with contextlib.suppress(ConfigError):
            _copy(s_pool, t_pool, "pooler")
            pooler = True
    classifier = _copy_head(s_wrap, s_model, t_wrap, t_model)
    return {
        "layers": {str(i): j for i, j in enumerate(mapping)},
        "rule": "student layer i <- teacher layer floor(i*(Lt-1)/(Ls-1) + 1/2)",
        "embeddings": True,
        "pooler": pooler,
        "classifier": classifier,
        "teacher_layers": lt,
        "student_layers": ls,
    }


def _copy_head(s_wrap: nn.Module, s_model: nn.Module, t_wrap: nn.Module, t_model: nn.Module) -> bool:
    """The classifier head (every parameter outside ``base_model``) copied when names and shapes match;
    the output rows are placed by class, so each data class keeps the teacher's row for it."""
    prefix = str(getattr(s_model, "base_model_prefix", ""))
    s_head = {k: v for k, v in s_model.state_dict().items() if not k.startswith(prefix + ".")}
    t_head = {k: v for k, v in t_model.state_dict().items() if not k.startswith(prefix + ".")}
    if not s_head or set(s_head) != set(t_head) or any(v.shape != t_head[k].shape for k, v in s_head.items()):
        return False
    s_order = s_wrap.data_order() if isinstance(s_wrap, HFClassifier) else list(range(num_labels(s_model)))
    t_order = t_wrap.data_order() if isinstance(t_wrap, HFClassifier) else list(range(num_labels(t_model)))
    s_out, t_out = head_linear(s_model, len(s_order)), head_linear(t_model, len(t_order))
    if s_order != t_order and (s_out is None or t_out is None):
        return False  # label orders differ and the output layer cannot be found: leave the head fresh
    with torch.no_grad():
        for k, v in s_head.items():
            v.copy_(t_head[k])
        if s_order != t_order and s_out is not None and t_out is not None:
            for si, ti in zip(s_order, t_order, strict=True):
                s_out.weight[si].copy_(t_out.weight[ti])
                if s_out.bias is not None and t_out.bias is not None:
                    s_out.bias[si].copy_(t_out.bias[ti])
    return True
