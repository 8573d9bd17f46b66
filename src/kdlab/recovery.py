"""Surviving interruptions: graceful stop on SIGINT/SIGTERM, one process per run folder, and the
run-folder bookkeeping that ``kdlab run --resume`` needs.

See ``docs/reliability.md`` for what the user sees.
"""

from __future__ import annotations

import csv
import os
import shlex
import signal
import sys
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from kdlab.errors import KdlabError
from kdlab.runs import read_results, write_results

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
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None


def resume_command(run_dir: Path) -> str:
    """The exact command that continues ``run_dir``."""
    return f"kdlab run --resume {shlex.quote(str(run_dir))}"


def mark_status(run_dir: Path, status: str, **info: Any) -> None:
    """Set ``results.json``'s status (``interrupted``, ``failed``) and what happened, atomically."""
    try:
        results = read_results(run_dir)
    except KdlabError:
        return  # the run died before its first results.json: nothing to mark
    results["status"] = status
    results[status] = info
    write_results(run_dir, results)


def read_history_rows(run_dir: Path, arms: set[str]) -> list[dict[str, Any]]:
    """The rows of ``history.csv`` that belong to ``arms``, with numbers parsed back exactly.

    Floats were written with ``repr`` and read back bit for bit; empty cells (a column another arm
    has) are dropped, so rewriting the rows gives the same file.
    """
    path = Path(run_dir) / "history.csv"
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [{k: _number(v) for k, v in row.items() if v != ""} for row in rows if row.get("arm") in arms]


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def note_resume(run_dir: Path, argv: list[str]) -> None:
    """Append this resumption (time, command) to ``env.json``'s ``resumes`` list."""
    import json
    import time

    from kdlab.io import atomic_write_json

    path = Path(run_dir) / "env.json"
    try:
        env = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        env = {}
    env.setdefault("resumes", []).append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": argv})
    atomic_write_json(path, env)


def continue_results(run_dir: Path, fresh: dict[str, Any], weight_files: dict[str, str]) -> dict[str, Any]:
    """The results of the run being resumed, checked against the data as it is loaded now.

    Arms listed in ``results.json`` whose weights are on disk count as finished; any other is
    trained again (from its checkpoint). The notes of a previous stop are removed.
    """
    if not (Path(run_dir) / "results.json").is_file():
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


def resume_lab(run_dir: Path, **options: Any) -> Path:
    """Continue the run in ``run_dir`` with its own ``config.resolved.yaml``.

    Finished arms are skipped, the unfinished arm continues from its last complete epoch, and the
    result equals an uninterrupted run with the same seed (bit for bit on a CPU, timings aside).
    ``options`` go to :func:`kdlab.lab.run_lab` (``progress``, ``log``, ``stop``). A run that is
    already complete is left as it is.
    """
    import yaml

    from kdlab.config.load import validate
    from kdlab.lab import run_lab

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.resolved.yaml"
    if not run_dir.is_dir() or not cfg_path.is_file():
        raise KdlabError(f"--resume {run_dir}: not a run folder (no config.resolved.yaml); give a folder under runs/")
    try:
        raw = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise KdlabError(f"{cfg_path}: unreadable ({e})") from None
    if not isinstance(raw, dict):
        raise KdlabError(f"{cfg_path}: not a mapping of config keys")
    cfg = validate(raw, str(cfg_path))
    if (run_dir / "results.json").is_file() and read_results(run_dir).get("status") == "complete":
        return run_dir
    return run_lab(cfg, resume=run_dir, **options)
