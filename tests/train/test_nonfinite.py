"""Non-finite losses: stop with a one-line error naming where, or skip and count; gradient clipping."""

from __future__ import annotations

import json

import pytest
import torch
from clihelp import run_cli
from conftest import TinyNet
from torch import nn

from kdlab import fit
from kdlab.errors import NonFiniteLossError
from kdlab.models.registry import MODELS


class NaNAt(nn.Module):
    """TinyNet whose training forward passes number ``bad`` (1-based, counted over the whole fit) emit NaN."""

    def __init__(self, bad: set[int], **kw: int) -> None:
        super().__init__()
        self.inner = TinyNet(**kw)
        self.bad, self.calls = bad, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        if self.training:
            self.calls += 1
            if self.calls in self.bad:
                out = out * float("nan")
        return out


def _data(digits_xy):
    x, y = digits_xy
    return (x[:256], y[:256]), (x[256:320], y[256:320])  # 8 steps of 32 per epoch


def test_stop_names_epoch_and_step_and_no_nan_reaches_the_weights(digits_xy) -> None:
    train, val = _data(digits_xy)
    torch.manual_seed(0)
    model = NaNAt({11})  # epoch 2, step 3
    with pytest.raises(NonFiniteLossError) as err:
        fit(model, train, val, epochs=3, lr=0.01, batch_size=32, seed=0)
    assert (err.value.epoch, err.value.step) == (2, 3)
    assert str(err.value) == (
        "loss is nan at epoch 2, step 3: lower the learning rate (train.lr, now 0.01), set train.grad_clip, "
        "or set train.nonfinite=skip-batch"
    )
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_skip_batch_counts_skipped_batches_and_leaves_them_out_of_the_means(digits_xy) -> None:
    train, val = _data(digits_xy)
    torch.manual_seed(0)
    model = NaNAt({3, 5, 12})
    history = fit(model, train, val, epochs=2, lr=0.01, batch_size=32, seed=0, nonfinite="skip-batch")
    assert [r["skipped_batches"] for r in history] == [2, 1]
    assert [r["steps"] for r in history] == [6, 7]
    assert [r["samples"] for r in history] == [256 - 64, 256 - 32]
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in history)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_grad_clip_bounds_the_update_norm(digits_xy) -> None:
    x, y = digits_xy
    deltas = {}
    for clip in (None, 1e-3):
        torch.manual_seed(0)
        model = TinyNet()
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        opt = torch.optim.SGD(model.parameters(), lr=1.0)  # first SGD step: Δθ = -lr · g exactly
        fit(model, (x[:64], y[:64]), epochs=1, optimizer=opt, batch_size=64, seed=0, grad_clip=clip)
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        deltas[clip] = float((after - before).norm())
    assert deltas[None] > 0.01  # unclipped, the gradient norm is far above the clip value
    assert deltas[1e-3] == pytest.approx(1e-3, rel=1e-3)


@pytest.fixture
def nan_teacher():
    """A registered model name whose 13th training forward emits NaN (epoch 2, step 3 at 10 steps/epoch)."""
    from kdlab.models.vision import MLP

    class Bad(MLP):
        calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = super().forward(x)
            if self.training:
                self.calls += 1
                if self.calls == 13:
                    out = out * float("nan")
            return out

    MODELS.add("test-nan-teacher", lambda *, num_classes, input_shape, **_: Bad(64, (32,), num_classes))
    yield "test-nan-teacher"
    MODELS._items.pop("test-nan-teacher")


def test_lab_stops_the_arm_keeps_the_last_good_checkpoint_and_marks_failed(nan_teacher, tmp_path, capsys) -> None:
    args = ["run", "digits", "--out", str(tmp_path), "-q", "--set", "device=cpu", "--set", "data.train_limit=300"]
    args += ["--set", f"teacher.model={nan_teacher}", "--set", "teacher.epochs=3", "--set", "student.epochs=1"]
    code, _out, err = _cli(args, capsys)
    assert code == 2
    assert err.splitlines() == [
        "error: teacher arm: loss is nan at epoch 2, step 3: lower the learning rate (train.lr, now 0.001), "
        "set train.grad_clip, or set train.nonfinite=skip-batch; checkpoint of epoch 1 kept"
    ]
    (run,) = tmp_path.iterdir()
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "failed" and results["failed"]["error"] == err.splitlines()[0][len("error: ") :]
    assert json.loads((run / "checkpoints/teacher/latest.json").read_text())["epoch"] == 1


def _cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    res = run_cli(args, capsys)
    return res.code, res.out, res.err
