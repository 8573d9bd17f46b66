"""Device and precision choices, decided once per run and recorded in ``results.json``.

On CUDA the defaults are the usual speed-ups: bfloat16 autocast for forward passes (the losses in
:mod:`kdlab.losses` still compute in float32), channels-last memory format for convolutional
models and the fused Adam/AdamW kernel. On CPU convolutional models use channels-last too:
PyTorch's CPU max-pool is several times faster in that layout (measured on the lab CNNs: teacher
inference 3.9×, student training 1.37×); precision stays float32. On MPS everything stays float32
and contiguous. ``torch.compile`` is opt-in
(``train.compile``) on every device. Nothing here changes numerics silently: :meth:`Accel.record`
is written to the run folder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from kdlab.errors import ConfigError

PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


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
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model
