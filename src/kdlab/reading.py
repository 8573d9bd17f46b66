"""Bounded reading of small files (configs, run records, data files): regular files only, opened
without blocking (a FIFO or device is refused, never read), never more bytes than the caller
allows. Free of torch, so the config layer can use it at start-up."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO


class NotRegularFile(OSError):
    """The path exists but is a folder, FIFO, device or socket."""


def kind_of(mode: int) -> str:
    """``'a folder'``, ``'a FIFO (named pipe)'``, ... for a ``st_mode``."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def open_regular(path: Path) -> BinaryIO:
    """Open a regular file for binary reading; anything else raises :class:`NotRegularFile`.

    The open itself never blocks (``O_NONBLOCK``: a FIFO without a writer opens at once and is
    then refused); the usual :class:`OSError`\\ s (missing, permission, symlink loop) pass through.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            code = errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL
            raise NotRegularFile(code, f"is {kind_of(mode)}, not a regular file", str(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class FileTooLarge(OSError):
    """A file over the size a reader allows; ``size`` is its size in bytes when the file system
    said so (else None: it grew past the limit while being read)."""

    def __init__(self, path: Path, limit: int, size: int | None) -> None:
        super().__init__(errno.EFBIG, "file too large", str(path))
        self.limit, self.size = limit, size


def read_bounded(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path``, never more than ``limit``: the one bounded reader of
    configs and run records. Raises :class:`FileTooLarge` (before reading, when the size is known),
    :class:`NotRegularFile` for a folder, FIFO or device (never blocks on one), or the usual
    :class:`OSError`\\ s; each caller turns them into its own one-line message."""
    with open_regular(Path(path)) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise FileTooLarge(Path(path), limit, size)
        data = f.read(limit + 1)  # never more, whatever the file system claims
    if len(data) > limit:
        raise FileTooLarge(Path(path), limit, None)
    return data
