"""The verdict per distilled arm (helps / hurts / no difference detectable at 95 %), the seeds a
difference of the observed size would need, and accuracy intervals clipped to [0, 100] for display."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from rich.console import Console
from scipy import stats as sps

from kdlab.report import stats
from kdlab.report.compare_table import print_comparison
from kdlab.report.render import acc_interval
from kdlab.report.verdict import arm_verdict, clip_points, seeds_needed, verdicts

SCRATCH = [0.880, 0.874, 0.891, 0.868, 0.885]


def _diff(points: list[float]) -> dict[str, Any]:
    """The paired difference summary of an arm that beats scratch by ``points`` (one per seed)."""
    b = SCRATCH[: len(points)]
    return stats.paired_difference([x + p / 100 for x, p in zip(b, points, strict=True)], b)


def _ci_points(points: list[float]) -> tuple[float, float]:
    """The 95 % t-interval of the differences, in points, computed here from scratch."""
    d = np.asarray(points, dtype=np.float64)
    half = sps.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    return float(d.mean() - half), float(d.mean() + half)


def _brute_seeds(d: float, s: float) -> int | None:
    """Smallest n >= 2 with t_{0.975,n-1} + t_{0.80,n-1} <= |d| sqrt(n) / s, one n at a time."""
    for n in range(2, 1001):
        if sps.t.ppf(0.975, n - 1) + sps.t.ppf(0.80, n - 1) <= abs(d) * math.sqrt(n) / s:
            return n
    return None


def test_helps_when_the_interval_is_above_zero() -> None:
    pts = [2.0, 2.5, 3.0]
    v = arm_verdict("kd", _diff(pts))
    lo, hi = _ci_points(pts)
    assert lo > 0  # the case is what it claims
    assert v["outcome"] == "helps" and v["seeds"] == 3 and not v["few_seeds"] and v["seeds_needed"] is None
    assert v["diff_points"] == pytest.approx(2.5, abs=1e-4)
    assert v["ci95_points"] == pytest.approx([lo, hi], abs=1e-4)
    assert v["sentence"] == f"kd: helps — +2.50 points over scratch (95 % CI +{lo:.2f} to +{hi:.2f}, 3 seeds)."


def test_hurts_when_the_interval_is_below_zero() -> None:
    pts = [-1.0, -1.4, -0.9, -1.6, -1.1]
    v = arm_verdict("dkd", _diff(pts))
    lo, hi = _ci_points(pts)
    assert hi < 0
    assert v["outcome"] == "hurts" and v["seeds"] == 5 and v["seeds_needed"] is None
    assert v["sentence"].startswith("dkd: hurts — -1.20 points")
    assert f"95 % CI {lo:+.2f} to {hi:+.2f}, 5 seeds" in v["sentence"]
    assert "Only" not in v["sentence"]


def test_inconclusive_gives_the_seeds_a_difference_this_size_needs() -> None:
    pts = [0.4, -0.9, 1.7]
    diff = _diff(pts)
    v = arm_verdict("kd:alpha=0.5", diff)
    lo, hi = _ci_points(pts)
    assert lo < 0 < hi
    want = _brute_seeds(np.mean(pts), np.std(pts, ddof=1))
    assert want is not None and want > 3  # an undecided interval always needs more seeds than it had
    assert v["outcome"] == "inconclusive" and v["seeds_needed"] == want
    assert v["sentence"] == (
        f"kd:alpha=0.5: no difference detectable at 95 % — +0.40 points vs scratch "
        f"(95 % CI {lo:+.2f} to {hi:+.2f}, 3 seeds); about {want} seeds would detect a difference this size."
    )
    # the same numbers in fractions give the same count: only d / s counts
    assert seeds_needed(diff["mean"], diff["std"]) == want


def test_seeds_needed_matches_the_power_it_promises() -> None:
    """At the returned n the exact power of the paired t-test (noncentral t) is about 80 %."""
    for d, s in [(0.5, 1.0), (1.0, 1.0), (0.2, 1.5), (2.0, 1.0)]:
        n = seeds_needed(d, s)
        assert n == _brute_seeds(d, s)
        assert n is not None
        crit = sps.t.ppf(0.975, n - 1)
        power = sps.nct.sf(crit, n - 1, d * math.sqrt(n) / s) + sps.nct.cdf(-crit, n - 1, d * math.sqrt(n) / s)
        assert 0.75 <= power <= 0.95, (d, s, n, power)


def test_larger_spread_needs_more_seeds() -> None:
    counts = [seeds_needed(0.5, s) for s in (0.5, 1.0, 2.0, 4.0)]
    assert all(c is not None for c in counts)
    assert counts == sorted(counts) and len(set(counts)) == 4
    assert seeds_needed(-0.5, 1.0) == seeds_needed(0.5, 1.0)  # two-sided: the sign does not matter


def test_beyond_a_thousand_seeds_says_so() -> None:
    v = arm_verdict("kd", _diff([0.05, -1.0, 1.1]))
    assert _brute_seeds(0.05, float(np.std([0.05, -1.0, 1.1], ddof=1))) is None
    assert v["outcome"] == "inconclusive" and v["seeds_needed"] is None
    assert "more than 1000 seeds would be needed" in v["sentence"]


def test_zero_mean_with_spread_suggests_no_seed_count() -> None:
    v = arm_verdict("kd", _diff([1.0, -1.0, 0.0]))
    assert v["outcome"] == "inconclusive" and v["seeds_needed"] is None
    assert "no difference of any size was seen" in v["sentence"] and "about" not in v["sentence"]


def test_one_seed_cannot_decide() -> None:
    v = arm_verdict("kd", _diff([2.0]))
    assert v["outcome"] == "unknown" and v["ci95_points"] is None and v["few_seeds"] and v["seeds"] == 1
    assert v["diff_points"] == pytest.approx(2.0, abs=1e-4)
    assert v["sentence"].startswith("kd: one seed cannot decide — +2.00 points")
    assert "--seeds 3" in v["sentence"]


def test_two_seeds_are_flagged_as_a_first_look() -> None:
    v = arm_verdict("kd", _diff([1.0, 2.0]))
    assert v["few_seeds"] and v["seeds"] == 2 and v["outcome"] == "inconclusive"  # t = 12.71: very wide
    assert v["sentence"].endswith("Only 2 seeds: treat as a first look (use --seeds 3 or more).")
    assert v["seeds_needed"] == _brute_seeds(1.5, float(np.std([1.0, 2.0], ddof=1)))


@pytest.mark.parametrize(
    ("pts", "outcome", "needle"),
    [
        ([1.5, 1.5, 1.5], "helps", "helps — +1.50 points vs scratch on every seed (zero spread, 3 seeds)."),
        ([-0.5, -0.5, -0.5], "hurts", "hurts — -0.50 points vs scratch on every seed (zero spread, 3 seeds)."),
        ([0.0, 0.0, 0.0], "inconclusive", "no difference — the same test accuracy as scratch on every seed"),
    ],
)
def test_zero_spread_is_decided_by_the_sign_and_says_so(pts: list[float], outcome: str, needle: str) -> None:
    diff = _diff(pts)
    assert diff["std"] == 0.0  # float32-equal differences count as identical
    v = arm_verdict("kd", diff)
    assert v["outcome"] == outcome and v["seeds_needed"] is None
    assert v["sentence"].startswith(f"kd: {needle}")
    assert "zero spread" in v["sentence"]


def test_verdicts_cover_every_distilled_arm_in_order() -> None:
    comp = {
        "arms": {
            "teacher": {"n": 3},
            "scratch": {"n": 3},
            "kd": {"diff_vs_scratch": _diff([2.0, 2.5, 3.0])},
            "dkd": {"diff_vs_scratch": _diff([0.4, -0.9, 1.7])},
            "dist": {},
        }
    }
    got = verdicts(comp)
    assert [v["arm"] for v in got] == ["kd", "dkd", "dist"]
    assert [v["outcome"] for v in got] == ["helps", "inconclusive", "unknown"]
    assert got[2]["sentence"].startswith("dist: no verdict")


def test_clip_points_clips_accuracy_intervals_only_to_0_100() -> None:
    assert clip_points(97.7, 100.7) == (97.7, 100.0)
    assert clip_points(-3.0, 4.0) == (0.0, 4.0)
    assert clip_points(None, None) == (None, None)
    assert acc_interval(0.977, 1.007) == "[97.70, 100.00]"


def test_printed_table_clips_accuracy_but_not_differences_and_ends_with_the_verdicts() -> None:
    """An accuracy interval 99.2 ± 1.5 shows up to 100.00; the raw record keeps its high end."""
    teacher = {"n": 3, "mean": 0.992, "ci95_low": 0.977, "ci95_high": 1.007}
    scratch = {"n": 3, "mean": 0.90, "ci95_low": 0.88, "ci95_high": 0.92}
    kd = {**scratch, "diff_vs_scratch": {**_diff([0.4, -0.9, 1.7])}}
    comp: dict[str, Any] = {"name": "c", "seeds": [0, 1, 2], "status": "complete", "arms": {"teacher": teacher}}
    comp["arms"].update(scratch=scratch, kd=kd)
    console = Console(width=160, record=True)
    print_comparison(comp, console)
    lines = console.export_text().splitlines()
    row = next(line for line in lines if line.startswith("│ teacher "))
    assert "[97.70, 100.00]" in row and "100.70" not in row
    assert "99.20 ± 1.50" in row  # the mean and half-width are the raw t-interval's
    kd_row = next(line for line in lines if line.startswith("│ kd "))
    lo, hi = _ci_points([0.4, -0.9, 1.7])
    assert f"[{lo:+.2f}, {hi:+.2f}]" in kd_row and lo < 0  # a difference is never clipped
    assert comp["arms"]["teacher"]["ci95_high"] == 1.007  # display only
    assert lines[-1].startswith("kd: no difference detectable at 95 % — +0.40 points")
