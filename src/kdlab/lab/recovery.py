"""Surviving interruptions: graceful stop on SIGINT/SIGTERM, one process per run folder, and the
run-folder bookkeeping that ``kdlab run --resume`` needs.

See ``docs/reliability.md`` for what the user sees.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from kdlab.errors import KdlabError
from kdlab.runs import (  # noqa: F401 - the run folder's readers, used here and by the lab
    FAILED_MARKER,
    has_results,
    note_resume,
    read_env,
    read_failed_marker,
    read_history_rows,
    read_results,
    resume_command,
    write_results,
)

SIGNAL_EXIT: dict[int, int] = {int(signal.SIGINT): 130, int(signal.SIGTERM): 143}
"""Exit status after a graceful stop: 128 + the signal number, as shells report it."""


class StopOnSignal:
    """Turn the first SIGINT/SIGTERM into a stop request instead of an exception.

    Used as a context manager around training (main thread only). The first signal sets
    :attr:`signum`; the training loop asks ``flag()`` at every step boundary and stops cleanly.
    A second signal restores the default handlers and raises ``KeyboardInterrupt`` at once (every
    file write is atomic, so even that leaves no half-written file).

    Example:
        >>> with StopOnSignal() as stop:
        ...     fit(model, data, should_stop=stop)
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
        self.signals = signals
        self.signum: int | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def __call__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            self._restore()
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"\n{signal.Signals(signum).name}: stopping after the current step "
            "(the last complete epoch's checkpoint is kept); send again to quit at once",
            file=sys.stderr,
        )

    def __enter__(self) -> StopOnSignal:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._restore()


class RunLock:
    """An exclusive lock on a run folder (``.lock``), so two processes never write the same run.

    Uses ``flock``: the kernel releases it when the process dies, even by SIGKILL, so a crashed
    run never leaves a stale lock behind. Where ``fcntl`` does not exist (Windows) it does nothing.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / ".lock"
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise KdlabError(
                f"{self.path.parent}: another kdlab process is using this run folder; wait for it or stop it"
            ) from None
        with contextlib.suppress(OSError):  # the pid is for people; a full disk must not fail the lock
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def mark_status(run_dir: Path, status: str, **info: Any) -> bool:
    """Set ``results.json``'s status (``interrupted``, ``failed``) and what happened, atomically.

    Never raises for a write that fails (the error being recorded is the one to report): when
    results.json cannot be rewritten (a full disk), it keeps ``running``, which ``--resume``
    continues, and a failure leaves the :data:`FAILED_MARKER` file instead. Returns whether
    results.json now says ``status``.
    """
    try:
        results = read_results(run_dir)
    except KdlabError:
        return False  # the run died before its first results.json: nothing to mark
    results["status"] = status
    results[status] = info
    try:
        write_results(run_dir, results)
    except OSError:
        if status == "failed":
            _leave_failed_marker(Path(run_dir), str(info.get("error", "")))
        return False
    return True


def _leave_failed_marker(run_dir: Path, message: str) -> None:
    """The smallest note a full disk may still take: a new file needs an inode, not a block; its
    text goes in when a block is left (written to a temporary name first, renamed into place)."""
    tmp = run_dir / f"{FAILED_MARKER}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    except OSError:
        return
    try:
        os.write(fd, (message[:2000] + "\n").encode("utf-8", "replace"))
    except OSError:
        os.ftruncate(fd, 0)  # no block left: the empty file still says "failed"
    finally:
        os.close(fd)
    try:
        os.replace(tmp, run_dir / FAILED_MARKER)
    except OSError:
        tmp.unlink(missing_ok=True)


def clear_failed_marker(run_dir: Path) -> None:
    """Remove the :data:`FAILED_MARKER` of an earlier failure (the run is going on, or complete)."""
    with contextlib.suppress(OSError):
        (Path(run_dir) / FAILED_MARKER).unlink(missing_ok=True)


def continue_results(run_dir: Path, fresh: dict[str, Any], weight_files: dict[str, str]) -> dict[str, Any]:
    """The results of the run being resumed, checked against the data as it is loaded now.

    Arms listed in ``results.json`` whose weights are on disk count as finished; any other is
    trained again (from its checkpoint). The notes of a previous stop are removed.
    """
    if not has_results(run_dir):
        return fresh  # stopped before the first results were written: start over in this folder
    results = read_results(run_dir)
    if results.get("data") != fresh["data"]:
        raise KdlabError(
            f"{run_dir}: the dataset differs from the one this run started with "
            f"({results.get('data', {}).get('train')} vs {fresh['data']['train']} training samples, "
            f"source {fresh['data'].get('source')}); restore it or start a new run"
        )
    results["arms"] = {
        arm: entry for arm, entry in results["arms"].items() if (Path(run_dir) / weight_files[arm]).is_file()
    }
    for key in ("interrupted", "failed", "comparison"):
        results.pop(key, None)
    results["status"] = "running"
    return results
