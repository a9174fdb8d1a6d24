"""Significance of a difference between two sets of runs: Welch's unequal-variances t-test.

Welch, "The generalization of 'Student's' problem when several different population variances
are involved", Biometrika 1947: ``t = (mean(a) - mean(b)) / sqrt(s_a^2 / n_a + s_b^2 / n_b)``
with the Welch-Satterthwaite degrees of freedom ``(s_a^2/n_a + s_b^2/n_b)^2 / ((s_a^2/n_a)^2 /
(n_a - 1) + (s_b^2/n_b)^2 / (n_b - 1))``. The two-sided p-value of Student's t with real degrees
of freedom is ``I_{dof / (dof + t^2)}(dof / 2, 1 / 2)``, the regularized incomplete beta
function, evaluated by its continued fraction (modified Lentz's method). Pure Python: no scipy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for num in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def regularized_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), the regularized incomplete beta function, for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def student_t_two_sided(t: float, dof: float) -> float:
    """P(|T| >= |t|) for Student's t with ``dof`` (real, > 0) degrees of freedom."""
    return regularized_beta(dof / 2.0, 0.5, dof / (dof + t * t))


def welch_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float] | None:
    """``(t, dof, p)`` of Welch's two-sided t-test of mean(a) = mean(b); None when either sample
    has fewer than 2 values or both have zero variance."""
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0.0:
        return None
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va + vb)
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return t, dof, student_t_two_sided(t, dof)
