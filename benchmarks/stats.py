"""Confidence intervals and paired tests for benchmark rates: pure functions, no model, no scipy.

- ``wilson``: the Wilson score interval of a proportion (k successes of n);
- ``bootstrap_ci``: a seeded percentile bootstrap interval of a mean, resampling items or clusters;
- ``paired_bootstrap``: the difference of two methods' rates over the same items, with a seeded
  percentile bootstrap interval (resampling items, or clusters such as one NQ question at three
  gold positions, so that dependent items move together);
- ``mcnemar_exact``: the exact McNemar test, a two-sided binomial test on the discordant pairs;
- ``compare``: both of the above and a verdict at ``alpha``: "A > B (p=...)", "A < B (p=...)" or
  "no significant difference (p=...)";
- ``fmt_rate``: ``61.3% [56.0, 66.4] (n=300)``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054  # standard normal quantile of 0.975


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of the proportion k/n (default 95%). n = 0 gives (0, 1)."""
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"k, n: need 0 <= k <= n, got k={k}, n={n}.")
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _groups(n: int, clusters: Sequence[Hashable] | None) -> list[list[int]]:
    """Item indices grouped by cluster (each item its own cluster when ``clusters`` is None)."""
    if clusters is None:
        return [[i] for i in range(n)]
    if len(clusters) != n:
        raise ValueError(f"clusters: {len(clusters)} labels for {n} items; pass one label per item.")
    groups: dict[Hashable, list[int]] = {}
    for i, c in enumerate(clusters):
        groups.setdefault(c, []).append(i)
    return list(groups.values())


def _percentile(sorted_vals: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile q in [0, 1] of sorted values."""
    pos = q * (len(sorted_vals) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def bootstrap_ci(
    values: Sequence[float],
    clusters: Sequence[Hashable] | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``, resampling items (or whole clusters)."""
    if not values:
        return float("nan"), float("nan")
    import numpy as np

    groups = _groups(len(values), clusters)
    sums = np.array([sum(float(values[i]) for i in g) for g in groups])  # (M,)
    sizes = np.array([len(g) for g in groups], dtype=np.float64)  # (M,)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(groups), size=(n_boot, len(groups)))  # (B, M) resampled clusters
    stats = np.sort(sums[pick].sum(axis=1) / sizes[pick].sum(axis=1)).tolist()  # (B,)
    return _percentile(stats, (1 - level) / 2), _percentile(stats, 1 - (1 - level) / 2)


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    clusters: Sequence[Hashable] | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """(mean(a) - mean(b), low, high): the paired difference and its percentile bootstrap interval.

    ``a[i]`` and ``b[i]`` are two methods' outcomes (0/1 or any number) on the same item i; items are
    resampled together, or whole clusters of items when ``clusters`` labels them.
    """
    if len(a) != len(b):
        raise ValueError(f"a, b: paired outcomes need equal lengths, got {len(a)} and {len(b)}.")
    diffs = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    if not diffs:
        return float("nan"), float("nan"), float("nan")
    lo, hi = bootstrap_ci(diffs, clusters, n_boot=n_boot, seed=seed, level=level)
    return sum(diffs) / len(diffs), lo, hi


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Two-sided exact McNemar p-value: a binomial(n01 + n10, 1/2) test on the discordant pairs.

    ``a[i]``/``b[i]``: whether method A / B got item i right. No discordant pair gives p = 1.
    """
    if len(a) != len(b):
        raise ValueError(f"a, b: paired outcomes need equal lengths, got {len(a)} and {len(b)}.")
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of method A against method B on the same items."""

    n: int
    rate_a: float
    rate_b: float
    diff: float
    low: float
    high: float
    only_a: int
    only_b: int
    p: float
    verdict: str


def verdict(name_a: str, name_b: str, diff: float, p: float, alpha: float = 0.05) -> str:
    """'A > B (p=...)', 'A < B (p=...)' or 'no significant difference (p=...)' at level ``alpha``."""
    ps = fmt_p(p)
    if p < alpha and diff > 0:
        return f"{name_a} > {name_b} ({ps})"
    if p < alpha and diff < 0:
        return f"{name_a} < {name_b} ({ps})"
    return f"no significant difference ({ps})"


def compare(
    a: Sequence[bool],
    b: Sequence[bool],
    name_a: str = "A",
    name_b: str = "B",
    clusters: Sequence[Hashable] | None = None,
    *,
    alpha: float = 0.05,
    n_boot: int = 2000,
    seed: int = 0,
) -> Comparison:
    """Paired comparison: rates, difference with a bootstrap interval, exact McNemar p, and the verdict."""
    n = len(a)
    diff, lo, hi = paired_bootstrap(a, b, clusters, n_boot=n_boot, seed=seed)
    p = mcnemar_exact(a, b)
    only_a = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    only_b = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    return Comparison(
        n=n,
        rate_a=sum(map(bool, a)) / n if n else float("nan"),
        rate_b=sum(map(bool, b)) / n if n else float("nan"),
        diff=diff,
        low=lo,
        high=hi,
        only_a=only_a,
        only_b=only_b,
        p=p,
        verdict=verdict(name_a, name_b, diff, p, alpha) if n else "no items",
    )


def fmt_p(p: float) -> str:
    """``p=0.031``, ``p<0.001``."""
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def fmt_rate(k: int, n: int) -> str:
    """A rate with its Wilson 95% interval: ``61.3% [56.0, 66.4] (n=300)``; ``– (n=0)`` when empty."""
    if n == 0:
        return "– (n=0)"
    lo, hi = wilson(k, n)
    return f"{100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}] (n={n})"


def fmt_ci(mean: float, low: float, high: float, n: int) -> str:
    """A rate with a given interval (e.g. a cluster bootstrap): ``61.3% [56.0, 66.4] (n=300)``."""
    if n == 0 or math.isnan(mean):
        return "– (n=0)"
    return f"{100 * mean:.1f}% [{100 * low:.1f}, {100 * high:.1f}] (n={n})"


def fmt_diff(c: Comparison) -> str:
    """``+4.3 pts [0.7, 8.0]`` for a comparison."""
    return f"{100 * c.diff:+.1f} pts [{100 * c.low:+.1f}, {100 * c.high:+.1f}]"
