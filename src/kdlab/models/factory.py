"""The user's own model code: ``<module>:<function>`` or ``<path/to/file.py>:<function>``.

**This runs the user's code**, as a Lightning ``class_path`` does: the named module is imported (with
the current directory on the import path, as ``uvicorn`` does, and the path restored afterwards) or
the named file executed (``importlib.util``; a relative path is resolved against the current
directory), and the function is called with the keyword arguments it declares among
``num_classes``, ``input_shape`` and ``vocab_size`` (a ``**kwargs`` function gets all three). It
must return an ``nn.Module`` whose forward maps a batch of inputs to logits.

A run folder records a factory file by its absolute path. Loading a run again (predict, export,
``load_run``) refuses a factory file or module that resolves inside the run folder, and a file path
the folder records relative to anything: a run folder someone sends you cannot run code it carries.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from kdlab.errors import ConfigError, first_line

FACTORY_ARGS = ("num_classes", "input_shape", "vocab_size")
"""The keyword arguments a factory may declare."""

_FILE_MODULES: dict[tuple[str, int], ModuleType] = {}
"""Factory files executed in this process, by (real path, mtime_ns): each runs once."""


def split_target(target: str) -> tuple[str, str]:
    """``'<source>:<function>'`` -> (source, function)."""
    source, _, function = target.rpartition(":")
    return source, function


def is_file(source: str) -> bool:
    return source.endswith(".py")


def absolute_factory(target: str) -> str:
    """``target`` with a factory file's path made absolute (against the current directory); a module
    factory unchanged."""
    source, function = split_target(target)
    if not is_file(source):
        return target
    return f"{os.path.abspath(os.path.expanduser(source))}:{function}"


@contextlib.contextmanager
def _cwd_on_path() -> Iterator[None]:
    """The current directory first on ``sys.path`` for the block (as ``python -m`` / uvicorn put it),
    then ``sys.path`` restored."""
    entry = os.getcwd()
    sys.path.insert(0, entry)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(entry)


def _inside(path: str | Path, folder: Path) -> bool:
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(folder))
    except ValueError:
        return False
    return True


def check_outside(target: str, *, run_dir: Path, key: str) -> None:
    """Refuse a factory recorded in ``run_dir`` whose code is not the user's own: a file path that is
    relative (never resolved against the folder) or lies inside the folder, or a module whose file or
    package folder lies inside it."""
    source, _function = split_target(target)
    refuse = (
        f"{key}: '{target}' recorded in {run_dir} names code inside the run folder; kdlab never runs code a run "
        "folder carries (put the factory in your own project and run again)"
    )
    if is_file(source):
        if not os.path.isabs(os.path.expanduser(source)):
            raise ConfigError(
                f"{key}: '{target}' recorded in {run_dir} is a relative path; kdlab never resolves a recorded factory "
                "file against the run folder (record an absolute path: run again from your project)"
            )
        if _inside(os.path.expanduser(source), run_dir):
            raise ConfigError(refuse)
        return
    top = source.split(".")[0]
    with _cwd_on_path():
        try:
            found = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            found = None
    if found is None:
        return  # a missing module is the factory's own one-line error when it is built
    places = [found.origin] if found.origin and found.origin not in ("built-in", "frozen") else []
    places += list(found.submodule_search_locations or [])
    if any(_inside(p, run_dir) for p in places):
        raise ConfigError(refuse)


def _load_file(path: str, key: str, target: str) -> ModuleType:
    real = os.path.realpath(path)
    if not os.path.isfile(real):
        raise ConfigError(f"{key}: factory file {path} does not exist (spec '{target}'); check the path")
    stamp = os.stat(real).st_mtime_ns
    if (real, stamp) in _FILE_MODULES:
        return _FILE_MODULES[(real, stamp)]
    name = "kdlab_factory_" + hashlib.sha256(real.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    spec = importlib.util.spec_from_file_location(name, real)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{key}: cannot load {path} as Python (spec '{target}')")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up here
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        sys.modules.pop(name, None)
        if isinstance(e, KeyboardInterrupt | SystemExit):
            raise
        raise ConfigError(
            f"{key}: running {path} failed ({type(e).__name__}: {first_line(e)}); fix the file (spec '{target}')"
        ) from None
    _FILE_MODULES[(real, stamp)] = module
    return module


def _load_module(source: str, key: str, target: str) -> ModuleType:
    with _cwd_on_path():
        try:
            return importlib.import_module(source)
        except ModuleNotFoundError as e:
            if e.name and (source == e.name or source.startswith(e.name + ".")):
                raise ConfigError(
                    f"{key}: no module named '{e.name}' (spec '{target}'); run kdlab from the folder that holds it, "
                    "add it to PYTHONPATH, or give the file as path/to/file.py:function"
                ) from None
            raise ConfigError(
                f"{key}: importing '{source}' failed (ModuleNotFoundError: {first_line(e)}); spec '{target}'"
            ) from None
        except Exception as e:
            raise ConfigError(
                f"{key}: importing '{source}' failed ({type(e).__name__}: {first_line(e)}); spec '{target}'"
            ) from None


def load_factory(target: str, *, key: str) -> Callable[..., Any]:
    """The function ``target`` names, its module imported or its file executed."""
    source, function = split_target(target)
    module = _load_file(source, key, target) if is_file(source) else _load_module(source, key, target)
    where = source if is_file(source) else f"module '{source}'"
    if not hasattr(module, function):
        close = [n for n in dir(module) if not n.startswith("_") and callable(getattr(module, n, None))][:5]
        known = f" (it defines: {', '.join(close)})" if close else ""
        raise ConfigError(f"{key}: {where} has no function '{function}'{known}")
    fn = getattr(module, function)
    if not callable(fn):
        raise ConfigError(f"{key}: '{function}' in {where} is a {type(fn).__name__}, not a function")
    return fn


def factory_kwargs(fn: Callable[..., Any], values: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments among :data:`FACTORY_ARGS` that ``fn`` declares (all of them for ``**kwargs``)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a callable without a signature: give it everything
        return dict(values)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return dict(values)
    names = {
        p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    return {k: v for k, v in values.items() if k in names}


def build_factory(
    target: str, *, num_classes: int, input_shape: Sequence[int], vocab_size: int | None = None, key: str = "model"
) -> nn.Module:
    """Call the user's factory ``target`` with the arguments it declares; it must return an ``nn.Module``.

    Raises:
        ConfigError: one line naming ``key``: file or module missing, function missing or not callable,
            the factory raising (its exception's type and first line), or a return value that is not a module.
    """
    fn = load_factory(target, key=key)
    values = {"num_classes": num_classes, "input_shape": tuple(input_shape), "vocab_size": vocab_size}
    try:
        model = fn(**factory_kwargs(fn, values))
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:
        raise ConfigError(f"{key}: factory '{target}' raised {type(e).__name__}: {first_line(e)}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"{key}: factory '{target}' returned {type(model).__name__}, not a torch.nn.Module; return the model"
        )
    return model
