"""The model registry: name -> factory(num_classes=, input_shape=, vocab_size=) -> nn.Module."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from torch import nn

if TYPE_CHECKING:
    from rich.console import Console

from kdlab.models.common import MODELS, ModelFactory
from kdlab.models.specs import build_model

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
    name: str,
    *,
    num_classes: int,
    input_shape: Sequence[int],
    vocab_size: int | None = None,
    classes: Sequence[str] | None = None,
    pretrained: bool = False,
    config: Mapping[str, Any] | None = None,
    key: str = "model",
) -> nn.Module:
    """Build the model a spec names, sized for the data (:func:`kdlab.models.specs.build_model`).

    Args:
        name: a model spec: a registered name (``list_models()``), ``timm:<name>``,
            ``hf:<folder or hub id>``, ``<module>:<function>`` or ``<path/to/file.py>:<function>``.
        num_classes: outputs of the classifier.
        input_shape: shape of one input, ``(C, H, W)`` for images, ``(L,)`` for token ids.
        vocab_size: vocabulary size, for text models.
        classes: the data's class names (an ``hf:`` model matches its labels to them by name).
        pretrained: ``timm:`` / ``hf:``: start from the published pretrained weights.
        config: ``hf:``: overrides of the model's config.
        key: the setting named in errors (``teacher.model``).
    """
    return build_model(
        name,
        num_classes=num_classes,
        input_shape=input_shape,
        vocab_size=vocab_size,
        classes=classes,
        key=key,
        pretrained=pretrained,
        config=config,
    )


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
    for line in OTHER_SPECS:
        console.print(line, markup=False, highlight=False)


OTHER_SPECS = (
    "models are given by these names: teacher.model, student.model (e.g. --set student.model=mlp-student)",
    "or by a model spec (docs/models.md):",
    "  timm:<name>                  a timm model, e.g. --set teacher.model=timm:resnet18 (pip install kdlab[timm])",
    "  hf:<folder or hub id>        a Hugging Face classifier, e.g. --set teacher.model=hf:./my-bert (kdlab[hf])",
    "  <module>:<function>          your own factory, e.g. --set student.model=mymodels:make_student",
    "  <path/to/file.py>:<function> your own factory file, e.g. --set student.model=models/net.py:build",
    "a factory runs your code: it is called with num_classes, input_shape and vocab_size (those it takes)",
)
"""What ``kdlab models`` says after the table: the other kinds of model spec, one example each."""
