"""Objectives: what a training step minimizes, returned as named parts.

Teacher training, scratch training and distillation run the same loop and differ only in their
:class:`Objective`. The loss weight is defined here and nowhere else::

    total = α · CE(y, s) + (1 − α) · D(t, s)

with α the weight on the hard labels. α = 1 (or no KD term) is plain training, and then the
teacher is never run. The divergence ``D`` is a *KD term*, a function
``(student_logits, teacher_logits, labels) -> scalar`` built from the math in
:mod:`kdlab.kd.losses`. Each method is registered by name in :data:`METHODS` (the ``distill.method``
key) as a :class:`Method`: one options model (pydantic; the method's own keys, defaults and bounds)
and the builder that turns a validated options model into the KD term:

========= ===================== ==================================================================
kd        :class:`KDOptions`       Hinton KD, :func:`~kdlab.kd.losses.kd_loss`
logit-std :class:`LogitStdOptions` kd with logit standardization (Sun et al. 2024)
dkd       :class:`DKDOptions`      Decoupled KD, :func:`~kdlab.kd.losses.dkd_loss`
dist      :class:`DISTOptions`     DIST, :func:`~kdlab.kd.losses.dist_loss` (τ = ``temperature``)
fitnet    :class:`FeatureOptions`  FitNets hints on named layers (:mod:`kdlab.kd.features`)
at        :class:`FeatureOptions`  attention transfer on named layers (:mod:`kdlab.kd.features`)
========= ===================== ==================================================================

The options models take their bounds and descriptions from the ``distill`` section of the config
(:class:`~kdlab.config.schema.DistillConfig`, whose keys are the public names), so a value is
checked once, by the same rule, whether it comes from a YAML file, ``--set``, ``kdlab compare -m
method:key=value`` or the Python API. Which keys a method takes is its options model's fields;
the keys it *refuses* at a non-default value (a setting it would silently ignore, such as
``standardize`` for dist) are its model's :attr:`MethodOptions.refuses`. docs/methods.md lists the
options as :func:`options_table` renders them (a test keeps the two equal).

Method-specific weights (DKD's α and β, DIST's β and γ) act *inside* D; the outer α always weights
the label loss. ``warmup_epochs`` ramps D's weight up linearly over the first epochs (DKD's
warm-up; it works for every method). :meth:`Objective.settings` reports every setting in use.
"""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, computed_field
from torch import Tensor

from kdlab.config.load import format_validation_error
from kdlab.config.schema import DistillConfig
from kdlab.errors import ConfigError
from kdlab.kd import losses
from kdlab.kd.features import FeatureTerm
from kdlab.registry import Registry

KDTerm = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``(student_logits, teacher_logits, labels) -> scalar`` divergence between student and teacher."""


def _option(key: str, **changes: Any) -> Any:
    """The ``distill.<key>`` field of the config (type bounds, default, description), with the
    method's own default where it differs (``default=...``)."""
    info = copy.copy(DistillConfig.model_fields[key])
    for name, value in changes.items():
        setattr(info, name, value)
    return info


def neutral(key: str) -> Any:
    """The config default of ``distill.<key>``: the value every method accepts, used or not."""
    return DistillConfig.model_fields[key].get_default(call_default_factory=True)


class MethodOptions(BaseModel):
    """A method's options, validated (finite floats, bounds of ``distill.*``; unknown keys refused).

    ``refuses`` names the ``distill.*`` keys outside the model that the method refuses at a
    non-default value, because it would silently ignore them; other keys outside the model do not
    concern the method (e.g. ``dkd_beta`` with kd) and are dropped.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    refuses: ClassVar[tuple[str, ...]] = ()


class KDOptions(MethodOptions):
    """kd: Hinton knowledge distillation."""

    temperature: float = _option("temperature")
    t_squared: bool = _option("t_squared")
    standardize: bool = _option("standardize")

    refuses: ClassVar[tuple[str, ...]] = ("feature_pairs",)


class LogitStdOptions(MethodOptions):
    """logit-std: kd on z-scored logits (``standardize`` is always on)."""

    temperature: float = _option("temperature")
    t_squared: bool = _option("t_squared")

    refuses: ClassVar[tuple[str, ...]] = ("feature_pairs",)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def standardize(self) -> bool:
        """Always True: logit-std is kd with standardization."""
        return True


class DKDOptions(MethodOptions):
    """dkd: decoupled KD, always scaled by T² as published."""

    temperature: float = _option("temperature")
    dkd_alpha: float = _option("dkd_alpha")
    dkd_beta: float = _option("dkd_beta")
    standardize: bool = _option("standardize")

    refuses: ClassVar[tuple[str, ...]] = ("t_squared", "feature_pairs")


class DISTOptions(MethodOptions):
    """dist: DIST, τ = temperature (1 by default, as published), always scaled by τ²."""

    temperature: float = _option("temperature", default=1.0)
    dist_beta: float = _option("dist_beta")
    dist_gamma: float = _option("dist_gamma")

    refuses: ClassVar[tuple[str, ...]] = ("t_squared", "standardize", "feature_pairs")


class FeatureOptions(MethodOptions):
    """fitnet, at: feature distillation on named layers (logits, temperature unused)."""

    feature_pairs: dict[str, str] = _option("feature_pairs")
    feature_weight: float | None = _option("feature_weight")

    refuses: ClassVar[tuple[str, ...]] = ("standardize",)


@dataclass(frozen=True)
class Method:
    """A registered distillation method: its options model and the builder of its KD term."""

    options: type[MethodOptions]
    build: Callable[[Any], KDTerm]
    """``options model instance -> KD term``."""

    def validate(self, name: str, options: Mapping[str, Any]) -> MethodOptions:
        """The method's options from ``distill.*`` keyword options: keys outside the model are
        refused at a non-default value when the method would ignore them (:attr:`MethodOptions.refuses`)
        and dropped otherwise (after the same bounds check as in the config); the model's own keys
        are validated by the model. A bad value is a one-line ConfigError naming its key."""
        fields = self.options.model_fields
        for key in self.options.refuses:
            if key in options and options[key] != neutral(key):
                raise ConfigError(_REFUSAL[key].format(method=name))
        others = {k: v for k, v in options.items() if k not in fields}
        try:
            if others:
                DistillConfig.model_validate(others)
            return self.options.model_validate({k: v for k, v in options.items() if k in fields})
        except ValidationError as e:
            raise ConfigError(f"distill.{format_validation_error(e)}") from None


_REFUSAL = {
    "standardize": "distill.standardize applies to kd and dkd, not to '{method}'; remove it",
    "feature_pairs": "distill.feature_pairs is used by fitnet and at only, not by '{method}'; remove it",
    "t_squared": "distill.t_squared=false applies to kd only; '{method}' always scales by T² as published",
}

METHODS: Registry[Method] = Registry("distillation method")
"""``distill.method`` name -> :class:`Method` (options model, builder)."""


def register(name: str, options: type[MethodOptions]) -> Callable[[Callable[[Any], KDTerm]], Callable[[Any], KDTerm]]:
    """Decorator registering a KD-term builder ``options -> KD term`` as method ``name``."""

    def decorator(build: Callable[[Any], KDTerm]) -> Callable[[Any], KDTerm]:
        METHODS.add(name, Method(options, build))
        return build

    return decorator


@register("kd", KDOptions)
@register("logit-std", LogitStdOptions)
def _build_kd(o: KDOptions | LogitStdOptions) -> KDTerm:
    temperature, t_squared, standardize = o.temperature, o.t_squared, o.standardize

    def term(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        return losses.kd_loss(
            student_logits, teacher_logits, temperature=temperature, t_squared=t_squared, standardize=standardize
        )

    return term


@register("dkd", DKDOptions)
def _build_dkd(o: DKDOptions) -> KDTerm:
    def term(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        return losses.dkd_loss(
            student_logits,
            teacher_logits,
            labels,
            alpha=o.dkd_alpha,
            beta=o.dkd_beta,
            temperature=o.temperature,
            standardize=o.standardize,
        )

    return term


@register("dist", DISTOptions)
def _build_dist(o: DISTOptions) -> KDTerm:
    def term(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        return losses.dist_loss(
            student_logits, teacher_logits, beta=o.dist_beta, gamma=o.dist_gamma, temperature=o.temperature
        )

    return term


def _feature_builder(kind: Literal["fitnet", "at"]) -> Callable[[Any], KDTerm]:
    def build(o: FeatureOptions) -> KDTerm:
        return FeatureTerm(o.feature_pairs, kind=kind, weight=o.feature_weight)

    return build


register("fitnet", FeatureOptions)(_feature_builder("fitnet"))
register("at", FeatureOptions)(_feature_builder("at"))


def method_options() -> frozenset[str]:
    """Every key some method's options model takes or refuses (the ``distill.*`` keys of the KD
    term, besides method, alpha and warmup_epochs)."""
    keys: set[str] = set()
    for name in METHODS:
        spec = METHODS.get(name)
        keys |= set(spec.options.model_fields) | set(spec.options.refuses)
    return frozenset(keys)


METHOD_OPTIONS = method_options()
"""Keyword options a method may receive (read from the registered options models)."""


def refuses(method: str, key: str, value: Any) -> bool:
    """True when ``method`` refuses the option ``key=value``, i.e. the option does not apply to
    that method at that value (e.g. ``t_squared=false`` to anything but kd)."""
    return key in METHODS.get(method).options.refuses and value != neutral(key)


def _range(info: Any) -> str:
    low = next((f"{m.ge:g}" for m in info.metadata if hasattr(m, "ge")), None)
    high = next((f"{m.le:g}" for m in info.metadata if hasattr(m, "le")), None)
    if low is None and high is None:
        return ""
    return f"{low or '−∞'} to {high or '∞'}"


def options_table() -> str:
    """The markdown table of every method's options, read from the options models: name, default,
    range and meaning (docs/methods.md shows exactly this table)."""
    rows = ["| method | option | default | range | meaning |", "|---|---|---|---|---|"]
    for name in METHODS:
        spec = METHODS.get(name)
        for key, info in spec.options.model_fields.items():
            default = json.dumps(info.get_default(call_default_factory=True))
            rows.append(f"| `{name}` | `{key}` | `{default}` | {_range(info)} | {info.description} |")
        if spec.options.refuses:
            refused = ", ".join(f"`{key}`" for key in spec.options.refuses)
            rows.append(f"| `{name}` | refuses | | | {refused} at a non-default value (it would ignore it) |")
    return "\n".join(rows) + "\n"


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"distill.alpha: must be in [0, 1] (got {alpha}); it weights the label loss")


class Objective:
    """``α·CE(y, s) + (1 − α)·D(t, s)``, returning ``{"total", "ce"[, "kd"]}``.

    Args:
        alpha: weight of the hard-label cross-entropy, in [0, 1].
        kd_term: the divergence D; None means plain cross-entropy training.
        name: a label for logs ("ce", "kd", "dkd", ...).
        warmup_epochs: ramp D's weight over the first epochs: during epoch e (1-based) D is scaled
            by ``min(e / warmup_epochs, 1)``; 0 = no warm-up. The reported ``kd`` part is the
            scaled term, the one that enters ``total``.

    With :attr:`partial_labels` set (a transfer set, ``data.unlabeled``), batches mix labelled
    samples and transfer-set samples labelled :data:`~kdlab.kd.losses.UNLABELED`: CE is the mean
    over the batch's labelled samples only (:func:`~kdlab.kd.losses.labelled_cross_entropy`, 0
    without any), D the mean over every sample, and a D that needs a target class (dkd) takes the
    teacher's top class for a transfer-set sample (:func:`~kdlab.kd.losses.pseudo_labels`).
    """

    partial_labels: bool = False

    def __init__(
        self,
        *,
        alpha: float = 1.0,
        kd_term: KDTerm | None = None,
        name: str = "ce",
        warmup_epochs: int = 0,
        options: MethodOptions | None = None,
    ) -> None:
        _check_alpha(alpha)
        if kd_term is None and alpha != 1.0:
            raise ConfigError(f"distill.alpha={alpha} needs a KD term; use alpha=1 for plain training")
        if warmup_epochs < 0:
            raise ConfigError(f"distill.warmup_epochs: must be >= 0 (got {warmup_epochs}); 0 = no warm-up")
        self.alpha = float(alpha)
        self.kd_term = kd_term
        self.name = name
        self.warmup_epochs = int(warmup_epochs)
        self.options = options
        self.epoch = 0

    @classmethod
    def cross_entropy(cls) -> Objective:
        """Plain training on the labels: the teacher's and the scratch student's objective."""
        return cls(alpha=1.0)

    @classmethod
    def from_method(cls, method: str, *, alpha: float, warmup_epochs: int = 0, **options: Any) -> Objective:
        """Build ``α·CE + (1−α)·D`` with D the registered method ``method`` and its ``distill.*``
        options, validated by the method's options model (:meth:`Method.validate`). An option no
        method knows is a ConfigError; one this method does not take is dropped, or refused when the
        method would silently ignore a non-default value."""
        _check_alpha(alpha)
        known = method_options()
        unknown = sorted(set(options) - known)
        if unknown:
            close = [c for u in unknown for c in difflib.get_close_matches(u, sorted(known), n=1)]
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise ConfigError(
                f"unknown distillation option {', '.join(unknown)}; {hint}known: {', '.join(sorted(known))}"
            )
        spec = METHODS.get(method)
        validated = spec.validate(method, options)
        return cls(
            alpha=alpha, kd_term=spec.build(validated), name=method, warmup_epochs=warmup_epochs, options=validated
        )

    def settings(self) -> dict[str, Any]:
        """Every setting this objective uses: method, alpha, warmup_epochs and the method's options
        (temperature, t_squared, ... as validated; JSON types)."""
        out: dict[str, Any] = {"method": self.name, "alpha": self.alpha, "warmup_epochs": self.warmup_epochs}
        if self.options is not None:
            out |= self.options.model_dump(mode="json")
        return out

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
        if self.partial_labels:
            ce = losses.labelled_cross_entropy(student_logits, labels)
        else:
            ce = losses.cross_entropy(student_logits, labels)
        if not self.uses_teacher:
            return {"total": ce, "ce": ce}
        if teacher_logits is None:
            raise ValueError(f"objective '{self.name}' needs teacher logits")
        assert self.kd_term is not None
        if self.partial_labels:
            labels = losses.pseudo_labels(labels, teacher_logits)
        kd = self.kd_term(student_logits, teacher_logits, labels)
        if self.warmup_epochs > 0:
            kd = kd * self.kd_scale
        return {"total": self.alpha * ce + (1.0 - self.alpha) * kd, "ce": ce, "kd": kd}

    def __repr__(self) -> str:
        return f"Objective(name={self.name!r}, alpha={self.alpha})"
