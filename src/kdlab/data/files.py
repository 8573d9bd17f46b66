"""Bounded readers for the files a user hands kdlab: datasets, review folders, ``kdlab predict`` inputs.

Files are opened without blocking and checked to be regular files, so a FIFO, a device or a socket
in a dataset folder is refused instead of hanging the reader (or streaming ``/dev/zero`` forever).
Text is read line by line in pieces of at most :data:`MAX_LINE_BYTES`, so a 2 GB single line
costs 16 MiB before it is refused, and decoded as UTF-8 line by line, so a bad byte is reported
with its line and byte offset.
"""

from __future__ import annotations

import errno
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from kdlab.errors import DataError
from kdlab.errors import shorten as cut
from kdlab.reading import NotRegularFile, kind_of, open_regular

MAX_LINE_BYTES = 16 * 2**20
"""The longest line (a CSV/TSV row's physical line, a JSONL object, a ``kdlab predict`` text) and
the largest aclImdb review file: 16 MiB, over a thousand times the longest IMDB review."""

_LONE_CR = re.compile(r"(?<=\r)(?!\n)")  # classic Mac line ends: split after a CR not followed by LF


def special_kind(path: Path) -> str | None:
    """What ``path`` is when it exists but is neither a regular file nor a folder (else None)."""
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return None
    return None if stat.S_ISREG(mode) or stat.S_ISDIR(mode) else kind_of(mode)


def cannot_open(path: Path, e: OSError, what: str = "data.path") -> DataError:
    """An :func:`open_regular` failure as a one-line DataError naming ``path``."""
    if isinstance(e, NotRegularFile):
        return DataError(f"{what}: {path} {e.strerror}")
    if isinstance(e, FileNotFoundError):
        return DataError(f"{what}: {path} does not exist")
    reason = "a symlink loop" if e.errno == errno.ELOOP else (e.strerror or type(e).__name__)
    return DataError(f"{what}: cannot read {path} ({reason})")


def read_bounded(path: Path, limit: int) -> bytes | None:
    """A regular file's bytes, or None when it holds more than ``limit`` bytes (read at most ``limit + 1``)."""
    with open_regular(path) as f:
        data = f.read(limit + 1)
    return None if len(data) > limit else data


class TextLines:
    """The lines of a UTF-8 text file or stream, with their line ends, read in bounded pieces.

    Iterating yields each line as ``str``; :attr:`line` is the number of the line last yielded and
    :attr:`seen_text` whether any line held more than whitespace. A leading byte-order mark is
    dropped. Raises a one-line :class:`DataError` naming ``name``, the line and the byte offset for
    bytes that are not UTF-8, a line longer than ``max_line`` bytes, or more than ``max_total``
    bytes in all (counting ``already_read`` bytes of earlier inputs).
    """

    def __init__(
        self,
        stream: BinaryIO,
        name: str,
        *,
        max_line: int = MAX_LINE_BYTES,
        max_total: int | None = None,
        total_hint: str = "split the file",
        already_read: int = 0,
    ) -> None:
        self.stream, self.name, self.max_line, self.max_total = stream, name, max_line, max_total
        self.total_hint, self.already_read = total_hint, already_read
        self.line = 0
        self.offset = 0  # bytes consumed so far
        self.seen_text = False

    def __iter__(self) -> Iterator[str]:
        while True:
            raw = self.stream.readline(self.max_line + 1)
            if not raw:
                return
            if len(raw) > self.max_line:
                raise DataError(
                    f"{self.name}:{self.line + 1}: a line longer than {_size(self.max_line)} "
                    f"(the limit for one row or text); is this a text file with one record per line?"
                )
            if self.max_total is not None and self.already_read + self.offset + len(raw) > self.max_total:
                raise DataError(f"{self.name}: more than {_size(self.max_total)} of text; {self.total_hint}")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{self.name}: not UTF-8 text (line {self.line + 1}, byte {self.offset + e.start}: "
                    f"{raw[e.start : e.start + 1]!r}); re-save it as UTF-8"
                ) from None
            if self.offset == 0:
                text = text.removeprefix("\ufeff")
            self.offset += len(raw)
            for part in _LONE_CR.split(text) if "\r" in text else (text,):
                if part:
                    self.line += 1
                    self.seen_text = self.seen_text or not part.isspace()
                    yield part


def _size(n: int) -> str:
    return f"{n // 2**20} MiB" if n >= 2**20 and n % 2**20 == 0 else f"{n:,} bytes"


def shorten(value: object, limit: int = 40) -> str:
    """``value`` as text for a message: whitespace folded, at most ``limit`` characters."""
    return cut(" ".join(str(value).split()), limit)


def name_list(names: list[str], *, most: int = 8) -> str:
    """Up to ``most`` shortened names, comma-separated, and how many there are in all."""
    shown = ", ".join(shorten(n) for n in names[:most])
    return shown + (f", … ({len(names)} in all)" if len(names) > most else "")
