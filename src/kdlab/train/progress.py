"""Rich progress bars for the training loop (one bar per epoch, a summary line per epoch, a time estimate)."""

from __future__ import annotations

from typing import Any

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
        if not self.console.is_terminal:
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
