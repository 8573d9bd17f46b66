"""Device and precision choices, decided once per run and recorded in ``results.json``.

On CUDA the defaults are the usual speed-ups: bfloat16 autocast for forward passes (the losses in
:mod:`kdlab.kd.losses` still compute in float32), channels-last memory format for convolutional
models and the fused Adam/AdamW kernel. On CPU convolutional models use channels-last too:
PyTorch's CPU max-pool is several times faster in that layout (measured on the lab CNNs: teacher
inference 3.9×, student training 1.37×); precision stays float32. On MPS everything stays float32
and contiguous. ``torch.compile`` is opt-in
(``train.compile``) on every device. Nothing here changes numerics silently: :meth:`Accel.record`
is written to the run folder.

Host memory (:func:`tune_host_allocator`, ``train.host_allocator``): glibc hands every freed block
above a threshold (at most 32 MiB by default) back to the operating system, so a CPU training step
whose activations are larger page-faults its whole working set back in on every step — measured
here, more than half of a 224×224 lab-CNN step was kernel time. On CPU runs kdlab asks glibc to
keep freed memory for reuse instead. Numerics are untouched; the process keeps its peak memory
until it exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from kdlab.errors import ConfigError

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}

# glibc's mallopt(3) parameters and the values kdlab sets (the call takes a C int).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_KEEP_BYTES = 2**31 - 1  # serve blocks up to 2 GiB from the heap and never trim it below that
_TOP_PAD_BYTES = 256 * 2**20  # grow the heap in 256 MiB steps
_HOST_ALLOCATOR = "system"  # what this process's allocator runs with (global: see tune_host_allocator)


@dataclass(frozen=True)
class Accel:
    """What a run uses on its device."""

    device: str
    precision: str = "float32"
    channels_last: bool = False
    fused_optimizer: bool = False
    compile: bool = False

    def record(self) -> dict[str, Any]:
        return asdict(self)


def plan(device: torch.device, *, precision: str = "auto", compile: bool = False) -> Accel:
    """Resolve ``train.precision`` / ``train.compile`` for ``device`` (see the module docstring)."""
    cuda = device.type == "cuda"
    if precision == "auto":
        precision = "bfloat16" if cuda and torch.cuda.is_bf16_supported() else "float32"
    if precision not in PRECISIONS:
        raise ConfigError(f"train.precision: unknown precision '{precision}' (auto, float32, bfloat16)")
    channels_last = cuda or device.type == "cpu"
    return Accel(str(device), precision, channels_last=channels_last, fused_optimizer=cuda, compile=compile)


@contextlib.contextmanager
def autocast(device: torch.device, precision: str) -> Iterator[None]:
    """Autocast forward passes to ``precision`` (a no-op for float32)."""
    if precision == "float32":
        yield
        return
    with torch.autocast(device_type=device.type, dtype=PRECISIONS[precision]):
        yield


def is_conv_model(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def prepare_model(model: nn.Module, accel: Accel) -> nn.Module:
    """Apply the memory-format choice in place (weights keep their values)."""
    if accel.channels_last and is_conv_model(model):
        model.to(memory_format=torch.channels_last)
    return model


def tune_host_allocator() -> str:
    """Make glibc keep freed memory for reuse instead of returning it to the OS after each step.

    Sets ``mallopt(M_MMAP_THRESHOLD, 2 GiB − 1)``, ``mallopt(M_TRIM_THRESHOLD, 2 GiB − 1)`` and
    ``mallopt(M_TOP_PAD, 256 MiB)``: tensors up to 2 GiB come from the heap, and the heap is not
    shrunk between steps, so a training step reuses the pages the previous step touched rather
    than page-faulting (and zeroing) them again. The setting is process-wide and cannot be undone
    in the process; it applies to allocations made after the call. Returns the state recorded in
    ``results.json`` (:func:`host_allocator`): ``"glibc-reuse"``, or ``"system"`` where the C
    library is not glibc or refuses a value (the allocator is then left alone).
    """
    global _HOST_ALLOCATOR
    if _HOST_ALLOCATOR != "system" or platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return _HOST_ALLOCATOR
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return _HOST_ALLOCATOR
    settings = ((_M_MMAP_THRESHOLD, _KEEP_BYTES), (_M_TRIM_THRESHOLD, _KEEP_BYTES), (_M_TOP_PAD, _TOP_PAD_BYTES))
    if all(libc.mallopt(param, value) == 1 for param, value in settings):
        _HOST_ALLOCATOR = "glibc-reuse"
    return _HOST_ALLOCATOR


def host_allocator() -> str:
    """``"glibc-reuse"`` once :func:`tune_host_allocator` took effect in this process, else ``"system"``."""
    return _HOST_ALLOCATOR
