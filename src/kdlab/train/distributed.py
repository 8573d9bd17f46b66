"""Data-parallel training across processes started by ``torchrun``.

``torchrun --nproc-per-node N -m kdlab run ...`` starts N copies of kdlab with the environment
variables ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``. kdlab then:

* joins the process group (``nccl`` on CUDA, each rank on GPU ``LOCAL_RANK``; ``gloo`` on CPU);
* wraps only the model being trained in ``DistributedDataParallel`` (in distillation: the
  student; the frozen teacher is never wrapped), so gradients are averaged across ranks;
* gives every rank the same epoch permutation and, per step, the rank's part
  ``batch[rank::world]`` of the global batch (``train.batch_size`` is the global batch);
* sums the epoch metrics over ranks (one all-reduce per epoch), so every rank sees the global means;
* lets only rank 0 print and write the run folder and the shared teacher-logit cache.

Without those variables (or with ``WORLD_SIZE=1``) nothing here does anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the group."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def requested() -> bool:
    """True when started by torchrun (or any launcher setting ``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch_rank() -> int:
    """This process's rank as set by the launcher (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


def active() -> bool:
    """True inside an initialized process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def info() -> DistInfo:
    """Rank and world size of this process (``DistInfo()`` when not distributed)."""
    if not active():
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def setup(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group described by the torchrun environment; returns this rank's device.

    On CUDA each rank takes GPU ``LOCAL_RANK`` and the ``nccl`` backend; elsewhere ``gloo``.
    Calling it again, or without torchrun's variables, only returns the current state.
    """
    if not requested():
        return DistInfo(), device
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    here = info()
    if device.type == "cuda":
        device = torch.device("cuda", here.local_rank)
        torch.cuda.set_device(device)
    return here, device


def teardown() -> None:
    """Leave the process group (after a last barrier so no rank exits while others still talk)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum ``t`` over ranks (a no-op outside a process group)."""
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_rows(local: Tensor, total: int) -> Tensor:
    """Reassemble a ``[total, ...]`` tensor whose rows ``rank::world`` each rank computed.

    ``local`` holds rows ``rank, rank + world, ...`` of this rank; the result, identical on all
    ranks, holds every row in order.
    """
    if not active():
        return local
    world = dist.get_world_size()
    size = -(-total // world)  # ceil: every rank pads to the longest shard
    padded = local.new_zeros((size, *local.shape[1:]))
    padded[: len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    out = local.new_empty((total, *local.shape[1:]))
    for r, part in enumerate(parts):
        rows = len(range(r, total, world))
        out[r::world] = part[:rows]
    return out
