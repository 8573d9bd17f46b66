"""Load an experiment: preset or YAML file, then ``--set key=value`` overrides, then validation.

Configs are data: read with a safe YAML loader and validated by pydantic; nothing is evaluated.
A YAML file may start from a preset with ``base: <preset>`` and override only what differs.

Reading is bounded, whatever the input: a config file is at most :data:`MAX_FILE_BYTES`, nests
at most :data:`MAX_DEPTH` levels and holds at most :data:`MAX_NODES` values once its aliases are
expanded (a "billion laughs" alias bomb is refused while it is parsed, not after it filled the
memory), and a value echoed in an error message is cut to :data:`SHOWN_CHARS` characters.
"""

from __future__ import annotations

import copy
import difflib
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from kdlab.config.schema import ExperimentConfig
from kdlab.errors import SHOWN_CHARS, ConfigError, shorten, show_value, validation_problem
from kdlab.reading import FileTooLarge, NotRegularFile, read_bounded

PRESETS_DIR = Path(str(resources.files("kdlab") / "presets"))
DEFAULT_PRESET = "digits"

MAX_FILE_BYTES = 2**20  # 1 MiB: the presets are under 1 KiB
MAX_DEPTH = 50  # nesting levels of mappings and lists; a config uses 3
MAX_NODES = 10_000  # values (keys, scalars, lists, mappings) after alias expansion; a config has ~150
SHOWN_PATH_CHARS = 200  # of a path named in an error message (its end is kept)


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
        ConfigError: unknown preset, unreadable or oversized YAML, unknown key or invalid value
            (one line, naming the source and the key).
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
    """The first problem of a ValidationError as ``key.path: message (got value)``, value cut short;
    an unknown key lists the known ones and suggests the closest."""
    err = e.errors()[0]
    if err["type"] == "extra_forbidden":
        loc = ".".join(shorten(p, 40) if isinstance(p, str) else str(p) for p in err["loc"])
        parent = tuple(str(p) for p in err["loc"][:-1])
        return f"{loc}: unknown key ({_known_keys(parent)}){key_hint(parent, str(err['loc'][-1]))}"
    return validation_problem(e, where="config")


def _show_path(path: str | Path) -> str:
    text = str(path)
    return text if len(text) <= SHOWN_PATH_CHARS else "…" + text[-(SHOWN_PATH_CHARS - 1) :]


def _section_model(parent: tuple[str, ...]) -> Any:
    model: Any = ExperimentConfig
    for part in parent:
        model = model.model_fields[part].annotation
    return model


def _known_keys(parent: tuple[str, ...]) -> str:
    return "known keys: " + ", ".join(_section_model(parent).model_fields)


def config_keys() -> list[str]:
    """Every key of the config as a dotted path (``seed``, ``distill.alpha``, ``train.augment.hflip``)."""
    out: list[str] = []

    def walk(model: Any, prefix: str) -> None:
        for name, field in model.model_fields.items():
            out.append(prefix + name)
            sub = field.annotation
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                walk(sub, f"{prefix}{name}.")

    walk(ExperimentConfig, "")
    return out


def key_hint(parent: tuple[str, ...], key: str) -> str:
    """``; did you mean …?`` for an unknown ``key`` under ``parent``: the closest keys of that section,
    or where a key of that name lives in another section (``train.epochs`` -> ``teacher.epochs,
    student.epochs``); empty when nothing is close."""
    key = key[:SHOWN_CHARS]
    prefix = "".join(f"{p}." for p in parent)
    elsewhere = [k for k in config_keys() if k.rsplit(".", 1)[-1] == key and k != prefix + key]
    if elsewhere:
        return f"; {key} is a key of {_sections(elsewhere)}: did you mean {', '.join(elsewhere)}?"
    close = [prefix + k for k in difflib.get_close_matches(key, list(_section_model(parent).model_fields), n=3)]
    if not close:  # a typo of a key of another section: `train.temprature` -> distill.temperature
        others = {k.rsplit(".", 1)[-1]: k for k in config_keys() if "." in k}
        close = [others[k] for k in difflib.get_close_matches(key, list(others), n=2, cutoff=0.8)]
    return f"; did you mean {', '.join(close)}?" if close else ""


def _sections(keys: list[str]) -> str:
    names = [k.rsplit(".", 1)[0] if "." in k else "the top level" for k in keys]
    return " and ".join(names) if len(names) <= 2 else ", ".join(names[:-1]) + " and " + names[-1]


def preset_hint(name: str) -> str:
    """``did you mean 'digits'? `` for a mistyped preset name, or an empty string."""
    close = difflib.get_close_matches(name[:SHOWN_CHARS], list(list_presets()), n=3)
    return f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""


# --------------------------------------------------------------------------------------------
# Bounded YAML


class YAMLBoundError(yaml.YAMLError):
    """A YAML document over a reading bound (nesting depth, values after alias expansion)."""

    def __init__(self, message: str, mark: Any = None) -> None:
        super().__init__(message)
        self.message, self.mark = message, mark


class BoundedSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses, while composing, a document nested deeper than
    :data:`MAX_DEPTH` levels or holding more than :data:`MAX_NODES` values with every alias
    expanded, and a recursive alias (``&a [*a]``).

    Aliases stay shared nodes, so the refused document never takes more memory than its text.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._expanded = 0  # values so far, each alias counting the values of what it names
        self._sizes: dict[int, int] = {}  # id(node) -> its expanded size, once composed

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            node = super().compose_node(parent, index)
            size = self._sizes.get(id(node))
            if size is None:  # the alias names a node that is still being composed: a cycle
                raise YAMLBoundError("an alias refers to the value that contains it (a recursive alias)", mark)
            self._count(size, mark, alias=True)
            return node
        mark = self.peek_event().start_mark
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise YAMLBoundError(f"nested deeper than {MAX_DEPTH} levels", mark)
        start = self._expanded
        self._count(1, mark, alias=False)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._sizes[id(node)] = self._expanded - start
        return node

    def _count(self, n: int, mark: Any, *, alias: bool) -> None:
        self._expanded += n
        if self._expanded > MAX_NODES:
            why = " once its aliases are expanded (an alias bomb?)" if alias else ""
            raise YAMLBoundError(f"holds more than {MAX_NODES:,} values{why}", mark)


def parse_yaml(text: str, where: str) -> Any:
    """Parse one YAML document with :class:`BoundedSafeLoader`; any problem is one ConfigError
    line starting with ``where`` (a file name, ``--set key``...) and the line number."""
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(f"{where}: is larger than {MAX_FILE_BYTES // 2**20} MiB; a config is a short YAML mapping")
    try:
        return _load(text)
    except yaml.YAMLError as e:
        raise ConfigError(_yaml_problem(e, where)) from None
    except _VALUE_ERRORS as e:
        raise ConfigError(_value_problem(e, where)) from None


# An int of 5,000 digits (Python's int-from-text limit), a date out of range, a float too large.
_VALUE_ERRORS = (ValueError, OverflowError, RecursionError)


def _load(text: str) -> Any:
    loader = BoundedSafeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def _value_problem(e: BaseException, where: str) -> str:
    if "digits" in str(e):
        return f"{where}: an integer with thousands of digits is not a config value"
    return f"{where}: not a valid YAML value ({shorten(str(e), 120)})"


def _yaml_problem(e: yaml.YAMLError, where: str) -> str:
    if isinstance(e, YAMLBoundError):
        mark, problem = e.mark, e.message
    else:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or getattr(e, "reason", None) or str(e)
        context = getattr(e, "context", None)
        problem = f"{context}, {problem}" if context else str(problem)
        problem = f"not valid YAML ({shorten(problem, 160)})"
    line = f" line {mark.line + 1}:" if mark is not None else ""
    return f"{where}:{line} {problem}"


def _check_keys(value: Any, where: str, loc: str = "") -> None:
    """Every mapping key is a string: YAML reads ``1:``, ``yes:`` or ``null:`` as a number, a bool, None."""
    if isinstance(value, dict):
        for key, child in value.items():
            if not isinstance(key, str):
                at = f"under {loc}" if loc else "at the top level"
                raise ConfigError(
                    f"{where}: key {show_value(key, 40)} {at}: keys are names, YAML read this one as"
                    f" {type(key).__name__}; quote it: '{shorten(str(key), 40)}'"
                )
            name = shorten(key, 40)
            _check_keys(child, where, f"{loc}.{name}" if loc else name)
    elif isinstance(value, list):
        for child in value:
            _check_keys(child, where, loc)


# --------------------------------------------------------------------------------------------
# Files and presets


def _read_target(target: str | Path) -> tuple[dict[str, Any], str]:
    text, path = str(target), Path(target)
    try:
        is_file = path.suffix in {".yaml", ".yml"} or path.exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        is_file = False
    if is_file:
        return _read_yaml_file(path), _show_path(path)
    if text in list_presets():  # a preset by its name only: never a path built from the argument
        return _read_yaml_file(PRESETS_DIR / f"{text}.yaml"), f"preset {text}"
    raise ConfigError(
        f"'{shorten(text, 60)}' is neither a preset nor a YAML file: {preset_hint(text)}"
        f"presets are {', '.join(list_presets())}"
        " (`kdlab presets`), or give the path of an experiment .yaml"
    )


def _read_text(path: Path) -> str:
    """The file's text, refused if it is larger than MAX_FILE_BYTES, binary or not UTF-8."""
    shown = _show_path(path)
    try:
        is_dir = path.is_dir()
    except (OSError, ValueError):
        is_dir = False  # open() below names the problem
    if is_dir:
        raise ConfigError(f"{shown}: is a folder, not an experiment YAML file")
    try:
        data = read_bounded(path, MAX_FILE_BYTES)  # never more, whatever the file claims (/dev/zero)
    except FileTooLarge:
        raise ConfigError(
            f"{shown}: is larger than {MAX_FILE_BYTES // 2**20} MiB; an experiment file is a short YAML mapping"
        ) from None
    except FileNotFoundError:
        raise ConfigError(f"{shown}: no such experiment file") from None
    except NotRegularFile as e:
        raise ConfigError(f"{shown}: {e.strerror}; give an experiment YAML file") from None
    except (OSError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"{shown}: cannot read ({shorten(why, 120)})") from None
    if b"\x00" in data:
        raise ConfigError(f"{shown}: is a binary file (NUL bytes), not YAML text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"{shown}: is not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); save it as UTF-8"
        ) from None


def _read_yaml_file(path: Path, depth: int = 0) -> dict[str, Any]:
    shown = _show_path(path)
    raw = parse_yaml(_read_text(path), shown)
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{shown}: must be a mapping of config keys (got a {type(raw).__name__})")
    _check_keys(raw, shown)
    base = raw.pop("base", None)
    if base is not None:
        presets = list_presets()
        if depth > 4:
            raise ConfigError(f"{shown}: 'base' chain is too deep (a cycle?)")
        if not isinstance(base, str):
            raise ConfigError(
                f"{shown}: base: must be a preset name (got {show_value(base, 40)}); known: {', '.join(presets)}"
            )
        if base not in presets:
            hint = " (base takes a preset name, not a path)" if "/" in base or base.endswith((".yaml", ".yml")) else ""
            raise ConfigError(
                f"{shown}: base: unknown preset '{shorten(base, 60)}'{hint}"
                f" ({preset_hint(base)}known: {', '.join(presets)})"
            )
        raw = _deep_merge(_read_yaml_file(PRESETS_DIR / f"{base}.yaml", depth + 1), raw)
    return raw


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------------------------
# --set overrides


def parse_value(text: str, where: str) -> Any:
    """A ``key=value`` value, parsed as YAML (``1e-3``, ``true``, ``null``, ``[a, b]``).

    Text that is not valid YAML stays a string (``--set data.path=a: b``); a value over a reading
    bound (too deep, an alias bomb, an int of thousands of digits) is a ConfigError naming ``where``.
    """
    if not text.strip():
        return ""
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(f"{where}: value is larger than {MAX_FILE_BYTES // 2**20} MiB")
    try:
        value = _load(text)
    except YAMLBoundError as e:
        raise ConfigError(_yaml_problem(e, where)) from None
    except yaml.YAMLError:
        return text
    except _VALUE_ERRORS as e:
        raise ConfigError(_value_problem(e, where)) from None
    _check_keys(value, where)
    return value


def _apply_override(raw: dict[str, Any], item: str) -> None:
    """Apply ``a.b.c=value`` to the nested dict; the value is parsed as YAML (1e-3, true, null)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    shown = shorten(repr(item), SHOWN_CHARS)
    if not sep or not key:
        raise ConfigError(f"--set {shown}: expected key=value, e.g. --set distill.alpha=0.5")
    parts = key.split(".")
    if not all(p.strip() for p in parts):
        raise ConfigError(f"--set {shown}: empty name in the key; keys are dot-separated names, e.g. train.lr")
    parts = [p.strip() for p in parts]
    value = parse_value(text, f"--set {shorten(key, 60)}")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {shown}: '{shorten(part, 40)}' is a value, not a section")
        node = child
    node[parts[-1]] = value
