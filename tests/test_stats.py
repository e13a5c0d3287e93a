"""Confidence intervals over seeds, against hand-computed cases."""
import math

import pytest

from fgvc.study.stats import paired_difference, t_interval

T_975_2 = 4.302652729911275  # t quantile, 2 degrees of freedom (tables)


def test_t_interval_by_hand():
    ci = t_interval([1.0, 2.0, 3.0])  # mean 2, std 1
    assert (ci.mean, ci.std, ci.n) == (2.0, 1.0, 3)
    assert ci.half_width == pytest.approx(T_975_2 / math.sqrt(3))
    assert (ci.lo, ci.hi) == pytest.approx((2 - T_975_2 / math.sqrt(3), 2 + T_975_2 / math.sqrt(3)))
    assert t_interval([1.0, 2.0, 3.0], confidence=0.9).half_width < ci.half_width


def test_one_seed_has_no_interval():
    ci = t_interval([70.0])
    assert ci.mean == 70.0 and ci.n == 1 and math.isnan(ci.half_width) and math.isnan(ci.lo)
    assert ci.verdict() == "not tested"
    with pytest.raises(ValueError):
        t_interval([])


def test_paired_difference_uses_common_seeds_and_gives_verdicts():
    base = {0: 60.0, 1: 62.0, 2: 58.0, 7: 99.0}
    better = {0: 61.0, 1: 64.0, 2: 58.0}           # diffs 1, 2, 0: mean 1, std 1
    ci = paired_difference(better, base)
    assert (ci.mean, ci.std, ci.n) == (1.0, 1.0, 3)
    assert ci.verdict() == "not distinguishable"   # 1 +- 2.48 holds 0
    worse = {0: 57.0, 1: 60.0, 2: 54.0}            # diffs -3, -2, -4: hi = -3 + 2.48 < 0
    assert paired_difference(worse, base).verdict() == "contradicted"
    clearly = {0: 65.0, 1: 66.0, 2: 64.0}          # diffs 5, 4, 6
    assert paired_difference(clearly, base).verdict() == "supported"
    with pytest.raises(ValueError, match="no common seeds"):
        paired_difference({5: 1.0}, base)


def test_intervals_match_scipy():
    from scipy import stats

    a = {0: 71.5, 1: 73.25, 2: 70.0, 3: 74.5, 4: 72.0}
    b = {0: 70.0, 1: 72.5, 2: 70.5, 3: 72.0, 4: 71.0}
    ci = t_interval(list(a.values()))
    lo, hi = stats.t.interval(0.95, 4, loc=ci.mean, scale=stats.sem(list(a.values())))
    assert (ci.lo, ci.hi) == pytest.approx((lo, hi))
    d = paired_difference(a, b)
    ref = stats.ttest_rel(list(a.values()), list(b.values())).confidence_interval(0.95)
    assert (d.lo, d.hi) == pytest.approx((ref.low, ref.high))
    assert d.half_width == pytest.approx((ref.high - ref.low) / 2) and d.n == 5
