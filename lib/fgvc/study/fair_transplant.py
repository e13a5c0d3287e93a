"""The fair transplant's three arms, paired by seed (a reading of issue "fair transplant";
docs/lab-record.md):

    python -m fgvc.study.fair_transplant      # prints the markdown tables (SynthBirds, cub_dev)

For ma_ea and pcanet: the new choice (profile transfer_next, seeds 0-2 in
results/readings/fair_transplant/; seed 0 has the same per-image predictions as the head-lr
sweep's run at the chosen head_lr, results/readings/head_lr/), today's default and the baseline
(the committed transfer records, results/runs/); test top-1 and
the paired differences with their 95 % t intervals (fgvc.study.stats). On the 30-species
real-photo subset (dataset cub, a check, never a tuning set) all three arms are in
results/readings/fair_transplant_cub_dev/.
"""
from __future__ import annotations

import json
from pathlib import Path

from fgvc.paths import STUDY
from fgvc.study.stats import Interval, paired_difference, t_interval

METHODS = ("ma_ea", "pcanet")
SEEDS = (0, 1, 2)


def top1(run_dir: Path) -> float | None:
    path = run_dir / "metrics.json"
    return json.loads(path.read_text())["test_top1"] if path.is_file() else None


def arms(method: str, root: Path = STUDY, dataset: str = "synthbirds") -> dict[str, dict[int, float]]:
    """seed -> test top-1 of the new choice, today's default and the baseline."""
    def collect(paths: dict[int, Path]) -> dict[int, float]:
        values = {s: top1(p) for s, p in paths.items()}
        return {s: v for s, v in values.items() if v is not None}

    if dataset != "synthbirds":  # every arm in the real-photo check's own folder
        runs = root / "readings/fair_transplant_cub_dev/runs"
        return {arm: collect({s: runs / f"{profile}-{dataset}-{m}-full-s{s}" for s in SEEDS})
                for arm, profile, m in (("new", "transfer_next", method), ("today", "transfer", method),
                                        ("baseline", "transfer", "baseline"))}
    new = {s: root / f"readings/fair_transplant/runs/transfer_next-synthbirds-{method}-full-s{s}"
           for s in SEEDS}
    return {"new": collect(new),
            "today": collect({s: root / f"runs/transfer-synthbirds-{method}-full-s{s}" for s in SEEDS}),
            "baseline": collect({s: root / f"runs/transfer-synthbirds-baseline-full-s{s}"
                                 for s in SEEDS})}


def _ci(i: Interval) -> str:
    return f"{i.mean:+.2f} [{i.lo:+.1f}, {i.hi:+.1f}]" if i.n > 1 else f"{i.mean:+.2f} (n=1)"


def table(root: Path = STUDY, dataset: str = "synthbirds") -> str:
    lines = ["| method | new choice, by seed (mean) | today's default | baseline | "
             "new - baseline, 95 % CI | new - today's, 95 % CI |", "|---|---|---|---|---|---|"]
    for m in METHODS:
        a = arms(m, root, dataset)
        if not all(a.values()):
            continue
        by_seed = {k: " / ".join(f"{v[s]:.2f}" for s in sorted(v)) for k, v in a.items()}
        lines.append(f"| {m} | {by_seed['new']} ({t_interval(list(a['new'].values())).mean:.2f}) | "
                     f"{by_seed['today']} | {by_seed['baseline']} | "
                     f"{_ci(paired_difference(a['new'], a['baseline']))} | "
                     f"{_ci(paired_difference(a['new'], a['today']))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    for name in ("synthbirds", "cub"):
        print(f"\n{name}:\n" + table(dataset=name))
