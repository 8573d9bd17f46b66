"""Atomic file writes and safe weight files.

Every file kdlab writes goes to a temporary file in the same folder and is renamed into place,
so a crash or a full disk leaves either the old file or the new one, never half of one.
Weights are stored as safetensors; loading never unpickles (``torch.load(weights_only=True)``
for ``.pt`` / ``.pth`` / ``.bin`` files).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlab.errors import CheckpointError, StorageError


def _read_umask() -> int:
    """The process's umask, read once at import: from ``/proc/self/status`` where there is one (no
    change to process-wide state), else by setting and at once restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


UMASK = _read_umask()
FILE_MODE = 0o666 & ~UMASK
"""Mode of every file kdlab writes: what ``open()`` would give under the umask (``mkstemp``'s
temporary files are 0600 and are widened to this before the rename)."""


def make_temp(path: Path) -> tuple[int, str]:
    """``mkstemp`` beside ``path`` (``.<name>.*.tmp``), its mode set to :data:`FILE_MODE`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with contextlib.suppress(OSError, AttributeError):  # a file system without modes; Windows has no fchmod
        os.fchmod(fd, FILE_MODE)
    return fd, tmp


def _atomic(path: Path, write: Callable[[Any], None], mode: str) -> None:
    path = Path(path)
    try:
        fd, tmp = make_temp(path)
    except OSError as e:
        raise _storage_error(path, e) from None
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, StorageError):
            raise _storage_error(path, e) from None
        raise


def _storage_error(path: Path, e: OSError) -> StorageError:
    """A failed write as one line; the file at ``path``, if any, is left as it was."""
    return StorageError(f"{path}: cannot write ({e.strerror or e}); free disk space or choose a writable folder")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda f: f.write(data), "wb")


def atomic_write_text(path: Path, text: str) -> None:
    _atomic(path, lambda f: f.write(text.encode("utf-8")), "wb")


NONFINITE_KEY = "nonfinite"
"""Top-level key of a JSON record listing the non-finite floats written as ``null``: JSON Pointer
(RFC 6901) of each -> ``"NaN"``, ``"Infinity"`` or ``"-Infinity"`` (docs/run-folder.md)."""

_NONFINITE_TEXT = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _pointer_token(key: object) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def _strict(obj: Any, pointer: str, found: dict[str, str]) -> Any:
    """``obj`` with every non-finite float replaced by None, each recorded in ``found``."""
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        found[pointer] = "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
        return None
    if isinstance(obj, dict):
        return {k: _strict(v, f"{pointer}/{_pointer_token(k)}", found) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_strict(v, f"{pointer}/{i}", found) for i, v in enumerate(obj)]
    return obj


def _resolve(obj: Any, pointer: str) -> tuple[Any, Any] | None:
    """The (container, key) a JSON Pointer names in ``obj``, or None when it names nothing."""
    parent: Any = None
    key: Any = None
    node = obj
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            parent, key = node, token
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            parent, key = node, int(token)
        else:
            return None
        node = parent[key]
    return None if parent is None else (parent, key)


def strict_json(obj: Any) -> str:
    """``obj`` as standard JSON (indented): NaN and ±inf, which strict parsers refuse, become
    ``null`` and are listed under the top-level ``"nonfinite"`` key of a dict (JSON Pointer ->
    ``"NaN"`` / ``"Infinity"`` / ``"-Infinity"``).

    Entries of an existing ``"nonfinite"`` map (a record read back and written again) are kept while
    the value they name is still ``null``, so a rewrite never loses the note.
    """
    found: dict[str, str] = {}
    clean = _strict(obj, "", found)
    if isinstance(clean, dict):
        earlier = clean.pop(NONFINITE_KEY, None)
        if isinstance(earlier, dict):
            for pointer, text in earlier.items():
                spot = _resolve(clean, str(pointer))
                if text in _NONFINITE_TEXT and spot is not None and spot[0][spot[1]] is None:
                    found.setdefault(str(pointer), text)
        if found:
            clean[NONFINITE_KEY] = dict(sorted(found.items()))
    return json.dumps(clean, indent=2, sort_keys=False, default=str, allow_nan=False)


def restore_nonfinite(obj: Any) -> Any:
    """Undo :func:`strict_json` on a parsed record: put the listed NaN/±inf back in place of their
    ``null`` and drop the ``"nonfinite"`` map (in place; returns ``obj``)."""
    if not isinstance(obj, dict) or not isinstance(obj.get(NONFINITE_KEY), dict):
        return obj
    for pointer, text in obj.pop(NONFINITE_KEY).items():
        spot = _resolve(obj, str(pointer))
        if text in _NONFINITE_TEXT and spot is not None and spot[0][spot[1]] is None:
            spot[0][spot[1]] = _NONFINITE_TEXT[text]
    return obj


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as standard JSON (:func:`strict_json`: no bare NaN or Infinity), atomically."""
    atomic_write_text(path, strict_json(obj) + "\n")


def safetensors_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """``safetensors.torch.save`` with the metadata keys in sorted order.

    safetensors writes its metadata map in hash order, which changes from process to process;
    sorting it makes equal tensors and metadata give byte-identical files (reproducible runs).
    """
    from safetensors.torch import save

    blob = save(tensors, metadata=metadata or {})
    if not metadata or len(metadata) < 2:
        return blob
    n = int.from_bytes(blob[:8], "little")
    original = blob[8 : 8 + n].rstrip(b" ")
    header = json.loads(original)
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(text) != len(original):  # an escaping difference: keep safetensors' own bytes
        return blob
    return blob[:8] + text + blob[8 + len(text) :]


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> int:
    """Write the model's state dict as safetensors (atomically); returns the file size in bytes."""
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(Path(path), safetensors_bytes(state, metadata))
    return Path(path).stat().st_size


SAFETENSORS_DTYPES: dict[torch.dtype, str] = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
"""torch dtype -> the name safetensors headers use."""


def dtype_name(dtype: torch.dtype) -> str:
    return SAFETENSORS_DTYPES.get(dtype, str(dtype).removeprefix("torch."))


TORCH_SUFFIXES = (".pt", ".pth", ".bin")
"""Weights files read with ``torch.load(weights_only=True)``; ``.safetensors`` are read by safetensors."""

WRAPPER_PREFIXES = ("module.", "_orig_mod.")
"""Key prefixes a training wrapper adds to every key: DDP / DataParallel's ``module.``, torch.compile's
``_orig_mod.``; stripped from a checkpoint whose every key carries one."""


def _nested_state(obj: Any) -> Any:
    """A checkpoint's state dict: ``obj`` itself when it maps names to tensors, else the dict under
    ``state_dict`` or ``model`` (a training script's ``{"model": ..., "optimizer": ..., "epoch": ...}``)."""
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                return obj[key]
    return obj


def strip_wrapper_prefixes(
    state: dict[str, torch.Tensor], own: Collection[str] | None = None
) -> dict[str, torch.Tensor]:
    """``state`` without the :data:`WRAPPER_PREFIXES` that every one of its keys carries (repeatedly:
    ``module._orig_mod.``), so a DDP or compiled model's checkpoint loads into the plain model. A prefix
    that every key of the model's own state dict ``own`` carries too is the model's and is kept."""
    while state:
        prefix = next(
            (
                p
                for p in WRAPPER_PREFIXES
                if all(k.startswith(p) for k in state) and not (own and all(k.startswith(p) for k in own))
            ),
            None,
        )
        if prefix is None:
            break
        state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def read_state_dict(path: Path, *, own: Collection[str] | None = None) -> dict[str, torch.Tensor]:
    """Read weights from ``.safetensors`` or a weights-only ``.pt``/``.pth``/``.bin``; never unpickles objects.

    A torch file is read with ``torch.load(weights_only=True, map_location="cpu")`` and may hold the
    state dict itself or nest it under ``state_dict`` / ``model``; the DDP ``module.`` and
    torch.compile ``_orig_mod.`` prefixes on every key are stripped (unless the keys ``own`` of the model
    the weights are for carry them too: :func:`strip_wrapper_prefixes`). Anything else (a pickled whole
    model, a dict of other values) is a one-line CheckpointError.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError, MemoryError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e}); re-save or re-train it") from None
    if path.suffix not in TORCH_SUFFIXES:
        raise CheckpointError(
            f"{path}: unknown weights file type '{path.suffix}'; give a .safetensors file or a state dict saved "
            f"with torch.save as {', '.join(TORCH_SUFFIXES)}"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path}: refused or unreadable ({type(e).__name__}); only safetensors or weights-only "
            "state dicts load (objects in a pickle are never executed): save model.state_dict(), not the model"
        ) from None
    obj = _nested_state(obj)
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path}: does not hold a state dict of tensors (nor one under 'state_dict' or 'model'); "
            "save model.state_dict()"
        )
    return strip_wrapper_prefixes({str(k): v for k, v in obj.items()}, own)


def safetensors_header(path: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Tensor name -> (dtype name, shape) from a safetensors file's header; no tensor is read.

    safetensors checks that the header's shapes, dtypes and offsets match the file's size, so a
    header claiming tensors larger than the file is refused here.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            slices = {k: f.get_slice(k) for k in f.keys()}  # noqa: SIM118 - a safe_open handle is not a dict
            return {k: (str(s.get_dtype()), tuple(s.get_shape())) for k, s in slices.items()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e}); re-save or re-train it") from None


FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})


def check_fit(
    path: Path,
    stored: dict[str, tuple[str, tuple[int, ...]]],
    model: nn.Module,
    *,
    what: str = "model",
    convert_floats: bool = False,
) -> None:
    """Raise a one-line CheckpointError unless ``stored`` (name -> (dtype, shape)) has exactly the
    model's state-dict keys, shapes and dtypes. An F32 tensor whose header was edited to I32 would
    load as garbage, so a dtype that differs is refused, naming the key and both dtypes — except,
    with ``convert_floats`` (a user's own checkpoint), one floating-point precision stored for
    another (F16/BF16/F64 weights for an F32 model), which ``load_state_dict`` converts."""
    own = {k: (dtype_name(v.dtype), tuple(v.shape)) for k, v in model.state_dict().items()}
    missing = [k for k in own if k not in stored]
    extra = [k for k in stored if k not in own]
    shapes = [f"{k} {stored[k][1]} vs {v[1]}" for k, v in own.items() if k in stored and stored[k][1] != v[1]]
    if missing or extra or shapes:
        detail = "; ".join(
            s
            for s in (
                f"missing {', '.join(missing[:3])}" if missing else "",
                f"unexpected {', '.join(k[:80] for k in extra[:3])}" if extra else "",
                f"shape {', '.join(shapes[:2])}" if shapes else "",
            )
            if s
        )
        raise CheckpointError(f"{path}: does not fit the {what} architecture ({detail}); check the model name")
    for k, (dtype, _shape) in own.items():
        if convert_floats and stored[k][0] in FLOAT_DTYPES and dtype in FLOAT_DTYPES:
            continue
        if stored[k][0] != dtype:
            raise CheckpointError(
                f"{path}: {k} is stored as {stored[k][0]} but the {what} model's is {dtype} "
                f"(a damaged or edited file, or weights of another precision); save the weights as {dtype}"
            )


def check_weights(model: nn.Module, path: Path, *, what: str = "model", convert_floats: bool = False) -> None:
    """:func:`check_fit` of a weights file: a ``.safetensors`` file from its header alone (``model`` may
    live on the meta device), so nothing is read or allocated unless the file fits; a ``.pt`` /
    ``.pth`` / ``.bin`` state dict is loaded (weights only) and checked."""
    if Path(path).suffix == ".safetensors":
        check_fit(Path(path), safetensors_header(path), model, what=what, convert_floats=convert_floats)
    else:
        _read_fitting(model, Path(path), what=what, convert_floats=convert_floats)


def _read_fitting(model: nn.Module, path: Path, *, what: str, convert_floats: bool) -> dict[str, torch.Tensor]:
    """A ``.pt`` / ``.pth`` / ``.bin`` state dict, read (weights only) and checked against ``model``:
    such a file can only be checked once loaded."""
    state = read_state_dict(path, own=list(model.state_dict()))
    stored = {k: (dtype_name(v.dtype), tuple(v.shape)) for k, v in state.items()}
    check_fit(path, stored, model, what=what, convert_floats=convert_floats)
    return state


def load_weights(model: nn.Module, path: Path, *, what: str = "model", convert_floats: bool = False) -> nn.Module:
    """Load weights into ``model``; a file whose keys, shapes or dtypes differ from the model's
    says which (:func:`check_fit`), before any tensor of a ``.safetensors`` file is read.
    ``convert_floats``: accept another floating-point precision (a user's checkpoint, not a run's record)."""
    path = Path(path)
    if path.suffix == ".safetensors":  # its header, before any tensor is read
        check_weights(model, path, what=what, convert_floats=convert_floats)
        state = read_state_dict(path)
    else:
        state = _read_fitting(model, path, what=what, convert_floats=convert_floats)
    model.load_state_dict(state)
    return model
