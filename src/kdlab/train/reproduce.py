"""Reproducibility: random-number-generator states, deterministic mode, and what ``env.json``
records so a run can be repeated.

A run is fixed by its seed: the seed fixes the splits, the initial weights, the data order (the
loader's own generator, see :class:`~kdlab.data.tensors.TensorLoader`) and dropout (torch's global
generator). Checkpoints store the generator states with :func:`capture_rng` so a resumed run
draws exactly the numbers an uninterrupted one would have drawn.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from kdlab.runs import ENV_VARS, repro_info  # noqa: F401 - env.json's reproducibility part, kept importable here

# cuBLAS needs a fixed workspace to be deterministic on CUDA >= 10.2 (PyTorch's reproducibility notes).
CUBLAS_WORKSPACE = ":4096:8"


def capture_rng() -> dict[str, Any]:
    """Every generator state a training step may draw from.

    Returns ``{"torch": uint8 tensor, "cuda": [uint8 tensors] , "numpy": [...], "python": [...]}``;
    the tensors go into a safetensors file, the rest is JSON-ready.
    """
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)
    name, keys, pos, has_gauss, gauss = np_state
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state().clone(),
        "cuda": [s.clone() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": [name, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(gauss)],
        "python": [py_version, list(py_internal), py_gauss],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Put back the generator states taken by :func:`capture_rng`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if state.get("numpy"):
        name, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if state.get("python"):
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))


@contextmanager
def deterministic_mode(enabled: bool) -> Iterator[None]:
    """Within the block, ``torch.use_deterministic_algorithms(True)`` when ``enabled``.

    Cost: some CUDA kernels (scatter-add, index-add, some pooling backward passes) are replaced by
    slower deterministic ones, cuDNN autotuning is off, and an operation with no deterministic
    implementation raises instead of running. On a CPU the training kernels kdlab uses are already
    deterministic, so the option costs nothing measurable there. The previous setting is restored.
    """
    if not enabled:
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    before_benchmark = torch.backends.cudnn.benchmark
    if torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
        torch.backends.cudnn.benchmark = before_benchmark
