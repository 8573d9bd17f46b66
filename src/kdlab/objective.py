"""Objectives: what a training step minimizes, returned as named parts.

Teacher training, scratch training and distillation run the same loop and differ only in their
:class:`Objective`. The loss weight is defined here and nowhere else::

    total = α · CE(y, s) + (1 − α) · D(t, s)

with α the weight on the hard labels. α = 1 (or no KD term) is plain training, and then the
teacher is never run. The divergence ``D`` is a *KD term*, a function
``(student_logits, teacher_logits, labels) -> scalar`` built from the math in
:mod:`kdlab.losses` and registered by name in :data:`METHODS` (the ``distill.method`` key).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from kdlab import losses
from kdlab.errors import ConfigError
from kdlab.registry import Registry

KDTerm = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``(student_logits, teacher_logits, labels) -> scalar`` divergence between student and teacher."""

METHODS: Registry[Callable[..., KDTerm]] = Registry("distillation method")
"""``distill.method`` name -> builder taking the method's keyword options and returning a KD term."""


@METHODS.register("kd")
def _build_kd(*, temperature: float = 4.0, t_squared: bool = True, **_: Any) -> KDTerm:
    def term(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        return losses.kd_loss(student_logits, teacher_logits, temperature=temperature, t_squared=t_squared)

    return term


class Objective:
    """``α·CE(y, s) + (1 − α)·D(t, s)``, returning ``{"total", "ce"[, "kd"]}``.

    Args:
        alpha: weight of the hard-label cross-entropy, in [0, 1].
        kd_term: the divergence D; None means plain cross-entropy training.
        name: a label for logs ("ce", "kd", "dkd", ...).
    """

    def __init__(self, *, alpha: float = 1.0, kd_term: KDTerm | None = None, name: str = "ce") -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"distill.alpha: must be in [0, 1] (got {alpha}); it weights the label loss")
        if kd_term is None and alpha != 1.0:
            raise ConfigError(f"distill.alpha={alpha} needs a KD term; use alpha=1 for plain training")
        self.alpha = float(alpha)
        self.kd_term = kd_term
        self.name = name
        self.epoch = 0

    @classmethod
    def cross_entropy(cls) -> Objective:
        """Plain training on the labels: the teacher's and the scratch student's objective."""
        return cls(alpha=1.0)

    @classmethod
    def from_method(cls, method: str, *, alpha: float, **options: Any) -> Objective:
        """Build ``α·CE + (1−α)·D`` with D the registered method ``method`` and its options."""
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"distill.alpha: must be in [0, 1] (got {alpha}); it weights the label loss")
        temperature = options.get("temperature")
        if temperature is not None and not temperature > 0:
            raise ConfigError(f"distill.temperature: must be > 0 (got {temperature})")
        return cls(alpha=alpha, kd_term=METHODS.get(method)(**options), name=method)

    @property
    def uses_teacher(self) -> bool:
        """True when the teacher's logits are needed (a KD term with nonzero weight)."""
        return self.kd_term is not None and self.alpha < 1.0

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
        return {"total": self.alpha * ce + (1.0 - self.alpha) * kd, "ce": ce, "kd": kd}

    def __repr__(self) -> str:
        return f"Objective(name={self.name!r}, alpha={self.alpha})"
