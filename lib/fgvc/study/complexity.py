"""The complexity table: parameters, MACs and latency of each method, for inference and training.

Counted by the study's cost model, :mod:`fgvc.study.cost` (its docstring has the rules):

- Parameters: every parameter of the method (backbone, heads, attention modules).
- MACs: FlopCounterMode FLOPs / 2, per image (matrix ops and their backward, as the papers'
  "FLOPs", which are MACs). Inference: one eval-mode forward (the test-time prediction path);
  training: one training step, forward + loss + backward, with the method's second passes
  (erased images, region crops) included, per image of a batch of 2 same-class images (methods
  that need pairs get one): about 3x the forward when there is no second pass. Counted on the
  meta device when the method allows it, else on fake, else on real tensors.
- Latency: milliseconds per batch of `batch` images (default 1) on `device`, timed by
  torch.utils.benchmark.Timer (fgvc.study.cost.timing): after `warmup` untimed calls (at least
  Timer's two), the mean of one block of `repeats` calls; repeats=None: blocked_autorange's median.
  For training, a full step (forward, loss, backward; no optimizer update).

Paper reference: seed 000 (ma_ea), Table 4 (ResNet-50, 448, RTX 3090), in ``PAPER_TABLE4``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd
import torch
from torch import nn

from fgvc.study.cost import count_macs, count_params, create, macs_of_config, measure_latency  # noqa: F401

# Seed 000, Table 4: (params M, "FLOPs" G = MACs, latency ms on an RTX 3090) at 448.
PAPER_TABLE4: dict[tuple[str, str], dict] = {
    ("baseline", "full"): {"row": "ResNet-50", "params_M": 22.4, "GMACs": 16.5, "ms": 26.4},
    ("ma_ea", "resnet"): {"row": "ResNet-50", "params_M": 22.4, "GMACs": 16.5, "ms": 26.4},
    ("ma_ea", "pool_ma"): {"row": "+MA", "params_M": 24.6, "GMACs": 18.5, "ms": 33.1},
    ("ma_ea", "full"): {"row": "+MA+EA", "params_M": 25.8, "GMACs": 19.8, "ms": 35.6},
}


def build(method: str, variant: str = "full", num_classes: int = 200, backbone: str = "resnet50",
          input_size: int = 448, device: torch.device | str = "cpu") -> nn.Module:
    """Method `method` with the switches of its named variant, untrained (weights='none')."""
    from fgvc.study.config import load_variants

    cfg = {"backbone": backbone, "input_size": input_size,
           **_variant_cfg(load_variants(method), method, variant)}
    return create(method, cfg, num_classes, device)


def _variant_cfg(variants: dict, method: str, variant: str) -> dict:
    if variant not in variants:
        raise ValueError(f"unknown variant {variant!r} of {method!r}; valid: {list(variants)}")
    return dict(variants[variant].get("cfg", {}))


def macs_of(method: str, variant: str = "full", num_classes: int = 200, backbone: str = "resnet50",
            input_size: int = 448) -> dict:
    """Parameters and per-image MACs (inference, training step) of one named variant."""
    from fgvc.study.config import load_variants

    cfg = {"backbone": backbone, "input_size": input_size,
           **_variant_cfg(load_variants(method), method, variant)}
    return macs_of_config(method, cfg, num_classes)


def complexity_row(method: str, variant: str = "full", num_classes: int = 200,
                   backbone: str = "resnet50", input_size: int = 448, latency: bool = True,
                   train_latency: bool = True, device: str = "cpu", warmup: int = 1,
                   repeats: int = 2, batch: int = 1) -> dict:
    """One row of the complexity table: ours (params M, GMACs, ms) and the paper's if any."""
    m = macs_of(method, variant, num_classes, backbone, input_size)
    row = {"method": method, "variant": variant, "backbone": backbone, "input": input_size,
           "params_M": m["params"] / 1e6, "infer_GMACs": m["infer_MACs"] / 1e9,
           "train_GMACs": m["train_MACs"] / 1e9, "counted_on": m["counted_on"]}
    if latency:
        torch.manual_seed(0)
        model = build(method, variant, num_classes, backbone, input_size, device)
        x = torch.randn(batch, 3, input_size, input_size, device=device)
        row["infer_ms"] = measure_latency(model, x, False, warmup, repeats)
        if train_latency:
            # BatchNorm in training needs >1 value per channel: a train step has >= 2 images.
            xt = torch.randn(max(batch, 2), 3, input_size, input_size, device=device)
            row["train_ms"] = measure_latency(model, xt, True, warmup, repeats)
            row["train_batch"] = xt.shape[0]
        row["latency_device"] = _device_name(device)
    paper = PAPER_TABLE4.get((method, variant))
    if paper and backbone == "resnet50" and input_size == 448:
        row.update({"paper_row": paper["row"], "paper_params_M": paper["params_M"],
                    "paper_GMACs": paper["GMACs"], "paper_ms": paper["ms"]})
    return row


def _device_name(device: str) -> str:
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({torch.get_num_threads()} threads)"


def complexity_table(methods: Iterable[str], variants: str | Iterable[str] = "all",
                     latency_variants: str | Iterable[str] = "full", **kwargs) -> pd.DataFrame:
    """Rows for every (method, variant); `variants` 'all' or names; latency is timed only for
    `latency_variants` since it is the slow part: 'all', 'none', 'table4' (the rows of the
    paper's Table 4, PAPER_TABLE4) or names (default 'full').
    Other keyword arguments go to :func:`complexity_row`."""
    from fgvc.study.config import list_variants

    def pick(spec, method):
        names = list_variants(method)
        if spec == "all":
            return names
        if spec == "none":
            return []
        if spec == "table4":
            return [v for v in names if (method, v) in PAPER_TABLE4]
        spec = [spec] if isinstance(spec, str) else list(spec)
        return [v for v in names if v in spec]

    rows = []
    for method in methods:
        timed = pick(latency_variants, method)
        for variant in pick(variants, method):
            rows.append(complexity_row(method, variant, latency=variant in timed, **kwargs))
    return pd.DataFrame(rows)


def complexity_markdown_table(df: pd.DataFrame) -> pd.DataFrame:
    """The table as people read it: rounded numbers, the paper's beside ours."""
    cols = {"method": "method", "variant": "variant", "params_M": "params (M)",
            "paper_params_M": "paper params (M)", "infer_GMACs": "infer GMACs",
            "paper_GMACs": "paper GMACs", "train_GMACs": "train GMACs / image",
            "infer_ms": "infer ms", "train_ms": "train ms / step", "paper_ms": "paper ms (3090)"}
    out = df[[c for c in cols if c in df]].rename(columns=cols)
    return out.round(2).astype(object).where(out.notna(), "")


def cost_accuracy_points(runs: pd.DataFrame, root) -> pd.DataFrame:
    """Per (dataset, method, variant) of `runs` (fgvc.study.results.load_runs): test top-1 mean ±
    std over seeds and the inference GMACs of the model those runs trained (their own
    backbone and crop, read from a run's config.json)."""
    from fgvc import io
    from fgvc.study.results import summarize

    if runs.empty:
        return pd.DataFrame(columns=["dataset", "method", "variant", "mean", "std", "n",
                                     "infer_GMACs", "params_M"])
    points = summarize(runs)
    macs, params = [], []
    for _, p in points.iterrows():
        first = runs[(runs["dataset"] == p["dataset"]) & (runs["method"] == p["method"])
                     & (runs["variant"] == p["variant"])].iloc[0]
        cfg = io.read_json(Path(root) / first["run_dir"] / "config.json")
        m = macs_of_config(p["method"], cfg["model"], int(first["num_classes"]))
        macs.append(m["infer_MACs"] / 1e9)
        params.append(m["params"] / 1e6)
    return points.assign(infer_GMACs=macs, params_M=params)
