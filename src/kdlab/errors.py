"""User-facing errors.

Every mistake a user can make (a bad config value, a missing path, a checkpoint that does not fit)
raises a :class:`KdlabError` subclass whose message is one line: what is wrong, where, and how to
fix it. The CLI prints that line and exits with status 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


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
