"""Small-sample statistics without scipy: Student's t distribution, confidence intervals, paired tests, Holm, TOST.

The t distribution's CDF is computed from the regularised incomplete beta function (continued fraction, modified
Lentz), its quantile by bisection; both agree with tabulated values to better than 1e-9, and small tail probabilities
keep their relative precision.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

__all__ = ["holm", "mean_ci", "paired_test", "t_cdf", "t_quantile", "tost"]


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float, y: float | None = None) -> float:
    """Regularised incomplete beta function I_x(a, b); ``y`` is ``1 - x`` when the caller knows it more exactly."""
    y = 1.0 - x if y is None else y
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(y)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, y) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom.

    The tail beyond ``|t|`` is computed directly, so ``t_cdf(-|t|, df)`` keeps its relative precision far out in the
    tail (use it, not ``1 - t_cdf(|t|, df)``, for small p values).
    """
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    t2 = t * t
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t2), t2 / (df + t2))  # P(T > |t|)
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_cdf`)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    hi = 1.0
    while t_cdf(hi, df) < max(p, 1.0 - p):  # bracket: the quantile lies in [-hi, hi]
        hi *= 2.0
    lo, hi = -hi, hi
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if mid in (lo, hi):
            break
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2.0


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and the two-sided t confidence interval ``(mean, low, high)``; a single value gives ``(v, nan, nan)``."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return mean, math.nan, math.nan
    half = t_quantile(0.5 + level / 2.0, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean, mean - half, mean + half


def paired_test(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Paired t test of ``mean(a - b) = 0`` (two-sided); the pairs are the runs of the same seed.

    Returns:
        ``{"n", "mean", "sd", "low", "high", "t", "p"}``: mean difference, its CI at ``level``, t statistic and p value.
        Identical differences (sd 0) give p 0 when their mean is not 0, 1 when it is.
    """
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"paired_test needs two equally long samples of >= 2 values, got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    n, mean, sd = len(diffs), statistics.fmean(diffs), statistics.stdev(diffs)
    se = sd / math.sqrt(n)
    half = t_quantile(0.5 + level / 2.0, n - 1) * se
    if se == 0.0:
        t, p = (math.copysign(math.inf, mean), 0.0) if mean != 0.0 else (0.0, 1.0)
    else:
        t = mean / se
        p = 2.0 * t_cdf(-abs(t), n - 1)
    return {"n": n, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "t": t, "p": p}


def tost(a: Sequence[float], b: Sequence[float], margin: float) -> dict[str, float]:
    """Paired two one-sided tests of equivalence: is ``mean(a - b)`` inside ``(-margin, +margin)``?

    Returns:
        ``{"p", "low90", "high90"}``: the TOST p value (the larger of the two one-sided p values) and the 90 % CI of
        the mean difference (equivalence at 5 % holds exactly when it lies inside the margin).
    """
    if margin <= 0:
        raise ValueError(f"the equivalence margin must be positive, got {margin}")
    test = paired_test(a, b, level=0.90)
    n, mean, sd = test["n"], test["mean"], test["sd"]
    se = sd / math.sqrt(n)
    if se == 0.0:
        p = 0.0 if abs(mean) < margin else 1.0
    else:
        p_low = t_cdf(-(mean + margin) / se, n - 1)  # H0: diff <= -margin: P(T >= (mean + margin) / se)
        p_high = t_cdf((mean - margin) / se, n - 1)  # H0: diff >= +margin
        p = max(p_low, p_high)
    return {"p": p, "low90": test["low"], "high90": test["high"]}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p values (step-down, monotone, capped at 1), in the input order."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
