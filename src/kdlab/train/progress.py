"""Rich progress bars for the training loop (one bar per epoch, a summary line per epoch)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class RichProgress:
    """Implements :class:`kdlab.train.loop.Progress` with rich; prints one line per finished epoch."""

    def __init__(self, arm: str, console: Console | None = None) -> None:
        self.arm = arm
        self.console = console or Console(stderr=True)
        self._bar: Progress | None = None
        self._task: Any = None
        self._epochs = 0

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self._epochs = epochs
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
