"""One sentence per distilled arm that a person can act on: helps, hurts, or no difference
detectable at 95 %, with the paired difference to scratch and its interval.

Input: the paired-difference summary of an arm against the scratch student, as stored in
``comparison.json`` → ``arms.<arm>.diff_vs_scratch`` (:func:`kdlab.report.stats.paired_difference`
of test accuracies, in accuracy units: 0.01 = 1 point). Sentences speak in percentage points.

Decision rule, with ``[lo, hi]`` the 95 % t-interval ``d̄ ± t_{0.975, n−1} · s / sqrt(n)`` of the
``n`` paired differences ``d_i = acc(arm, seed i) − acc(scratch, seed i)``:

* ``helps`` when ``lo > 0``, ``hurts`` when ``hi < 0``, otherwise ``inconclusive`` (no difference
  detectable at 95 %);
* one seed: no interval, outcome ``unknown`` (one seed cannot decide);
* zero spread (every difference identical, the interval collapses to ``d̄``): decided by the sign
  of ``d̄`` and the sentence says the spread is zero; ``d̄ = 0`` is no difference. A ``|d̄|`` up to
  ``stats.ROUNDING`` (1e-6, float32 rounding of the accuracies) counts as 0.

When inconclusive, :func:`seeds_needed` says roughly how many seeds would detect a difference of
the observed size (see there). Fewer than :data:`FEW_SEEDS` seeds is flagged as a first look.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats as sps

from kdlab.report.collect import BASE_ARMS  # teacher and scratch: measured against, no verdict
from kdlab.report.stats import CONFIDENCE, ROUNDING

FEW_SEEDS = 3
"""Below this many paired seeds a verdict is flagged as a first look."""
POWER = 0.80
"""Power of the paired t-test that :func:`seeds_needed` asks for."""
MAX_SEEDS_NEEDED = 1000
""":func:`seeds_needed` searches up to this many seeds; beyond, it says "more than 1000"."""


def seeds_needed(
    diff: float, sd: float, *, power: float = POWER, confidence: float = CONFIDENCE, cap: int = MAX_SEEDS_NEEDED
) -> int | None:
    """Roughly how many seeds a two-sided paired t-test needs to detect a mean difference ``diff``
    when the paired differences have standard deviation ``sd``.

    The smallest ``n ≥ 2`` with ``t_{1−α/2, n−1} + t_{power, n−1} ≤ |d| · sqrt(n) / s`` (the usual
    normal-approximation sample size, with Student's t quantiles in place of the normal ones), here
    ``α = 1 − confidence = 0.05`` and ``power = 0.80``: with that many seeds the test at 5 % would
    find a true difference of ``d`` about 80 % of the time. It is rough: ``d`` and ``s`` are
    themselves estimates from few seeds, so read the answer as an order of magnitude.

    ``diff`` and ``sd`` in the same unit (fractions or points: only their ratio counts).

    Returns:
        that ``n``; None when ``diff`` is 0 (no difference of any size to detect), ``sd`` is not
        positive, either is not finite, or more than ``cap`` seeds would be needed.
    """
    if not (math.isfinite(diff) and math.isfinite(sd)) or diff == 0 or sd <= 0:
        return None
    n = np.arange(2, cap + 1, dtype=np.float64)
    need = sps.t.ppf(0.5 + confidence / 2, df=n - 1) + sps.t.ppf(power, df=n - 1)
    ok = np.nonzero(need <= abs(diff) * np.sqrt(n) / sd)[0]
    return int(n[ok[0]]) if ok.size else None


def _pts(x: float) -> str:
    """Signed percentage points of a fraction (``0.0231`` -> ``+2.31``; ``-0.00001`` -> ``-0.00``)."""
    return f"{100 * x:+.2f}"


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def arm_verdict(arm: str, diff: dict[str, Any] | None) -> dict[str, Any]:
    """The verdict on one distilled arm from its paired difference to scratch.

    Args:
        arm: the arm's name (first word of the sentence).
        diff: ``diff_vs_scratch`` of comparison.json (``n``, ``mean``, ``std``, ``ci95_low``,
            ``ci95_high`` in accuracy units); None or empty when the arm has no paired seed.

    Returns:
        ``{"arm", "outcome", "sentence", "diff_points", "ci95_points", "seeds", "seeds_needed",
        "few_seeds"}``: ``outcome`` is ``helps`` / ``hurts`` / ``inconclusive`` / ``unknown``
        (the rule in the module docstring); ``diff_points`` the mean difference in points (None
        without seeds); ``ci95_points`` its 95 % interval ``[lo, hi]`` in points (None with one
        seed); ``seeds`` the number of paired seeds; ``seeds_needed`` :func:`seeds_needed` when
        inconclusive, else None; ``few_seeds`` whether ``seeds < 3``.
    """
    diff = diff or {}
    n = int(diff.get("n") or 0)
    mean, std = diff.get("mean"), diff.get("std")
    low, high = diff.get("ci95_low"), diff.get("ci95_high")
    out: dict[str, Any] = {
        "arm": arm,
        "outcome": "unknown",
        "sentence": "",
        "diff_points": None,
        "ci95_points": None,
        "seeds": n,
        "seeds_needed": None,
        "few_seeds": n < FEW_SEEDS,
    }
    if n == 0 or not isinstance(mean, int | float) or not math.isfinite(mean):
        out["sentence"] = f"{arm}: no verdict — no seed with both this arm and scratch recorded yet."
        return out
    out["diff_points"] = 100 * float(mean)
    if n == 1 or not all(isinstance(v, int | float) and math.isfinite(v) for v in (std, low, high)):
        out["sentence"] = (
            f"{arm}: one seed cannot decide — {_pts(mean)} points vs scratch on {_seeds(n)}, with no spread to "
            f"judge it by; compare over 3 or more seeds (kdlab compare --seeds 3)."
        )
        return out
    assert isinstance(std, int | float) and isinstance(low, int | float) and isinstance(high, int | float)
    out["ci95_points"] = [100 * float(low), 100 * float(high)]
    if abs(mean) <= ROUNDING:  # float32 accuracies: a difference this small is rounding, not a difference
        mean = 0.0
    if std == 0:  # every paired difference identical: decided by the sign, and said so
        if mean == 0:
            out["outcome"] = "inconclusive"
            text = f"no difference — the same test accuracy as scratch on every seed (zero spread, {_seeds(n)})."
        else:
            out["outcome"] = "helps" if mean > 0 else "hurts"
            text = f"{out['outcome']} — {_pts(mean)} points vs scratch on every seed (zero spread, {_seeds(n)})."
    else:
        ci = f"95 % CI {_pts(low)} to {_pts(high)}, {_seeds(n)}"
        if low > 0:
            out["outcome"] = "helps"
            text = f"helps — {_pts(mean)} points over scratch ({ci})."
        elif high < 0:
            out["outcome"] = "hurts"
            text = f"hurts — {_pts(mean)} points vs scratch ({ci})."
        else:
            out["outcome"] = "inconclusive"
            need = seeds_needed(float(mean), float(std))
            out["seeds_needed"] = need
            if mean == 0:
                more = "no difference of any size was seen (mean exactly 0), so no number of seeds is suggested."
            elif need is None:
                more = f"more than {MAX_SEEDS_NEEDED} seeds would be needed to detect a difference this size."
            else:
                more = f"about {need} seeds would detect a difference this size."
            text = f"no difference detectable at 95 % — {_pts(mean)} points vs scratch ({ci}); {more}"
    if n < FEW_SEEDS:
        text += f" Only {_seeds(n)}: treat as a first look (use --seeds 3 or more)."
    out["sentence"] = f"{arm}: {text}"
    return out


def verdicts(comp: dict[str, Any]) -> list[dict[str, Any]]:
    """:func:`arm_verdict` of every distilled arm of a comparison.json dict (or any dict with
    ``arms``: a run's :func:`kdlab.report.collect.summarize_arms`), in arm order; teacher and
    scratch get none."""
    arms = comp.get("arms") or {}
    return [
        arm_verdict(str(arm), entry.get("diff_vs_scratch") if isinstance(entry, dict) else None)
        for arm, entry in arms.items()
        if arm not in BASE_ARMS
    ]


def clip_points(low: float | None, high: float | None) -> tuple[float | None, float | None]:
    """An accuracy interval in percent clipped to ``[0, 100]`` for display (an accuracy cannot
    leave it; the t-interval ``x̄ ± t·s/sqrt(n)`` can). Differences are never clipped. None stays None."""

    def clip(x: float | None) -> float | None:
        return None if x is None else min(100.0, max(0.0, float(x)))

    return clip(low), clip(high)
