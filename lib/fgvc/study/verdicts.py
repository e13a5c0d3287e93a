"""A claim's verdict from its evidence (the `verdict` and `reason` columns of claims.csv).

Kept apart from the table that gathers the evidence (fgvc.study.results.claims_table) so
that the rule is read, tested and extended in one place: every input is an argument.

In order, the first that applies:

* ``not tested``: an arm was not run (`not_run`: why, e.g. a failed run or a component with
  no place on the backbone); the transplant of an arm onto the backbone failed the no-harm
  check (`adaptation`: which arm and what the check read; the difference and its interval
  stay in the table, the verdict does not judge the paper on our failed adaptation); a run of
  either arm did not learn (`not_learned`: which arms, how many seeds); the arms share no
  seed, or only one (no interval).
* ``supported``: the interval of the paired difference (arm - against) lies above 0;
* ``contradicted``: it lies below 0;
* ``not distinguishable``: it holds 0.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple, Sequence

if TYPE_CHECKING:
    import pandas as pd

SUPPORTED = "supported"
CONTRADICTED = "contradicted"
NOT_DISTINGUISHABLE = "not distinguishable"
NOT_TESTED = "not tested"
NO_HARM_TOL = 3.0   # probe top-1 points below the baseline's at step 0 = harm (fgvc.study.no_harm)


class Verdict(NamedTuple):
    verdict: str
    reason: str


def claim_verdict(n_pairs: int, ci_low: float, ci_high: float, *, not_run: str = "",
                  adaptation: str = "", not_learned: Sequence[str] = ()) -> Verdict:
    """The verdict on "arm beats against" from the paired difference's interval
    [ci_low, ci_high] (95 %) over `n_pairs` common seeds.

    not_run: why an arm has no runs ("" if both have); adaptation: why an arm's transplant
    failed the no-harm check ("" if neither failed); not_learned: the arms with runs that did
    not learn (final train top-1 <= 2 x chance), each as "method/variant (k of n seeds)".
    """
    if not_run:
        return Verdict(NOT_TESTED, not_run)
    if adaptation:
        return Verdict(NOT_TESTED, "the adaptation failed the no-harm check: " + adaptation)
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


def adaptation_failures(no_harm: "pd.DataFrame", tol: float = NO_HARM_TOL) -> dict[tuple[str, str], str]:
    """(method, variant) -> why its transplant failed, from a no-harm table (fgvc.study.no_harm:
    one row per method and variant at step 0). A transplant fails when the pretrained network
    inside the method reads more than `tol` points below the baseline's on the same images:
    the column `backbone_probe_top1` where the table has it (the backbone's own pooled
    features inside the method), else `probe_top1` (what enters the classifier; older tables).
    A method whose classifier input starts lower while its backbone reads the baseline's (new
    modules that start untrained, e.g. focus's regions from an untrained CAM) has not failed."""
    col = "backbone_probe_top1" if "backbone_probe_top1" in no_harm else "probe_top1"
    out = {}
    for r in no_harm.itertuples(index=False):
        probe, base = float(getattr(r, col)), float(r.baseline_probe_top1)
        if not math.isnan(probe) and probe < base - tol:
            what = "backbone probe" if col == "backbone_probe_top1" else "feature probe"
            out[(r.method, r.variant)] = (f"{r.method}/{r.variant}: {what} {probe:.1f} % against "
                                          f"the baseline's {base:.1f} % at step 0")
    return out
