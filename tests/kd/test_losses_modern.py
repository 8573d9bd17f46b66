"""DKD, DIST, logit standardization and the feature losses against independent transcriptions of
the papers' equations (plain Python / numpy, no kdlab code), plus their edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kdlab.kd import losses

S = [[1.0, 2.0, 3.0, 0.5], [0.5, 0.0, -0.5, 2.0], [-1.0, 4.0, 0.0, 1.0]]
T = [[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 0.0, 3.0], [2.0, 2.5, -1.0, 0.0]]
Y = [2, 3, 1]


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def _softmax(z: list[float], temp: float) -> list[float]:
    e = [math.exp(v / temp) for v in z]
    return [v / sum(e) for v in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def _zscore(z: list[float]) -> list[float]:
    mean = sum(z) / len(z)
    std = math.sqrt(sum((v - mean) ** 2 for v in z) / (len(z) - 1))  # unbiased
    return [(v - mean) / (std + 1e-7) for v in z]


def _hand_dkd_parts(s: list[float], t: list[float], y: int, temp: float) -> tuple[float, float]:
    """Zhao et al. 2022, eq. (1)-(2): binary target/non-target split and the non-target distribution."""
    ps, pt = _softmax(s, temp), _softmax(t, temp)
    b_s, b_t = [ps[y], 1 - ps[y]], [pt[y], 1 - pt[y]]
    hat_s = [p / (1 - ps[y]) for c, p in enumerate(ps) if c != y]
    hat_t = [p / (1 - pt[y]) for c, p in enumerate(pt) if c != y]
    return _kl(b_t, b_s), _kl(hat_t, hat_s)


def _hand_dkd(s, t, y, *, alpha: float, beta: float, temp: float) -> float:
    parts = [_hand_dkd_parts(a, b, c, temp) for a, b, c in zip(s, t, y, strict=True)]
    return temp**2 * sum(alpha * tc + beta * nc for tc, nc in parts) / len(parts)


# ------------------------------------------------------------------------------------------ DKD
WEIGHTS_DKD = [(1.0, 8.0, 4.0), (1.3, 0.7, 2.0), (0.0, 2.0, 1.0), (1.0, 0.0, 3.0)]


@pytest.mark.parametrize(("alpha", "beta", "temp"), WEIGHTS_DKD)
def test_dkd_matches_paper_equation(alpha: float, beta: float, temp: float) -> None:
    got = losses.dkd_loss(_t(S), _t(T), torch.tensor(Y), alpha=alpha, beta=beta, temperature=temp).item()
    assert got == pytest.approx(_hand_dkd(S, T, Y, alpha=alpha, beta=beta, temp=temp), rel=1e-5)


def test_dkd_defaults_are_the_papers() -> None:
    got = losses.dkd_loss(_t(S), _t(T), torch.tensor(Y)).item()
    assert got == pytest.approx(_hand_dkd(S, T, Y, alpha=1.0, beta=8.0, temp=4.0), rel=1e-5)
    assert losses.dkd_loss(_t(S), _t(T), torch.tensor(Y), alpha=0.0, beta=0.0).item() == 0.0


def test_kl_equals_tckd_plus_weighted_nckd_per_sample() -> None:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(16, 7, generator=g) * 3, torch.randn(16, 7, generator=g) * 3
    y = torch.randint(0, 7, (16,), generator=g)
    temp = 2.5
    tckd, nckd = losses.dkd_parts(s, t, y, temperature=temp)
    p_t_target = torch.softmax(t / temp, -1).gather(-1, y[:, None]).squeeze(-1)
    kl = torch.stack([losses.kd_loss(s[i : i + 1], t[i : i + 1], temperature=temp, t_squared=False) for i in range(16)])
    torch.testing.assert_close(kl, tckd + (1 - p_t_target) * nckd, rtol=1e-5, atol=1e-6)
    # and the batch version: classic KD is DKD with alpha = 1 and beta = (1 - p_t) per sample
    assert (tckd >= 0).all() and (nckd >= 0).all()


def test_dkd_zero_for_identical_logits_and_only_student_gets_gradient() -> None:
    assert losses.dkd_loss(_t(T), _t(T), torch.tensor(Y)).item() == pytest.approx(0.0, abs=1e-6)
    s = _t(S).requires_grad_(True)
    t = _t(T).requires_grad_(True)
    losses.dkd_loss(s, t, torch.tensor(Y)).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


def test_dkd_dominant_class_stays_finite() -> None:
    # Teacher certain of class 0, student certain of class 1: probabilities underflow to 0 in float32.
    s = torch.tensor([[0.0, 2000.0, 0.0, 0.0], [500.0, 0.0, 0.0, 0.0]], requires_grad=True)
    t = torch.tensor([[2000.0, 0.0, 0.0, 0.0], [500.0, 0.0, 0.0, 0.0]])
    y = torch.tensor([0, 0])
    out = losses.dkd_loss(s, t, y, temperature=1.0)
    out.backward()
    assert torch.isfinite(out) and out.item() > 100  # a huge, finite disagreement
    assert s.grad is not None and torch.isfinite(s.grad).all()
    # identical and dominant: exactly zero, not NaN
    assert losses.dkd_loss(t, t, y, temperature=1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_dkd_two_classes_has_no_non_target_part() -> None:
    s, t, y = _t([[0.3, -0.2]]), _t([[1.0, 0.0]]), torch.tensor([1])
    tckd, nckd = losses.dkd_parts(s, t, y, temperature=1.0)
    assert nckd.item() == 0.0
    assert tckd.item() == pytest.approx(_kl(_softmax([1.0, 0.0], 1), _softmax([0.3, -0.2], 1)), rel=1e-5)


def test_dkd_half_inputs_computed_in_float32() -> None:
    out = losses.dkd_loss(_t(S).half(), _t(T).half(), torch.tensor(Y), temperature=2.0)
    assert out.dtype == torch.float32


# ------------------------------------------------------------------------------------------ logit standardization
def test_standardize_logits_uses_unbiased_std() -> None:
    z = losses.standardize_logits(torch.tensor([[1.0, 2.0, 3.0]]))
    # unbiased std of (1, 2, 3) is 1; the biased one (0.816) would give ±1.2247
    torch.testing.assert_close(z, torch.tensor([[-1.0, 0.0, 1.0]]) / (1 + 1e-7))


def test_standardized_kd_matches_hand_value() -> None:
    temp = 2.0
    want = (
        temp**2
        * sum(_kl(_softmax(_zscore(b), temp), _softmax(_zscore(a), temp)) for a, b in zip(S, T, strict=True))
        / len(S)
    )
    got = losses.kd_loss(_t(S), _t(T), temperature=temp, standardize=True).item()
    assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize(("a_s", "b_s", "a_t", "b_t"), [(3.0, -2.0, 1.0, 0.0), (0.25, 5.0, 7.0, -1.0)])
def test_standardized_losses_invariant_to_positive_affine_maps(a_s: float, b_s: float, a_t: float, b_t: float) -> None:
    s, t, y = _t(S), _t(T), torch.tensor(Y)
    base_kd = losses.kd_loss(s, t, temperature=2.0, standardize=True)
    moved_kd = losses.kd_loss(a_s * s + b_s, a_t * t + b_t, temperature=2.0, standardize=True)
    torch.testing.assert_close(moved_kd, base_kd, rtol=1e-4, atol=1e-6)
    base_dkd = losses.dkd_loss(s, t, y, temperature=2.0, standardize=True)
    moved_dkd = losses.dkd_loss(a_s * s + b_s, a_t * t + b_t, y, temperature=2.0, standardize=True)
    torch.testing.assert_close(moved_dkd, base_dkd, rtol=1e-4, atol=1e-6)
    # without standardization the scale matters (so the test above can fail)
    plain = losses.kd_loss(a_s * s + b_s, a_t * t + b_t, temperature=2.0)
    assert abs(plain.item() - losses.kd_loss(s, t, temperature=2.0).item()) > 1e-2


def test_standardized_kd_zero_when_student_is_an_affine_copy() -> None:
    t = _t(T)
    assert losses.kd_loss(4 * t + 1, t, temperature=3.0, standardize=True).item() == pytest.approx(0.0, abs=1e-6)


# ------------------------------------------------------------------------------------------ DIST
def _hand_dist(s, t, *, beta: float, gamma: float, temp: float) -> float:
    """Huang et al. 2022, eq. (5)-(8), with numpy's Pearson correlation."""
    ys = np.array([_softmax(r, temp) for r in s])
    yt = np.array([_softmax(r, temp) for r in t])
    inter = np.mean([1 - np.corrcoef(ys[i], yt[i])[0, 1] for i in range(len(s))])
    intra = np.mean([1 - np.corrcoef(ys[:, c], yt[:, c])[0, 1] for c in range(ys.shape[1])])
    return float(temp**2 * (beta * inter + gamma * intra))


WEIGHTS_DIST = [(1.0, 1.0, 1.0), (0.5, 2.0, 2.0), (0.0, 1.0, 4.0), (1.0, 0.0, 1.5)]


@pytest.mark.parametrize(("beta", "gamma", "temp"), WEIGHTS_DIST)
def test_dist_matches_paper_equation(beta: float, gamma: float, temp: float) -> None:
    got = losses.dist_loss(_t(S), _t(T), beta=beta, gamma=gamma, temperature=temp).item()
    assert got == pytest.approx(_hand_dist(S, T, beta=beta, gamma=gamma, temp=temp), rel=1e-5)


def test_dist_zero_for_identical_or_shifted_logits_and_zero_weights() -> None:
    t = _t(T)
    assert losses.dist_loss(t, t).item() == pytest.approx(0.0, abs=1e-5)  # up to the ε of ρ
    shift = torch.tensor([[5.0], [-3.0], [0.5]])  # softmax ignores a per-sample offset
    assert losses.dist_loss(t + shift, t, temperature=2.0).item() == pytest.approx(0.0, abs=1e-5)
    assert losses.dist_loss(_t(S), t, beta=0.0, gamma=0.0).item() == 0.0


def test_pearson_correlation_invariant_to_positive_affine_maps() -> None:
    g = torch.Generator().manual_seed(1)
    u, v = torch.rand(5, 6, generator=g), torch.rand(5, 6, generator=g)
    base = losses.pearson_correlation(u, v)
    torch.testing.assert_close(losses.pearson_correlation(3 * u + 2, 0.5 * v - 1), base, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(losses.pearson_correlation(-u, v), -base, rtol=1e-4, atol=1e-5)
    want = [np.corrcoef(u[i].numpy(), v[i].numpy())[0, 1] for i in range(5)]
    np.testing.assert_allclose(base.numpy(), want, rtol=1e-5)


def test_dist_gradient_only_into_student() -> None:
    s = _t(S).requires_grad_(True)
    t = _t(T).requires_grad_(True)
    losses.dist_loss(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


# ------------------------------------------------------------------------------------------ feature losses
def _hand_attention(f: np.ndarray) -> np.ndarray:
    a = (f**2).mean(axis=1).reshape(len(f), -1)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_at_loss_matches_hand_value_and_ignores_width() -> None:
    g = torch.Generator().manual_seed(2)
    fs, ft = torch.randn(2, 3, 4, 4, generator=g), torch.randn(2, 5, 4, 4, generator=g)
    want = 1000 / 2 * np.mean((_hand_attention(fs.numpy()) - _hand_attention(ft.numpy())) ** 2)
    assert losses.at_loss(fs, ft).item() == pytest.approx(want, rel=1e-5)
    assert losses.at_loss(fs, ft, beta=2.0).item() == pytest.approx(want * 2 / 1000, rel=1e-5)
    # the maps are normalized: a teacher that is a scaled copy of the student gives zero
    assert losses.at_loss(fs, 3 * fs).item() == pytest.approx(0.0, abs=1e-6)


def test_at_loss_pools_the_larger_map() -> None:
    g = torch.Generator().manual_seed(3)
    fs, ft = torch.randn(2, 3, 2, 2, generator=g), torch.randn(2, 4, 4, 4, generator=g)
    a_t = (ft**2).mean(1, keepdim=True)
    pooled_t = torch.nn.functional.avg_pool2d(a_t, 2).flatten(1)
    q_t = pooled_t / pooled_t.norm(dim=1, keepdim=True)
    q_s = torch.tensor(_hand_attention(fs.numpy()))
    want = 500 * ((q_s - q_t) ** 2).mean().item()
    assert losses.at_loss(fs, ft).item() == pytest.approx(want, rel=1e-5)


def test_attention_map_needs_4d() -> None:
    with pytest.raises(ValueError, match="feature maps"):
        losses.at_loss(torch.zeros(2, 8), torch.zeros(2, 8))


def test_fitnet_loss_is_mean_squared_error() -> None:
    s, t = torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[0.0, 2.0], [5.0, 4.0]])
    assert losses.fitnet_loss(s, t).item() == pytest.approx((1 + 0 + 4 + 0) / 4)
    assert losses.fitnet_loss(t, t).item() == 0.0
    with pytest.raises(ValueError, match=r"Student: \(2, 2\), Teacher: \(2, 3\)"):
        losses.fitnet_loss(s, torch.zeros(2, 3))
    # a 4x4 map against a 2x2 one: the larger is average-pooled first
    big = torch.arange(16.0).view(1, 1, 4, 4)
    pooled = torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]])
    assert losses.fitnet_loss(big, pooled).item() == pytest.approx(0.0, abs=1e-6)
