"""Transfer-set samples (label UNLABELED) in the objective and the loop: they never enter the CE term
and always enter the KD term; accuracy is over the labelled samples; the Python API's ``unlabeled``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import TinyNet

from kdlab import Distiller
from kdlab.data.tensors import TensorLoader
from kdlab.kd import losses
from kdlab.kd.losses import UNLABELED
from kdlab.kd.objective import Objective
from kdlab.train.loop import train_epoch


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(8, 5, generator=g)
    t = torch.randn(8, 5, generator=g) * 3
    y = torch.tensor([0, 3, UNLABELED, 1, UNLABELED, UNLABELED, 4, 2])
    return s, t, y


def test_ce_is_the_mean_over_labelled_rows_and_kd_covers_every_row() -> None:
    s, t, y = _batch()
    obj = Objective.from_method("kd", alpha=0.3, temperature=4.0, t_squared=True)
    obj.partial_labels = True
    parts = obj(s, y, t)
    labelled = y != UNLABELED
    assert float(parts["ce"]) == pytest.approx(float(F.cross_entropy(s[labelled], y[labelled])), rel=1e-6)
    assert float(parts["kd"]) == pytest.approx(float(losses.kd_loss(s, t, temperature=4.0, t_squared=True)), rel=1e-6)
    assert float(parts["total"]) == pytest.approx(0.3 * float(parts["ce"]) + 0.7 * float(parts["kd"]), rel=1e-6)


def test_the_gradient_of_ce_never_reaches_a_transfer_row_and_that_of_kd_always_does() -> None:
    s, t, y = _batch(1)
    obj = Objective.from_method("kd", alpha=0.5, temperature=2.0, t_squared=False)
    obj.partial_labels = True
    s = s.clone().requires_grad_(True)
    (grad_ce,) = torch.autograd.grad(obj(s, y, t)["ce"], s)
    unl = y == UNLABELED
    assert torch.all(grad_ce[unl] == 0) and torch.all(grad_ce[~unl].abs().sum(dim=1) > 0)
    (grad_kd,) = torch.autograd.grad(obj(s, y, t)["kd"], s)
    assert torch.all(grad_kd.abs().sum(dim=1) > 0)  # every row, labelled or not


def test_a_batch_of_transfer_rows_only_has_zero_ce_and_dkd_takes_the_teachers_class() -> None:
    s, t, _ = _batch(2)
    y = torch.full((8,), UNLABELED)
    obj = Objective.from_method("dkd", alpha=0.2, temperature=4.0)
    obj.partial_labels = True
    parts = obj(s, y, t)
    assert float(parts["ce"]) == 0.0
    expected = losses.dkd_loss(s, t, t.argmax(dim=1), alpha=1.0, beta=8.0, temperature=4.0)
    assert float(parts["kd"]) == pytest.approx(float(expected), rel=1e-6)
    assert torch.isfinite(parts["total"])


def test_train_accuracy_counts_labelled_samples_only() -> None:
    torch.manual_seed(0)
    model = TinyNet(in_features=4, hidden=8, classes=3)
    x = torch.randn(40, 4)
    y = torch.randint(0, 3, (40,))
    y[10:] = UNLABELED
    obj = Objective.from_method("kd", alpha=0.5, temperature=2.0)
    obj.partial_labels = True
    teacher = TinyNet(in_features=4, hidden=8, classes=3)
    row = train_epoch(
        model,
        obj,
        TensorLoader(x, y, batch_size=8, shuffle=True),
        torch.optim.SGD(model.parameters(), lr=0.0),  # lr 0: the weights stay as they are
        teacher=lambda b: teacher(b.x).detach(),
    )
    assert row["samples"] == 40 and row["labelled_samples"] == 10
    with torch.no_grad():
        expected = float((model(x[:10]).argmax(1) == y[:10]).float().mean())
    assert row["train_accuracy"] == pytest.approx(expected)


def test_distiller_fit_with_unlabeled_trains_kd_on_them_and_ce_on_the_labels_only() -> None:
    torch.manual_seed(0)
    teacher, student = TinyNet(in_features=6, hidden=32, classes=3), TinyNet(in_features=6, hidden=8, classes=3)
    x, y = torch.randn(24, 6), torch.randint(0, 3, (24,))
    u = torch.randn(72, 6)
    d = Distiller(teacher=teacher, student=student, alpha=0.5, temperature=2.0)
    history = d.fit((x, y), epochs=1, batch_size=16, unlabeled=u, verbose=0)
    assert history[0]["samples"] == 96 and history[0]["labelled_samples"] == 24
    with pytest.raises(Exception, match="unlabeled: inputs of shape"):
        d.fit((x, y), epochs=1, unlabeled=torch.randn(5, 7), verbose=0)
