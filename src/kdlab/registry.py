"""One generic name -> object registry, used for models, losses and datasets."""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from kdlab.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names (as users type them in YAML) to factories or functions.

    Example:
        >>> MODELS: Registry[Callable[..., nn.Module]] = Registry("model")
        >>> @MODELS.register("tiny")
        ... def tiny(num_classes, input_shape): ...
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering its target under ``name`` (a duplicate name warns and replaces)."""

        def decorator(item: T) -> T:
            self.add(name, item)
            return item

        return decorator

    def add(self, name: str, item: T) -> None:
        if name in self._items:
            warnings.warn(f"{self.kind} '{name}' registered twice; the last one wins", stacklevel=3)
        self._items[name] = item

    def get(self, name: str) -> T:
        """Return the item named ``name``; an unknown name raises ConfigError listing close matches."""
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        typed = str(name)[:100]  # matched cut short, whatever its length
        spelled = typed.strip().lower().replace("_", "-").replace(" ", "-")  # `Lab_CNN_Teacher`, `KD`
        close = [spelled] if spelled in self._items else difflib.get_close_matches(typed, self._items, n=3)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        return f"unknown {self.kind} '{name}': {hint}known: {', '.join(sorted(self._items))}"

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
