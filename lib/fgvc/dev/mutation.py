"""The mutation-testing report: make mutate (tools/mutate.sh) -> results/mutation.md.

    python -m fgvc.dev.mutation build/mutate/results.txt [--work build/mutate] [--seconds S]

Reads mutmut's listing (`mutmut results --all true`: one `name: status` line per mutant), counts
the statuses per module, and lists every mutant that survived with its diff (`mutmut show`, run
in the work folder) and its entry in docs/mutation_survivors.yaml:

- `equivalent: <why>`: the mutant computes the same thing (e.g. `shape[+2:]` of a 4-D tensor
  is `shape[2:]`, which is `shape[-2:]`), or differs only where no caller can reach.
- `killed_by: <test>`: it survived an earlier run and a test written for it kills it now; the
  report checks that it is killed in this run.

A mutant with no test reaching it ("no tests") counts as a survivor. A survivor without an
entry, or a `killed_by` mutant that is not killed, is listed as UNEXPLAINED and the command
exits 1. The file is keyed by mutmut's names, which number the
mutants of a function in order: an edit of a function renumbers its mutants, so its entries
are rechecked by the next run.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import yaml

from fgvc import io
from fgvc.paths import ROOT, results_dir

EXPLAINED = ROOT / "docs" / "mutation_survivors.yaml"
ALIVE = ("survived", "no tests")   # a mutant no test run tells apart from the code
LINE = re.compile(r"^\s*(?P<name>\S+__mutmut_\d+): (?P<status>.+?)\s*$")


def parse_results(text: str) -> dict[str, str]:
    """mutant name -> status, from `mutmut results --all true`."""
    return {m["name"]: m["status"] for m in map(LINE.match, text.splitlines()) if m}


def module_of(name: str) -> str:
    """fgvc.layers.erase.x_erase__mutmut_2 -> fgvc.layers.erase (mutmut's x_ / xǁ prefixes)."""
    parts = name.split(".")
    for i, p in enumerate(parts):
        if p.startswith(("x_", "xǁ")):
            return ".".join(parts[:i])
    return name.rsplit(".", 1)[0]


def function_of(name: str) -> str:
    """fgvc.methods.ma_ea.xǁMaEaǁloss__mutmut_3 -> MaEa.loss; ...x_erase__mutmut_2 -> erase."""
    mangled = name[len(module_of(name)) + 1:].partition("__mutmut_")[0]
    return mangled[2:].strip("ǁ").replace("ǁ", ".")   # drop "x_" / "xǁ"


def summary(statuses: dict[str, str]) -> list[dict]:
    """One row per module: mutants, each status's count, and the share killed."""
    by_module: dict[str, Counter] = {}
    for name, status in statuses.items():
        by_module.setdefault(module_of(name), Counter())[status] += 1
    return [{"module": m, "mutants": sum(c.values()), **dict(sorted(c.items())),
             "killed %": round(100.0 * c.get("killed", 0) / sum(c.values()), 1)}
            for m, c in sorted(by_module.items())]


def show(name: str, work: Path) -> str:
    res = subprocess.run([sys.executable, "-m", "mutmut", "show", name], cwd=work,
                         capture_output=True, text=True)
    lines = res.stdout.splitlines()
    return "\n".join(l for l in lines if l[:1] in "+-@ " and not l.startswith(("---", "+++")))


def check(statuses: dict[str, str], explained: dict[str, dict]) -> list[dict]:
    """Every survivor and every `killed_by` entry, with its verdict."""
    out = []
    for name in sorted(n for n, s in statuses.items() if s in ALIVE):
        e = explained.get(name, {})
        ok = "equivalent" in e
        out.append({"mutant": name, "status": statuses[name],
                    "explanation": f"equivalent: {e['equivalent']}" if ok else "UNEXPLAINED",
                    "ok": ok})
    for name, e in sorted(explained.items()):
        if "killed_by" in e:
            status = statuses.get(name, "not in this run")
            out.append({"mutant": name, "status": status, "ok": status == "killed",
                        "explanation": f"killed by {e['killed_by']}"
                                       + ("" if status == "killed" else " - NOT KILLED: UNEXPLAINED")})
    return out


def render(statuses: dict[str, str], rows: list[dict], work: Path | None, seconds: float | None,
           machine: str) -> str:
    import pandas as pd

    done = [r for r in rows if r["status"] in ALIVE]
    bad = [r for r in rows if not r["ok"]]
    c = Counter(statuses.values())
    head = [
        "# Mutation testing", "",
        f"`make mutate` (mutmut 3, `tools/mutate.sh`), {datetime.now(timezone.utc).date()}, {machine}"
        + (f", {seconds / 60:.1f} min" if seconds else "") + ". Mutated: `lib/fgvc/layers/` and the "
        "methods' forward and loss code (`[tool.mutmut]` in `pyproject.toml`: error messages and "
        "argument validation are not mutated); each mutant runs the tests of "
        "`pytest_add_cli_args_test_selection` that reach its function.", "",
        f"{len(statuses)} mutants: " + ", ".join(f"{n} {s}" for s, n in c.most_common()) + ". "
        f"{len(done)} survivors, each explained below ({len(bad)} unexplained); "
        f"{sum('killed by' in r['explanation'] for r in rows)} earlier survivors killed by tests "
        "written for them (`docs/mutation_survivors.yaml`).", "",
        "## Per module", "", pd.DataFrame(summary(statuses)).fillna(0).to_markdown(index=False), "",
        "## Survivors and the mutants that new tests kill", ""]
    body = []
    for r in rows:
        body += [f"### `{r['mutant']}` ({function_of(r['mutant'])}): {r['status']}", "",
                 r["explanation"], ""]
        if work is not None and r["status"] in ALIVE:
            body += ["```diff", show(r["mutant"], work), "```", ""]
    return "\n".join(head + body)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fgvc.dev.mutation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", help="the output of `mutmut results --all true`")
    p.add_argument("--work", default=None, help="mutmut's folder, for the diffs (mutmut show)")
    p.add_argument("--seconds", type=float, default=None, help="the run's wall time")
    p.add_argument("--out", default=None, help="default: results_dir()/mutation.md (make mutate: results/mutation.md)")
    p.add_argument("--explained", default=str(EXPLAINED), help="the survivors' entries (YAML)")
    a = p.parse_args(argv)
    statuses = parse_results(Path(a.results).read_text())
    if not statuses:
        print(f"mutation: no mutant results in {a.results}")
        return 1
    path = Path(a.explained)
    explained = yaml.safe_load(path.read_text()) if path.is_file() else {}
    rows = check(statuses, explained or {})
    from fgvc.study.fastpath import cpu_kind, cpu_model

    text = render(statuses, rows, Path(a.work) if a.work else None, a.seconds,
                  f"{cpu_model()} ({cpu_kind()})")
    out = Path(a.out) if a.out else results_dir() / "mutation.md"
    io.write_text(out, text + "\n")
    bad = [r["mutant"] for r in rows if not r["ok"]]
    print(f"mutation: wrote {out}; {len(statuses)} mutants, "
          f"{sum(s in ALIVE for s in statuses.values())} not killed, {len(bad)} unexplained")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
