"""Teacher hygiene and the Python API of the Distiller."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import TinyNet
from torch import nn

from kdlab import Distiller, evaluate, fit
from kdlab.errors import ConfigError


def _snapshot(m: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_teacher_unchanged_frozen_and_in_eval_mode_throughout(digits_xy, tiny_pair) -> None:
    x, y = digits_xy
    teacher, student = tiny_pair
    teacher.train()  # the user left it in training mode: the distiller must fix that
    before_t, before_s = _snapshot(teacher), _snapshot(student)
    d = Distiller(teacher=teacher, student=student, alpha=0.5, temperature=4.0)
    assert not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    d.train()
    assert student.training and not teacher.training

    modes: list[bool] = []
    teacher.register_forward_hook(lambda mod, inp, out: modes.append(mod.training))
    history = d.fit((x[:400], y[:400]), val=(x[400:500], y[400:500]), epochs=2, batch_size=32)
    assert modes and not any(modes), "teacher ran in training mode (dropout on)"
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before_t[k]), f"teacher weight {k} changed"
    assert any(not torch.equal(v, before_s[k]) for k, v in student.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())
    assert [r["epoch"] for r in history] == [1, 2]
    assert {
        "train_loss",
        "train_ce",
        "train_kd",
        "train_accuracy",
        "val_loss",
        "val_accuracy",
        "seconds",
        "samples_per_s",
    } <= set(history[0])


def test_keyword_only_and_identity_checks(tiny_pair) -> None:
    teacher, student = tiny_pair
    with pytest.raises(TypeError):
        Distiller(teacher, student)  # type: ignore[misc]
    with pytest.raises(ConfigError, match="same module"):
        Distiller(teacher=teacher, student=teacher)
    shared = nn.Sequential(teacher.net[1])
    with pytest.raises(ConfigError, match="share"):
        Distiller(teacher=teacher, student=nn.Sequential(nn.Flatten(), shared[0]))


@pytest.mark.parametrize(("kwargs", "match"), [({"alpha": 1.2}, "alpha"), ({"alpha": -0.1}, "alpha")])
def test_bad_hyperparameters_rejected(tiny_pair, kwargs, match) -> None:
    teacher, student = tiny_pair
    with pytest.raises(ConfigError, match=match):
        Distiller(teacher=teacher, student=student, **kwargs)


def test_output_shape_mismatch_prints_both_sides(tiny_pair) -> None:
    teacher, _ = tiny_pair
    with pytest.raises(ConfigError, match=r"Teacher: \(4, 10\), Student: \(4, 3\)"):
        Distiller(teacher=teacher, student=TinyNet(classes=3), example_input=torch.zeros(4, 1, 8, 8))


def test_mismatch_detected_on_first_batch_without_example(digits_xy, tiny_pair) -> None:
    x, y = digits_xy
    teacher, _ = tiny_pair
    d = Distiller(teacher=teacher, student=TinyNet(classes=3))
    with pytest.raises(ConfigError, match="incompatible"):
        d.fit((x[:64], y[:64]), epochs=1)


def test_warns_when_teacher_smaller_than_student() -> None:
    with pytest.warns(UserWarning, match="swapped"):
        Distiller(teacher=TinyNet(hidden=4), student=TinyNet(hidden=64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Distiller(teacher=TinyNet(hidden=64), student=TinyNet(hidden=4))


def test_optimizer_with_teacher_params_refused(digits_xy, tiny_pair) -> None:
    x, y = digits_xy
    teacher, student = tiny_pair
    d = Distiller(teacher=teacher, student=student)
    opt = torch.optim.SGD(list(student.parameters()) + list(teacher.parameters()), lr=0.1)
    with pytest.raises(ConfigError, match="teacher parameters"):
        d.fit((x[:64], y[:64]), epochs=1, optimizer=opt)


def test_accepts_dataloader_batches_and_tensor_pair_equally(digits_xy) -> None:
    """A list of (x, y) batches, a DataLoader and an (X, y) pair all train and evaluate."""
    x, y = digits_xy
    x, y = x[:256], y[:256]
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 256, 32)]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    for data in (batches, loader, (x, y), (x.numpy(), y.numpy())):
        torch.manual_seed(0)
        d = Distiller(teacher=TinyNet(hidden=64), student=TinyNet(hidden=8), alpha=0.5)
        hist = d.fit(data, epochs=1)
        assert hist[0]["samples"] == 256
        res = d.evaluate(data)
        assert set(res) == {"loss", "accuracy", "teacher_agreement"}
        assert 0.0 <= res["accuracy"] <= 1.0


def test_alpha_one_distillation_equals_plain_training(digits_xy) -> None:
    """With α = 1 the distiller is plain CE training: same seed -> identical weights."""
    x, y = digits_xy
    torch.manual_seed(1)
    s1 = TinyNet(hidden=8)
    s2 = TinyNet(hidden=8)
    s2.load_state_dict(s1.state_dict())
    fit(s1, (x[:300], y[:300]), epochs=2, seed=3)
    Distiller(teacher=TinyNet(hidden=64), student=s2, alpha=1.0).fit((x[:300], y[:300]), epochs=2, seed=3)
    for k, v in s1.state_dict().items():
        assert torch.equal(v, s2.state_dict()[k])


def test_distillation_moves_student_toward_teacher(digits_xy) -> None:
    """Pure imitation (α = 0) raises agreement with the teacher far above a fresh student's."""
    x, y = digits_xy
    torch.manual_seed(0)
    teacher = TinyNet(hidden=64)
    fit(teacher, (x[:1200], y[:1200]), epochs=8, seed=0)
    student = TinyNet(hidden=16)
    d = Distiller(teacher=teacher, student=student, alpha=0.0, temperature=2.0)
    before = d.evaluate((x[1200:], y[1200:]))["teacher_agreement"]
    d.fit((x[:1200], y[:1200]), epochs=8)
    after = d.evaluate((x[1200:], y[1200:]))
    assert before < 0.3 < 0.85 < after["teacher_agreement"]
    assert evaluate(teacher, (x[1200:], y[1200:]))["accuracy"] > 0.85


def test_fit_equals_run_epochs_on_the_same_loaders(digits_xy) -> None:
    """Distiller.fit only turns data into loaders: run_epochs on the loaders fit would build gives
    identical weights; an unknown loop option is a TypeError, not silently dropped."""
    from kdlab.data.tensors import as_loader
    from kdlab.train.loop import make_optimizer

    x, y = digits_xy[0][:300], digits_xy[1][:300]
    torch.manual_seed(2)
    t, s1, s2 = TinyNet(hidden=64), TinyNet(hidden=8), TinyNet(hidden=8)
    s2.load_state_dict(s1.state_dict())
    d1 = Distiller(teacher=t, student=s1, alpha=0.3)
    d1.fit((x, y), val=(x[:50], y[:50]), epochs=2, seed=4, batch_size=16, verbose=0)
    d2 = Distiller(teacher=t, student=s2, alpha=0.3)
    opt = make_optimizer(list(s2.parameters()), lr=1e-3)
    loader = as_loader((x, y), batch_size=16, shuffle=True, seed=4)
    hist = d2.run_epochs(loader, as_loader((x[:50], y[:50]), batch_size=512), optimizer=opt, epochs=2, seed=4)
    assert "val_accuracy" in hist[-1]
    for k, v in s1.state_dict().items():
        assert torch.equal(v, s2.state_dict()[k])
    with pytest.raises(TypeError, match="eval_batchsize"):
        d1.fit((x, y), epochs=1, verbose=0, eval_batchsize=8)
