"""The model registry: name -> factory(num_classes=, input_shape=, vocab_size=) -> nn.Module."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from kdlab.errors import ConfigError
from kdlab.registry import Registry

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")


def create_model(
    name: str, *, num_classes: int, input_shape: Sequence[int], vocab_size: int | None = None
) -> nn.Module:
    """Build the registered model ``name`` sized for the data.

    Args:
        name: registered name (``list_models()``).
        num_classes: outputs of the classifier.
        input_shape: shape of one input, ``(C, H, W)`` for images, ``(L,)`` for token ids.
        vocab_size: vocabulary size, for text models.
    """
    factory = MODELS.get(name)
    try:
        return factory(num_classes=num_classes, input_shape=tuple(input_shape), vocab_size=vocab_size)
    except ValueError as e:
        raise ConfigError(f"model '{name}': {e}") from None


def list_models() -> list[str]:
    return MODELS.names()


def count_params(model: nn.Module, *, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
