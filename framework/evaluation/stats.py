"""Means with 95% confidence intervals over eval items.

An eval set is a few dozen clips at most (DreamGen-Bench: ~50 per split), so the interval is
Student's t over items: mean +- t(0.975, n-1) * sd / sqrt(n), sd with n-1 in the denominator.
Seeds of one item are averaged first: they are repeated draws of the same clip, not new clips.
"""

from __future__ import annotations

import math

# t(0.975, df) for df = 1..30 (standard tables; tests check them against scipy.stats.t.ppf).
T975 = (
    12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
    2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
    2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423,
)  # fmt: skip
Z975 = 1.959963984540054


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t with `df` degrees of freedom (table to 30, then the
    Cornish-Fisher expansion around the normal quantile, good to 1e-4 there)."""
    if df < 1:
        return math.nan
    if df <= len(T975):
        return T975[df - 1]
    z = Z975
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def interval(values: list[float]) -> dict[str, float | int | None]:
    """{"mean", "lo", "hi", "n"}: the 95% t interval of the mean; lo/hi None below 2 values
    or when a value is not finite (an identical video's infinite PSNR)."""
    vals = [float(v) for v in values]
    n = len(vals)
    if n == 0:
        return {"mean": math.nan, "lo": None, "hi": None, "n": 0}
    mean = sum(vals) / n
    if n < 2 or not all(math.isfinite(v) for v in vals):
        return {"mean": mean, "lo": None, "hi": None, "n": n}
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    half = t975(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": n}


def separated(a: dict, b: dict) -> bool:
    """Whether two intervals do not overlap."""
    if None in (a.get("lo"), a.get("hi"), b.get("lo"), b.get("hi")):
        return False
    return a["hi"] < b["lo"] or b["hi"] < a["lo"]
