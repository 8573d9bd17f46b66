"""How a lab run uses its machine: device, process group, precision, data residency, training
loaders with augmentation, and the teacher-logit cache. :func:`kdlab.lab.run.run_lab` asks this module
and records :meth:`Runtime.record` in ``results.json`` (key ``performance``).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdlab.config.schema import DistillConfig, ExperimentConfig
from kdlab.data.augment import build_augment
from kdlab.data.mapped import MappedRows
from kdlab.data.memory import GB
from kdlab.data.tensors import Batch, Split, TensorLoader
from kdlab.train import accel, distributed, teacher_cache
from kdlab.train.loop import resolve_device

TRAINING_SPLITS = ("train", "transfer", "teacher_train")
"""The splits models train on: the labelled budget, it plus the transfer set (distilled arms), and
every labelled sample (``teacher.train_on: all``)."""


@dataclass(frozen=True)
class TeacherInputs:
    """What the teacher-cache pass runs on: the teacher's view of the training split (rows in the
    student's order, looked up by sample index), that view's record (None: the data's own view,
    fingerprinted as before) and whether the live teacher may answer the student's batches (only
    when both models see the same inputs)."""

    train: Split
    view: dict[str, Any] | None
    live_ok: bool


@dataclass
class Runtime:
    """Per-run decisions (one object per :func:`~kdlab.lab.run.run_lab` call)."""

    cfg: ExperimentConfig
    device: torch.device
    dist: distributed.DistInfo
    accel: accel.Accel
    scratch_dir: Path | None = None
    train_on_device: bool = True
    train_data: str = "device"
    """Where the training inputs live, for results.json: device, host (streamed) or memory-mapped."""
    cache: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, cfg: ExperimentConfig) -> Runtime:
        """Resolve the device, join the torchrun process group if launched by it, plan precision."""
        here, device = distributed.setup(resolve_device(cfg.device))
        plan = accel.plan(device, precision=cfg.train.precision, compile=cfg.train.compile)
        if device.type == "cpu" and cfg.train.host_allocator == "auto":
            accel.tune_host_allocator()
        # Ranks other than 0 write nothing the user sees: their run folder is a throwaway one.
        scratch = None if here.is_main else Path(tempfile.mkdtemp(prefix=f"kdlab-rank{here.rank}-"))
        return cls(cfg, device, here, plan, scratch)

    def out_dir(self, out: Path) -> Path:
        return self.scratch_dir if self.scratch_dir is not None else out

    def finish(self) -> None:
        distributed.teardown()
        if self.scratch_dir is not None:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)

    # ------------------------------------------------------------------ data
    def place(self, splits: dict[str, Split]) -> dict[str, Split]:
        """Splits on the device; training splits (``train``, and ``transfer`` / ``teacher_train``
        when given) over ``data.max_memory_gb`` stay in host memory. Memory-mapped rows
        (:class:`~kdlab.data.mapped.MappedRows`: decoded images over the budget) stay mapped on a CPU
        run; on a GPU a split under the budget is copied to the device block by block, one over it
        stays mapped and each batch is gathered from the map and sent."""
        trained = [k for k in TRAINING_SPLITS if k in splits]
        size = max(splits[k].x.numel() * splits[k].x.element_size() for k in trained)
        self.train_on_device = self.device.type == "cpu" or size <= self.cfg.data.max_memory_gb * GB
        out = {k: s.to(self.device) for k, s in splits.items() if k not in trained}
        for k in trained:
            out[k] = splits[k].to(self.device) if self.train_on_device else splits[k]
        if any(isinstance(splits[k].x, MappedRows) for k in trained):
            self.train_data = "memory-mapped (gathered per batch)"
        else:
            self.train_data = "device" if self.train_on_device else "host (streamed per batch)"
        return out

    def train_loader(self, split: Split, seed: int) -> TensorLoader:
        aug = self.cfg.train.augment
        return TensorLoader(
            split.x,
            split.y,
            batch_size=self.cfg.train.batch_size,
            shuffle=True,
            seed=seed,
            augment=build_augment(hflip=aug.hflip, crop_padding=aug.crop_padding),
            batch_device=self.device,
        )

    # ------------------------------------------------------------------ models
    def prepare(self, model: nn.Module) -> nn.Module:
        return accel.prepare_model(model.to(self.device), self.accel)

    # ------------------------------------------------------------------ teacher cache
    def teacher_fn(
        self,
        settings: DistillConfig,
        objective: Any,
        teacher: nn.Module,
        inputs: TeacherInputs,
        live: Callable[[Batch], Tensor],
        say: Callable[[str], None],
    ) -> Callable[[Batch], Tensor] | None:
        """The distillation arm's teacher function: a cache lookup when valid, else None (live).

        ``settings`` are the arm's own distill settings (a comparison's arms differ), so
        ``kdlab compare -m kd:teacher_cache=off`` runs that arm's teacher live. ``inputs`` is what
        the cache pass runs on (:class:`TeacherInputs`); ``live`` answers a batch the cache cannot.
        """
        cfg = settings
        aug = self.cfg.train.augment
        train, view = inputs.train, inputs.view  # the cache pass runs on the teacher's own view of the samples
        fallback = live if inputs.live_ok else None  # else the student's batches are not what the teacher sees
        use, reason = teacher_cache.decide(cfg.teacher_cache, objective=objective, augment_random=aug.random)
        if not use:
            if cfg.teacher_cache == "auto" and reason and getattr(objective, "uses_teacher", True):
                say(f"teacher cache off: {reason}; the teacher runs on every batch")
            self.cache = teacher_cache.CacheRecord("off", reason=reason).as_dict()
            return None
        preprocessing = teacher_cache.preprocessing_of(train.x, aug.model_dump())
        if view is not None:
            preprocessing["view"] = view  # a cache built for one view is never used for another
        cache, record = teacher_cache.build(
            teacher,
            train.x,
            preprocessing=preprocessing,
            dtype=cfg.teacher_cache_dtype,
            cache_dir=cfg.teacher_cache_dir,
            device=self.device,
            batch_size=self.cfg.train.eval_batch_size,
            fallback=fallback,
        )
        self._record = record
        self.cache = record.as_dict()
        seconds = record.build_seconds if record.status == "miss" else record.load_seconds
        say(f"teacher cache {record.status}: {len(cache)} logits ({seconds or 0:.1f} s)")
        return cache

    def link_cache(self, run_dir: Path) -> None:
        record = getattr(self, "_record", None)
        if record is not None and self.dist.is_main:
            teacher_cache.link_into(run_dir, record)
            self.cache = record.as_dict()

    def record(self) -> dict[str, Any]:
        """The ``performance`` section of results.json."""
        return {
            **self.accel.record(),
            "world_size": self.dist.world,
            "train_data": self.train_data,
            "augment": self.cfg.train.augment.model_dump(),
            "threads": torch.get_num_threads(),
            "host_allocator": accel.host_allocator(),
        }
