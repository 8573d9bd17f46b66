"""Model specs: the strings ``teacher.model`` / ``student.model`` take, parsed and built.

A spec is one of (docs/models.md):

- a registered name (``kdlab models``), e.g. ``lab-cnn-student``;
- ``timm:<name>`` — ``timm.create_model(name, num_classes=…, in_chans=…)`` (:mod:`kdlab.models.from_timm`);
- ``hf:<folder or hub id>`` — a Hugging Face classifier (:mod:`kdlab.models.from_hf`);
- ``<module>:<function>`` (a dotted Python module) or ``<path/to/file.py>:<function>`` — the user's own
  factory (:mod:`kdlab.models.factory`). This runs the user's code.

Rule, in order: a name registered as it is typed is that model; ``timm:`` and ``hf:`` prefixes name
their kinds; ``X:F`` with ``F`` an identifier and ``X`` ending in ``.py`` is a factory file, with ``X``
a dotted module name a factory module; anything else is a registered name (an unknown one is the
registry's ``unknown model`` error with its did-you-mean). Heavy packages (timm, transformers) are
imported only when a spec of theirs is built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from torch import nn

from kdlab.errors import ConfigError
from kdlab.models.common import MODELS, Declared, section_of

__all__ = ["Declared", "ModelSpec", "absolute_spec", "build_model", "check_recorded", "declared_inputs", "parse_spec"]

SpecKind = Literal["registered", "timm", "hf", "factory"]

SPEC_KINDS_HINT = "a registered name, timm:<name>, hf:<folder or hub id>, <module>:<function> or <file.py>:<function>"


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec.

    Attributes:
        kind: ``registered``, ``timm``, ``hf`` or ``factory``.
        target: what the kind builds from: the registered name, the timm model name, the hf folder or
            hub id, or the factory's ``<module>:<function>`` / ``<file.py>:<function>``.
        text: the spec as written.
    """

    kind: SpecKind
    target: str
    text: str


def _is_module_name(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def parse_spec(spec: str, *, key: str) -> ModelSpec:
    """``spec`` -> :class:`ModelSpec` (module docstring's rule); ``key`` (``teacher.model``) names the
    setting in errors. Nothing is imported or checked beyond the spec's form."""
    text = str(spec)
    if text in MODELS:
        return ModelSpec("registered", text, text)
    for prefix in ("timm", "hf"):
        if text.startswith(prefix + ":"):
            target = text[len(prefix) + 1 :].strip()
            if not target:
                example = "timm:resnet18" if prefix == "timm" else "hf:path/to/saved_model"
                raise ConfigError(f"{key}: '{text}' names no model after '{prefix}:' (e.g. {example})")
            return ModelSpec("timm" if prefix == "timm" else "hf", target, text)
    source, sep, function = text.rpartition(":")
    if sep and function.isidentifier() and (source.endswith(".py") or _is_module_name(source)):
        return ModelSpec("factory", text, text)
    return ModelSpec("registered", text, text)


def build_model(
    spec: str | ModelSpec,
    *,
    num_classes: int,
    input_shape: Sequence[int],
    vocab_size: int | None = None,
    classes: Sequence[str] | None = None,
    key: str = "model",
    pretrained: bool = False,
    config: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build the model ``spec`` names, sized for the data: its classifier has ``num_classes`` outputs
    and takes inputs of ``input_shape`` (``(C, H, W)`` images, ``(L,)`` token ids).

    Args:
        spec: a spec string or a parsed :class:`ModelSpec`.
        vocab_size: vocabulary size, for text models.
        classes: the data's class names (an ``hf:`` model matches its own labels to them by name).
        key: the setting named in errors (``teacher.model``).
        pretrained: ``timm:`` / ``hf:`` only: start from the published pretrained weights.
        config: ``hf:`` only: overrides of the model's config (``student.config``).

    Raises:
        ConfigError: one line naming ``key``: an unknown name, a spec that cannot be resolved, a
            factory that fails, or an option its kind does not take.
    """
    parsed = spec if isinstance(spec, ModelSpec) else parse_spec(spec, key=key)
    shape = tuple(input_shape)
    section = section_of(key)
    if pretrained and parsed.kind in ("registered", "factory"):
        raise ConfigError(
            f"{section}.pretrained: only timm: and hf: models have pretrained weights ({key} is '{parsed.text}'); "
            f"set {section}.pretrained=false or use {section}.checkpoint"
        )
    if config and parsed.kind != "hf":
        raise ConfigError(f"{section}.config: overrides apply to hf: models only ({key} is '{parsed.text}')")
    if parsed.kind == "registered":
        if parsed.target not in MODELS and ":" in parsed.text:  # not a spec of any kind either
            raise ConfigError(f"{MODELS.unknown_message(parsed.target)}; or a model spec: {SPEC_KINDS_HINT}")
        factory = MODELS.get(parsed.target)
        try:
            return factory(num_classes=num_classes, input_shape=shape, vocab_size=vocab_size)
        except ValueError as e:
            raise ConfigError(f"model '{parsed.target}': {e}") from None
    if parsed.kind == "timm":
        from kdlab.models import from_timm

        return from_timm.build_timm(
            parsed.target, num_classes=num_classes, input_shape=shape, pretrained=pretrained, key=key
        )
    if parsed.kind == "factory":
        from kdlab.models import factory as user_factory

        return user_factory.build_factory(
            parsed.target, num_classes=num_classes, input_shape=shape, vocab_size=vocab_size, key=key
        )
    from kdlab.models import from_hf

    return from_hf.build_hf(
        parsed.target,
        num_classes=num_classes,
        input_shape=shape,
        classes=classes,
        pretrained=pretrained,
        config=config,
        key=key,
    )


def declared_inputs(spec: str | ModelSpec, *, pretrained: bool, has_checkpoint: bool, key: str) -> Declared:
    """What the model ``spec`` names declares about its inputs (:class:`Declared`).

    Registered models and factories declare nothing. A ``timm:`` model declares its
    ``pretrained_cfg`` (input size, channels, mean, std) only when its weights are timm's
    (``pretrained``) or a checkpoint's (``has_checkpoint``): a fresh one trained on the data takes the
    data's view. An ``hf:`` model declares its folder's tokenizer or image processor and its labels.
    """
    parsed = spec if isinstance(spec, ModelSpec) else parse_spec(spec, key=key)
    if parsed.kind == "timm":
        if not (pretrained or has_checkpoint):
            return Declared()
        from kdlab.models import from_timm

        return from_timm.declared_timm(parsed.target, key=key)
    if parsed.kind == "hf":
        from kdlab.models import from_hf

        return from_hf.declared_hf(parsed.target, key=key)
    if parsed.kind == "registered":
        MODELS.get(parsed.target)  # an unknown name is an error here too
    return Declared()


def absolute_spec(spec: str, *, key: str) -> str:
    """``spec`` as a run folder records it: a factory file's path made absolute (resolved against the
    current directory), every other spec unchanged."""
    parsed = parse_spec(spec, key=key)
    if parsed.kind != "factory":
        return spec
    from kdlab.models import factory as user_factory

    return user_factory.absolute_factory(parsed.target)


def check_recorded(spec: str, *, run_dir: Path, key: str) -> None:
    """Refuse a spec read from the run folder ``run_dir`` that would run code the folder carries: a
    factory file or module that resolves inside the folder, or a factory file recorded by a relative
    path (never resolved against the folder). Other kinds run no code and pass."""
    parsed = parse_spec(spec, key=key)
    if parsed.kind == "factory":
        from kdlab.models import factory as user_factory

        user_factory.check_outside(parsed.target, run_dir=Path(run_dir), key=key)
