"""The KD math against values computed by hand (plain-Python softmax / KL in the comments)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdlab.kd import losses
from kdlab.kd.objective import Objective

S = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.0, -0.5]])
T = torch.tensor([[3.0, 2.0, 1.0], [0.0, 1.0, 0.0]])
Y = torch.tensor([2, 0])


def _hand_kl(s: list[list[float]], t: list[list[float]], temp: float) -> float:
    """Batch-mean KL(softmax(t/T) || softmax(s/T)) with math.exp only."""

    def sm(z: list[float]) -> list[float]:
        e = [math.exp(v / temp) for v in z]
        return [v / sum(e) for v in e]

    total = 0.0
    for a, b in zip(s, t, strict=True):
        ps, pt = sm(a), sm(b)
        total += sum(q * math.log(q / p) for p, q in zip(ps, pt, strict=True))
    return total / len(s)


def test_kd_loss_matches_hand_values_with_and_without_t_squared() -> None:
    # Constants computed by hand once (see _hand_kl): T=1 -> 0.677681..., T=2 -> 0.185525... (x4 = 0.742099...)
    assert losses.kd_loss(S, T, temperature=1.0).item() == pytest.approx(0.6776813033421977, rel=1e-6)
    assert losses.kd_loss(S, T, temperature=2.0, t_squared=False).item() == pytest.approx(0.18552468187832222, rel=1e-6)
    assert losses.kd_loss(S, T, temperature=2.0).item() == pytest.approx(0.7420987275132889, rel=1e-6)
    assert losses.kd_loss(S, T, temperature=3.0).item() == pytest.approx(
        9 * _hand_kl(S.tolist(), T.tolist(), 3.0), rel=1e-6
    )


def test_kd_argument_order_matters() -> None:
    # KL is asymmetric: swapping student and teacher gives a different number.
    a = losses.kd_loss(S, T, temperature=2.0).item()
    b = losses.kd_loss(T, S, temperature=2.0).item()
    assert abs(a - b) > 1e-3
    assert b == pytest.approx(4 * _hand_kl(T.tolist(), S.tolist(), 2.0), rel=1e-6)


def test_kd_zero_when_student_equals_teacher_and_batchmean_not_elementwise() -> None:
    assert losses.kd_loss(T, T, temperature=4.0).item() == pytest.approx(0.0, abs=1e-7)
    # doubling the batch with the same rows keeps the batch mean
    assert losses.kd_loss(torch.cat([S, S]), torch.cat([T, T]), temperature=2.0).item() == pytest.approx(
        0.7420987275132889, rel=1e-6
    )


def test_cross_entropy_hand_value() -> None:
    assert losses.cross_entropy(S, Y).item() == pytest.approx(0.5439378175430574, rel=1e-6)


def test_gradient_flows_only_into_student() -> None:
    s = S.clone().requires_grad_(True)
    t = T.clone().requires_grad_(True)
    losses.kd_loss(s, t, temperature=2.0).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_half_precision_inputs_computed_in_float32() -> None:
    out = losses.kd_loss(S.half(), T.half(), temperature=2.0)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(0.7420987275132889, rel=1e-3)


def test_objective_total_and_alpha_one_is_plain_ce() -> None:
    obj = Objective.from_method("kd", alpha=0.25, temperature=2.0, t_squared=True)
    parts = obj(S, Y, T)
    assert set(parts) == {"total", "ce", "kd"}
    assert parts["total"].item() == pytest.approx(0.25 * 0.5439378175430574 + 0.75 * 0.7420987275132889, rel=1e-6)
    plain = Objective.from_method("kd", alpha=1.0, temperature=2.0)
    assert not plain.uses_teacher
    assert plain(S, Y)["total"].item() == pytest.approx(F.cross_entropy(S, Y).item())
    assert losses.distillation_objective(S, T, Y, alpha=1.0, temperature=2.0).item() == pytest.approx(
        0.5439378175430574, rel=1e-6
    )


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_objective_rejects_alpha_outside_unit_interval(alpha: float) -> None:
    from kdlab.errors import ConfigError

    with pytest.raises(ConfigError, match="alpha"):
        Objective.from_method("kd", alpha=alpha, temperature=2.0)


def test_temperature_must_be_positive() -> None:
    with pytest.raises(ValueError, match="temperature"):
        losses.kd_loss(S, T, temperature=0.0)
