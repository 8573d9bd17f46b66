"""Metrics of a trained classifier beyond accuracy, as pure functions of logits (plus two that
measure a model: its size on disk and its inference latency).

* top-1 agreement with the teacher: share of samples where ``argmax s = argmax t``;
* ``KL(teacher ‖ student)`` at T = 1, averaged over the samples (:func:`kdlab.kd.losses.kd_loss`);
* expected calibration error (Guo et al., "On Calibration of Modern Neural Networks", 2017) with
  15 equal-width confidence bins ``(b/15, (b+1)/15]``:
  ``ECE = Σ_b (|B_b| / N) · |acc(B_b) − conf(B_b)|``, confidence = the top softmax probability;
* the confusion matrix (rows = true class, columns = predicted class);
* parameters, bytes of the weights file, and latency: median wall-clock time of a forward pass of
  one sample and of a batch of 32, after warm-up passes, on the model's device.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from kdlab.kd import losses
from kdlab.models.registry import count_params

ECE_BINS = 15


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy: share of samples whose highest logit is the label."""
    return float((logits.argmax(-1) == labels).float().mean())


def teacher_agreement(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """Share of samples where student and teacher predict the same class (top-1)."""
    return float((student_logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean())


def kl_to_teacher(student_logits: Tensor, teacher_logits: Tensor) -> float:
    """``(1/N) Σ_i KL(softmax(t_i) ‖ softmax(s_i))`` in nats, at temperature 1, no T² factor."""
    return float(losses.kd_loss(student_logits, teacher_logits, temperature=1.0, t_squared=False))


def expected_calibration_error(logits: Tensor, labels: Tensor, *, bins: int = ECE_BINS) -> float:
    """ECE over ``bins`` equal-width confidence bins (see the module docstring); 0 = calibrated."""
    probs = losses.softmax_probs(logits)
    conf, pred = probs.max(dim=-1)
    correct = (pred == labels).double()
    conf = conf.double()
    # Bin b holds confidences in (b/bins, (b+1)/bins]; ceil maps the right edge into its own bin.
    idx = (torch.ceil(conf * bins).long() - 1).clamp(0, bins - 1)
    n = len(labels)
    ece = 0.0
    for b in range(bins):
        mask = idx == b
        count = int(mask.sum())
        if count:
            ece += count / n * abs(float(correct[mask].mean()) - float(conf[mask].mean()))
    return ece


def confusion_matrix(logits: Tensor, labels: Tensor, num_classes: int) -> list[list[int]]:
    """``m[i][j]`` = samples of true class ``i`` predicted as class ``j``."""
    from sklearn.metrics import confusion_matrix as sk_confusion

    pred = logits.argmax(-1).cpu().numpy()
    return sk_confusion(labels.cpu().numpy(), pred, labels=list(range(num_classes))).tolist()


def parameter_count(model: nn.Module) -> int:
    """All parameters of ``model`` (trainable or not)."""
    return count_params(model)


def size_on_disk(path: Path) -> int:
    """Bytes of a file (the saved weights)."""
    return os.stat(path).st_size


@torch.no_grad()
def inference_latency(
    model: nn.Module,
    inputs: Tensor,
    *,
    batch_sizes: tuple[int, ...] = (1, 32),
    warmup: int = 3,
    repeats: int = 15,
    budget_seconds: float = 2.0,
) -> dict[str, float]:
    """Median milliseconds of one forward pass per batch size, after ``warmup`` untimed passes.

    Runs in eval mode on the model's device (CUDA is synchronized around each pass). At least
    three and at most ``repeats`` timed passes per batch size, stopping early once
    ``budget_seconds`` is spent, so a large model on a CPU does not stall a run.

    Returns:
        ``{"latency_ms_per_sample": ..., "latency_ms_per_batch32": ...}`` (keys follow
        ``batch_sizes``: batch 1 is "per_sample", batch ``b`` is "per_batch{b}").
    """
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), inputs.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out: dict[str, float] = {}
    try:
        for bs in batch_sizes:
            reps = -(-bs // len(inputs))  # repeat the examples when fewer than the batch size
            x = inputs.repeat(reps, *([1] * (inputs.dim() - 1)))[:bs].to(device)
            for _ in range(warmup):
                model(x)
            sync()
            times: list[float] = []
            start_all = time.perf_counter()
            while len(times) < repeats and (len(times) < 3 or time.perf_counter() - start_all < budget_seconds):
                start = time.perf_counter()
                model(x)
                sync()
                times.append(1000.0 * (time.perf_counter() - start))
            key = "latency_ms_per_sample" if bs == 1 else f"latency_ms_per_batch{bs}"
            out[key] = statistics.median(times)
    finally:
        model.train(was_training)
    return out


def prediction_metrics(
    logits: Tensor, labels: Tensor, *, num_classes: int, teacher_logits: Tensor | None = None
) -> dict[str, Any]:
    """The logits-only metrics of one arm on one split, as stored in results.json."""
    out: dict[str, Any] = {
        "ece": expected_calibration_error(logits, labels),
        "confusion_matrix": confusion_matrix(logits, labels, num_classes),
    }
    if teacher_logits is not None:
        out["teacher_agreement"] = teacher_agreement(logits, teacher_logits)
        out["kl_to_teacher"] = kl_to_teacher(logits, teacher_logits)
    return out
