"""``timm:<name>`` models: ``timm.create_model(name, pretrained=…, num_classes=…, in_chans=C)``.

The model is timm's own module, with no wrapper, so a timm student's weights file from a run folder
loads with ``load_state_dict(strict=True)`` into ``timm.create_model(name, num_classes=…, in_chans=…)``.
timm (and torchvision) are imported only here, when a ``timm:`` spec is built (``pip install kdlab[timm]``).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from torch import nn

from kdlab.errors import ConfigError, first_line
from kdlab.models.common import Declared, section_of


def _timm(key: str, name: str) -> Any:
    try:
        import timm
    except ImportError:
        raise ConfigError(
            f"{key}: 'timm:{name}' needs the timm package (not installed): pip install kdlab[timm]"
        ) from None
    return timm


def close_names(timm: Any, name: str, n: int = 3) -> list[str]:
    """timm model names close to ``name``: those containing it (``timm.list_models('*name*')``), then
    difflib's closest matches."""
    base = name.split(".")[0]
    found = [m for m in timm.list_models(f"*{base}*") if m != base][:n]
    if len(found) < n:
        found += [m for m in difflib.get_close_matches(base, timm.list_models(), n=n) if m not in found]
    return found[:n]


def check_name(name: str, *, key: str) -> Any:
    """The timm module, once ``name`` (``resnet18`` or ``resnet18.a1_in1k``) is known to timm; an unknown
    name is one line naming ``key`` and close names."""
    timm = _timm(key, name)
    if not timm.is_model(name):
        close = close_names(timm, name)
        hint = f"did you mean {', '.join('timm:' + c for c in close)}? " if close else ""
        raise ConfigError(f"{key}: timm has no model '{name}': {hint}see timm.list_models()")
    return timm


def build_timm(
    name: str, *, num_classes: int, input_shape: Sequence[int], pretrained: bool = False, key: str = "model"
) -> nn.Module:
    """``timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=C)`` for image
    inputs ``(C, H, W)``.

    Raises:
        ConfigError: one line naming ``key``: timm missing, an unknown name, text inputs, pretrained
            weights that cannot be fetched (offline), or timm refusing the arguments.
    """
    timm = check_name(name, key=key)
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise ConfigError(f"{key}: timm:{name} takes images (C, H, W), but the data's inputs have shape {list(shape)}")
    if pretrained and not _hub_offline_mode():
        from kdlab.models.common import hub_unreachable

        why = hub_unreachable()
        if why is not None:
            raise ConfigError(
                f"{key}: timm:{name} pretrained weights cannot be fetched: the machine is offline ({why}); set "
                f"{section_of(key)}.pretrained=false, give the weights as {section_of(key)}.checkpoint, or set "
                "HF_HUB_OFFLINE=1 to use weights already in the local Hugging Face cache"
            )
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=shape[0])
    except OSError as e:  # huggingface_hub's offline / not-found errors, connection errors: all OSError
        raise ConfigError(
            f"{key}: timm:{name} pretrained weights could not be fetched (the machine is offline or the hub "
            f"unreachable: {type(e).__name__}); set {section_of(key)}.pretrained=false, or give the weights as "
            f"{section_of(key)}.checkpoint"
        ) from None
    except RuntimeError as e:
        if pretrained and "pretrained" in str(e).lower():
            raise ConfigError(f"{key}: timm:{name} has no pretrained weights ({first_line(e)})") from None
        raise ConfigError(f"{key}: timm:{name} cannot be built ({type(e).__name__}: {first_line(e)})") from None
    except (ValueError, TypeError, AssertionError, KeyError) as e:
        raise ConfigError(f"{key}: timm:{name} cannot be built ({type(e).__name__}: {first_line(e)})") from None


def declared_timm(name: str, *, key: str) -> Declared:
    """The input a timm model's ``pretrained_cfg`` declares: ``input_size`` (C, H, W) -> channels and
    image_size (H), and its ``mean`` / ``std``. Read from timm's table; no model is built."""
    check_name(name, key=key)
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        return Declared()
    size = tuple(cfg.input_size) if cfg.input_size else None
    return Declared(
        image_size=int(size[1]) if size else None,
        channels=int(size[0]) if size else None,
        mean=tuple(float(m) for m in cfg.mean) if cfg.mean else None,
        std=tuple(float(s) for s in cfg.std) if cfg.std else None,
    )


def _hub_offline_mode() -> bool:
    """``HF_HUB_OFFLINE`` is set: the user asks for the local Hugging Face cache only."""
    import os

    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
