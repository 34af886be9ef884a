"""Seeds and intervals: means with Student-t confidence intervals, and paired per-seed differences.

Pure functions on numbers (no torch, no scipy): the t quantile comes from the regularised incomplete
beta function. One value gives a mean and no interval, and says so when printed.

    mean_ci([0.86, 0.87, 0.88])                    # Interval(mean=0.87, low=0.845, high=0.895, n=3)
    paired_difference({0: .84, 1: .83}, {0: .86, 1: .87}).format(scale=100, unit=" points")
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    """A mean and its two-sided confidence interval over ``n`` values (``low``/``high`` NaN when n < 2)."""

    mean: float
    low: float
    high: float
    n: int
    level: float = 0.95

    def __iter__(self):  # mean, low, high = mean_ci(values)
        return iter((self.mean, self.low, self.high))

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def format(self, scale: float = 1.0, digits: int = 1, unit: str = "", style: str = "pm") -> str:
        """``"86.7% ± 1.0"`` (style ``pm``) or ``"-1.2 points [-3.0, 0.6]"`` (style ``range``); one value:
        ``"86.7% (1 seed: no interval)"``."""
        m = f"{self.mean * scale:.{digits}f}{unit}"
        if self.n < 2:
            return f"{m} ({self.n} seed: no interval)"
        if style == "pm":
            return f"{m} ± {self.half_width * scale:.{digits}f}"
        return f"{m} [{self.low * scale:.{digits}f}, {self.high * scale:.{digits}f}]"

    @property
    def verdict(self) -> str:
        """For a difference: "ahead", "behind" or "indistinguishable" (``verdict``)."""
        return verdict(self.low, self.high)

    def __str__(self) -> str:
        return self.format(digits=4)


def verdict(low: float, high: float) -> str:
    """Where the interval of a difference lies against zero: "ahead" (wholly above), "behind" (wholly below),
    "indistinguishable" (it holds zero), or "undecided" without an interval (one seed)."""
    if math.isnan(low) or math.isnan(high):
        return "undecided"
    return "ahead" if low > 0 else "behind" if high < 0 else "indistinguishable"


def mean_ci(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean and Student-t confidence interval (two-sided, ``level``) of independent values (e.g. seeds)."""
    values = [float(v) for v in values]
    if not values:
        raise ValueError("mean_ci needs at least one value")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, n, level)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, level)


def paired_difference(a: Mapping | Sequence[float], b: Mapping | Sequence[float], level: float = 0.95) -> Interval:
    """Interval of the per-seed differences a − b: pass dicts seed → value (the seeds both have are paired)
    or two sequences in the same seed order."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        seeds = sorted(set(a) & set(b))
        if not seeds:
            raise ValueError(f"no seed in common: {sorted(a)} and {sorted(b)}")
        diffs = [a[s] - b[s] for s in seeds]
    else:
        if len(a) != len(b):
            raise ValueError(f"paired values need the same number of seeds, got {len(a)} and {len(b)}")
        diffs = [x - y for x, y in zip(a, b, strict=True)]
    return mean_ci(diffs, level)


# ------------------------------------------------------------------------------------ Student t
def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (t(0.975, 2) = 4.303)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(200):  # bisection: the CDF is monotone, 200 halvings reach float precision
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def t_cdf(t: float, df: float) -> float:
    """P(T ≤ t) for Student's t: 1 − ½·I_{df/(df+t²)}(df/2, ½) for t ≥ 0."""
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t >= 0 else tail


def _betainc(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b) (continued fraction, Numerical Recipes §6.4)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log(1 - x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1 - front * _betacf(b, a, 1 - x) / b


def _betacf(a: float, b: float, x: float, tiny: float = 1e-300) -> float:
    c, d = 1.0, 1 - (a + b) * x / (a + 1)
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1 + num * d
            d = 1 / (d if abs(d) > tiny else tiny)
            c = 1 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1) < 1e-15:
            break
    return h


# ------------------------------------------------------------------------------------ tables
def summarise(rows, by: str | list[str], value: str, level: float = 0.95):
    """A pandas table of mean, low, high, ± and n of ``value`` per group of ``by`` (rows: a DataFrame or
    a list of dicts, one per seed)."""
    import pandas as pd

    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    out = []
    for key, part in frame.groupby(by, sort=False):
        ci = mean_ci(part[value].tolist(), level)
        keys = key if isinstance(key, tuple) else (key,)
        names = by if isinstance(by, list) else [by]
        out.append({**dict(zip(names, keys, strict=True)), "mean": ci.mean, "low": ci.low, "high": ci.high,
                    "pm": ci.half_width, "n": ci.n})
    return pd.DataFrame(out)


def paired_table(rows, value: str, baseline: str, by: str = "method", seed: str = "seed", level: float = 0.95,
                 scale: float = 100.0, unit: str = " points", label=str):
    """Per-seed differences of every group against ``baseline`` (rows: one per group and seed):
    a table of mean, low, high, n, the verdict ("indistinguishable": the interval holds zero) and the text
    "lopt2 − prompt_tuning: −1.2 points [−3.0, 0.6]", whose names are
    ``label(group)`` (``label=readable``: "LoPT-2 − prompt tuning: ..."); the ``by`` column keeps the groups."""
    import pandas as pd

    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    values = {g: dict(zip(part[seed], part[value], strict=True)) for g, part in frame.groupby(by, sort=False)}
    if baseline not in values:
        raise ValueError(f"no rows of the baseline {baseline!r} (groups: {sorted(values)})")
    out = []
    for group, by_seed in values.items():
        if group == baseline:
            continue
        d = paired_difference(by_seed, values[baseline], level)
        out.append({by: group, "baseline": baseline, "mean": d.mean, "low": d.low, "high": d.high, "n": d.n,
                    "verdict": d.verdict,
                    "difference": f"{label(group)} − {label(baseline)}: {d.format(scale, 1, unit, style='range')}"})
    return pd.DataFrame(out)
