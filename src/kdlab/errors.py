"""User-facing errors.

Every mistake a user can make (a bad config value, a missing path, a checkpoint that does not fit)
raises a :class:`KdlabError` subclass whose message is one line: what is wrong, where, and how to
fix it. The CLI prints that line and exits with status 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import re
import reprlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

SHOWN_CHARS = 80
"""Characters of a value or key quoted in an error message."""


def shorten(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters, ending in ``…`` when it was cut (values quoted in messages)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def first_line(e: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, cut to ``limit`` characters: what a one-line error
    quotes of a failure inside a library (timm, transformers, onnxruntime) or the user's own code."""
    return (str(e).strip().splitlines() or [""])[0][:limit]


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxtuple, _REPR.maxset = 2, 4, 4, 4, 4
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = SHOWN_CHARS


def show_value(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` for an error message: at most ``limit`` characters, ``…`` where it was cut.

    Bounded in time and memory too: a nested or self-referencing value is not expanded.
    """
    return shorten(_REPR.repr(value), limit)


def validation_problem(e: ValidationError, *, where: str = "") -> str:
    """The first problem of a pydantic ``ValidationError`` as ``key.path: message (got value)`` —
    the one formatting of configs (``where="config"`` when the problem is at the top) and of run
    records. Keys are cut to 40 characters, the message to 200, the value to :data:`SHOWN_CHARS`;
    a missing field or a mapping value is not echoed."""
    err = e.errors(include_url=False)[0]
    loc = ".".join(shorten(p, 40) if isinstance(p, str) else str(p) for p in err["loc"]) or where
    msg = shorten(re.sub(r" or instance of \w+", "", str(err["msg"]).removeprefix("Value error, ")), 200)
    got = err.get("input")
    shown = "" if err["type"] == "missing" or isinstance(got, dict) else f" (got {show_value(got)})"
    return f"{loc}: {msg}{shown}" if loc else f"{msg}{shown}"


class KdlabError(Exception):
    """Base class of every error caused by user input, with a one-line message."""

    def __init__(self, message: str) -> None:
        # One line, always: multi-line messages are folded so the CLI never prints a wall of text.
        super().__init__(" ".join(str(message).split()))


class ConfigError(KdlabError, ValueError):
    """An experiment config, preset name, registry name or option is invalid."""


class DataError(KdlabError):
    """A dataset is missing, empty, unreadable or cannot be split as asked."""


class CheckpointError(KdlabError):
    """A weights file is missing, corrupt, unsafe, or does not fit the model."""


class TrainingError(KdlabError):
    """Training cannot go on as configured (a non-finite loss, every batch skipped, ...)."""


class NonFiniteLossError(TrainingError):
    """The loss of a training step was NaN or ±inf (``train.nonfinite=stop``)."""

    def __init__(self, *, value: float, step: int, epoch: int | None = None, lr: float | None = None) -> None:
        self.value, self.step, self.epoch, self.lr = value, step, epoch, lr
        where = f"epoch {epoch}, step {step}" if epoch is not None else f"step {step}"
        now = f", now {lr:g}" if lr is not None else ""
        super().__init__(
            f"loss is {value} at {where}: lower the learning rate (train.lr{now}), set train.grad_clip, "
            "or set train.nonfinite=skip-batch"
        )


class StorageError(KdlabError, OSError):
    """A file could not be written (disk full, read-only folder, path under a file).

    Also an :class:`OSError`, so code that treats an optional write as best-effort keeps doing so.
    """


class RunInterrupted(Exception):
    """Training stopped at a step boundary because a stop was requested (SIGINT/SIGTERM).

    Not a :class:`KdlabError`: the CLI answers it with the resume command and exit 130/143.
    """

    def __init__(self, signum: int | None = None) -> None:
        self.signum = signum
        self.run_dir: object = None  # the run folder to resume, set by kdlab.lab.run.run_lab
        super().__init__("training stopped on request")
