"""benchmarks.stats against values computed by hand (no model, no scipy)."""

from __future__ import annotations

import math

import pytest

from benchmarks.stats import (
    bootstrap_ci,
    compare,
    fmt_rate,
    mcnemar_exact,
    paired_bootstrap,
    verdict,
    wilson,
)


def test_wilson_matches_hand_computed_intervals():
    # 8/10: p=0.8, z=1.96: centre (0.8 + 0.19208) / 1.38416 = 0.716774, half 0.226555
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4901625, abs=1e-6) and hi == pytest.approx(0.9433178, abs=1e-6)
    # 0/10 and 10/10 are symmetric and touch 0 / 1
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775328), abs=1e-6)
    assert wilson(10, 10) == pytest.approx((0.7224672, 1.0), abs=1e-6)
    # 50/100: symmetric around one half
    lo, hi = wilson(50, 100)
    assert lo == pytest.approx(0.4038315, abs=1e-6) and lo + hi == pytest.approx(1.0)
    assert wilson(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="k, n"):
        wilson(5, 3)


def test_mcnemar_exact_is_the_binomial_test_on_discordant_pairs():
    # 1 pair only A right, 5 only B right: 2 * P(X <= 1 | n=6) = 2 * 7/64
    a = [True] * 1 + [False] * 5 + [True] * 10 + [False] * 4
    b = [False] * 1 + [True] * 5 + [True] * 10 + [False] * 4
    assert mcnemar_exact(a, b) == pytest.approx(14 / 64)
    assert mcnemar_exact(b, a) == pytest.approx(14 / 64)  # two-sided: symmetric
    # 0 vs 6 discordant: 2 / 64
    assert mcnemar_exact([False] * 6, [True] * 6) == pytest.approx(2 / 64)
    # 3 vs 3: the two tails overlap, capped at 1
    assert mcnemar_exact([True] * 3 + [False] * 3, [False] * 3 + [True] * 3) == 1.0
    # no discordant pair at all
    assert mcnemar_exact([True, False], [True, False]) == 1.0
    # 0 vs 10: 2 / 1024 < 0.05
    assert mcnemar_exact([False] * 10, [True] * 10) == pytest.approx(2 / 1024)


def test_paired_bootstrap_is_seeded_and_brackets_the_difference():
    a = [1] * 30 + [0] * 10 + [1] * 5
    b = [0] * 30 + [1] * 10 + [1] * 5
    d1 = paired_bootstrap(a, b, seed=3)
    d2 = paired_bootstrap(a, b, seed=3)
    assert d1 == d2  # same seed, same interval
    diff, lo, hi = d1
    assert diff == pytest.approx(20 / 45)
    assert lo < diff < hi and lo > 0  # 30 vs 10 discordant: clearly positive
    same = paired_bootstrap([1, 0, 1], [1, 0, 1])
    assert same == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap([1], [1, 0])


def test_cluster_bootstrap_moves_a_cluster_together():
    # two clusters of identical outcomes: resampling clusters gives only the means 0, 0.5 and 1
    values = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    lo, hi = bootstrap_ci(values, clusters=["a", "a", "a", "b", "b", "b"], n_boot=500, seed=1)
    assert (lo, hi) == (0.0, 1.0)
    with pytest.raises(ValueError, match="clusters"):
        bootstrap_ci(values, clusters=["a"])
    assert all(math.isnan(x) for x in bootstrap_ci([]))


def test_compare_and_verdict_strings():
    a = [True] * 12 + [False] * 8
    b = [False] * 12 + [False] * 8
    c = compare(a, b, "GemFilter", "RAG")
    assert (c.n, c.only_a, c.only_b) == (20, 12, 0)
    assert c.p == pytest.approx(2 / 4096)
    assert c.verdict == "GemFilter > RAG (p<0.001)"
    c = compare(b, a, "GemFilter", "RAG")
    assert c.verdict.startswith("GemFilter < RAG")
    c = compare([True, False, True], [False, True, True], "A", "B")
    assert c.verdict == "no significant difference (p=1.000)"
    assert verdict("A", "B", 0.1, 0.049) == "A > B (p=0.049)"
    assert verdict("A", "B", 0.1, 0.05) == "no significant difference (p=0.050)"


def test_fmt_rate_prints_the_wilson_interval():
    assert fmt_rate(8, 10) == "80.0% [49.0, 94.3] (n=10)"
    assert fmt_rate(0, 0) == "– (n=0)"
