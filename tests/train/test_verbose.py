"""The Python API's default progress: Keras-like lines per epoch, ``verbose=0`` silent."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import kdlab
from kdlab.errors import ConfigError
from kdlab.train import progress as progress_mod


def _data(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    return x, (x[:, 0] > 0).long()


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))


LINE = re.compile(
    r"^epoch (\d+)/3 - loss (\d+\.\d{4}) - accuracy (\d+\.\d{4}) - val_loss (\d+\.\d{4})"
    r" - val_accuracy (\d+\.\d{4}) - \d+\.\d s$"
)


def test_fit_verbose_1_outside_a_terminal_prints_one_line_per_epoch_with_the_history_numbers(capsys) -> None:
    history = kdlab.fit(_model(), _data(), _data(48, seed=1), epochs=3, batch_size=16, device="cpu")
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 == len(history)
    for line, row in zip(lines, history, strict=True):
        m = LINE.match(line)
        assert m, line
        assert int(m[1]) == row["epoch"]
        assert m[2] == f"{row['train_loss']:.4f}"
        assert m[3] == f"{row['train_accuracy']:.4f}"
        assert m[4] == f"{row['val_loss']:.4f}"
        assert m[5] == f"{row['val_accuracy']:.4f}"


def test_verbose_0_prints_nothing_and_verbose_does_not_change_the_results(capsys) -> None:
    quiet = kdlab.fit(_model(), _data(), _data(48, seed=1), epochs=2, batch_size=16, device="cpu", verbose=0)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    loud = kdlab.fit(_model(), _data(), _data(48, seed=1), epochs=2, batch_size=16, device="cpu")
    assert capsys.readouterr().out
    drop = {"seconds", "samples_per_s"}
    assert [{k: v for k, v in r.items() if k not in drop} for r in quiet] == [
        {k: v for k, v in r.items() if k not in drop} for r in loud
    ]


def test_distiller_fit_reports_by_default_and_is_silent_with_verbose_0(capsys) -> None:
    teacher, student = _model(1), _model(2)
    d = kdlab.Distiller(teacher=teacher, student=student, alpha=0.5, temperature=2.0)
    d.fit(_data(), epochs=2, batch_size=32, device="cpu", verbose=0)
    assert capsys.readouterr().out == ""
    history = d.fit(_data(), epochs=2, batch_size=32, device="cpu")
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" - ")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert "val_accuracy" not in lines[0]  # no validation data: no validation numbers
    assert f"loss {history[1]['train_loss']:.4f}" in lines[1]


def test_a_given_progress_replaces_the_default(capsys) -> None:
    seen: list[int] = []

    class Count:
        def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
            seen.append(epoch)

        def step(self) -> None:
            pass

        def epoch_end(self, row: dict) -> None:
            pass

    kdlab.fit(_model(), _data(), epochs=2, batch_size=32, device="cpu", progress=Count())
    assert seen == [1, 2] and capsys.readouterr().out == ""


def test_verbose_1_in_a_terminal_or_notebook_uses_the_rich_bars(monkeypatch) -> None:
    monkeypatch.setattr(progress_mod, "interactive", lambda: True)
    assert isinstance(progress_mod.default_progress(1), progress_mod.RichProgress)
    assert isinstance(progress_mod.default_progress(2), progress_mod.EpochLines)
    assert progress_mod.default_progress(0) is None
    monkeypatch.setattr(progress_mod, "interactive", lambda: False)
    assert isinstance(progress_mod.default_progress(1), progress_mod.EpochLines)


def test_a_bad_verbose_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="verbose"):
        kdlab.fit(_model(), _data(), epochs=1, device="cpu", verbose=3)
