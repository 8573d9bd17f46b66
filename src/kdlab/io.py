"""Atomic file writes and safe weight files.

Every file kdlab writes goes to a temporary file in the same folder and is renamed into place,
so a crash or a full disk leaves either the old file or the new one, never half of one.
Weights are stored as safetensors; loading never unpickles (``torch.load(weights_only=True)``
for ``.pt`` files).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlab.errors import CheckpointError, StorageError


def _atomic(path: Path, write: Callable[[Any], None], mode: str) -> None:
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


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


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read weights from ``.safetensors`` or a weights-only ``.pt``/``.pth``; never unpickles objects."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{path}: not a readable safetensors file ({e}); re-save or re-train it") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path}: refused or unreadable ({type(e).__name__}); only safetensors or weights-only "
            "state dicts load (objects in a pickle are never executed)"
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: does not hold a state dict of tensors")
    return obj


def load_weights(model: nn.Module, path: Path, *, what: str = "model") -> nn.Module:
    """Load weights into ``model``; a file that does not fit says which keys or shapes differ."""
    state = read_state_dict(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or extra or shapes:
        detail = "; ".join(
            s
            for s in (
                f"missing {', '.join(missing[:3])}" if missing else "",
                f"unexpected {', '.join(extra[:3])}" if extra else "",
                f"shape {', '.join(shapes[:2])}" if shapes else "",
            )
            if s
        )
        raise CheckpointError(f"{path}: does not fit the {what} architecture ({detail}); check the model name")
    model.load_state_dict(state)
    return model
