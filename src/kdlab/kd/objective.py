"""Objectives: what a training step minimizes, returned as named parts.

Teacher training, scratch training and distillation run the same loop and differ only in their
:class:`Objective`. The loss weight is defined here and nowhere else::

    total = α · CE(y, s) + (1 − α) · D(t, s)

with α the weight on the hard labels. α = 1 (or no KD term) is plain training, and then the
teacher is never run. The divergence ``D`` is a *KD term*, a function
``(student_logits, teacher_logits, labels) -> scalar`` built from the math in
:mod:`kdlab.kd.losses` and registered by name in :data:`METHODS` (the ``distill.method`` key):

======== =============================================================================
kd        Hinton KD, :func:`~kdlab.kd.losses.kd_loss` (``standardize`` allowed)
logit-std kd with logit standardization (Sun et al. 2024)
dkd       Decoupled KD, :func:`~kdlab.kd.losses.dkd_loss` (``dkd_alpha``, ``dkd_beta``, ``standardize``)
dist      DIST, :func:`~kdlab.kd.losses.dist_loss` (``dist_beta``, ``dist_gamma``, τ = ``temperature``)
fitnet    FitNets hints on named layers (:mod:`kdlab.kd.features`)
at        attention transfer on named layers (:mod:`kdlab.kd.features`)
======== =============================================================================

Method-specific weights (DKD's α and β, DIST's β and γ) act *inside* D; the outer α always weights
the label loss. ``warmup_epochs`` ramps D's weight up linearly over the first epochs (DKD's
warm-up; it works for every method).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from torch import Tensor

from kdlab.errors import ConfigError
from kdlab.kd import losses
from kdlab.kd.features import FeatureTerm
from kdlab.registry import Registry

KDTerm = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``(student_logits, teacher_logits, labels) -> scalar`` divergence between student and teacher."""

METHODS: Registry[Callable[..., KDTerm]] = Registry("distillation method")
"""``distill.method`` name -> builder taking the method's keyword options and returning a KD term."""


METHOD_OPTIONS = frozenset(
    {
        "temperature",
        "t_squared",
        "standardize",
        "dkd_alpha",
        "dkd_beta",
        "dist_beta",
        "dist_gamma",
        "feature_pairs",
        "feature_weight",
    }
)
"""Keyword options a method builder may receive (the ``distill.*`` keys besides method, alpha and
warmup_epochs); each builder uses its own and refuses settings that would silently do nothing."""


def _refuse(method: str, *, standardize: bool = False, feature_pairs: Any = None, t_squared: bool = True) -> None:
    if standardize:
        raise ConfigError(f"distill.standardize applies to kd and dkd, not to '{method}'; remove it")
    if feature_pairs:
        raise ConfigError(f"distill.feature_pairs is used by fitnet and at only, not by '{method}'; remove it")
    if not t_squared:
        raise ConfigError(f"distill.t_squared=false applies to kd only; '{method}' always scales by T² as published")


@METHODS.register("kd")
def _build_kd(
    *, temperature: float = 4.0, t_squared: bool = True, standardize: bool = False, feature_pairs: Any = None, **_: Any
) -> KDTerm:
    _refuse("kd", feature_pairs=feature_pairs)

    def term(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        return losses.kd_loss(
            student_logits, teacher_logits, temperature=temperature, t_squared=t_squared, standardize=standardize
        )

    return term


@METHODS.register("logit-std")
def _build_logit_std(**options: Any) -> KDTerm:
    return _build_kd(**{**options, "standardize": True})


@METHODS.register("dkd")
def _build_dkd(
    *,
    temperature: float = 4.0,
    dkd_alpha: float = 1.0,
    dkd_beta: float = 8.0,
    standardize: bool = False,
    t_squared: bool = True,
    feature_pairs: Any = None,
    **_: Any,
) -> KDTerm:
    _refuse("dkd", feature_pairs=feature_pairs, t_squared=t_squared)
    if dkd_alpha < 0 or dkd_beta < 0:
        raise ConfigError(f"distill.dkd_alpha and dkd_beta must be >= 0 (got {dkd_alpha}, {dkd_beta})")

    def term(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        return losses.dkd_loss(
            student_logits,
            teacher_logits,
            labels,
            alpha=dkd_alpha,
            beta=dkd_beta,
            temperature=temperature,
            standardize=standardize,
        )

    return term


@METHODS.register("dist")
def _build_dist(
    *,
    temperature: float = 1.0,
    dist_beta: float = 1.0,
    dist_gamma: float = 1.0,
    standardize: bool = False,
    t_squared: bool = True,
    feature_pairs: Any = None,
    **_: Any,
) -> KDTerm:
    _refuse("dist", standardize=standardize, feature_pairs=feature_pairs, t_squared=t_squared)
    if dist_beta < 0 or dist_gamma < 0:
        raise ConfigError(f"distill.dist_beta and dist_gamma must be >= 0 (got {dist_beta}, {dist_gamma})")

    def term(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        return losses.dist_loss(
            student_logits, teacher_logits, beta=dist_beta, gamma=dist_gamma, temperature=temperature
        )

    return term


def _build_feature(
    kind: Literal["fitnet", "at"],
    *,
    feature_pairs: dict[str, str] | None = None,
    feature_weight: float | None = None,
    standardize: bool = False,
    **_: Any,
) -> KDTerm:
    _refuse(kind, standardize=standardize)
    return FeatureTerm(feature_pairs or {}, kind=kind, weight=feature_weight)


METHODS.add("fitnet", lambda **options: _build_feature("fitnet", **options))
METHODS.add("at", lambda **options: _build_feature("at", **options))


def refuses(method: str, key: str, value: Any) -> bool:
    """True when ``method`` refuses the option ``key=value`` that it accepts at its default, i.e.
    the option does not apply to that method (e.g. ``t_squared=false`` to anything but kd)."""
    builder = METHODS.get(method)
    try:
        builder()
    except ConfigError:
        return False  # the method needs other options first; nothing to conclude
    try:
        builder(**{key: value})
    except ConfigError:
        return True
    return False


class Objective:
    """``α·CE(y, s) + (1 − α)·D(t, s)``, returning ``{"total", "ce"[, "kd"]}``.

    Args:
        alpha: weight of the hard-label cross-entropy, in [0, 1].
        kd_term: the divergence D; None means plain cross-entropy training.
        name: a label for logs ("ce", "kd", "dkd", ...).
        warmup_epochs: ramp D's weight over the first epochs: during epoch e (1-based) D is scaled
            by ``min(e / warmup_epochs, 1)``; 0 = no warm-up. The reported ``kd`` part is the
            scaled term, the one that enters ``total``.
    """

    def __init__(
        self, *, alpha: float = 1.0, kd_term: KDTerm | None = None, name: str = "ce", warmup_epochs: int = 0
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"distill.alpha: must be in [0, 1] (got {alpha}); it weights the label loss")
        if kd_term is None and alpha != 1.0:
            raise ConfigError(f"distill.alpha={alpha} needs a KD term; use alpha=1 for plain training")
        if warmup_epochs < 0:
            raise ConfigError(f"distill.warmup_epochs: must be >= 0 (got {warmup_epochs}); 0 = no warm-up")
        self.alpha = float(alpha)
        self.kd_term = kd_term
        self.name = name
        self.warmup_epochs = int(warmup_epochs)
        self.epoch = 0

    @classmethod
    def cross_entropy(cls) -> Objective:
        """Plain training on the labels: the teacher's and the scratch student's objective."""
        return cls(alpha=1.0)

    @classmethod
    def from_method(cls, method: str, *, alpha: float, warmup_epochs: int = 0, **options: Any) -> Objective:
        """Build ``α·CE + (1−α)·D`` with D the registered method ``method`` and its options
        (names in :data:`METHOD_OPTIONS`; an unknown option is a ConfigError)."""
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"distill.alpha: must be in [0, 1] (got {alpha}); it weights the label loss")
        unknown = sorted(set(options) - METHOD_OPTIONS)
        if unknown:
            raise ConfigError(
                f"unknown distillation option {', '.join(unknown)}; known: {', '.join(sorted(METHOD_OPTIONS))}"
            )
        temperature = options.get("temperature")
        if temperature is not None and not temperature > 0:
            raise ConfigError(f"distill.temperature: must be > 0 (got {temperature})")
        builder = METHODS.get(method)
        return cls(alpha=alpha, kd_term=builder(**options), name=method, warmup_epochs=warmup_epochs)

    @property
    def uses_teacher(self) -> bool:
        """True when the teacher's logits are needed (a KD term with nonzero weight)."""
        return self.kd_term is not None and self.alpha < 1.0

    @property
    def needs_teacher_features(self) -> bool:
        """True when D reads the teacher's intermediate features (fitnet, at): the teacher must run
        live on every batch, so precomputed (cached) teacher logits cannot be used."""
        return self.uses_teacher and bool(getattr(self.kd_term, "needs_teacher_features", False))

    @property
    def kd_scale(self) -> float:
        """The warm-up factor of D for the current epoch: ``min((epoch + 1) / warmup_epochs, 1)``."""
        if self.warmup_epochs <= 0:
            return 1.0
        return min((self.epoch + 1) / self.warmup_epochs, 1.0)

    def set_epoch(self, epoch: int) -> None:
        """Tell the objective which epoch (0-based) is starting, for schedules such as warm-ups."""
        self.epoch = epoch

    def __call__(
        self, student_logits: Tensor, labels: Tensor, teacher_logits: Tensor | None = None
    ) -> dict[str, Tensor]:
        ce = losses.cross_entropy(student_logits, labels)
        if not self.uses_teacher:
            return {"total": ce, "ce": ce}
        if teacher_logits is None:
            raise ValueError(f"objective '{self.name}' needs teacher logits")
        assert self.kd_term is not None
        kd = self.kd_term(student_logits, teacher_logits, labels)
        if self.warmup_epochs > 0:
            kd = kd * self.kd_scale
        return {"total": self.alpha * ce + (1.0 - self.alpha) * kd, "ce": ce, "kd": kd}

    def __repr__(self) -> str:
        return f"Objective(name={self.name!r}, alpha={self.alpha})"
