"""Statistics across seeds: mean, standard deviation, t-distribution confidence intervals and the
paired comparison of two arms trained on the same seeds.

With ``n`` values ``x_1..x_n`` (one per seed):

* mean ``x̄ = (1/n) Σ x_i``; sample standard deviation ``s = sqrt(Σ (x_i − x̄)² / (n − 1))``;
* 95 % interval ``x̄ ± t_{0.975, n−1} · s / sqrt(n)`` (Student's t, ``scipy.stats.t``), which is
  honest for the small ``n`` (3–10 seeds) a comparison has, where a normal interval is too narrow;
* paired difference of arm A against arm B on the same seeds: ``d_i = a_i − b_i``, then the same
  interval on ``d``, and the two-sided paired t-test ``t = d̄ / (s_d / sqrt(n))`` with ``n − 1``
  degrees of freedom (``scipy.stats.ttest_rel``). Pairing removes the seed-to-seed variation the
  two arms share (same split, same initial student weights, same data order).

With one value there is no spread to estimate: the interval and p-value are ``None`` and the
summary's ``note`` says so. When every difference is identical the spread is zero: the interval
collapses to the mean and the t-test is undefined (``p_value`` None, with a note); differences
equal up to float32 rounding (spread ≤ 1e-6 relative) count as identical.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
ROUNDING = 1e-6
"""Spreads of paired differences below this (relative) are float rounding and count as zero."""


def summarize(values: Sequence[float], *, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Mean, sample std and t-interval of ``values``.

    Returns:
        ``{"n", "mean", "std", "ci95_low", "ci95_high", "values", "note"}``; ``std`` and the
        interval are None when ``n < 2`` (``note`` explains), ``mean`` is None when ``n = 0``.
    """
    x = np.asarray([float(v) for v in values], dtype=np.float64)
    n = int(x.size)
    out: dict[str, Any] = {
        "n": n,
        "mean": float(x.mean()) if n else None,
        "std": None,
        "ci95_low": None,
        "ci95_high": None,
        "values": [float(v) for v in x],
        "note": None,
    }
    if n == 0:
        out["note"] = "no values"
        return out
    if n == 1:
        out["note"] = "one seed: no spread to estimate, so no confidence interval; use --seeds 3 or more"
        return out
    std = float(x.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, df=n - 1)) * std / math.sqrt(n)
    out.update(std=std, ci95_low=out["mean"] - half, ci95_high=out["mean"] + half)
    return out


def paired_difference(a: Sequence[float], b: Sequence[float], *, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Paired difference ``a_i − b_i`` (same seeds, same order): its summary and a paired t-test.

    Returns:
        :func:`summarize` of the differences plus ``p_value`` (two-sided paired t-test, None when
        ``n < 2`` or all differences are equal) and ``test`` (the test's name).
    """
    if len(a) != len(b):
        raise ValueError(f"paired values differ in length ({len(a)} vs {len(b)})")
    d = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    out = summarize(d, confidence=confidence)
    out["p_value"] = None
    out["test"] = "two-sided paired t-test (scipy.stats.ttest_rel)"
    if len(d) >= 2:
        # Accuracies are computed in float32: differences that are equal up to its rounding
        # (relative 6e-8) must count as equal, or a spurious tiny spread gives a tiny p-value.
        if out["std"] <= ROUNDING * max(1.0, max(abs(x) for x in d)):
            mean = out["mean"]
            out.update(std=0.0, ci95_low=mean, ci95_high=mean)
            out["note"] = "all paired differences are equal: zero spread, the t-test is undefined"
        else:
            p = float(sps.ttest_rel(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)).pvalue)
            out["p_value"] = p if math.isfinite(p) else None
    return out
