"""Load an experiment: preset or YAML file, then ``--set key=value`` overrides, then validation.

Configs are data: read with ``yaml.safe_load`` and validated by pydantic; nothing is evaluated.
A YAML file may start from a preset with ``base: <preset>`` and override only what differs.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from kdlab.config.schema import ExperimentConfig
from kdlab.errors import ConfigError

PRESETS_DIR = Path(str(resources.files("kdlab") / "presets"))
DEFAULT_PRESET = "digits"


def list_presets() -> dict[str, str]:
    """Preset name -> its one-line description (the YAML file's first comment line)."""
    out: dict[str, str] = {}
    for path in sorted(PRESETS_DIR.glob("*.yaml")):
        first = path.read_text(encoding="utf-8").splitlines()[0] if path.stat().st_size else ""
        out[path.stem] = first.lstrip("# ").strip()
    return out


def load_experiment(target: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Resolve a preset name or YAML path plus ``key=value`` overrides into a validated config.

    Raises:
        ConfigError: unknown preset, unreadable YAML, unknown key or invalid value (one line,
            naming the source and the key).
    """
    target = DEFAULT_PRESET if target is None else target
    raw, source = _read_target(target)
    for item in overrides or []:
        _apply_override(raw, item)
    if overrides:
        source = f"{source} + --set"
    return validate(raw, source)


def validate(raw: dict[str, Any], source: str) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{source}: {format_validation_error(e)}") from None


def format_validation_error(e: ValidationError) -> str:
    """The first problem of a ValidationError as ``key.path: message (got value)``."""
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "config"
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key ({_known_keys(err['loc'][:-1])})"
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    return f"{loc}: {msg}{shown}"


def _known_keys(parent: tuple[Any, ...]) -> str:
    model: Any = ExperimentConfig
    for part in parent:
        model = model.model_fields[str(part)].annotation
    return "known keys: " + ", ".join(model.model_fields)


def _read_target(target: str | Path) -> tuple[dict[str, Any], str]:
    path = Path(target)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        return _read_yaml_file(path), str(path)
    preset = PRESETS_DIR / f"{target}.yaml"
    if preset.is_file():
        return _read_yaml_file(preset), f"preset {target}"
    raise ConfigError(
        f"'{target}' is neither a preset nor a YAML file: presets are {', '.join(list_presets())}"
        " (`kdlab presets`), or give the path of an experiment .yaml"
    )


def _read_yaml_file(path: Path, depth: int = 0) -> dict[str, Any]:
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not an experiment YAML file")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such experiment file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({e})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: must be a mapping of config keys (got a {type(raw).__name__})")
    base = raw.pop("base", None)
    if base is not None:
        if depth > 4:
            raise ConfigError(f"{path}: 'base' chain is too deep (a cycle?)")
        preset = PRESETS_DIR / f"{base}.yaml"
        if not preset.is_file():
            raise ConfigError(f"{path}: base: unknown preset '{base}' (known: {', '.join(list_presets())})")
        raw = _deep_merge(_read_yaml_file(preset, depth + 1), raw)
    return raw


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply ``a.b.c=value`` to the nested dict; the value is parsed as YAML (1e-3, true, null)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set distill.alpha=0.5")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value
