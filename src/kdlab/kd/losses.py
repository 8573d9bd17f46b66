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

UNLABELED = -1
"""The label of a transfer-set sample (``data.unlabeled``): no label, the KD term only."""


def labelled_cross_entropy(student_logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over the labelled samples of a batch that also holds transfer-set samples
    (label :data:`UNLABELED`), which contribute nothing:

    ``CE_L(y, s) = -(1/|L|) Σ_{i∈L} log softmax(s_i)[y_i]``, ``L = {i : y_i ≠ UNLABELED}``,

    and 0 when the batch has no labelled sample (|L| = 0). No host sync: ``|L|`` stays a tensor.
    """
    total = F.cross_entropy(student_logits.float(), labels, ignore_index=UNLABELED, reduction="sum")
    return total / (labels != UNLABELED).sum().clamp(min=1)


def pseudo_labels(labels: Tensor, teacher_logits: Tensor) -> Tensor:
    """``labels`` with every transfer-set sample's :data:`UNLABELED` replaced by the teacher's top
    class ``argmax_c t_c`` (for a KD term that needs a target class, such as DKD's target/non-target
    split); labelled samples keep their own label."""
    return torch.where(labels == UNLABELED, teacher_logits.argmax(dim=-1), labels)


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
    standardize: bool = False,
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
        standardize: z-score each logit vector first (:func:`standardize_logits`; Sun et al.,
            "Logit Standardization in Knowledge Distillation", CVPR 2024), so the student matches
            the teacher's logit *shape*, not its scale and offset.

    Returns:
        A scalar float32 tensor, ≥ 0.
    """
    _check_temperature(temperature)
    s, t = _prepare(student_logits, teacher_logits, standardize)
    log_p_s = F.log_softmax(s / temperature, dim=-1)
    log_p_t = F.log_softmax(t / temperature, dim=-1)
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


# ------------------------------------------------------------------------------------------------
# Logit standardization (Sun et al. 2024)


def standardize_logits(logits: Tensor, *, eps: float = 1e-7) -> Tensor:
    """Z-score each logit vector: ``Z(z) = (z − mean(z)) / (std(z) + ε)`` over the class axis.

    ``std`` is the unbiased standard deviation (divisor C − 1) and ε = 1e-7 keeps a constant
    vector finite. The result is unchanged by ``a·z + b`` for any a > 0 (up to ε), which is the
    point: Sun et al., "Logit Standardization in Knowledge Distillation" (CVPR 2024), argue that
    a small student cannot match a big teacher's logit range and should match only its shape.

    Args:
        logits: ``[N, C]`` scores, C ≥ 2.

    Returns:
        ``[N, C]`` float32 z-scores (gradient flows through mean and std).
    """
    z = logits.float()
    return (z - z.mean(dim=-1, keepdim=True)) / (z.std(dim=-1, keepdim=True) + eps)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 (got {temperature})")


def _prepare(student_logits: Tensor, teacher_logits: Tensor, standardize: bool) -> tuple[Tensor, Tensor]:
    """float32 student and detached teacher logits, z-scored when ``standardize``."""
    s, t = student_logits.float(), teacher_logits.detach().float()
    if standardize:
        s, t = standardize_logits(s), standardize_logits(t)
    return s, t


# ------------------------------------------------------------------------------------------------
# Decoupled KD (Zhao et al. 2022)


def _binary_and_non_target(z: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Log-probabilities ``log b = [log p_y, log(1 − p_y)]`` ([N, 2]) and ``log p̂`` ([N, C−1]),
    the softmax over the non-target classes only. Everything stays in log space (log-sum-exp),
    so a dominant class never puts a 0 inside a log: no clamp is needed and none is applied."""
    n, c = z.shape
    if c < 2:
        raise ValueError(f"DKD needs at least 2 classes (got {c})")
    target = F.one_hot(labels, c).bool()
    log_all = torch.logsumexp(z, dim=-1)
    rest = z[~target].view(n, c - 1)  # the non-target logits of each row, in class order
    log_p_target = z.gather(-1, labels.view(-1, 1)).squeeze(-1) - log_all
    log_p_other = torch.logsumexp(rest, dim=-1) - log_all
    return torch.stack([log_p_target, log_p_other], dim=-1), F.log_softmax(rest, dim=-1)


def _kl_rows(log_p: Tensor, log_q: Tensor) -> Tensor:
    """Per-row ``KL(p ‖ q) = Σ_c p_c (log p_c − log q_c)`` from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def dkd_parts(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, *, temperature: float = 4.0
) -> tuple[Tensor, Tensor]:
    """Per-sample TCKD and NCKD of Decoupled KD (without weights or T²).

    With ``p = softmax(z/T)`` and y the label of the sample:

    * ``TCKD = KL(b_t ‖ b_s)``, with ``b = [p_y, 1 − p_y]`` the binary target / non-target split;
    * ``NCKD = KL(p̂_t ‖ p̂_s)``, with ``p̂_c = p_c / (1 − p_y)`` for c ≠ y, the distribution among
      the non-target classes.

    They decompose the classic KD term exactly: ``KL(p_t ‖ p_s) = TCKD + (1 − p_t,y) · NCKD``.

    Returns:
        ``(tckd, nckd)``, two ``[N]`` float32 tensors, each ≥ 0.
    """
    _check_temperature(temperature)
    s, t = student_logits.float() / temperature, teacher_logits.detach().float() / temperature
    b_s, hat_s = _binary_and_non_target(s, labels)
    b_t, hat_t = _binary_and_non_target(t, labels)
    return _kl_rows(b_t, b_s), _kl_rows(hat_t, hat_s)


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    alpha: float = 1.0,
    beta: float = 8.0,
    temperature: float = 4.0,
    standardize: bool = False,
) -> Tensor:
    """Decoupled knowledge distillation: target-class and non-target-class KD, weighted apart.

    ``DKD = T² · (1/N) Σ_i (α · TCKD_i + β · NCKD_i)`` (see :func:`dkd_parts` for the two terms).

    Zhao, Cui, Song, Qiu & Liang, "Decoupled Knowledge Distillation" (CVPR 2022). Classic KD
    weights NCKD by ``1 − p_t,y``, which shrinks exactly when the teacher is confident; DKD gives
    it its own weight β (8 in the paper's CIFAR-100 setting) and TCKD the weight α (1).

    These α and β are DKD's own; kdlab's outer α (``distill.alpha``, the weight of the label
    loss) still applies on top: the objective is ``α_outer · CE + (1 − α_outer) · DKD``.

    Args:
        student_logits: ``[N, C]`` student scores (gradient flows into these).
        teacher_logits: ``[N, C]`` teacher scores (detached).
        labels: ``[N]`` class indices (which class is the "target").
        alpha: weight of TCKD.
        beta: weight of NCKD.
        temperature: T > 0.
        standardize: z-score both logit vectors first (:func:`standardize_logits`, Sun et al. 2024).

    Returns:
        A scalar float32 tensor, ≥ 0.
    """
    _check_temperature(temperature)
    s, t = _prepare(student_logits, teacher_logits, standardize)
    tckd, nckd = dkd_parts(s, t, labels, temperature=temperature)
    return temperature**2 * (alpha * tckd + beta * nckd).mean()


# ------------------------------------------------------------------------------------------------
# DIST (Huang et al. 2022)


def pearson_correlation(a: Tensor, b: Tensor, *, eps: float = 1e-8) -> Tensor:
    """Row-wise Pearson correlation ``ρ(u, v) = ⟨u − ū, v − v̄⟩ / (‖u − ū‖ ‖v − v̄‖ + ε)``.

    Args:
        a, b: ``[N, D]`` tensors; the correlation is taken over the last axis.

    Returns:
        ``[N]`` correlations in [−1, 1]; a constant row gives 0 (the ε keeps it finite).
    """
    a = a - a.mean(dim=-1, keepdim=True)
    b = b - b.mean(dim=-1, keepdim=True)
    return (a * b).sum(dim=-1) / (a.norm(dim=-1) * b.norm(dim=-1) + eps)


def dist_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    *,
    beta: float = 1.0,
    gamma: float = 1.0,
    temperature: float = 1.0,
) -> Tensor:
    """DIST: match the teacher's class relations by correlation rather than exact probabilities.

    With ``Y = softmax(z/τ)`` ([N, C]) for student and teacher and ``d(u, v) = 1 − ρ(u, v)``
    (:func:`pearson_correlation`):

    ``inter = (1/N) Σ_i d(Y_s[i, :], Y_t[i, :])``  (the ranking of classes within each sample),
    ``intra = (1/C) Σ_c d(Y_s[:, c], Y_t[:, c])``  (how a class's score varies across the batch),
    ``DIST = τ² · (β · inter + γ · intra)``.

    Huang, You, Wang, Qian & Xu, "Knowledge Distillation from A Stronger Teacher" (NeurIPS 2022).
    Pearson correlation ignores a positive scale and an offset of the probabilities, so the student
    need not reproduce the (much sharper) output of a stronger teacher exactly.

    The intra-class term needs a batch of at least 2 samples: with a single sample every column
    is constant, its correlation is 0 and ``intra`` is the constant 1 (no gradient).

    Args:
        student_logits: ``[N, C]`` student scores (gradient flows into these).
        teacher_logits: ``[N, C]`` teacher scores (detached).
        beta: weight of the inter-class relation.
        gamma: weight of the intra-class relation.
        temperature: τ > 0.

    Returns:
        A scalar float32 tensor in [0, 2·τ²·(β + γ)]; ≈ 0 (up to ε) when the two probability
        matrices agree up to a positive affine map.
    """
    _check_temperature(temperature)
    y_s = torch.softmax(student_logits.float() / temperature, dim=-1)
    y_t = torch.softmax(teacher_logits.detach().float() / temperature, dim=-1)
    inter = (1.0 - pearson_correlation(y_s, y_t)).mean()
    intra = (1.0 - pearson_correlation(y_s.t(), y_t.t())).mean()
    return temperature**2 * (beta * inter + gamma * intra)


# ------------------------------------------------------------------------------------------------
# Feature methods: FitNets (Romero et al. 2015), attention transfer (Zagoruyko & Komodakis 2017)


def _smaller_size(a: Tensor, b: Tensor) -> tuple[int, int]:
    return min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1])


def match_spatial(student_feature: Tensor, teacher_feature: Tensor) -> tuple[Tensor, Tensor]:
    """Average-pool the larger of two ``[N, C, H, W]`` maps to the other's ``H × W``.

    2-D features (``[N, D]``) and maps of equal size are returned unchanged.
    """
    if student_feature.dim() != 4 or student_feature.shape[-2:] == teacher_feature.shape[-2:]:
        return student_feature, teacher_feature
    size = _smaller_size(student_feature, teacher_feature)
    s = student_feature if student_feature.shape[-2:] == size else F.adaptive_avg_pool2d(student_feature, size)
    t = teacher_feature if teacher_feature.shape[-2:] == size else F.adaptive_avg_pool2d(teacher_feature, size)
    return s, t


def fitnet_loss(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    """FitNets hint loss: mean squared error between the (projected) student feature and the teacher's.

    ``L_hint = (1/M) Σ (r(u_s) − u_t)²`` over all M elements of the batch's features, where r is the
    learned regressor (kdlab's 1×1-conv or linear projector, applied before this function) that
    maps the student's width to the teacher's.

    Romero, Ballas, Kahou, Chassang, Gatta & Bengio, "FitNets: Hints for Thin Deep Nets" (ICLR
    2015). The paper writes ``½ ‖u_t − r(u_s)‖²``; the mean instead of the sum keeps the scale
    independent of the layer size (the weight ``distill.feature_weight`` absorbs the ½).
    Feature maps of different spatial size are first pooled to the smaller (:func:`match_spatial`).

    Args:
        student_feature: ``[N, C, H, W]`` or ``[N, D]``, already projected to the teacher's width.
        teacher_feature: same width (detached).

    Returns:
        A scalar float32 tensor, ≥ 0.
    """
    s, t = match_spatial(student_feature.float(), teacher_feature.detach().float())
    if s.shape != t.shape:
        raise ValueError(
            f"fitnet: feature shapes differ after projection. Student: {tuple(s.shape)}, Teacher: {tuple(t.shape)}"
        )
    return F.mse_loss(s, t)


def attention_map(feature: Tensor, *, p: float = 2.0, size: tuple[int, int] | None = None) -> Tensor:
    """Spatial attention map of Zagoruyko & Komodakis: ``Q = vec(Σ_c |A_c|^p) / ‖vec(Σ_c |A_c|^p)‖₂``.

    The channel mean is used instead of the sum (a constant factor C, removed by the
    normalization), so teacher and student widths need not agree.

    Args:
        feature: ``[N, C, H, W]`` activations.
        p: exponent (2 in the paper).
        size: pool the ``H × W`` map to this size (average) before normalizing, for maps of different size.

    Returns:
        ``[N, H·W]`` float32, each row of unit L2 norm (a zero map stays zero).
    """
    if feature.dim() != 4:
        raise ValueError(f"attention transfer needs [N, C, H, W] feature maps (got shape {tuple(feature.shape)})")
    a = feature.float().abs().pow(p).mean(dim=1)
    if size is not None and tuple(a.shape[-2:]) != tuple(size):
        a = F.adaptive_avg_pool2d(a.unsqueeze(1), size).squeeze(1)
    return F.normalize(a.flatten(1), dim=1)


def at_loss(student_feature: Tensor, teacher_feature: Tensor, *, beta: float = 1000.0, p: float = 2.0) -> Tensor:
    """Attention transfer: distance between normalized spatial attention maps (:func:`attention_map`).

    ``AT = (β/2) · (1/(N·H·W)) Σ_i Σ_j (Q_s,ij − Q_t,ij)²``

    Zagoruyko & Komodakis, "Paying More Attention to Attention: Improving the Performance of
    Convolutional Neural Networks via Attention Transfer" (ICLR 2017). The paper writes
    ``(β/2) ‖Q_s − Q_t‖_p`` per layer with β = 10³ "divided by the number of elements in the
    attention map and batch size"; like the authors' reference code, this uses the squared
    difference averaged over batch and positions. Maps of different size are pooled to the
    smaller first. No projector is needed: the channel axis is reduced away.

    Args:
        student_feature: ``[N, C_s, H, W]`` student activations.
        teacher_feature: ``[N, C_t, H', W']`` teacher activations (detached).
        beta: weight β (10³ in the paper).
        p: exponent of the attention map (2).

    Returns:
        A scalar float32 tensor, ≥ 0.
    """
    size = _smaller_size(student_feature, teacher_feature)
    q_s = attention_map(student_feature, p=p, size=size)
    q_t = attention_map(teacher_feature.detach(), p=p, size=size)
    return beta / 2.0 * (q_s - q_t).pow(2).mean()
