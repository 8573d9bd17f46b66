"""Teacher-output cache: the teacher's logits for the whole training split, computed once.

A frozen teacher in eval mode is a fixed function of its input, so without random augmentation
its logits for training sample ``i`` are the same in every epoch. The cache computes them once
(inference mode, large batches), keeps them as a ``[N, C]`` tensor on the training device and
answers each batch with ``logits[batch.index]`` — exact under any shuffling, because batches carry
their sample indices.

Caches are saved as safetensors under a **fingerprint**: a SHA-256 of the teacher's class and
weights, the training inputs (bytes, dtype, shape), the preprocessing (uint8 scaling, augmentation
settings) and the storage dtype. A second run with the same teacher and data finds the file and
skips the teacher pass; change one teacher weight or one pixel and the fingerprint changes, so a
stale cache is never used. Files live in a shared folder (``distill.teacher_cache_dir``, default
``$KDLAB_CACHE/teacher-logits``), and the run folder gets a hard link (or copy) of the one it used.

The cache is refused when it would be wrong:

* random augmentation changes what the teacher sees every epoch (``train.augment``);
* the objective needs live teacher *features*, not only logits (``needs_teacher_features``).

``distill.teacher_cache=on`` turns a refusal into a :class:`~kdlab.errors.ConfigError`; ``auto``
falls back to the live teacher with a notice; ``off`` never caches. A batch without indices
(a user's DataLoader) is answered by the live teacher.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdlab.data.mapped import MappedRows
from kdlab.data.tensors import Batch, prepare_inputs
from kdlab.errors import ConfigError
from kdlab.io import atomic_write_bytes
from kdlab.train import distributed

CACHE_FORMAT = 1
RUN_FILE = "teacher-logits.safetensors"
DTYPES = {"float32": torch.float32, "float16": torch.float16}


@dataclass
class CacheRecord:
    """What was used, for ``results.json``: ``status`` is hit, miss (built), or off."""

    status: str
    reason: str = ""
    fingerprint: str | None = None
    dtype: str | None = None
    rows: int | None = None
    build_seconds: float | None = None
    load_seconds: float | None = None
    path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("extra"))
        return out


def default_dir() -> Path:
    env = os.environ.get("KDLAB_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "kdlab") / "teacher-logits"


def decide(mode: str, *, objective: Any, augment_random: bool) -> tuple[bool, str]:
    """Whether to use the cache under ``distill.teacher_cache=mode``; returns ``(use, reason)``.

    Raises:
        ConfigError: ``mode == "on"`` but the cache would be wrong (one line naming the fix).
    """
    if mode not in {"auto", "on", "off"}:
        raise ConfigError(f"distill.teacher_cache: must be auto, on or off (got {mode!r})")
    if mode == "off":
        return False, "distill.teacher_cache=off"
    if not getattr(objective, "uses_teacher", True):
        return False, "the objective does not use the teacher (alpha = 1)"
    problem = None
    if augment_random:
        problem = "random augmentation (train.augment) changes what the teacher sees every epoch"
    elif getattr(objective, "needs_teacher_features", False):
        problem = f"method '{getattr(objective, 'name', '?')}' needs live teacher features, not only logits"
    if problem is None:
        return True, ""
    if mode == "on":
        raise ConfigError(f"distill.teacher_cache=on: {problem}; set distill.teacher_cache=auto or off")
    return False, problem


def fingerprint(
    teacher: nn.Module, x: Tensor | MappedRows, *, preprocessing: dict[str, Any], dtype: str = "float32"
) -> str:
    """SHA-256 (hex) over the teacher's class and weights, the inputs and the preprocessing."""
    h = hashlib.sha256()
    meta = {
        "format": CACHE_FORMAT,
        "teacher": f"{type(teacher).__module__}.{type(teacher).__qualname__}",
        "inputs": [str(x.dtype), list(x.shape)],
        "preprocessing": preprocessing,
        "dtype": dtype,
    }
    h.update(json.dumps(meta, sort_keys=True).encode())
    for name, t in sorted(teacher.state_dict().items()):
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(_raw_bytes(t))
    if isinstance(x, MappedRows):  # the same bytes, read block by block
        for _, part in x.chunks():
            h.update(_raw_bytes(part))
    else:
        h.update(_raw_bytes(x))
    return h.hexdigest()


def _raw_bytes(t: Tensor) -> bytes:
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


@torch.inference_mode()
def compute_logits(teacher: nn.Module, x: Tensor | MappedRows, *, batch_size: int = 512) -> Tensor:
    """The teacher's float32 logits for every row of ``x`` (eval mode, inference mode, big batches).

    Inputs get the loader's preprocessing (uint8 pixels -> [0, 1]); the device is the teacher's.
    """
    was_training = teacher.training
    teacher.eval()
    device = next(teacher.parameters()).device
    if device.type == "cpu":
        # CPU convolutions and pools run fastest on batches that fit in cache: 128 beat 512 by 10-25 %
        # on the lab CNNs (and 2048 was slower still).
        batch_size = min(batch_size, 128)
    try:
        outs = [teacher(prepare_inputs(x[i : i + batch_size].to(device))).float() for i in range(0, len(x), batch_size)]
    finally:
        teacher.train(was_training)
    return torch.cat(outs)


class TeacherCache:
    """Cached teacher logits ``[N, C]`` answering batches by sample index.

    Calling the cache with a :class:`Batch` returns float32 logits for ``batch.index``; a batch
    without indices goes to ``fallback`` (the live teacher) when one is given.
    """

    def __init__(self, logits: Tensor, fingerprint: str = "", fallback: Callable[[Batch], Tensor] | None = None):
        self.logits = logits
        self.fingerprint = fingerprint
        self.fallback = fallback
        self.fallback_batches = 0

    def __len__(self) -> int:
        return len(self.logits)

    def __call__(self, batch: Batch) -> Tensor:
        if batch.index is None:
            if self.fallback is None:
                raise ValueError("this batch carries no sample indices: the teacher cache cannot answer it")
            self.fallback_batches += 1
            return self.fallback(batch)
        return self.logits[batch.index.to(self.logits.device)].float()


def build(
    teacher: nn.Module,
    x: Tensor | MappedRows,
    *,
    preprocessing: dict[str, Any] | None = None,
    dtype: str = "float32",
    cache_dir: Path | None = None,
    device: torch.device | None = None,
    batch_size: int = 512,
    fallback: Callable[[Batch], Tensor] | None = None,
) -> tuple[TeacherCache, CacheRecord]:
    """Load the cache for (teacher, x, preprocessing) from ``cache_dir``, or compute and save it.

    Under torchrun each rank computes the rows ``rank::world`` and the rows are all-gathered, so
    the teacher pass is split across ranks; only rank 0 writes the file.
    """
    if dtype not in DTYPES:
        raise ConfigError(f"distill.teacher_cache_dtype: must be float32 or float16 (got {dtype!r})")
    device = device or next(teacher.parameters()).device
    folder = Path(cache_dir) if cache_dir is not None else default_dir()
    fp = fingerprint(teacher, x, preprocessing=preprocessing or {}, dtype=dtype)
    path = folder / f"teacher-logits-{fp[:32]}.safetensors"
    start = time.perf_counter()
    logits = _load(path, fp, len(x))
    here = distributed.info()
    if distributed.active():  # every rank must take the same branch (the miss path is collective)
        hit = distributed.all_reduce_sum(torch.tensor([float(logits is not None)], device=device))
        if int(hit.item()) != here.world:
            logits = None
    if logits is not None:
        record = CacheRecord("hit", fingerprint=fp, dtype=dtype, rows=len(x), path=str(path))
        record.load_seconds = time.perf_counter() - start
        return TeacherCache(logits.to(device), fp, fallback), record
    if here.world > 1:
        shard = torch.arange(here.rank, len(x), here.world)
        rows = x.take(shard) if isinstance(x, MappedRows) else x[here.rank :: here.world]
    else:
        rows = x
    full = distributed.gather_rows(compute_logits(teacher, rows, batch_size=batch_size).to(device), len(x))
    logits = full.to(DTYPES[dtype])
    build_seconds = time.perf_counter() - start
    if here.is_main:
        _save(path, logits, fp)
    record = CacheRecord("miss", fingerprint=fp, dtype=dtype, rows=len(x), build_seconds=build_seconds, path=str(path))
    return TeacherCache(logits, fp, fallback), record


def _load(path: Path, fp: str, rows: int) -> Tensor | None:
    if not path.is_file():
        return None
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("fingerprint") != fp:
                return None
            logits = f.get_tensor("logits")
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return None  # a damaged cache file is rebuilt
    return logits if len(logits) == rows else None


def _save(path: Path, logits: Tensor, fp: str) -> None:
    from safetensors.torch import save

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = save({"logits": logits.detach().to("cpu").contiguous()}, metadata={"fingerprint": fp})
        atomic_write_bytes(path, data)
    except OSError:
        pass  # the cache is an optimisation: an unwritable folder only costs a recomputation next time


def link_into(run_dir: Path, record: CacheRecord) -> None:
    """Put the cache file used into the run folder (hard link when possible, else a copy)."""
    if record.path is None or not Path(record.path).is_file():
        return
    src, dst = Path(record.path), Path(run_dir) / RUN_FILE
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError:
        Path(tmp).unlink(missing_ok=True)
        return
    record.extra["run_file"] = RUN_FILE


def preprocessing_of(x: Tensor | MappedRows, augment: dict[str, Any] | None = None) -> dict[str, Any]:
    """The preprocessing facts that change what the teacher sees, for the fingerprint."""
    return {
        "scaling": "uint8/255" if x.dtype == torch.uint8 else "none",
        "augment": augment or {},
    }
