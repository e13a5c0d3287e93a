"""Rebuild every table and figure of the study from the run records:

    python -m fgvc.study.report [--profile transfer]

Executes the report notebooks with papermill (their executed copies go to results/reports/).
30_report writes the tidy tables results/tables/accuracy.{csv,md} (mean, std, n, 95 % t
interval over seeds, paired differences), ablation_<method>.{csv,md} and claims.{csv,md} (each
paper's claims with a verdict), and results/figures/curves_<dataset>.png (learning curves);
see fgvc.study.results. Every markdown table names the profile and protocol of its runs.
"""
from __future__ import annotations

import argparse
import sys

from fgvc.study.notebook import execute
from fgvc.paths import NOTEBOOKS, ROOT, results_dir

REPORTS = ["30_report.ipynb", "20_gradcam.ipynb", "40_complexity.ipynb"]
# The study's settings where they differ from the notebooks' stored (tiny, fast) defaults.
STUDY_PARAMS = {"20_gradcam.ipynb": {"n_images": 64, "road_images": 16},
                "40_complexity.ipynb": {"variants": "all"}}


def build(profile: str = "transfer", notebooks: list[str] | None = None) -> None:
    out = results_dir() / "reports"
    out.mkdir(parents=True, exist_ok=True)
    for name in notebooks or REPORTS:
        src = NOTEBOOKS / name
        if not src.is_file():
            print(f"report: {name} does not exist yet, skipped")
            continue
        print(f"report: running {name}", flush=True)
        params = {"profile": profile, **STUDY_PARAMS.get(name, {})}
        execute(src, out / name, parameters=params, cwd=ROOT)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fgvc.study.report", description=__doc__)
    p.add_argument("--profile", default="transfer")
    p.add_argument("--only", help="comma-separated notebook names")
    a = p.parse_args(argv)
    build(a.profile, a.only.split(",") if a.only else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
