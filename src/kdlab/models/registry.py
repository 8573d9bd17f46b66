"""The model registry: name -> factory(num_classes=, input_shape=, vocab_size=) -> nn.Module."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from torch import nn

if TYPE_CHECKING:
    from rich.console import Console

from kdlab.errors import ConfigError
from kdlab.registry import Registry

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")

ModelKind = Literal["image", "text"]


@dataclass(frozen=True)
class DefaultShape:
    """The data shape a kind of model is counted at in ``kdlab models``."""

    input_shape: tuple[int, ...]
    num_classes: int
    vocab_size: int | None
    label: str


DEFAULT_SHAPES: dict[str, DefaultShape] = {
    "image": DefaultShape((1, 28, 28), 10, None, "images 1×28×28, 10 classes"),
    "text": DefaultShape((200,), 2, 20_000, "text of vocabulary 20,000, 2 classes"),
}


@dataclass(frozen=True)
class ModelInfo:
    """What ``kdlab models`` says about a registered name."""

    name: str
    kind: ModelKind
    description: str


MODEL_INFO: dict[str, ModelInfo] = {}


def register_model(name: str, *, kind: ModelKind, description: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register a factory under ``name`` with the kind of input it takes and a one-line description."""

    def decorator(factory: ModelFactory) -> ModelFactory:
        MODELS.add(name, factory)
        MODEL_INFO[name] = ModelInfo(name, kind, description)
        return factory

    return decorator


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


def describe_models() -> list[dict[str, object]]:
    """Name, kind, description and parameter count (at the kind's default shape) of every registered model.

    A model registered without metadata (``MODELS.register``) is listed with kind and description empty and
    no parameter count.
    """
    rows: list[dict[str, object]] = []
    for name in MODELS.names():
        info = MODEL_INFO.get(name)
        params: int | None = None
        if info is not None:
            shape = DEFAULT_SHAPES[info.kind]
            model = create_model(
                name, num_classes=shape.num_classes, input_shape=shape.input_shape, vocab_size=shape.vocab_size
            )
            params = count_params(model)
        rows.append(
            {
                "name": name,
                "kind": info.kind if info else "",
                "description": info.description if info else "",
                "params": params,
            }
        )
    return rows


def print_models(console: Console | None = None) -> None:
    """The ``kdlab models`` listing: a header naming the shapes counted at, one row per name, how to use them."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    shapes = "; ".join(shape.label for shape in DEFAULT_SHAPES.values())
    console.print(f"parameters at each kind's default shape: {shapes}", markup=False, highlight=False)
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    table.add_column("name", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("params", justify="right", no_wrap=True)
    table.add_column("description", overflow="fold")
    for row in describe_models():
        params = row["params"]
        table.add_row(
            str(row["name"]), str(row["kind"]), "—" if params is None else f"{params:,}", str(row["description"])
        )
    console.print(table)
    console.print(
        "models are given by these names: teacher.model, student.model (e.g. --set student.model=mlp-student)",
        markup=False,
        highlight=False,
    )
