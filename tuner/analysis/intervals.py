"""Confidence intervals of measured figures: Student-t over independent samples, and over batch means.

A trial's qps comes either from several repeats (independent fresh processes: Student-t over their qps)
or from one run's windows, which are autocorrelated (a slow window is followed by a slow window), so
the windows are first grouped into a few contiguous *batch means* and the interval is taken over those
(the method of batch means). Quantiles of Student's t come from scipy.

Pure functions, no I/O.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

#: the confidence of every interval tuner reports
CONFIDENCE = 0.95
#: at most this many batch means are formed from one run's windows (fewer when there are few windows)
MAX_BATCHES = 5


@dataclass(frozen=True)
class Interval:
    """``mean`` with a two-sided ``confidence`` interval ``[low, high]`` and the coefficient of variation."""

    mean: float
    low: float
    high: float
    cv: float
    n: int
    confidence: float = CONFIDENCE

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    @property
    def relative_half_width(self) -> float:
        """Half-width over the mean (``inf`` for a zero mean or an unbounded interval)."""
        return self.half_width / abs(self.mean) if self.mean else math.inf


@functools.cache
def _student_t() -> Any:
    """scipy's Student-t functions (``scipy.special``: ``stdtrit`` the quantile, ``stdtr`` the CDF), imported on
    first use. Not ``scipy.stats.t``: the same functions underneath, but importing ``scipy.stats`` costs
    ~0.6 s here against ~0.2 s, and every trial's child pays it for its interval. scipy adds warning
    filters when it is imported, and importing tuner must not change process-wide state, so they are put back."""
    with warnings.catch_warnings():
        from scipy import special

    return special


def t_quantile(confidence: float, dof: int) -> float:
    """The two-sided Student-t quantile: ``P(|T| <= q) = confidence`` for ``dof`` degrees of freedom."""
    return float(_student_t().stdtrit(dof, 0.5 + confidence / 2.0))


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """Student-t interval of the mean of independent samples; one sample gives an unbounded interval."""
    xs = [float(v) for v in values if math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, math.nan, 0, confidence)
    mean = math.fsum(xs) / n
    if n == 1:
        return Interval(mean, -math.inf, math.inf, math.nan, 1, confidence)
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(confidence, n - 1) * sd / math.sqrt(n)
    cv = sd / abs(mean) if mean else math.nan
    return Interval(mean, mean - half, mean + half, cv, n, confidence)


def batch_means(values: Sequence[float], max_batches: int = MAX_BATCHES) -> list[float]:
    """Contiguous batches of ``values`` (as equal in size as possible), each replaced by its mean.

    With fewer values than ``max_batches`` every value is its own batch.
    """
    xs = [float(v) for v in values]
    k = min(max_batches, len(xs))
    if k == 0:
        return []
    out = []
    for i in range(k):
        part = xs[i * len(xs) // k : (i + 1) * len(xs) // k]
        out.append(math.fsum(part) / len(part))
    return out


def windows_interval(window_qps: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The interval of one run's throughput from its windows: Student-t over their batch means.

    The coefficient of variation is that of the windows themselves (how much one window moves).
    """
    xs = [float(v) for v in window_qps if math.isfinite(float(v))]
    interval = t_interval(batch_means(xs), confidence)
    window_cv = t_interval(xs, confidence).cv if len(xs) > 1 else math.nan
    return Interval(interval.mean, interval.low, interval.high, window_cv, len(xs), confidence)


def t_probability_at_least(values: Sequence[float], bound: float) -> float:
    """One-sided Student-t confidence that the mean of independent samples is at least ``bound``.

    ``F((mean - bound) / (sd / sqrt(n)))`` with ``F`` the t distribution function for ``n - 1`` degrees
    of freedom: the largest confidence at which the one-sided lower bound of the mean is still ``>= bound``.
    With no spread it is 1 when ``mean >= bound`` and 0 otherwise; NaN for fewer than two finite samples.
    """
    xs = [float(v) for v in values if math.isfinite(float(v))]
    n = len(xs)
    if n < 2:
        return math.nan
    mean = math.fsum(xs) / n
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    return t_probability_of(mean, sd / math.sqrt(n), n - 1, bound)


def t_probability_of(mean: float, stderr: float, dof: int, bound: float) -> float:
    """:func:`t_probability_at_least` from a mean, its standard error and degrees of freedom:
    ``F((mean - bound) / stderr)``; with a zero standard error 1 when ``mean >= bound`` and 0 otherwise."""
    if stderr == 0.0:
        return 1.0 if mean >= bound else 0.0
    return float(_student_t().stdtr(dof, (mean - bound) / stderr))


@functools.cache
def dunnett_quantile(comparisons: int, dof: float, confidence: float = CONFIDENCE) -> float:
    """The one-sided many-to-one critical value: ``P(max_j T_j <= d) = confidence`` for ``comparisons``
    Student-t statistics with ``dof`` degrees of freedom (``math.inf``: normal) and correlation 1/2 between
    any two -- the differences of several means from one common mean, as in Dunnett's test and Hsu's
    multiple comparisons with the best (MCB). One comparison is the one-sided t quantile.

    Computed as ``E_s[E_U[Phi(sqrt(2) d s - U)^k]]`` (``U`` standard normal, ``s = sqrt(chi2_dof / dof)``):
    Gauss-Hermite over ``U``, scipy's adaptive quadrature over ``s``, bisection over ``d``; cached.
    """
    if comparisons < 1:
        raise ValueError(f"comparisons must be >= 1, got {comparisons!r}")
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1), got {confidence!r}")
    special = _student_t()
    if comparisons == 1 and math.isfinite(dof):
        return float(special.stdtrit(dof, confidence))
    with warnings.catch_warnings():
        from scipy import integrate

    import numpy as np

    nodes, weights = np.polynomial.hermite_e.hermegauss(96)
    weights = weights / weights.sum()

    def given_s(x: float) -> float:  # P(max_j T_j <= x) once the variance estimate is fixed
        return float(special.ndtr(x * math.sqrt(2.0) - nodes) ** comparisons @ weights)

    if math.isinf(dof):
        probability = given_s
    else:
        nu = float(dof)
        log_norm = math.log(2.0) + (nu / 2.0) * math.log(nu / 2.0) - math.lgamma(nu / 2.0)

        def density(s: float) -> float:  # of s = sqrt(chi2_nu / nu)
            return math.exp(log_norm + (nu - 1.0) * math.log(s) - nu * s * s / 2.0) if s > 0.0 else 0.0

        def probability(x: float) -> float:
            return float(integrate.quad(lambda s: density(s) * given_s(x * s), 0.0, math.inf, limit=200)[0])

    low, high = 0.0, 100.0
    for _ in range(60):
        mid = (low + high) / 2.0
        if probability(mid) < confidence:
            low = mid
        else:
            high = mid
    return (low + high) / 2.0
