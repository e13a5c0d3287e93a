"""A claim's verdict from its evidence (the `verdict` and `reason` columns of claims.csv).

Kept apart from the table that gathers the evidence (fgvc.study.results.claims_table) so
that the rule is read, tested and extended in one place: every input is an argument.

In order, the first that applies:

* ``not tested``: an arm was not run (`not_run`: why, e.g. a failed run or a component with
  no place on the backbone); a run of either arm did not learn (`not_learned`: which arms, how
  many seeds); the arms share no seed, or only one (no interval).
* ``supported``: the interval of the paired difference (arm - against) lies above 0;
* ``contradicted``: it lies below 0;
* ``not distinguishable``: it holds 0.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

SUPPORTED = "supported"
CONTRADICTED = "contradicted"
NOT_DISTINGUISHABLE = "not distinguishable"
NOT_TESTED = "not tested"


class Verdict(NamedTuple):
    verdict: str
    reason: str


def claim_verdict(n_pairs: int, ci_low: float, ci_high: float, *, not_run: str = "",
                  not_learned: Sequence[str] = ()) -> Verdict:
    """The verdict on "arm beats against" from the paired difference's interval
    [ci_low, ci_high] (95 %) over `n_pairs` common seeds.

    not_run: why an arm has no runs ("" if both have); not_learned: the arms with runs that did
    not learn (final train top-1 <= 2 x chance), each as "method/variant (k of n seeds)".
    """
    if not_run:
        return Verdict(NOT_TESTED, not_run)
    if not_learned:
        return Verdict(NOT_TESTED, "training did not learn (final train top-1 <= 2 x chance): "
                       + ", ".join(not_learned))
    if n_pairs == 0:
        return Verdict(NOT_TESTED, "no common seeds")
    if n_pairs == 1:
        return Verdict(NOT_TESTED, "one seed only")
    if ci_low > 0:
        return Verdict(SUPPORTED, "95 % CI above 0")
    if ci_high < 0:
        return Verdict(CONTRADICTED, "95 % CI below 0")
    return Verdict(NOT_DISTINGUISHABLE, "95 % CI holds 0")
