"""The verdict rule of a claim (fgvc.study.verdicts), on hand-made evidence."""
from __future__ import annotations

import math

import pytest

from fgvc.study.verdicts import Verdict, claim_verdict

NAN = math.nan


@pytest.mark.parametrize("n_pairs, lo, hi, verdict, reason", [
    (3, 0.5, 4.0, "supported", "95 % CI above 0"),
    (3, -4.0, -0.5, "contradicted", "95 % CI below 0"),
    (3, -1.0, 2.0, "not distinguishable", "95 % CI holds 0"),
    (5, 0.0, 2.0, "not distinguishable", "95 % CI holds 0"),    # touching 0 is holding it
    (5, -2.0, 0.0, "not distinguishable", "95 % CI holds 0"),
    (1, NAN, NAN, "not tested", "one seed only"),
    (0, NAN, NAN, "not tested", "no common seeds"),
])
def test_the_interval_decides_once_there_are_two_pairs(n_pairs, lo, hi, verdict, reason):
    assert claim_verdict(n_pairs, lo, hi) == Verdict(verdict, reason)


def test_an_arm_not_run_is_not_tested_whatever_the_interval():
    v = claim_verdict(3, 1.0, 2.0, not_run="row not run: alpha/no_erase",
                      not_learned=["alpha/full (1 of 3 seeds)"])
    assert v == ("not tested", "row not run: alpha/no_erase")  # not run comes first


def test_an_arm_that_did_not_learn_is_not_tested_with_its_seeds_named():
    v = claim_verdict(3, -5.0, -1.0, not_learned=["alpha/full (1 of 3 seeds)",
                                                  "baseline/full (3 of 3 seeds)"])
    assert v.verdict == "not tested"
    assert v.reason == ("training did not learn (final train top-1 <= 2 x chance): "
                        "alpha/full (1 of 3 seeds), baseline/full (3 of 3 seeds)")


def test_not_learned_comes_before_the_seed_count():
    assert claim_verdict(1, NAN, NAN, not_learned=["a/full (1 of 1 seeds)"]).reason.startswith(
        "training did not learn")


def test_a_failed_adaptation_is_not_tested_even_where_the_interval_lies_below_zero():
    # the committed transfer study read ma_ea's graft as "contradicted" (CI below 0); with the
    # no-harm check failed the verdict does not judge the paper on our transplant
    why = "ma_ea/full: backbone probe 13.4 against the baseline's 35.0 at step 0"
    v = claim_verdict(3, -40.0, -30.0, adaptation=why,
                      not_learned=["ma_ea/full (1 of 3 seeds)"])
    assert v == ("not tested", "the adaptation failed the no-harm check: " + why)
    # an arm not run still comes first
    assert claim_verdict(0, NAN, NAN, not_run="row not run: a/b", adaptation=why).reason == \
        "row not run: a/b"
