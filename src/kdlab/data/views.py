"""How one model sees the samples: its *view* of the data (``teacher.input`` / ``student.input``).

The teacher and the student need not see the samples the same way: an image teacher at 224×224 with
ImageNet's mean/std beside a student at the data's 64×64 in [0, 1]; an ``hf:`` text teacher with its
own tokenizer beside a student on kdlab's vocabulary. Each field of a model's view is, in this order,

1. the config's value (``<teacher|student>.input.<field>``),
2. else the value the model declares (:func:`kdlab.models.specs.declared_inputs`: an ``hf:`` folder's
   tokenizer, a timm model's ``pretrained_cfg``),
3. else the data's own (the data's image size and channels, mean 0 and std 1 on pixels in [0, 1];
   kdlab's vocabulary and ``data.max_len`` for text).

A view equal to the data's own is no view at all (:func:`resolve_view` returns None): that model sees
the data tensors exactly as before. Any other view is built from each split's raw source
(:attr:`kdlab.data.tensors.Split.source`), row for row, so both models see the same samples in the
same order with the same labels:

* images: pixels in [0, 1] — re-decoded from an image folder's files at ``image_size`` with the
  data's own decoding (Pillow, RGB, bilinear; cached by size), or, for in-memory image sets,
  resized with ``torch.nn.functional.interpolate(mode="bilinear", antialias=True,
  align_corners=False)`` — then channels converted (grey repeated to 3, RGB averaged to 1), then
  ``(x - mean) / std`` per channel;
* text: the raw texts encoded with the Hugging Face tokenizer (``AutoTokenizer.from_pretrained``
  of a local folder, ``padding="max_length", truncation=True, max_length=max_length``, int64 input
  ids), or kdlab's vocabulary at another ``max_length``.

An image view whose float32 splits are larger than the data's memory budget (``max_memory_gb`` of
:func:`view_bundle`) is written block by block, with the same values, into a temporary ``.npy``
file that is unlinked once mapped, and its splits hold :class:`~kdlab.data.mapped.MappedRows`.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, overload

import torch
from torch import Tensor

from kdlab.config.schema import InputConfig
from kdlab.data.bundle import DataBundle
from kdlab.data.mapped import MappedRows, write_rows
from kdlab.data.memory import GB
from kdlab.data.tensors import Split, prepare_inputs
from kdlab.errors import ConfigError, DataError, first_line
from kdlab.models.common import InputFields

IMAGE_FIELDS = ("image_size", "mean", "std", "channels")
TEXT_FIELDS = ("tokenizer", "max_length")
Origin = Literal["config", "model", "data"]
CHUNK = 256
"""Samples converted at a time when a view is built (bounds the temporary float copies)."""


@dataclass(frozen=True)
class View(InputFields):
    """One model's resolved view: every field's value and where it came from (``origin``).

    Image views set ``image_size``, ``mean``, ``std``, ``channels``; text views ``tokenizer`` (None =
    kdlab's vocabulary) and ``max_length``.
    """

    kind: Literal["image", "text"] = field(kw_only=True)
    origin: dict[str, Origin] = field(default_factory=dict, compare=False, kw_only=True)

    @property
    def fields(self) -> tuple[str, ...]:
        return IMAGE_FIELDS if self.kind == "image" else TEXT_FIELDS

    def input_shape(self) -> tuple[int, ...]:
        """One input's shape in this view: ``(channels, size, size)`` or ``(max_length,)``."""
        if self.kind == "image":
            assert self.channels is not None and self.image_size is not None
            return (self.channels, self.image_size, self.image_size)
        assert self.max_length is not None
        return (self.max_length,)

    def values(self) -> dict[str, Any]:
        """The fields as config values (``<who>.input`` in config.resolved.yaml)."""
        out: dict[str, Any] = {}
        for k in self.fields:
            v = getattr(self, k)
            out[k] = list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v
        return out

    def record(self) -> dict[str, Any]:
        """The ``inputs.<who>`` entry of results.json: kind, every field, and ``from``
        (field -> config | model | data)."""
        return {"kind": self.kind, **self.values(), "from": {k: self.origin.get(k, "data") for k in self.fields}}


def from_record(rec: Any) -> View:
    """A :class:`View` from its :meth:`View.record` (results.json ``inputs.<who>``); ValueError when malformed."""
    if not isinstance(rec, dict) or rec.get("kind") not in ("image", "text"):
        raise ValueError("an input record needs kind image or text")
    found = rec.get("from")
    origin: dict[str, Origin] = {str(k): v for k, v in found.items()} if isinstance(found, dict) else {}
    try:
        if rec["kind"] == "text":
            tok = rec.get("tokenizer")
            return View(
                kind="text",
                tokenizer=None if tok is None else Path(str(tok)),
                max_length=int(rec["max_length"]),
                origin=origin,
            )
        mean, std = tuple(float(v) for v in rec["mean"]), tuple(float(v) for v in rec["std"])
        view = View(
            kind="image",
            image_size=int(rec["image_size"]),
            mean=mean,
            std=std,
            channels=int(rec["channels"]),
            origin=origin,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"malformed input record ({type(e).__name__}: {e})") from None
    if not (len(mean) == len(std) == view.channels) or any(v <= 0 for v in std):
        raise ValueError("mean and std need one value per channel, std > 0")
    return view


def data_view(data: DataBundle) -> View | None:
    """The data's own view: images ``(C, S, S)`` in [0, 1] (mean 0, std 1), or text of kdlab's
    vocabulary at the data's length; None for data that are neither (tabular features)."""
    shape = tuple(data.input_shape)
    origin: dict[str, Origin] = {}
    if len(shape) == 3 and shape[1] == shape[2]:
        c = shape[0]
        return View(kind="image", image_size=shape[1], mean=(0.0,) * c, std=(1.0,) * c, channels=c, origin=origin)
    if len(shape) == 1 and (data.train.x.dtype == torch.int64 or "vocab" in data.meta):
        return View(kind="text", max_length=shape[0], origin=origin)
    return None


def resolve(inputs: InputConfig, declared: Any, data: DataBundle, *, key: str = "input") -> View | None:
    """The full view of one model: each field from ``inputs`` (the config), else ``declared`` (what
    the model declares: any object with the :class:`~kdlab.models.common.Declared` fields, or None),
    else the data. Returns None only for data that are neither images nor text and no ``inputs`` set.

    ``key`` names the model's config section (``teacher`` or ``student``) in error messages.

    Raises:
        ConfigError: a field that does not fit the data (a tokenizer on images, an image size on
            text), mean/std of a length other than the channels, a tokenizer folder that does not exist.
    """
    who = key.split(".")[0]
    own = data_view(data)
    if own is None:
        if inputs.is_set():
            first = next(k for k in type(inputs).model_fields if getattr(inputs, k) is not None)
            raise ConfigError(
                f"{who}.input.{first}: the {data.name} data are neither images nor text "
                f"(input shape {list(data.input_shape)}); remove {who}.input"
            )
        return None
    wrong = TEXT_FIELDS if own.kind == "image" else IMAGE_FIELDS
    for k in wrong:
        if getattr(inputs, k) is not None:
            kind, fix = (
                ("images", "image_size / mean / std / channels")
                if own.kind == "image"
                else ("text", "tokenizer / max_length")
            )
            raise ConfigError(
                f"{who}.input.{k}: the {data.name} data are {kind}; {k} does not apply to them (use {fix})"
            )
    values: dict[str, Any] = {}
    origin: dict[str, Origin] = {}
    for k in own.fields:
        mine, theirs = getattr(inputs, k), getattr(declared, k, None) if declared is not None else None
        if mine is not None:
            values[k], origin[k] = mine, "config"
        elif theirs is not None:
            values[k], origin[k] = theirs, "model"
        else:
            values[k], origin[k] = getattr(own, k), "data"

    def where(k: str) -> str:
        return f"{who}.input.{k}" if origin[k] == "config" else f"{who}.model"

    if own.kind == "text":
        tok = values["tokenizer"]
        if tok is not None:
            tok = Path(tok).expanduser()
            if not tok.is_dir():
                raise ConfigError(
                    f"{where('tokenizer')}: tokenizer folder {tok} does not exist (a Hugging Face "
                    "save_pretrained folder holding tokenizer.json or vocab.txt)"
                )
            tok = tok.resolve()  # recorded absolute: a run folder never names a tokenizer relative to itself
        length = int(values["max_length"])
        return View(kind="text", tokenizer=tok, max_length=length, origin=origin)
    channels, data_c = int(values["channels"]), own.channels
    if channels != data_c and {channels, data_c} != {1, 3}:
        raise ConfigError(
            f"{where('channels')}: {channels} channels, but the data have {data_c}; kdlab converts grey (1) to "
            "RGB (3) and back only"
        )
    stats = {}
    for k in ("mean", "std"):
        v = tuple(float(x) for x in values[k])
        if origin[k] == "data":  # the data's own: 0 / 1 for every channel the model takes
            v = (v[0],) * channels
        if len(v) != channels:
            raise ConfigError(
                f"{where(k)}: {len(v)} value(s) for {channels} channel(s); give one {k} per channel"
                f" (e.g. {list(v[:1]) * channels})"
            )
        if k == "std" and any(x <= 0 for x in v):
            raise ConfigError(f"{where(k)}: every std must be > 0 (got {list(v)})")
        stats[k] = v
    return View(
        kind="image",
        image_size=int(values["image_size"]),
        mean=stats["mean"],
        std=stats["std"],
        channels=channels,
        origin=origin,
    )


def resolve_view(inputs: InputConfig, declared: Any, data: DataBundle, *, key: str = "input") -> View | None:
    """The model's view when it differs from the data's own, else None (the model sees the data
    tensors as they are). Same rule and errors as :func:`resolve`."""
    view = resolve(inputs, declared, data, key=key)
    return None if view is None or is_data_view(view, data) else view


def is_data_view(view: View, data: DataBundle) -> bool:
    """True when ``view`` shows the samples exactly as the data tensors are."""
    own = data_view(data)
    return own is not None and view == own


# --------------------------------------------------------------------------------------------
# Building a view


def load_tokenizer(folder: Path, key: str = "input.tokenizer") -> Any:
    """``transformers.AutoTokenizer.from_pretrained(folder)`` of a local folder (no download, no
    remote code), loaded once per folder; a folder that holds no loadable tokenizer, or one without
    a padding token, is a one-line ConfigError naming ``key``."""
    return _load_tokenizer(Path(folder), key)


@functools.lru_cache(maxsize=8)
def _cached_tokenizer(folder: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True, trust_remote_code=False)


def _load_tokenizer(folder: Path, key: str) -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise ConfigError(f"{key}: a Hugging Face tokenizer needs transformers: pip install 'kdlab[hf]'") from None
    try:
        AutoTokenizer  # noqa: B018 - imported above only to tell a missing package apart
        tok = _cached_tokenizer(folder)
    except Exception as e:  # whatever transformers raises for a folder it cannot read
        raise ConfigError(
            f"{key}: cannot load a tokenizer from {folder} ({type(e).__name__}: {first_line(e)}); give a "
            "save_pretrained folder with tokenizer.json or vocab.txt"
        ) from None
    if getattr(tok, "pad_token_id", None) is None:
        raise ConfigError(f"{key}: the tokenizer in {folder} has no padding token; set one and save it again")
    return tok


def vocab_size(view: View, data: DataBundle) -> int | None:
    """Embedding rows a model of this view needs: the tokenizer's size, else the data's vocabulary."""
    if view.kind == "text" and view.tokenizer is not None:
        return len(load_tokenizer(view.tokenizer))
    return data.meta.get("vocab_size")


@overload
def build_view(
    view: View, bundle: DataBundle, split: str, rows: Tensor | None = None, *, max_memory_gb: None = None
) -> Tensor: ...


@overload
def build_view(
    view: View, bundle: DataBundle, split: str, rows: Tensor | None = None, *, max_memory_gb: float
) -> Tensor | MappedRows: ...


def build_view(
    view: View, bundle: DataBundle, split: str, rows: Tensor | None = None, *, max_memory_gb: float | None = None
) -> Tensor | MappedRows:
    """The inputs of ``bundle.<split>`` (or of its rows ``rows``) as ``view`` shows them, in row order:
    float32 ``[N, C, S, S]`` images or int64 ``[N, max_length]`` token ids (rule: module docstring).

    An image view larger than ``max_memory_gb`` (GiB, the data's ``data.max_memory_gb``; None: no
    bound) is written block by block into a temporary ``.npy`` file (next to the data's decode cache
    when known, else in the temporary folder), unlinked once mapped, and returned as float32
    :class:`~kdlab.data.mapped.MappedRows` with the same values; otherwise it is a tensor.

    Raises:
        DataError: the split kept no raw texts (text), or the memory (in memory) or disk space
            (mapped) the view needs is not there.
    """
    part: Split = getattr(bundle, split)
    if view.kind == "text":
        return _text_view(view, bundle, part, rows)
    budget = math.inf if max_memory_gb is None else max_memory_gb * GB
    return _image_view(view, bundle, part, rows, budget)


def _text_view(view: View, bundle: DataBundle, part: Split, rows: Tensor | None) -> Tensor:
    from kdlab.data.text import Texts, Vocab

    source = part.source
    if not isinstance(source, Texts):
        raise DataError(
            f"{bundle.name}: the raw texts of this split were not kept, so a model with its own tokenizer or "
            "length cannot encode them; load the data with a kdlab text dataset (text-csv, aclimdb)"
        )
    texts = list(source.texts if rows is None else source.take(rows).texts)
    vocab = bundle.meta.get("vocab")
    if view.tokenizer is None and not isinstance(vocab, Vocab):
        raise DataError(f"{bundle.name}: no kdlab vocabulary to encode the texts with")
    return encode_texts(view, texts, vocab)


def encode_texts(view: View, texts: list[str], vocab: Any = None) -> Tensor:
    """``[N, max_length]`` int64 ids of ``texts`` in a text view: its tokenizer's, else the kdlab
    vocabulary ``vocab`` at the view's length."""
    assert view.max_length is not None
    if view.tokenizer is None:
        from kdlab.data.text import Vocab

        return Vocab(vocab.tokens, view.max_length).encode(texts)
    tok = load_tokenizer(view.tokenizer)
    out = torch.zeros((len(texts), view.max_length), dtype=torch.int64)
    for i in range(0, len(texts), 4 * CHUNK):
        enc = tok(
            texts[i : i + 4 * CHUNK],
            padding="max_length",
            truncation=True,
            max_length=view.max_length,
            return_tensors="pt",
        )
        out[i : i + 4 * CHUNK] = enc["input_ids"].to(torch.int64)
    return out


def _image_view(view: View, bundle: DataBundle, part: Split, rows: Tensor | None, budget: float) -> Tensor | MappedRows:
    from kdlab.data.images import ImageFiles
    from kdlab.data.memory import check_memory

    assert view.image_size is not None and view.channels is not None and view.mean and view.std
    size, channels = view.image_size, view.channels
    n = len(part) if rows is None else len(rows)
    nbytes = 4 * n * channels * size * size
    what = f"{n:,} images of {channels}×{size}×{size} px"
    mapped = n > 0 and nbytes > budget
    if not mapped:
        check_memory(nbytes, "input.image_size", what)
    source = part.source
    if isinstance(source, ImageFiles) and size != bundle.input_shape[-1]:
        pixels = source.decode(size, rows)  # from the original files, decoded as the data were
    elif isinstance(part.x, MappedRows):  # mapped rows: read CHUNK rows at a time below
        pixels = part.x if rows is None else part.x.take(rows)
    else:
        pixels = part.x if rows is None else part.x[rows.to(part.x.device)]

    def blocks() -> Iterator[Tensor]:
        for i in range(0, n, CHUNK):
            x = prepare_inputs(pixels[i : i + CHUNK].to("cpu")).float()
            if tuple(x.shape[-2:]) != (size, size):
                x = torch.nn.functional.interpolate(
                    x, size=(size, size), mode="bilinear", antialias=True, align_corners=False
                )
            yield normalise(view, x)

    shape = (n, channels, size, size)
    if mapped:
        return _mapped_view(shape, blocks(), _view_folder(part, pixels), what)
    out = torch.empty(shape, dtype=torch.float32)
    for i, block in zip(range(0, n, CHUNK), blocks(), strict=True):
        out[i : i + CHUNK] = block
    return out


def _view_folder(part: Split, pixels: Tensor | MappedRows) -> Path:
    """Where a mapped view's file goes: next to the data's decode cache when known (and writable),
    else the temporary folder."""
    from kdlab.data.images import ImageFiles, cache_root

    known = [x.path.parent for x in (pixels, part.x) if isinstance(x, MappedRows) and x.path is not None]
    if isinstance(part.source, ImageFiles):
        known.append(cache_root(part.source.cfg))
    for folder in known:
        if folder.is_dir() and os.access(folder, os.W_OK | os.X_OK):
            return folder
    return Path(tempfile.gettempdir())


def _mapped_view(shape: tuple[int, ...], blocks: Iterator[Tensor], folder: Path, what: str) -> MappedRows:
    """The view's float32 rows written from ``blocks`` into a mapped file in ``folder``
    (:func:`~kdlab.data.mapped.write_rows`); a one-line DataError when the disk has too little space."""
    from kdlab.data.memory import check_disk

    fix = "free space there (data.cache_dir, or TMPDIR), lower input.image_size, or raise data.max_memory_gb"
    check_disk(
        4 * math.prod(shape), folder, "input.image_size", f"{what} as float32",
        f"the view is over data.max_memory_gb, so it is memory-mapped: {fix}",
    )  # fmt: skip
    try:
        return write_rows(shape, torch.float32, blocks, folder)
    except OSError as e:
        raise DataError(
            f"input.image_size: cannot write the memory-mapped view of {what} in {folder} "
            f"({type(e).__name__}: {first_line(e)}); {fix}"
        ) from None


def normalise(view: View, x: Tensor) -> Tensor:
    """Pixels ``x`` in [0, 1] ``[N, C, S, S]`` (already at the view's size) with the view's channels
    (grey repeated to 3, RGB averaged to 1) and ``(x - mean) / std`` per channel."""
    assert view.channels is not None and view.mean and view.std
    mean = torch.tensor(view.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(view.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (_channel_converter(int(x.shape[1]), view.channels)(x) - mean) / std


def _channel_converter(have: int, want: int) -> Callable[[Tensor], Tensor]:
    if have == want:
        return lambda x: x
    if have == 1 and want == 3:
        return lambda x: x.expand(-1, 3, -1, -1)
    if have == 3 and want == 1:
        return lambda x: x.mean(dim=1, keepdim=True)
    raise ConfigError(f"input.channels: cannot convert {have} channels to {want} (only grey 1 <-> RGB 3)")


def view_bundle(view: View, bundle: DataBundle, *, max_memory_gb: float | None = None) -> DataBundle:
    """``bundle`` as ``view`` shows it: every split built (:func:`build_view`), same rows, labels and
    sources; ``input_shape`` and ``meta['vocab_size']`` are the view's.

    ``max_memory_gb`` is the data's memory budget (GiB, ``data.max_memory_gb``; None: no bound, every
    split a tensor). When an image view's splits together are larger, every split is memory-mapped
    float32 rows (:func:`build_view`, same values); within it nothing changes."""
    names = [k for k in ("train", "val", "test", "unlabeled", "full_train") if getattr(bundle, k) is not None]
    limit = max_memory_gb
    if view.kind == "image" and max_memory_gb is not None:
        total = 4 * sum(len(getattr(bundle, k)) for k in names) * math.prod(view.input_shape())
        limit = 0.0 if total > max_memory_gb * GB else None  # decided once for the view, as for the data
    splits = {
        k: Split(build_view(view, bundle, k, max_memory_gb=limit), part.y, part.source)
        for k in names
        if (part := getattr(bundle, k)) is not None
    }
    meta = {**bundle.meta, "vocab_size": vocab_size(view, bundle)}
    if view.kind == "text" and view.tokenizer is not None:
        meta.pop("vocab", None)  # the model's ids are its tokenizer's, not kdlab's vocabulary
    return replace(
        bundle,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        unlabeled=splits.get("unlabeled"),
        full_train=splits.get("full_train"),
        input_shape=view.input_shape(),
        meta=meta,
    )


def shaped(view: View | None, bundle: DataBundle) -> DataBundle:
    """``bundle`` with the view's input shape and vocabulary size but the data's tensors (to size a
    model of ``view`` without building the view)."""
    if view is None:
        return bundle
    return replace(bundle, input_shape=view.input_shape(), meta={**bundle.meta, "vocab_size": vocab_size(view, bundle)})
