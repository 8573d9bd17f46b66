"""The per-epoch lines of the progress output and the time estimate after an arm's first epoch."""

from __future__ import annotations

import pytest
from rich.console import Console

from kdlab.train.progress import RichProgress, format_duration


def _row(epoch: int, seconds: float) -> dict[str, float]:
    return {"epoch": epoch, "train_loss": 0.5, "train_accuracy": 0.8, "seconds": seconds}


def _lines(arm: str, first: int, last: int, epochs: int, seconds: float) -> list[str]:
    console = Console(width=80, record=True, force_terminal=False)
    progress = RichProgress(arm, console)
    for epoch in range(first, last + 1):
        progress.epoch_start(epoch, epochs, 10)
        progress.epoch_end(_row(epoch, seconds))
    return console.export_text().splitlines()


def test_estimate_after_the_first_epoch_only() -> None:
    lines = _lines("teacher", 1, 3, 15, 8.66)
    estimates = [line for line in lines if "~" in line]
    assert estimates == ["  teacher: ~2 min 10 s for 15 epochs"]
    assert lines.index(estimates[0]) == 1  # right after epoch 1's line


def test_resumed_arm_estimates_the_epochs_left_and_one_epoch_none() -> None:
    assert "  scratch: ~50 s for 5 epochs" in _lines("scratch", 11, 12, 15, 10.0)
    assert not any("~" in line for line in _lines("distilled", 1, 1, 1, 10.0))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.2, "0 s"), (59.4, "59 s"), (130, "2 min 10 s"), (3 * 3600 + 5 * 60, "3 h 05 min"), (52 * 3600, "2 d 4 h")],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
