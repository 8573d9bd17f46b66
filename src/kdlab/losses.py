"""All of kdlab's knowledge-distillation math, as small pure functions.

Conventions, the same in every function here:

* **student first**: ``f(student_logits, teacher_logits, ...)``; everything after the tensors is
  keyword-only, so a temperature can never be passed where a weight was meant;
* logits in, never probabilities: softmax is applied once, here, on the class axis (``dim=-1``);
* computed in float32 even when the inputs are half precision (autocast), and the teacher side is
  detached, so gradient only ever flows into the student;
* reductions are means over the batch (``batchmean`` for KL divergences, not the element-wise
  ``mean`` that silently divides by the number of classes too).

This module imports only torch, so the functions can be used outside kdlab's training loop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def cross_entropy(student_logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy of integer labels under the student's softmax.

    ``CE(y, s) = -(1/N) Σ_i log softmax(s_i)[y_i]``.

    Args:
        student_logits: ``[N, C]`` raw scores.
        labels: ``[N]`` class indices.

    Returns:
        A scalar float32 tensor.
    """
    return F.cross_entropy(student_logits.float(), labels)


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    temperature: float,
    t_squared: bool = True,
) -> Tensor:
    """Hinton knowledge-distillation term: the softened KL divergence from teacher to student.

    ``KD(t, s) = T² · (1/N) Σ_i KL(softmax(t_i/T) ‖ softmax(s_i/T))``
    ``         = T² · (1/N) Σ_i Σ_c p_t,c (log p_t,c − log p_s,c)``

    Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015). The T² factor
    keeps the gradient's scale independent of T (soft-target gradients shrink as 1/T²), so the
    weight between the CE and KD terms means the same at every temperature. The classic Keras
    labs kdlab reproduces leave T² out: pass ``t_squared=False`` to match them.

    This returns the KL divergence itself (zero when the two distributions agree), not the soft
    cross-entropy ``−Σ p_t log p_s``, which differs by the teacher's entropy.

    Args:
        student_logits: ``[N, C]`` student scores (gradient flows into these).
        teacher_logits: ``[N, C]`` teacher scores (detached).
        temperature: T > 0; larger T softens both distributions.
        t_squared: multiply by T² (Hinton et al.); False leaves it out (the classic labs).

    Returns:
        A scalar float32 tensor, ≥ 0.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (got {temperature})")
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature**2 if t_squared else kl


def distillation_objective(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    alpha: float,
    temperature: float,
    t_squared: bool = True,
) -> Tensor:
    """The classic total objective ``α·CE(y, s) + (1 − α)·KD(t, s)``.

    α weights the hard-label cross-entropy; α = 1 is plain training, α = 0 pure imitation.
    """
    ce = cross_entropy(student_logits, labels)
    kd = kd_loss(student_logits, teacher_logits, temperature=temperature, t_squared=t_squared)
    return alpha * ce + (1.0 - alpha) * kd


def softmax_probs(logits: Tensor) -> Tensor:
    """Class probabilities in float32 (the only other place logits become probabilities)."""
    return torch.softmax(logits.float(), dim=-1)
