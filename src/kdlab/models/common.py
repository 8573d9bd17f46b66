"""What every kind of model spec shares, kept in one leaf module so that the spec dispatcher
(:mod:`kdlab.models.specs`), the registry and each model source (timm, Hugging Face, the user's own
factories) can all import it without importing one another: the registry of named factories
(:data:`MODELS`) and what a model declares about the inputs it expects (:class:`Declared`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from torch import nn

from kdlab.registry import Registry

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")
"""Registered name -> factory(num_classes=, input_shape=, vocab_size=) -> nn.Module."""


@dataclass(frozen=True)
class InputFields:
    """The fields that say how a model sees its inputs, shared by what a model declares
    (:class:`Declared`) and the view it is given (:class:`kdlab.data.views.View`); they mirror
    ``<teacher|student>.input`` (:class:`kdlab.config.schema.InputConfig`). None = not said."""

    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channels: int | None = None
    tokenizer: Path | None = None
    max_length: int | None = None


@dataclass(frozen=True)
class Declared(InputFields):
    """The preprocessing a model declares for its own inputs; None = the model says nothing about it
    (the data's view, or the config's ``<teacher|student>.input``, decides).

    Attributes:
        image_size: images: side of the square input the model was trained at, in px.
        mean: images: per-channel mean subtracted from pixels in [0, 1].
        std: images: per-channel std divided by.
        channels: images: input channels.
        tokenizer: text: a Hugging Face tokenizer folder encoding the model's inputs.
        max_length: text: tokens per sequence for that tokenizer.
        labels: the model's own label names, output index order (matched to the data's by name).
    """

    labels: tuple[str, ...] | None = None

    def is_empty(self) -> bool:
        """True when the model declares nothing."""
        return all(getattr(self, f.name) is None for f in fields(self))


def section_of(key: str) -> str:
    """``teacher.model`` -> ``teacher``: the config section whose other keys a message names."""
    return key.removesuffix(".model")


HUB_PROBE_SECONDS = 3.0


def hub_unreachable() -> str | None:
    """Why the Hugging Face hub (where timm's and HF's published weights live) cannot be reached
    from here, or None when it can be tried: the hub's host name must resolve within
    :data:`HUB_PROBE_SECONDS`. Asked before a download, so an offline machine gets one line at once
    instead of a minute of retries. (With ``HF_HUB_OFFLINE=1`` the caller skips this and uses the
    local Hugging Face cache.)"""
    import concurrent.futures
    import os
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co").hostname or "huggingface.co"
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        pool.submit(socket.getaddrinfo, host, 443).result(timeout=HUB_PROBE_SECONDS)
    except concurrent.futures.TimeoutError:
        return f"{host} did not resolve within {HUB_PROBE_SECONDS:g} s"
    except OSError as e:
        return f"{host} does not resolve: {e.strerror or e}"
    finally:
        pool.shutdown(wait=False)
    return None
