"""Rebuild every table and figure of the study from the run records:

    python -m fgvc.study.report [--profile transfer] [--records results] [--write]

Executes the report notebooks with papermill. Without --write (the default) nothing is written
but the executed copies, into the git-ignored scratch folder (results_dir()/reports): the
notebooks read the records of `--records` (default: the committed study, results/) and show
them. With --write (the maintainers' `make report`) the notebooks write their tables and
figures into the records' own tables/ and figures/ and their executed copies into
`<records>/reports/`, but only where the records hold every run of the profile's study grid
(fgvc.study.grid.plan), and each says which files it replaced.

30_report writes the tidy tables tables/accuracy.{csv,md} (mean, std, n, 95 % t interval over
seeds, paired differences), ablation_<method>.{csv,md} and claims.{csv,md} (each paper's claims
with a verdict), and figures/curves_<dataset>.png (learning curves); see fgvc.study.results.
Every markdown table names the profile and protocol of its runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from fgvc import io
from fgvc.paths import NOTEBOOKS, ROOT, STUDY, portable, resolve, results_dir
from fgvc.study.notebook import execute, normalise

REPORTS = ["30_report.ipynb", "20_gradcam.ipynb", "40_complexity.ipynb"]
GALLERY = "20_gradcam.ipynb"
# The study's settings where they differ from the notebooks' stored (tiny, fast) defaults.
STUDY_PARAMS = {"20_gradcam.ipynb": {"n_images": 64, "road_images": 16},
                "40_complexity.ipynb": {"variants": "all"}}


def grid_gaps(runs: pd.DataFrame, profile: str, grid: str = "study") -> list[str]:
    """Run ids of the profile's grid (fgvc.study.grid.plan) with no complete record among
    `runs` (load_runs of one root): empty when the grid is complete."""
    from fgvc.study.grid import plan

    have = set(runs["run_id"]) if len(runs) else set()
    return [rid for rid in (s.config()["run_id"] for s in plan(profile, grid=grid))
            if rid not in have]


class Outputs:
    """Where a report notebook writes its tables and figures (`root`'s tables/ and figures/),
    and whether it writes at all: only when `write` is asked for and `runs` hold every run of
    the profile's grid, so that a report never replaces a table with part of a study. Every
    file written is recorded as new, replaced (its content changed) or unchanged."""

    def __init__(self, root: str | Path, runs: pd.DataFrame, profile: str, write: bool = False):
        self.root, self.profile, self.asked = Path(root), profile, bool(write)
        self.gaps = grid_gaps(runs, profile) if write else []
        self.write = self.asked and not self.gaps
        self.done: list[tuple[str, str]] = []

    def status(self) -> str:
        """One line: whether this report writes, and why not."""
        where = portable(str(self.root))
        if not self.asked:
            return f"write=False: nothing is written; the files in {where} are left as they are"
        if self.gaps:
            shown = ", ".join(self.gaps[:5]) + (", ..." if len(self.gaps) > 5 else "")
            return (f"write=True but the {self.profile!r} grid in {where} is incomplete "
                    f"({len(self.gaps)} runs missing: {shown}): nothing is written")
        return f"write=True: the {self.profile!r} grid in {where} is complete; writing into it"

    def _record(self, rel: str, old: bytes | None) -> None:
        new = (self.root / rel).read_bytes()
        self.done.append((rel, "new" if old is None else "unchanged" if old == new else "replaced"))

    def _old(self, rel: str) -> bytes | None:
        path = self.root / rel
        return path.read_bytes() if path.is_file() else None

    def text(self, rel: str, text: str) -> None:
        """Write `text` to `root/rel` (when writing)."""
        if self.write:
            old = self._old(rel)
            io.write_text(self.root / rel, text)
            self._record(rel, old)

    def figure(self, fig, rel: str) -> None:
        """Save `fig` as PNG to `root/rel` (when writing), with fgvc.study.figures.save. `fig`
        None (nothing to chart in these records) removes a figure an earlier study left there."""
        if self.write:
            from fgvc.study.figures import save

            old = self._old(rel)
            save(fig, self.root / rel)
            if fig is None:
                if old is not None:
                    (self.root / rel).unlink()
                    self.done.append((rel, "removed"))
                return
            self._record(rel, old)

    def summary(self) -> str:
        """What was written: each file replaced, new or unchanged (or why nothing was)."""
        if not self.write:
            return self.status()
        if not self.done:
            return f"nothing to write into {portable(str(self.root))}"
        lines = [f"wrote {len(self.done)} files into {portable(str(self.root))}:"]
        lines += [f"  {state:9} {rel}" for rel, state in self.done]
        return "\n".join(lines)


def preview(path: str | Path, width: int = 1300):
    """A committed figure for display in a notebook, as JPEG at most `width` px wide (a PNG
    gallery of 2 MB would be stored base64 in the notebook)."""
    from io import BytesIO

    from IPython.display import Image
    from PIL import Image as PILImage

    im = PILImage.open(path).convert("RGB")
    if im.width > width:
        im = im.resize((width, round(im.height * width / im.width)), PILImage.LANCZOS)
    buf = BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return Image(data=buf.getvalue(), format="jpeg")


def other_datasets(records: Path, profile: str) -> list[str]:
    """The datasets other than the profile's own that `records` hold runs of the profile on
    (CUB-30's real-photo study), in display order: each gets its own gallery."""
    from fgvc.data.registry import list_datasets
    from fgvc.study.config import load_profile
    from fgvc.study.results import load_runs

    runs = load_runs(records)
    have = set(runs.loc[runs["profile"] == profile, "dataset"]) if len(runs) else set()
    return [d for d in list_datasets() if d in have and d != load_profile(profile)["dataset"]]


def build(profile: str = "transfer", notebooks: list[str] | None = None,
          records: str | Path = STUDY, write: bool = False) -> None:
    """Execute the report notebooks on `records`: executed copies into `<records>/reports/`
    when writing, else into results_dir()/reports (the scratch folder by default), volatile
    metadata stripped (fgvc.study.notebook.normalise). The Grad-CAM notebook runs once more
    per other dataset the records hold (:func:`other_datasets`), as 20_gradcam_<dataset>.ipynb."""
    records = resolve(records)
    out = (records if write else results_dir()) / "reports"
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(name, name, {}) for name in notebooks or REPORTS]
    if GALLERY in [j[0] for j in jobs]:
        jobs += [(GALLERY, GALLERY.replace(".ipynb", f"_{d}.ipynb"), {"dataset": d})
                 for d in other_datasets(records, profile)]
    for name, copy, extra in jobs:
        src = NOTEBOOKS / name
        if not src.is_file():
            print(f"report: {name} does not exist yet, skipped")
            continue
        print(f"report: running {name} -> {portable(str(out / copy))}", flush=True)
        params = {"records": portable(str(records)), "profile": profile, "write": write,
                  **STUDY_PARAMS.get(name, {}), **extra}
        execute(src, out / copy, parameters=params, cwd=ROOT)
        normalise(out / copy)  # no volatile metadata: opened in JupyterLab, it stays as written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fgvc.study.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--profile", default="transfer")
    p.add_argument("--only", help="comma-separated notebook names")
    p.add_argument("--records", default="results",
                   help="the results root to read (default: the committed study, results/)")
    p.add_argument("--write", action="store_true",
                   help="write tables, figures and executed reports into the records' root "
                        "(only for a complete grid of the profile)")
    a = p.parse_args(argv)
    build(a.profile, a.only.split(",") if a.only else None, a.records, a.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
