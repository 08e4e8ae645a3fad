"""The statistics of model checks and effect evaluation: binary metrics and their intervals.

- CTR: the **Wilson score interval** of a proportion, and **Newcombe's hybrid score
  interval** (his method 10, built from the two Wilson intervals) of a difference of two
  independent proportions.
- AUC: the **DeLong** variance (the fast algorithm of Sun & Xu, 2014, with mid-ranks), a
  normal interval clipped to [0, 1]; the difference of two AUCs on independent samples adds
  their variances.
- Log loss: the mean per-row loss with a normal interval from its standard error.
- Calibration: the expected calibration error (ECE) over equal-width probability bins.

All intervals are two-sided at ``level`` (default 95 %). Pure numpy/scipy: nothing here reads
or writes anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

EPS = 1e-15


def z_of(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2))


@dataclass(frozen=True)
class Estimate:
    """A value with its interval (NaN when it is not defined, e.g. AUC with one class)."""

    value: float
    low: float
    high: float

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high


NAN = Estimate(math.nan, math.nan, math.nan)


# ----------------------------------------------------------------------------- proportions
def wilson(successes: int, n: int, level: float = 0.95) -> Estimate:
    """The proportion ``successes / n`` with its Wilson score interval."""
    if n <= 0:
        return NAN
    z = z_of(level)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half))


def newcombe(s1: int, n1: int, s2: int, n2: int, level: float = 0.95) -> Estimate:
    """``p1 - p2`` of two independent proportions with Newcombe's hybrid score interval."""
    a, b = wilson(s1, n1, level), wilson(s2, n2, level)
    if math.isnan(a.value) or math.isnan(b.value):
        return NAN
    d = a.value - b.value
    low = d - math.sqrt((a.value - a.low) ** 2 + (b.high - b.value) ** 2)
    high = d + math.sqrt((a.high - a.value) ** 2 + (b.value - b.low) ** 2)
    return Estimate(d, low, high)


# ----------------------------------------------------------------------------- AUC
def delong(y: Sequence[int] | Any, p: Sequence[float] | Any) -> tuple[float, float]:
    """``(AUC, variance)`` by DeLong's method (NaN, NaN with fewer than one of each class)."""
    import numpy as np
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=float)
    pos, neg = p[y], p[~y]
    m, n = len(pos), len(neg)
    if m == 0 or n == 0:
        return math.nan, math.nan
    tx, ty = rankdata(pos), rankdata(neg)
    tz = rankdata(np.concatenate([pos, neg]))
    auc = float((tz[:m].sum() - m * (m + 1) / 2) / (m * n))
    v10 = (tz[:m] - tx) / n  # per positive: the share of negatives ranked below it
    v01 = 1.0 - (tz[m:] - ty) / m  # per negative: the share of positives ranked above it
    var = (float(np.var(v10, ddof=1)) / m if m > 1 else 0.0) + \
        (float(np.var(v01, ddof=1)) / n if n > 1 else 0.0)
    return auc, var


def auc_interval(y: Any, p: Any, level: float = 0.95) -> Estimate:
    auc, var = delong(y, p)
    if math.isnan(auc):
        return NAN
    half = z_of(level) * math.sqrt(max(var, 0.0))
    return Estimate(auc, max(0.0, auc - half), min(1.0, auc + half))


# ----------------------------------------------------------------------------- log loss
def row_losses(y: Any, p: Any) -> Any:
    import numpy as np

    q = np.clip(np.asarray(p, dtype=float), EPS, 1 - EPS)
    t = np.asarray(y, dtype=float)
    return -(t * np.log(q) + (1 - t) * np.log(1 - q))


def logloss_interval(y: Any, p: Any, level: float = 0.95) -> tuple[Estimate, float]:
    """Mean log loss with its normal interval, and the variance of the mean."""
    import numpy as np

    losses = row_losses(y, p)
    n = len(losses)
    if n == 0:
        return NAN, math.nan
    mean = float(np.mean(losses))
    var = float(np.var(losses, ddof=1)) / n if n > 1 else 0.0
    half = z_of(level) * math.sqrt(var)
    return Estimate(mean, mean - half, mean + half), var


def difference(a: float, var_a: float, b: float, var_b: float, level: float = 0.95
               ) -> Estimate:
    """``a - b`` of two independent estimates with a normal interval."""
    if any(math.isnan(x) for x in (a, var_a, b, var_b)):
        return NAN
    half = z_of(level) * math.sqrt(var_a + var_b)
    return Estimate(a - b, a - b - half, a - b + half)


# ----------------------------------------------------------------------------- calibration
def calibration(y: Any, p: Any, bins: int = 10) -> tuple[float, list[dict[str, float]]]:
    """Expected calibration error and the reliability table (equal-width bins)."""
    import numpy as np

    t = np.asarray(y, dtype=float)
    q = np.asarray(p, dtype=float)
    if len(q) == 0:
        return math.nan, []
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(q, edges[1:-1]), 0, bins - 1)
    table = []
    ece = 0.0
    for b in range(bins):
        mask = which == b
        count = int(mask.sum())
        if not count:
            continue
        mean_p, rate = float(q[mask].mean()), float(t[mask].mean())
        ece += count / len(q) * abs(mean_p - rate)
        table.append({"bin_low": float(edges[b]), "bin_high": float(edges[b + 1]),
                      "rows": count, "mean_p": mean_p, "click_rate": rate})
    return float(ece), table


def binary_metrics(y: Any, p: Any) -> dict[str, float]:
    """AUC, log loss, ECE, rows, observed and predicted rate of one labelled sample."""
    import numpy as np

    t = np.asarray(y, dtype=float)
    q = np.asarray(p, dtype=float)
    auc, _ = delong(t, q)
    loss, _ = logloss_interval(t, q)
    ece, _ = calibration(t, q)
    return {"auc": auc, "logloss": loss.value, "ece": ece, "rows": float(len(t)),
            "rate": float(t.mean()) if len(t) else math.nan,
            "mean_p": float(q.mean()) if len(q) else math.nan}


__all__ = ["Estimate", "auc_interval", "binary_metrics", "calibration", "delong",
           "difference", "logloss_interval", "newcombe", "row_losses", "wilson"]
