"""Run records -> tidy tables. Tables are built only from results/runs/*/{config,metrics}.json."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .config import load_variants
from .paths import results_dir

DATASET_NAMES = {"synthbirds": "SynthBirds", "cub": "CUB-200-2011", "cars": "Stanford Cars",
                 "aircraft": "FGVC-Aircraft"}


def load_runs(root: str | Path | None = None) -> pd.DataFrame:
    """One row per complete run: its identity, settings that matter, and its metrics."""
    root = Path(root) if root else results_dir()
    rows = []
    for mpath in sorted((root / "runs").glob("*/metrics.json")):
        metrics = json.loads(mpath.read_text())
        cfg = json.loads((mpath.parent / "config.json").read_text())
        rows.append({**metrics, "backbone": cfg["model"]["backbone"],
                     "crop": cfg["data"]["crop"], "epochs_cfg": cfg["train"]["epochs"],
                     "run_dir": str(mpath.parent.relative_to(root))})
    return pd.DataFrame(rows)


def paper_number(method: str, variant: str, dataset: str) -> float | None:
    return load_variants(method).get(variant, {}).get("paper", {}).get(dataset)


def summarize(runs: pd.DataFrame, metric: str = "test_top1") -> pd.DataFrame:
    """Mean, std and n over seeds per (profile, dataset, method, variant), with paper numbers."""
    if runs.empty:
        return pd.DataFrame(columns=["profile", "dataset", "method", "variant", "mean", "std",
                                     "n", "paper"])
    g = runs.groupby(["profile", "dataset", "method", "variant"])[metric]
    out = g.agg(["mean", "std", "count"]).rename(columns={"count": "n"}).reset_index()
    out["std"] = out["std"].fillna(0.0)
    out["paper"] = [paper_number(m, v, d if d != "synthbirds" else "cub")
                    for m, v, d in zip(out["method"], out["variant"], out["dataset"])]
    return out


def _fmt(mean: float, std: float, n: int) -> str:
    return f"{mean:.1f} ± {std:.1f} (n={n})"


def accuracy_table(runs: pd.DataFrame, variant: str = "full") -> pd.DataFrame:
    """Methods x datasets: our test top-1 as mean ± std (n seeds), each paper's CUB/Cars/
    Aircraft number beside it. On SynthBirds the paper column shows the paper's CUB number."""
    s = summarize(runs)
    s = s[s["variant"] == variant]
    table = {}
    for (method, dataset), row in s.set_index(["method", "dataset"]).iterrows():
        name = DATASET_NAMES.get(dataset, dataset)
        table.setdefault(method, {})[f"{name} (ours)"] = _fmt(row["mean"], row["std"], row["n"])
    papers = {m: {f"paper {DATASET_NAMES[d]}": paper_number(m, variant, d)
                  for d in ("cub", "cars", "aircraft")} for m in table}
    df = pd.DataFrame({m: {**table[m], **papers[m]} for m in table}).T
    df.index.name = "method"
    order = ["baseline", "ma_ea", "lafe", "pcanet", "focus"]
    return df.loc[sorted(df.index, key=lambda m: order.index(m) if m in order else 99)]


def ablation_table(runs: pd.DataFrame, method: str) -> pd.DataFrame:
    """A method's variants (in the order of its variants file): ours mean ± std, the paper's."""
    s = summarize(runs)
    s = s[s["method"] == method]
    order = list(load_variants(method))
    s = s.assign(_o=[order.index(v) if v in order else 99 for v in s["variant"]])
    s = s.sort_values(["dataset", "_o"]).drop(columns="_o").reset_index(drop=True)
    return s.round({"mean": 1, "std": 1})


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub table without the optional `tabulate` dependency."""
    df = df.reset_index() if df.index.name else df
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join("" if pd.isna(v) else str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"
