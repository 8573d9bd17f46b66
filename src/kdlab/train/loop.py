"""The one training loop. Teacher training, scratch training and distillation all run here and
differ only in the :class:`~kdlab.kd.objective.Objective` (and whether a teacher function is given).

Per epoch the loop records, in one history row: the training objective and each of its parts
(``train_loss``, ``train_ce``, ``train_kd``), training accuracy (running, over the epoch, with
dropout on, as Keras reports it), validation loss and accuracy (cross-entropy, eval mode),
wall-clock seconds and samples per second.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from kdlab.data.tensors import Batch, Loader, TensorLoader, as_loader
from kdlab.errors import ConfigError, NonFiniteLossError, RunInterrupted, TrainingError
from kdlab.kd import losses
from kdlab.kd.objective import Objective
from kdlab.train import distributed, metrics
from kdlab.train.accel import autocast
from kdlab.train.checkpoint import FitState
from kdlab.train.reproduce import restore_rng

TeacherFn = Callable[[Batch], Tensor]
"""Returns the teacher's logits for a batch (a live forward pass or a cache lookup)."""


class Progress(Protocol):
    """What the loop reports to (the CLI's rich bars implement it)."""

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...

    def step(self) -> None: ...

    def epoch_end(self, row: dict[str, Any]) -> None: ...


class History(list[dict[str, Any]]):
    """Per-epoch rows, plus which epoch's weights the model holds after :func:`fit`."""

    selected_epoch: int | None = None


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> cuda if available, else mps, else cpu; an unavailable device is a ConfigError."""
    if isinstance(name, torch.device):
        return name
    name = name or "auto"
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda requested but no CUDA GPU is available; use device=auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device: mps requested but not available on this machine; use device=auto or cpu")
    if name not in {"cpu", "cuda", "mps"} and not name.startswith("cuda:"):
        raise ConfigError(f"device: unknown device '{name}' (auto, cpu, cuda, mps)")
    return torch.device(name)


def make_optimizer(
    params: Any, *, name: str = "adam", lr: float = 1e-3, weight_decay: float = 0.0, fused: bool = False
) -> torch.optim.Optimizer:
    """Adam (the labs' choice), AdamW or SGD with momentum 0.9; ``fused`` picks the one-kernel
    Adam/AdamW step (CUDA)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)
    raise ConfigError(f"train.optimizer: unknown optimizer '{name}' (adam, adamw, sgd)")


@dataclass(frozen=True)
class StepOptions:
    """How every training step runs (:func:`train_epoch`): NaN/inf handling, gradient clipping,
    the stop request asked at each step boundary, and the forward pass's precision."""

    nonfinite: str = "stop"
    grad_clip: float | None = None
    should_stop: Callable[[], bool] | None = None
    precision: str = "float32"


def train_epoch(
    model: nn.Module,
    objective: Objective,
    loader: Loader,
    optimizer: torch.optim.Optimizer,
    *,
    teacher: TeacherFn | None = None,
    progress: Progress | None = None,
    steps: StepOptions = StepOptions(),
) -> dict[str, float]:
    """One pass over ``loader``: forward, objective, backward, step. Returns epoch means.

    ``steps`` (:class:`StepOptions`): ``nonfinite`` is what a NaN/inf loss does: ``"stop"``
    raises :class:`NonFiniteLossError`, ``"skip-batch"`` skips that update and counts it in
    ``skipped_batches``. ``grad_clip`` rescales the gradients so their global L2 norm is at most
    that value. ``should_stop`` is asked before every step; when it answers True the epoch is
    abandoned with :class:`RunInterrupted`. ``precision="bfloat16"`` autocasts the forward pass
    (the objective computes in float32). In a process group the sums are added over ranks, so the
    means are global.
    """
    if objective.uses_teacher and teacher is None:
        raise ValueError(f"objective '{objective.name}' needs a teacher")
    nonfinite, grad_clip, should_stop, precision = steps.nonfinite, steps.grad_clip, steps.should_stop, steps.precision
    if nonfinite not in {"stop", "skip-batch"}:
        raise ConfigError(f"train.nonfinite: must be 'stop' or 'skip-batch' (got {nonfinite!r})")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    skipped = 0
    model.train()
    # Sums stay on the device as tensors: reading a number (.item()) every step would force a
    # device sync per batch; one sync per epoch is enough.
    sums: dict[str, Tensor] = {}
    correct: Tensor | int = 0
    labelled: Tensor | int = 0  # with a transfer set, accuracy is over the labelled samples only
    partial = objective.partial_labels
    samples = n_steps = 0
    device = next(model.parameters()).device
    for step, batch in enumerate(loader, start=1):
        if should_stop is not None and should_stop():
            raise RunInterrupted()
        teacher_logits = teacher(batch) if objective.uses_teacher and teacher is not None else None
        with autocast(device, precision):
            logits = model(batch.x)
        parts = objective(logits, batch.y, teacher_logits)
        # One host sync per step (free on a CPU, a small stall per step on a GPU): a NaN caught
        # here never reaches the weights.
        if not bool(torch.isfinite(parts["total"])):
            if nonfinite == "stop":
                lr = float(optimizer.param_groups[0].get("lr", float("nan")))
                raise NonFiniteLossError(value=float(parts["total"].detach()), step=step, lr=lr)
            skipped += 1
            if progress is not None:
                progress.step()
            continue
        optimizer.zero_grad(set_to_none=True)
        parts["total"].backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        n = len(batch.y)
        with torch.no_grad():
            for key, value in parts.items():
                sums[key] = sums[key] + value.detach() * n if key in sums else value.detach() * n
            correct = correct + (logits.argmax(dim=-1) == batch.y).sum()  # an UNLABELED (-1) never matches
            if partial:
                labelled = labelled + (batch.y != losses.UNLABELED).sum()
        samples += n
        n_steps += 1
        if progress is not None:
            progress.step()
    if samples == 0 and skipped:
        raise TrainingError(f"all {skipped} batches of the epoch had a non-finite loss: lower train.lr")
    if samples == 0:
        raise ValueError("the training data produced no batches")
    if distributed.active():
        # One all-reduce per epoch: the parts' sums, correct count and sample count of every rank.
        keys = list(sums)
        counts = [torch.as_tensor(c, device=device).float() for c in (correct, labelled)]
        packed = torch.stack([*(sums[k].float() for k in keys), *counts])
        packed = torch.cat([packed, torch.tensor([float(samples)], device=device)])
        packed = distributed.all_reduce_sum(packed)
        sums = dict(zip(keys, packed[: len(keys)], strict=True))
        correct, labelled, samples = packed[len(keys)], packed[len(keys) + 1], int(packed[-1].item())
    row = {("train_loss" if k == "total" else f"train_{k}"): float(v) / samples for k, v in sums.items()}
    if partial:
        row["labelled_samples"] = int(labelled)
        row["train_accuracy"] = float(correct) / max(int(labelled), 1)
    else:
        row["train_accuracy"] = float(correct) / samples
    row["steps"] = n_steps
    row["samples"] = samples
    if nonfinite == "skip-batch":
        row["skipped_batches"] = skipped
    return row


@torch.no_grad()
def predict(model: nn.Module, loader: Loader) -> tuple[Tensor, Tensor]:
    """Logits and labels of every sample of ``loader``, in loader order, model in eval mode."""
    was_training = model.training
    model.eval()
    try:
        outs, ys = [], []
        for batch in loader:
            outs.append(model(batch.x).float())
            ys.append(batch.y)
    finally:
        model.train(was_training)
    if not outs:
        raise ValueError("the evaluation data produced no batches")
    return torch.cat(outs), torch.cat(ys)


def evaluate(
    model: nn.Module,
    data: Any,
    *,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> dict[str, float]:
    """Cross-entropy loss and accuracy of ``model`` on ``data`` (any form :func:`as_loader` takes)."""
    dev = resolve_device(device) if device is not None else _model_device(model)
    logits, y = predict(model, as_loader(data, batch_size=batch_size, device=dev))
    return {
        "loss": float(losses.cross_entropy(logits, y)),
        "accuracy": metrics.accuracy(logits, y),
    }


def fit(
    model: nn.Module,
    train: Any,
    val: Any = None,
    *,
    epochs: int = 1,
    objective: Objective | None = None,
    teacher: TeacherFn | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    lr: float = 1e-3,
    batch_size: int = 32,
    eval_batch_size: int = 512,
    seed: int | None = 0,
    device: str | torch.device | None = None,
    select: str = "last",
    progress: Progress | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    state: FitState | None = None,
    nonfinite: str = "stop",
    grad_clip: float | None = None,
    should_stop: Callable[[], bool] | None = None,
    precision: str = "float32",
    compile: bool = False,
    verbose: int = 1,
) -> History:
    """Train ``model`` for ``epochs`` and return the per-epoch :class:`History`.

    Args:
        model: the network being trained (a teacher or a student).
        train, val: a DataLoader, re-iterable ``(x, y)`` batches, or an ``(X, y)`` pair (batched
            with ``batch_size`` and reshuffled every epoch, seeded).
        objective: what to minimize; default plain cross-entropy.
        teacher: teacher-logits function, required when the objective uses a teacher.
        optimizer: default Adam(lr) over ``model``'s trainable parameters.
        seed: seeds data order and dropout (None leaves the global RNG alone).
        select: ``"last"`` keeps the final weights; ``"best-val"`` restores the epoch with the best
            validation accuracy (validation data only, never the test set).
        on_epoch_end: called with ``(epoch, row)`` after each epoch (checkpoints, logs); ``state``
            is up to date by then.
        state: the training state to start from and keep up to date (:class:`FitState`). Training
            resumes after ``state.epoch`` complete epochs, with its history, best-val bookkeeping
            and generator states; the model and optimizer must already hold that epoch's weights
            (:meth:`kdlab.train.checkpoint.ArmCheckpoint.load`). A fresh state starts at epoch 1.
        nonfinite, grad_clip, should_stop: see :func:`train_epoch`.
        on_epoch_end: called with ``(epoch, row)`` after each epoch (checkpoints, logs).
        precision: ``"float32"`` or ``"bfloat16"`` (autocast of the training forward pass).
        compile: train through ``torch.compile(model)`` (``model`` itself stays uncompiled).
        progress, verbose: what the epochs are reported to. Without ``progress``, like Keras:
            ``verbose=1`` a progress bar per epoch in a terminal or notebook, one line per epoch
            elsewhere (pipes, logs); ``2`` one line per epoch always; ``0`` nothing.

    Under ``torchrun`` (an initialized process group) the trained model is wrapped in
    DistributedDataParallel and a :class:`TensorLoader` yields this rank's shard of each batch.
    """
    progress = progress_for(progress, verbose)
    train_loader, val_loader = user_loaders(
        model, train, val, batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed, device=device
    )
    if optimizer is None:
        optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], lr=lr)
    return run_epochs(
        model,
        train_loader,
        val_loader,
        optimizer=optimizer,
        epochs=epochs,
        seed=seed,
        objective=objective,
        teacher=teacher,
        select=select,
        state=state,
        steps=StepOptions(nonfinite=nonfinite, grad_clip=grad_clip, should_stop=should_stop, precision=precision),
        compile=compile,
        progress=progress,
        on_epoch_end=on_epoch_end,
    )


def user_loaders(
    model: nn.Module,
    train: Any,
    val: Any,
    *,
    batch_size: int,
    eval_batch_size: int,
    seed: int | None,
    device: str | torch.device | None,
) -> tuple[Loader, Loader | None]:
    """What the public entry points (:func:`fit`, :meth:`kdlab.Distiller.fit`) do with user data:
    move ``model`` to ``device`` (default: where its first parameter is), and turn ``train`` /
    ``val`` into loaders on it — ``train`` reshuffled every epoch with ``seed``."""
    dev = resolve_device(device) if device is not None else _model_device(model)
    model.to(dev)
    train_loader = as_loader(train, batch_size=batch_size, shuffle=True, seed=seed or 0, device=dev)
    return train_loader, None if val is None else as_loader(val, batch_size=eval_batch_size, device=dev)


def progress_for(progress: Progress | None, verbose: int) -> Progress | None:
    """``progress`` when given, else Keras-like reporting by ``verbose``: 1 a bar per epoch in a
    terminal or notebook (one line per epoch elsewhere), 2 one line per epoch, 0 nothing."""
    if verbose not in (0, 1, 2):
        raise ConfigError(f"verbose: must be 0 (silent), 1 (progress bar) or 2 (one line per epoch), got {verbose!r}")
    if progress is None and verbose:
        from kdlab.train.progress import default_progress

        return default_progress(verbose)
    return progress


def run_epochs(
    model: nn.Module,
    train_loader: Loader,
    val_loader: Loader | None,
    *,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    seed: int | None = None,
    objective: Objective | None = None,
    teacher: TeacherFn | None = None,
    select: str = "last",
    state: FitState | None = None,
    steps: StepOptions = StepOptions(),
    compile: bool = False,
    progress: Progress | None = None,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> History:
    """The epochs themselves, on loaders already built and a model already on its device — what
    :func:`fit` (which turns user data into loaders), :meth:`kdlab.Distiller.run_epochs` and the
    lab (which builds its loaders once per run) call. Arguments as in :func:`fit`; ``seed`` seeds
    the global RNG (dropout) first; resumes after ``state.epoch`` complete epochs."""
    if epochs < 1:
        raise ConfigError(f"epochs: must be >= 1 (got {epochs})")
    if select not in {"last", "best-val"}:
        raise ConfigError(f"train.select: must be 'last' or 'best-val' (got {select!r})")
    if seed is not None:
        torch.manual_seed(seed)
    objective = objective or Objective.cross_entropy()
    state = state if state is not None else FitState()
    if state.epoch > epochs:
        raise ConfigError(f"resume: the checkpoint is at epoch {state.epoch} but training asks for {epochs} epochs")
    if state.epoch > 0:
        # The order of epoch e depends only on (seed, e): skip the finished epochs' orders.
        if isinstance(train_loader, TensorLoader):
            train_loader.epoch = state.epoch
        if state.rng is not None:
            restore_rng(state.rng)
    trained = _training_module(model, train_loader, _model_device(model), compile)
    history = History(state.history)
    for epoch in range(state.epoch + 1, epochs + 1):
        objective.set_epoch(epoch - 1)
        if progress is not None:
            progress.epoch_start(epoch, epochs, len(train_loader))
        start = time.perf_counter()
        row: dict[str, Any] = {"epoch": epoch}
        try:
            row.update(
                train_epoch(
                    trained,
                    objective,
                    train_loader,
                    optimizer,
                    teacher=teacher,
                    progress=progress,
                    steps=steps,
                )
            )
        except NonFiniteLossError as e:
            raise NonFiniteLossError(value=e.value, step=e.step, epoch=epoch, lr=e.lr) from None
        row["seconds"] = time.perf_counter() - start
        row["samples_per_s"] = row["samples"] / row["seconds"] if row["seconds"] > 0 else float("nan")
        if val_loader is not None:
            logits, y = predict(model, val_loader)
            row["val_loss"] = float(losses.cross_entropy(logits, y))
            row["val_accuracy"] = metrics.accuracy(logits, y)
            if select == "best-val":
                state.update_best(epoch, row["val_accuracy"], model)
        history.append(row)
        state.end_epoch(epoch, row)
        if progress is not None:
            progress.epoch_end(row)
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    history.selected_epoch = epochs
    if state.best_weights is not None and state.best_epoch != epochs:
        model.load_state_dict(state.best_weights)
        history.selected_epoch = state.best_epoch
    return history


def _training_module(model: nn.Module, loader: Loader, device: torch.device, compile: bool) -> nn.Module:
    """What the training steps call: ``model``, or a DDP wrapper / compiled view sharing its weights."""
    trained = model
    if distributed.active():
        from torch.nn.parallel import DistributedDataParallel

        here = distributed.info()
        if isinstance(loader, TensorLoader):
            loader.shard = (here.rank, here.world)
        # Only this model is wrapped (in distillation the student): the frozen teacher needs no
        # gradient averaging. DDP broadcasts rank 0's weights, so all ranks start identical.
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if compile:
        trained = torch.compile(trained)  # type: ignore[assignment]
    return trained


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")
