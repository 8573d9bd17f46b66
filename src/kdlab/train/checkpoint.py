"""Training checkpoints: the state of one arm at the end of an epoch, so training can resume.

:class:`FitState` is what :func:`kdlab.train.loop.fit` keeps up to date while it trains (epochs done,
history, best-validation bookkeeping, random-number-generator states) and what it starts from when
resuming. :class:`ArmCheckpoint` writes and reads it, with the model and optimizer, in one folder::

    checkpoints/<arm>/
        epoch-0003.safetensors   model.*, optim.state.<i>.<name>, best.*, rng.torch, rng.cuda.<i>
        epoch-0003.json          epoch, history, best epoch/accuracy, optimizer groups and scalars,
                                 numpy/python RNG states, teacher_cache, sha256 of the tensors file
        latest.json              {"format": 2, "epoch": 3, "tensors": "epoch-0003.safetensors",
                                  "meta": "epoch-0003.json", "meta_sha256": sha256 of that JSON file}

The pair for epoch *e* is written first (each file atomically), then ``latest.json`` is replaced
atomically to point at it, and only then are older pairs deleted. A reader that follows
``latest.json`` sees either the complete previous checkpoint or the complete new one, whatever
moment the process was killed at. Nothing is unpickled: tensors are safetensors, the rest JSON.

Loading trusts nothing in the folder: ``latest.json`` and the epoch's JSON are validated
(:class:`kdlab.records.CheckpointPointer`, :class:`kdlab.records.CheckpointMeta`), the JSON must
match ``meta_sha256`` and the tensors ``tensors_sha256``, the tensors file may be at most 5× the
model's size (+16 MiB), and every tensor must have the name, shape and dtype the model, the
optimizer and the generator states expect. A ``latest.json`` of format 1 (no ``meta_sha256``,
written before kdlab checked it) is still accepted, its JSON checked by the schema only.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdlab.errors import CheckpointError
from kdlab.io import atomic_write_bytes, atomic_write_json, dtype_name, safetensors_bytes
from kdlab.records import (
    CHECKPOINT_FORMAT,
    CheckpointMeta,
    CheckpointPointer,
    check_record,
    parse_json_record,
    read_json_record,
    read_record_bytes,
)
from kdlab.train.reproduce import capture_rng
from kdlab.version import __version__

FORMAT_VERSION = CHECKPOINT_FORMAT
POINTER = "latest.json"


@dataclass
class FitState:
    """Where an arm's training stands after ``epoch`` complete epochs.

    Attributes:
        epoch: complete epochs (0 = not started); :func:`~kdlab.train.loop.fit` resumes at ``epoch + 1``.
        history: the per-epoch rows so far.
        best_epoch, best_accuracy, best_weights: the ``select="best-val"`` bookkeeping: the epoch
            with the highest validation accuracy so far and a copy of its weights.
        rng: generator states at the end of ``epoch`` (:func:`kdlab.train.reproduce.capture_rng`).
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

    @property
    def hint(self) -> str:
        """How to get past a damaged checkpoint, appended to every error about one."""
        return f"damaged checkpoint — delete {self.folder} to restart that arm"

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: FitState) -> Path:
        """Write the checkpoint of ``state.epoch``; returns the pointer file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tensors, meta = _flatten(model, optimizer, state)
        stem = f"epoch-{state.epoch:04d}"
        blob = safetensors_bytes(tensors, {"arm": self.arm, "epoch": str(state.epoch)})
        meta.update(arm=self.arm, kdlab_version=__version__, tensors_sha256=hashlib.sha256(blob).hexdigest())
        atomic_write_bytes(self.folder / f"{stem}.safetensors", blob)
        atomic_write_json(self.folder / f"{stem}.json", meta)
        # The checksum of the JSON as written (whatever the JSON writer's choices), read back.
        meta_sha256 = hashlib.sha256((self.folder / f"{stem}.json").read_bytes()).hexdigest()
        # The switch: before this rename readers see the previous pair, after it the new one.
        atomic_write_json(
            self.folder / POINTER,
            {
                "format": FORMAT_VERSION,
                "epoch": state.epoch,
                "tensors": f"{stem}.safetensors",
                "meta": f"{stem}.json",
                "meta_sha256": meta_sha256,
            },
        )
        for old in self.folder.glob("epoch-*"):
            if not old.name.startswith(stem + "."):
                old.unlink(missing_ok=True)
        return self.folder / POINTER

    def latest_epoch(self) -> int | None:
        """The epoch of the checkpoint ``latest.json`` points at, or None when there is none."""
        if not self.exists():
            return None
        return self._pointer().epoch

    def verify(self) -> CheckpointMeta:
        """Check ``latest.json`` and the epoch's JSON (schema, checksum) without a model; returns the JSON.

        Raises:
            CheckpointError: one line naming the file and the field, and how to restart the arm.
        """
        return self._read_meta()[1]

    def _read_meta(self) -> tuple[CheckpointPointer, CheckpointMeta, dict[str, Any]]:
        pointer = self._pointer()
        meta_path = self.folder / pointer.meta
        data = read_record_bytes(meta_path, error=CheckpointError, hint=self.hint)
        if pointer.meta_sha256 is not None and hashlib.sha256(data).hexdigest() != pointer.meta_sha256:
            raise CheckpointError(f"{meta_path}: does not match the sha256 in {POINTER} (edited?); {self.hint}")
        raw = parse_json_record(data, meta_path, error=CheckpointError, hint=self.hint)
        meta = check_record(CheckpointMeta, raw, meta_path, error=CheckpointError, hint=self.hint)
        if meta.epoch != pointer.epoch or meta.arm != self.arm:
            raise CheckpointError(
                f"{meta_path}: holds {meta.arm} epoch {meta.epoch}, {POINTER} names {self.arm} epoch {pointer.epoch}; "
                f"{self.hint}"
            )
        return pointer, meta, raw

    def load(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> FitState:
        """Load the latest checkpoint into ``model`` and ``optimizer``; returns its :class:`FitState`.

        Everything is checked before anything is loaded: the JSON against its schema and its
        sha256 in ``latest.json``, the tensors file against its size bound and sha256, and every
        tensor's name, shape and dtype against the model, the optimizer and the generator states.
        """
        pointer, meta, raw = self._read_meta()  # raw: the validated JSON as written (strict: nothing coerced)
        tensors_path = self.folder / pointer.tensors
        # model + best weights + two optimizer moments, and room for the small tensors
        limit = 5 * sum(t.numel() * t.element_size() for t in model.state_dict().values()) + 16 * 2**20
        kind = f"a checkpoint of this {self.arm} model"
        blob = read_record_bytes(tensors_path, limit=limit, error=CheckpointError, hint=self.hint, kind=kind)
        if hashlib.sha256(blob).hexdigest() != meta.tensors_sha256:
            raise CheckpointError(f"{tensors_path}: does not match {pointer.meta}; {self.hint}")
        from safetensors import SafetensorError
        from safetensors.torch import load

        try:
            tensors = load(blob)
        except (SafetensorError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{tensors_path}: not a readable safetensors file ({e}); {self.hint}") from None
        del blob
        self._check_tensors(tensors_path, tensors, meta, model, optimizer)
        try:
            model.load_state_dict(_prefixed(tensors, "model."))
            optimizer.load_state_dict(_optimizer_state(tensors, raw))
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(
                f"{self.folder}: checkpoint does not fit the {self.arm} model or optimizer ({str(e)[:200]})"
            ) from None
        rng = {
            "torch": tensors["rng.torch"],
            "cuda": [tensors[f"rng.cuda.{i}"] for i in range(meta.rng.cuda_count)],
            "numpy": list(meta.rng.numpy),
            "python": list(meta.rng.python),
        }
        best = _prefixed(tensors, "best.") if meta.best_epoch is not None else None
        return FitState(
            epoch=meta.epoch,
            history=raw["history"],
            best_epoch=meta.best_epoch,
            best_accuracy=meta.best_accuracy,
            best_weights=best,
            rng=rng,
            teacher_cache=meta.teacher_cache,
        )

    def _check_tensors(
        self,
        path: Path,
        tensors: dict[str, Tensor],
        meta: CheckpointMeta,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
    ) -> None:
        """Every tensor of the file is one the arm expects, of the expected shape and dtype."""
        own = model.state_dict()
        params = [p for group in optimizer.param_groups for p in group["params"]]
        groups = [list(g["params"]) for g in optimizer.state_dict()["param_groups"]]
        if [g.params for g in meta.optimizer.param_groups] != groups:
            raise CheckpointError(
                f"{path.with_suffix('.json')}: optimizer.param_groups: do not fit the {self.arm} optimizer "
                f"({len(params)} parameters in {len(groups)} group(s)); {self.hint}"
            )
        for idx in meta.optimizer.scalars:
            if int(idx) >= len(params):
                raise CheckpointError(
                    f"{path.with_suffix('.json')}: optimizer.scalars.{idx}: the {self.arm} optimizer has "
                    f"{len(params)} parameters; {self.hint}"
                )
        expected: dict[str, tuple[torch.dtype, tuple[int, ...]] | None] = {}
        best: dict[str, tuple[torch.dtype, tuple[int, ...]]] = {}
        for k, v in own.items():
            expected[f"model.{k}"] = (v.dtype, tuple(v.shape))
            # The best-validation weights are the trained network's own: the checkpointed module
            # itself, or the student inside it when a feature method adds projectors beside it.
            best[f"best.{k}"] = best[f"best.{k.partition('.')[2]}"] = (v.dtype, tuple(v.shape))
        if meta.best_epoch is not None and not any(k.startswith("best.") for k in tensors):
            raise CheckpointError(f"{path}: best.*: missing (best_epoch is {meta.best_epoch}); {self.hint}")
        expected["rng.torch"] = (torch.uint8, tuple(torch.get_rng_state().shape))
        for i in range(meta.rng.cuda_count):
            expected[f"rng.cuda.{i}"] = None  # a CUDA generator state: uint8, one dimension
        for key in list(expected):
            if key not in tensors:
                raise CheckpointError(f"{path}: {key}: missing; {self.hint}")
        for key, t in tensors.items():
            want: tuple[torch.dtype, tuple[int, ...]] | None
            if key.startswith("optim.state."):
                idx, _, name = key[len("optim.state.") :].partition(".")
                if not idx.isdigit() or int(idx) >= len(params) or not name:
                    raise CheckpointError(f"{path}: {key[:80]}: not a state of the {self.arm} optimizer; {self.hint}")
                param = params[int(idx)]
                if name == "step":
                    if t.numel() != 1 or not t.is_floating_point():
                        raise CheckpointError(f"{path}: {key}: a step count is one float; {self.hint}")
                    continue
                want = (param.dtype, tuple(param.shape))
            elif key.startswith("best.") and meta.best_epoch is not None and key in best:
                want = best[key]
            elif key not in expected:
                raise CheckpointError(f"{path}: {key[:80]}: not a tensor of a {self.arm} checkpoint; {self.hint}")
            else:
                want = expected[key]
            if want is None:
                if t.dtype != torch.uint8 or t.dim() != 1:
                    raise CheckpointError(f"{path}: {key}: a generator state is 1-D U8; {self.hint}")
            elif (t.dtype, tuple(t.shape)) != want:
                raise CheckpointError(
                    f"{path}: {key}: {dtype_name(t.dtype)} {list(t.shape)}, the {self.arm} model's is "
                    f"{dtype_name(want[0])} {list(want[1])}; {self.hint}"
                )

    def remove(self) -> None:
        """Delete the folder (once the arm's final weights and results are recorded)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.folder.parent.rmdir()  # the checkpoints/ folder, once no arm has one left

    def _pointer(self) -> CheckpointPointer:
        path = self.folder / POINTER
        raw = read_json_record(path, error=CheckpointError, hint=self.hint)
        return check_record(CheckpointPointer, raw, path, error=CheckpointError, hint=self.hint)


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
