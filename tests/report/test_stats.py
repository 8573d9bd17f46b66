"""Statistics across seeds and per-arm metrics, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from kdlab.report import stats
from kdlab.train import metrics


def test_t_interval_of_one_to_four_matches_hand_value() -> None:
    s = stats.summarize([1, 2, 3, 4])
    # mean 2.5, s = sqrt(5/3), t(0.975, df=3) = 3.182446305, half-width = t * s / 2
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    assert s["n"] == 4 and s["mean"] == pytest.approx(2.5)
    assert s["std"] == pytest.approx(math.sqrt(5 / 3))
    assert s["ci95_low"] == pytest.approx(2.5 - half, abs=1e-9)
    assert s["ci95_high"] == pytest.approx(2.5 + half, abs=1e-9)
    assert s["ci95_low"] == pytest.approx(0.44574, abs=1e-5)
    assert s["values"] == [1.0, 2.0, 3.0, 4.0] and s["note"] is None


def test_paired_difference_interval_and_p_value_by_hand() -> None:
    a = [1.0, 2.0, 3.0, 4.0]
    b = [0.5, 1.8, 2.1, 3.2]
    d = stats.paired_difference(a, b)
    # d = [0.5, 0.2, 0.9, 0.8]: mean 0.6, s_d = sqrt(0.1), t = 0.6 / (sqrt(0.1) / 2) = 3.7947
    assert d["values"] == pytest.approx([0.5, 0.2, 0.9, 0.8])
    assert d["mean"] == pytest.approx(0.6)
    assert d["std"] == pytest.approx(math.sqrt(0.1))
    half = 3.182446305284263 * math.sqrt(0.1) / 2
    assert (d["ci95_low"], d["ci95_high"]) == pytest.approx((0.6 - half, 0.6 + half))
    # two-sided p of t with 3 degrees of freedom, from the closed-form t CDF for df = 3:
    # F(t) = 1/2 + (u / (1 + t²/3) + atan(u)) / π with u = t / sqrt(3)
    t = 0.6 / (math.sqrt(0.1) / 2)
    u = t / math.sqrt(3)
    p = 2 * (1 - (0.5 + (u / (1 + t * t / 3) + math.atan(u)) / math.pi))
    assert d["p_value"] == pytest.approx(p, rel=1e-9)
    assert d["p_value"] == pytest.approx(0.0321194, abs=1e-7)


def test_single_seed_gives_no_interval_and_says_so() -> None:
    s = stats.summarize([0.9])
    assert s["mean"] == 0.9 and s["ci95_low"] is None and s["ci95_high"] is None and s["std"] is None
    assert "one seed" in s["note"]
    d = stats.paired_difference([0.9], [0.8])
    assert d["mean"] == pytest.approx(0.1) and d["p_value"] is None and d["ci95_low"] is None


def test_equal_differences_have_zero_spread_and_no_p_value() -> None:
    d = stats.paired_difference([0.5, 0.6, 0.7], [0.4, 0.5, 0.6])
    assert d["std"] == pytest.approx(0.0, abs=1e-12)
    assert d["p_value"] is None and "zero spread" in d["note"]
    # equal up to float32 rounding (accuracies are float32 means): still zero spread, no p-value
    d = stats.paired_difference([0.3, 0.5], [0.4 + 2e-9, 0.6 - 3e-9])
    assert d["std"] == 0.0 and d["p_value"] is None and d["ci95_low"] == d["ci95_high"] == d["mean"]
    with pytest.raises(ValueError, match="length"):
        stats.paired_difference([1.0], [1.0, 2.0])


def test_ece_hand_computed_on_four_samples() -> None:
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.62, 0.38], [0.45, 0.55]])
    labels = torch.tensor([0, 1, 0, 1])
    # bins of width 1/15: 0.9 -> (13/15, 14/15] holds two samples (acc 0.5, conf 0.9);
    # 0.62 -> (9/15, 10/15] (acc 1); 0.55 -> (8/15, 9/15] (acc 1)
    expected = 0.5 * abs(0.5 - 0.9) + 0.25 * abs(1 - 0.62) + 0.25 * abs(1 - 0.55)
    assert metrics.expected_calibration_error(probs.log(), labels) == pytest.approx(expected, abs=1e-6)
    # a perfectly confident, always right classifier is calibrated
    assert metrics.expected_calibration_error(torch.tensor([[50.0, 0.0]]), torch.tensor([0])) == pytest.approx(0.0)


def test_kl_to_teacher_and_agreement_by_hand() -> None:
    teacher = torch.tensor([[0.8, 0.2], [0.3, 0.7]]).log()
    student = torch.tensor([[0.5, 0.5], [0.3, 0.7]]).log()
    kl_first = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)  # second sample: identical, KL 0
    assert metrics.kl_to_teacher(student, teacher) == pytest.approx(kl_first / 2, abs=1e-6)
    assert metrics.kl_to_teacher(teacher, student) != pytest.approx(kl_first / 2, abs=1e-3)  # direction matters
    # argmax of [0.5, 0.5] is class 0 (first maximum), as the teacher's: full agreement
    assert metrics.teacher_agreement(student, teacher) == 1.0
    assert metrics.teacher_agreement(-student, teacher) == 0.5


def test_confusion_matrix_rows_true_columns_predicted() -> None:
    logits = torch.eye(3)[[0, 1, 1, 2, 0]]
    labels = torch.tensor([0, 1, 2, 2, 2])
    assert metrics.confusion_matrix(logits, labels, 3) == [[1, 0, 0], [0, 1, 0], [1, 1, 1]]
    assert metrics.confusion_matrix(logits[:1], labels[:1], 4)[3] == [0, 0, 0, 0]  # absent classes kept


def test_latency_times_batches_of_one_and_thirty_two_after_warmup() -> None:
    seen: list[int] = []

    class Counting(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(len(x))
            return x.flatten(1)

    model = Counting()
    model.register_parameter("w", nn.Parameter(torch.zeros(1)))
    model.train()
    out = metrics.inference_latency(model, torch.randn(5, 1, 8, 8), warmup=2, repeats=4, budget_seconds=60)
    assert set(out) == {"latency_ms_per_sample", "latency_ms_per_batch32"}
    assert all(v > 0 for v in out.values())
    assert seen == [1] * (2 + 4) + [32] * (2 + 4)  # 5 examples repeated up to a batch of 32
    assert model.training  # mode restored
