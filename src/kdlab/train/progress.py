"""Rich progress bars for the training loop (one bar per epoch, a summary line per epoch, a time estimate),
and the Python API's default progress (:func:`default_progress`, Keras-like)."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def format_duration(seconds: float) -> str:
    """A rough human duration: ``45 s``, ``2 min 10 s``, ``3 h 05 min``, ``2 d 4 h``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


class RichProgress:
    """Implements :class:`kdlab.train.loop.Progress` with rich; prints one line per finished epoch.

    After the first epoch it trains, it prints an estimate of the arm's whole training time, e.g.
    ``teacher: ~2 min 10 s for 15 epochs`` (the first epoch's time times the epochs to train).
    """

    def __init__(self, arm: str, console: Console | None = None) -> None:
        self.arm = arm
        self.console = console or Console(stderr=True)
        self._bar: Progress | None = None
        self._task: Any = None
        self._epochs = 0
        self._first: int | None = None  # the first epoch this arm trains here (later than 1 on a resume)

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self._epochs = epochs
        if self._first is None:
            self._first = epoch
        if not (self.console.is_terminal or self.console.is_jupyter):
            return  # a live bar is noise in logs and pipes: the per-epoch line is enough
        self._bar = Progress(
            TextColumn(f"[bold]{self.arm}[/bold] epoch {epoch}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task("train", total=steps or None)

    def step(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def epoch_end(self, row: dict[str, Any]) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        parts = [f"loss {row['train_loss']:.4f}", f"acc {100 * row['train_accuracy']:.2f}%"]
        if "train_kd" in row:
            parts.append(f"ce {row['train_ce']:.4f} kd {row['train_kd']:.4f}")
        if "val_accuracy" in row:
            parts.append(f"val loss {row['val_loss']:.4f} val acc {100 * row['val_accuracy']:.2f}%")
        parts.append(f"{row['seconds']:.1f}s")
        line = f"  {self.arm:<9} epoch {row['epoch']}/{self._epochs}  " + "  ".join(parts)
        self.console.print(line, soft_wrap=True, highlight=False)
        if row["epoch"] == self._first and self._epochs > row["epoch"]:
            n = self._epochs - row["epoch"] + 1
            self.console.print(
                f"  {self.arm}: ~{format_duration(row['seconds'] * n)} for {n} epochs", soft_wrap=True, highlight=False
            )


class EpochLines:
    """One line per epoch, like Keras' ``verbose=2``, for logs, pipes and captured output:
    ``epoch 3/5 - loss 0.4100 - accuracy 0.8700 - val_loss 0.4500 - val_accuracy 0.8500 - 1.2 s``."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream
        self._epochs = 0

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self._epochs = epochs

    def step(self) -> None:
        pass

    def epoch_end(self, row: dict[str, Any]) -> None:
        parts = [f"epoch {row['epoch']}/{self._epochs}", f"loss {row['train_loss']:.4f}"]
        parts.append(f"accuracy {row['train_accuracy']:.4f}")
        if "val_accuracy" in row:
            parts += [f"val_loss {row['val_loss']:.4f}", f"val_accuracy {row['val_accuracy']:.4f}"]
        parts.append(f"{row['seconds']:.1f} s")
        print(" - ".join(parts), file=self.stream or sys.stdout, flush=True)


def interactive() -> bool:
    """True when stdout is a terminal or the code runs in IPython / Jupyter (without importing IPython)."""
    try:
        if sys.stdout.isatty():
            return True
    except (AttributeError, ValueError):
        return False
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    return callable(get) and get() is not None


def default_progress(verbose: int) -> RichProgress | EpochLines | None:
    """What :func:`kdlab.train.loop.fit` reports to when no ``progress=`` is given: ``verbose=0``
    nothing; ``1`` a rich bar per epoch in a terminal or notebook, else one line per epoch; ``2``
    one line per epoch always."""
    if verbose == 0:
        return None
    if verbose == 1 and interactive():
        return RichProgress("train", Console())
    return EpochLines()
