"""``train.log: [tensorboard]``: per-epoch metrics as TensorBoard event files in the run folder."""

from __future__ import annotations

import builtins

import numpy as np
from clihelp import run_cli

from kdlab.runs import read_history_rows

TINY = ["--set", "teacher.model=mlp-teacher", "--set", "teacher.epochs=2", "--set", "student.epochs=2"]
TINY += ["--set", "device=cpu", "--set", "data.train_limit=300", "-q"]


def test_tensorboard_event_files_hold_the_history_values(tmp_path, capsys) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = run_cli(["run", "digits", "--out", str(tmp_path), *TINY, "--set", "train.log=[tensorboard]"], capsys)
    assert res.code == 0, res.err
    (run,) = tmp_path.iterdir()
    for arm in ("teacher", "scratch", "distilled"):
        logdir = run / "tensorboard" / arm
        assert list(logdir.glob("events.out.tfevents.*")), arm
        acc = EventAccumulator(str(logdir))
        acc.Reload()
        assert {"train_loss", "train_accuracy", "val_accuracy", "val_loss"} <= set(acc.Tags()["scalars"])
        events = acc.Scalars("val_accuracy")
        rows = read_history_rows(run, {arm})
        assert [e.step for e in events] == [r["epoch"] for r in rows] == [1, 2]
        assert [e.value for e in events] == [np.float32(r["val_accuracy"]) for r in rows]


def test_a_bad_log_value_is_one_line_naming_the_key(tmp_path, capsys) -> None:
    res = run_cli(["run", "digits", "--out", str(tmp_path), *TINY, "--set", "train.log=[wandb]"], capsys)
    assert res.code == 2
    assert "train.log" in res.err and "Traceback" not in res.err
    assert len(res.err.strip().splitlines()) == 1


def test_a_missing_tensorboard_package_is_one_line_with_the_install_hint(tmp_path, capsys, monkeypatch) -> None:
    real = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    res = run_cli(["run", "digits", "--out", str(tmp_path), *TINY, "--set", "train.log=[tensorboard]"], capsys)
    assert res.code == 2
    assert res.err.strip().splitlines() == [
        "error: train.log: tensorboard logging needs the tensorboard package: pip install kdlab[tensorboard]"
    ]
    assert not any(tmp_path.iterdir())  # refused before a run folder exists
