"""Training checkpoints: the state of one arm at the end of an epoch, so training can resume.

:class:`FitState` is what :func:`kdlab.loop.fit` keeps up to date while it trains (epochs done,
history, best-validation bookkeeping, random-number-generator states) and what it starts from when
resuming. :class:`ArmCheckpoint` writes and reads it, with the model and optimizer, in one folder::

    checkpoints/<arm>/
        epoch-0003.safetensors   model.*, optim.state.<i>.<name>, best.*, rng.torch, rng.cuda.<i>
        epoch-0003.json          epoch, history, best epoch/accuracy, optimizer groups and scalars,
                                 numpy/python RNG states, teacher_cache, sha256 of the tensors file
        latest.json              {"epoch": 3, "tensors": "epoch-0003.safetensors", "meta": ...}

The pair for epoch *e* is written first (each file atomically), then ``latest.json`` is replaced
atomically to point at it, and only then are older pairs deleted. A reader that follows
``latest.json`` sees either the complete previous checkpoint or the complete new one, whatever
moment the process was killed at. Nothing is unpickled: tensors are safetensors, the rest JSON.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdlab import __version__
from kdlab.errors import CheckpointError
from kdlab.io import atomic_write_bytes, atomic_write_json, safetensors_bytes
from kdlab.reproduce import capture_rng

FORMAT_VERSION = 1
POINTER = "latest.json"


@dataclass
class FitState:
    """Where an arm's training stands after ``epoch`` complete epochs.

    Attributes:
        epoch: complete epochs (0 = not started); :func:`~kdlab.loop.fit` resumes at ``epoch + 1``.
        history: the per-epoch rows so far.
        best_epoch, best_accuracy, best_weights: the ``select="best-val"`` bookkeeping: the epoch
            with the highest validation accuracy so far and a copy of its weights.
        rng: generator states at the end of ``epoch`` (:func:`kdlab.reproduce.capture_rng`).
        teacher_cache: reference to precomputed teacher outputs, when the arm uses one.
    """

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_accuracy: float | None = None
    best_weights: dict[str, Tensor] | None = None
    rng: dict[str, Any] | None = None
    teacher_cache: str | None = None

    def update_best(self, epoch: int, accuracy: float, model: nn.Module) -> None:
        """Record ``epoch`` as the best one if its validation accuracy beats every earlier epoch."""
        if self.best_accuracy is None or accuracy > self.best_accuracy:
            self.best_epoch, self.best_accuracy = epoch, accuracy
            self.best_weights = copy.deepcopy(model.state_dict())

    def end_epoch(self, epoch: int, row: dict[str, Any]) -> None:
        """Mark ``epoch`` complete with its history ``row``; takes the generator states now."""
        self.epoch = epoch
        self.history.append(row)
        self.rng = capture_rng()


class ArmCheckpoint:
    """The checkpoint folder of one arm (``run_dir/checkpoints/<arm>``).

    Args:
        folder: the arm's checkpoint folder (created on the first save).
        arm: the arm's name, recorded in the files and named in errors.
    """

    def __init__(self, folder: Path, arm: str) -> None:
        self.folder = Path(folder)
        self.arm = arm

    def exists(self) -> bool:
        return (self.folder / POINTER).is_file()

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: FitState) -> Path:
        """Write the checkpoint of ``state.epoch``; returns the pointer file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tensors, meta = _flatten(model, optimizer, state)
        stem = f"epoch-{state.epoch:04d}"
        blob = safetensors_bytes(tensors, {"arm": self.arm, "epoch": str(state.epoch)})
        meta.update(arm=self.arm, kdlab_version=__version__, tensors_sha256=hashlib.sha256(blob).hexdigest())
        atomic_write_bytes(self.folder / f"{stem}.safetensors", blob)
        atomic_write_json(self.folder / f"{stem}.json", meta)
        # The switch: before this rename readers see the previous pair, after it the new one.
        atomic_write_json(
            self.folder / POINTER,
            {"format": FORMAT_VERSION, "epoch": state.epoch, "tensors": f"{stem}.safetensors", "meta": f"{stem}.json"},
        )
        for old in self.folder.glob("epoch-*"):
            if not old.name.startswith(stem + "."):
                old.unlink(missing_ok=True)
        return self.folder / POINTER

    def latest_epoch(self) -> int | None:
        """The epoch of the checkpoint ``latest.json`` points at, or None when there is none."""
        if not self.exists():
            return None
        return int(self._pointer()["epoch"])

    def load(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> FitState:
        """Load the latest checkpoint into ``model`` and ``optimizer``; returns its :class:`FitState`."""
        pointer = self._pointer()
        tensors_path, meta_path = self.folder / pointer["tensors"], self.folder / pointer["meta"]
        try:
            blob = tensors_path.read_bytes()
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{self.folder}: unreadable checkpoint ({e}); delete it to restart the arm") from None
        if hashlib.sha256(blob).hexdigest() != meta.get("tensors_sha256"):
            raise CheckpointError(f"{tensors_path}: does not match {meta_path.name} (damaged checkpoint)")
        from safetensors.torch import load

        tensors = load(blob)
        try:
            model.load_state_dict(_prefixed(tensors, "model."))
            optimizer.load_state_dict(_optimizer_state(tensors, meta))
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(
                f"{self.folder}: checkpoint does not fit the {self.arm} model or optimizer ({str(e)[:200]})"
            ) from None
        rng = {
            "torch": tensors["rng.torch"],
            "cuda": [tensors[f"rng.cuda.{i}"] for i in range(meta["rng"]["cuda_count"])],
            "numpy": meta["rng"]["numpy"],
            "python": meta["rng"]["python"],
        }
        best = _prefixed(tensors, "best.") if meta["best_epoch"] is not None else None
        return FitState(
            epoch=int(meta["epoch"]),
            history=meta["history"],
            best_epoch=meta["best_epoch"],
            best_accuracy=meta["best_accuracy"],
            best_weights=best,
            rng=rng,
            teacher_cache=meta.get("teacher_cache"),
        )

    def remove(self) -> None:
        """Delete the folder (once the arm's final weights and results are recorded)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.folder.parent.rmdir()  # the checkpoints/ folder, once no arm has one left

    def _pointer(self) -> dict[str, Any]:
        try:
            pointer = json.loads((self.folder / POINTER).read_text(encoding="utf-8"))
            int(pointer["epoch"]), str(pointer["tensors"]), str(pointer["meta"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"{self.folder / POINTER}: unreadable ({e}); delete it to restart the arm") from None
        return dict(pointer)


def _flatten(model: nn.Module, optimizer: torch.optim.Optimizer, state: FitState) -> tuple[dict[str, Tensor], dict]:
    """Split the training state into safetensors-ready tensors and JSON-ready metadata."""

    def cpu(t: Tensor) -> Tensor:
        return t.detach().to("cpu").contiguous()

    tensors = {f"model.{k}": cpu(v) for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for idx, entry in opt["state"].items():
        for name, value in entry.items():
            if isinstance(value, Tensor):
                tensors[f"optim.state.{idx}.{name}"] = cpu(value)
            else:
                scalars.setdefault(str(idx), {})[name] = value
    if state.best_weights is not None:
        tensors.update({f"best.{k}": cpu(v) for k, v in state.best_weights.items()})
    rng = state.rng or capture_rng()
    tensors["rng.torch"] = rng["torch"]
    for i, s in enumerate(rng["cuda"]):
        tensors[f"rng.cuda.{i}"] = s
    meta = {
        "format": FORMAT_VERSION,
        "epoch": state.epoch,
        "history": state.history,
        "best_epoch": state.best_epoch,
        "best_accuracy": state.best_accuracy,
        "optimizer": {"class": type(optimizer).__name__, "param_groups": opt["param_groups"], "scalars": scalars},
        "rng": {"cuda_count": len(rng["cuda"]), "numpy": rng["numpy"], "python": rng["python"]},
        "teacher_cache": state.teacher_cache,
    }
    return tensors, meta


def _prefixed(tensors: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _optimizer_state(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in _prefixed(tensors, "optim.state.").items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    for idx, entries in meta["optimizer"]["scalars"].items():
        state.setdefault(int(idx), {}).update(entries)
    return {"state": state, "param_groups": meta["optimizer"]["param_groups"]}
