"""Numbers that score where a run's CAMs point, and the study's CAM tables.

- Localization, on datasets with boxes and part keypoints (CUB, SynthBirds):
  :func:`energy_in_box` (share of CAM mass inside the bird's box), :func:`pointing_hit`
  (the pointing game: is the CAM's maximum within `tolerance` pixels of an annotated part;
  on SynthBirds the parts that tell the image's class from its sibling species), and
  :func:`road_scores` (faithfulness: pytorch-grad-cam's ROAD, removing the most / least
  relevant pixels with noisy linear imputation; combined = (LeRF - MoRF) / 2, higher is
  more faithful).
- What a map with no localisation scores (:func:`uniform_reference`, the table's row
  ``REFERENCE``): energy-in-box of a uniform map = the box's area share
  (:func:`box_fraction`); the pointing game's chance = the share of the image within
  `tolerance` of a counted part (:func:`pointing_chance`: the union of the tolerance discs,
  clipped to the image, over its area), the hit rate of a point drawn uniformly.
- :func:`to_input_coords` maps boxes and keypoints from original-image pixels into the
  network input's pixels (eval transform: resize to (resize, resize), centre crop `crop`).
- :func:`load_run_cams` loads a finished run (config + best checkpoint) and its first test
  images; :func:`cam_study` scores the CAMs of several runs on the same images (with the
  reference row) and collects a gallery, which :func:`fgvc.study.gallery.cam_gallery` draws.

The CAMs themselves come from :mod:`fgvc.cam`. Coordinates are continuous pixel coordinates:
pixel (row i, column j) covers [j, j+1) x [i, i+1) and its centre is (j + 0.5, i + 0.5); a box
is (x, y, w, h).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from pytorch_grad_cam.metrics.road import ROADCombined
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from fgvc.cam import Box, CamResult, LogitsOnly, cam_layer, compute_cams

# ----------------------------------------------------------------------------- coordinates

def crop_offset(resize: int, crop: int) -> int:
    """Pixels cut on the left/top by torchvision's CenterCrop(crop) of a (resize, resize) image."""
    return int(round((resize - crop) / 2.0))


def to_input_coords(points: np.ndarray | Sequence, image_size: tuple[int, int], resize: int,
                    crop: int) -> np.ndarray:
    """Points (N, 2) as (x, y) in original-image pixels -> network-input pixels.

    `image_size` is the original (width, height) (after any banner removal). The eval
    transform resizes to (resize, resize) and centre-crops `crop`; points may fall outside
    [0, crop) when the crop cuts them off.
    """
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    w, h = image_size
    off = crop_offset(resize, crop)
    return np.stack([p[:, 0] * resize / w - off, p[:, 1] * resize / h - off], 1)


def box_to_input(box: Box, image_size: tuple[int, int], resize: int, crop: int) -> Box:
    """A box (x, y, w, h) in original pixels -> input pixels, clipped to the crop."""
    x, y, bw, bh = box
    (x0, y0), (x1, y1) = to_input_coords([(x, y), (x + bw, y + bh)], image_size, resize, crop)
    x0, y0, x1, y1 = (float(np.clip(v, 0, crop)) for v in (x0, y0, x1, y1))
    return (x0, y0, x1 - x0, y1 - y0)


# ----------------------------------------------------------------------------- localization

def box_mask(box: Box, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: pixels whose centre lies inside `box` (x, y, w, h, input pixels)."""
    h, w = shape
    x, y, bw, bh = box
    cx, cy = np.arange(w) + 0.5, np.arange(h) + 0.5
    return ((cy >= y) & (cy < y + bh))[:, None] & ((cx >= x) & (cx < x + bw))[None, :]


def energy_in_box(cam: np.ndarray, box: Box) -> float:
    """Share of the CAM's total mass inside `box` (1: all inside, 0: all outside)."""
    total = float(cam.sum())
    if total <= 0:
        return float("nan")
    return float(cam[box_mask(box, cam.shape)].sum()) / total


def cam_peak(cam: np.ndarray) -> tuple[float, float]:
    """(x, y) centre of the CAM's maximum pixel (the first one on ties)."""
    i, j = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return (j + 0.5, i + 0.5)


def pointing_hit(cam: np.ndarray, parts: np.ndarray, tolerance: float = 4.0) -> float:
    """Pointing game: 1.0 if the CAM's peak is within `tolerance` px of any of `parts`
    ((N, 2) input-pixel (x, y) of visible parts), 0.0 if not, NaN if there is no part."""
    parts = np.asarray(parts, dtype=np.float64).reshape(-1, 2)
    if len(parts) == 0:
        return float("nan")
    d = np.hypot(*(parts - np.asarray(cam_peak(cam))).T)
    return float(d.min() <= tolerance)


def default_tolerance(width: int) -> float:
    """The pointing game's tolerance in input pixels: the classic 15 px at 224, scaled."""
    return 15 / 224 * width


# ----------------------------------------------------------------------------- reference

REFERENCE = "uniform (no localisation)"  # the table's row of a map that localises nothing


def box_fraction(box: Box, shape: tuple[int, int]) -> float:
    """Energy-in-box of a uniform map: the share of the (H, W) image's pixels inside `box`
    (pixel centres, as :func:`energy_in_box` counts them)."""
    return float(box_mask(box, shape).mean())


def disc_union_area(centres: np.ndarray | Sequence, radius: float, width: float,
                    height: float, nodes: int = 32) -> float:
    """Area of the union of discs of `radius` around `centres` ((N, 2) x, y), clipped to the
    rectangle [0, width] x [0, height].

    Integrated over x: at each x the union's extent in y is a union of intervals (merged
    exactly); between the x where that extent changes form (disc edges, pairwise disc
    crossings, discs meeting the top or bottom edge) it is smooth, and Gauss-Legendre with
    x = mid + half * sin(phi) (which absorbs the square-root edges) is accurate to ~1e-12
    of the area.
    """
    c = np.asarray(centres, dtype=np.float64).reshape(-1, 2)
    r = float(radius)
    if len(c) == 0 or r <= 0 or width <= 0 or height <= 0:
        return 0.0
    cx, cy = c[:, 0], c[:, 1]
    xs = [0.0, float(width), *(cx - r), *(cx + r)]
    for i in range(len(c)):
        for j in range(i + 1, len(c)):
            d = float(np.hypot(*(c[j] - c[i])))
            if 0 < d < 2 * r:  # the two crossing points
                mid, h = (c[i] + c[j]) / 2, np.sqrt(r * r - d * d / 4)
                ux, uy = (c[j] - c[i]) / d
                xs += [mid[0] - h * uy, mid[0] + h * uy]
    for y in (0.0, float(height)):
        dy = np.abs(cy - y)
        k = dy < r
        xs += list(cx[k] - np.sqrt(r * r - dy[k] ** 2)) + list(cx[k] + np.sqrt(r * r - dy[k] ** 2))
    xs = np.unique(np.clip(xs, 0.0, width))
    t, wt = np.polynomial.legendre.leggauss(nodes)
    phi, wphi = t * np.pi / 2, wt * np.pi / 2 * np.cos(t * np.pi / 2)  # x = sin(phi) on [-1, 1]
    a, b = xs[:-1, None], xs[1:, None]
    x = ((a + b) / 2 + (b - a) / 2 * np.sin(phi)).ravel()               # (S * nodes,)
    w = ((b - a) / 2 * wphi).ravel()
    half = np.sqrt(np.clip(r * r - (x[:, None] - cx[None]) ** 2, 0.0, None))  # (X, N)
    lo = np.clip(cy[None] - half, 0.0, height)
    hi = np.clip(cy[None] + half, 0.0, height)
    order = np.argsort(lo, axis=1)
    lo, hi = np.take_along_axis(lo, order, 1), np.take_along_axis(hi, order, 1)
    reach = np.concatenate([np.full((len(x), 1), -np.inf),
                            np.maximum.accumulate(hi, axis=1)[:, :-1]], 1)  # max hi so far
    length = np.clip(hi - np.maximum(lo, reach), 0.0, None).sum(1)       # (X,) union length
    return float((w * length).sum())


def pointing_chance(parts: np.ndarray, shape: tuple[int, int], tolerance: float) -> float:
    """The pointing game's hit rate for a point drawn uniformly over the (H, W) image: the
    area within `tolerance` of any of `parts` ((N, 2) x, y; the union of the discs, clipped
    to the image) over the image's area. NaN if there is no part (as :func:`pointing_hit`)."""
    parts = np.asarray(parts, dtype=np.float64).reshape(-1, 2)
    if len(parts) == 0:
        return float("nan")
    h, w = shape
    return disc_union_area(parts, tolerance, w, h) / (h * w)


def uniform_reference(boxes: Sequence[Box | None], parts: Sequence[np.ndarray],
                      shape: tuple[int, int], tolerance: float) -> dict:
    """What a map with no localisation scores on these images: `energy_in_box` = the mean
    box share (:func:`box_fraction`) over the images with a box; `pointing_game` = the mean
    :func:`pointing_chance` over the images with a counted part. The same images (and
    rules) the runs' scores average over."""
    energy = [box_fraction(b, shape) for b in boxes if b is not None]
    chance = [pointing_chance(p, shape, tolerance) for p in parts]
    chance = [c for c in chance if np.isfinite(c)]
    return {"energy_in_box": float(np.mean(energy)) if energy else float("nan"),
            "pointing_game": float(np.mean(chance)) if chance else float("nan")}


def road_scores(method: nn.Module, images: torch.Tensor, cams: np.ndarray, targets: Sequence[int],
                percentiles: Sequence[int] = (20, 40, 60, 80), seed: int = 0) -> np.ndarray:
    """ROAD faithfulness per image (pytorch-grad-cam ROADCombined: (LeRF - MoRF) / 2 of the
    target logit when removing a percentile of pixels by noisy linear imputation)."""
    torch.manual_seed(seed)  # the imputer adds noise
    model = LogitsOnly(method).eval()
    tg = [ClassifierOutputTarget(int(t)) for t in targets]
    return np.asarray(ROADCombined(percentiles=list(percentiles))(images, cams, tg, model),
                      dtype=np.float64).reshape(-1)


# ----------------------------------------------------------------------------- runs

def discriminative_parts(dataset: str, root: str | Path | None, part_names: Sequence[str] | None,
                         num_classes: int) -> list[list[int]] | None:
    """Per class, the indices of the parts the pointing game counts (None: every visible part).

    SynthBirds: the keypoints of the markings in which a class differs from its sibling
    species (synthbirds.json `discriminative_keypoints`). Other datasets: all parts.
    """
    if dataset != "synthbirds" or not part_names:
        return None
    from fgvc.data import default_root
    from fgvc.data.synthbirds import read_meta
    from fgvc.paths import resolve

    meta = read_meta(resolve(root) if root else default_root(dataset))
    if meta is None:
        return None
    index = {n: i for i, n in enumerate(part_names)}
    return [[index[k] for k in c["discriminative_keypoints"] if k in index]
            for c in meta["classes"][:num_classes]]


@dataclass
class RunCams:
    """A trained run and its first test images, ready for CAMs."""

    run_id: str
    method: str
    variant: str
    dataset: str
    seed: int
    model: nn.Module
    images: torch.Tensor          # (N, 3, crop, crop), normalised
    labels: list[int]
    boxes: list[Box | None]       # input pixels
    parts: list[np.ndarray]       # per image (P, 2) input-pixel (x, y) of the counted parts
    classes: list[str]


def load_run_model(run_dir: str | Path, device: str = "cpu") -> tuple[dict, nn.Module]:
    """(config, method with its best checkpoint loaded) of a finished run.

    Raises FileNotFoundError when the checkpoint is missing (checkpoints are not committed).
    """
    from fgvc import io
    from fgvc.engine import load_model_state
    from fgvc.methods import create_method
    from fgvc.paths import checkpoints_dir

    run_dir = Path(run_dir)
    cfg = io.read_json(run_dir / "config.json")
    metrics = io.read_json(run_dir / "metrics.json")
    ckpt = checkpoints_dir() / cfg["run_id"] / "best.pt"
    if not ckpt.is_file():
        raise FileNotFoundError(f"no checkpoint {ckpt} for run {cfg['run_id']} (set "
                                "FGVC_CHECKPOINTS, or re-run it with python -m fgvc.study.grid)")
    # weights="none": the checkpoint holds every weight; never download ImageNet ones here.
    model = create_method(cfg["method"], metrics["num_classes"], **{**cfg["model"], "weights": "none"})
    # Checkpoints of compiled or DDP runs may carry wrapper prefixes: load_model_state strips them.
    load_model_state(model, torch.load(ckpt, map_location="cpu", weights_only=True)["model"])
    return cfg, model.to(device).eval()


def spread_over_classes(labels: Sequence[int], n: int) -> list[int]:
    """`n` indices taking the 1st image of each class in turn, then the 2nd, ... (classes in
    order): the same images for every run of a dataset, and as many classes as possible."""
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    order = [idx[k] for k in range(max(map(len, by_class.values()), default=0))
             for _, idx in sorted(by_class.items()) if k < len(idx)]
    return order[:n]


def load_run_cams(run_dir: str | Path, n_images: int = 16, device: str = "cpu") -> RunCams:
    """A run's model and `n_images` test images (spread over the classes, the same for every
    run of a dataset), with boxes and counted parts mapped to input pixels."""
    from PIL import Image

    from fgvc.data import ImageDataset, build_transforms, load_split

    cfg, model = load_run_model(run_dir, device)
    d = cfg["data"]
    split = load_split(cfg["dataset"], cfg["data_root"], remove_banner=d["remove_banner"],
                       synth=d["synth"])
    pick = spread_over_classes([s.label for s in split.test], n_images)
    ds = ImageDataset([split.test[i] for i in pick], build_transforms(d["resize"], d["crop"], train=False),
                      split.crop_bottom)
    counted = discriminative_parts(cfg["dataset"], cfg["data_root"], split.part_names,
                                   split.num_classes)
    images, boxes, parts = [], [], []
    for i, s in enumerate(ds.samples):
        images.append(ds[i][0])
        with Image.open(s.path) as im:
            size = (im.width, im.height - split.crop_bottom)
        boxes.append(box_to_input(s.box, size, d["resize"], d["crop"]) if s.box else None)
        pts = np.zeros((0, 2))
        if s.parts:
            keep = [k for k, (_, _, v) in enumerate(s.parts) if v > 0
                    and (counted is None or k in counted[s.label])]
            if keep:
                pts = to_input_coords([s.parts[k][:2] for k in keep], size, d["resize"], d["crop"])
        parts.append(pts)
    return RunCams(cfg["run_id"], cfg["method"], cfg["variant"], cfg["dataset"], cfg["seed"],
                   model, torch.stack(images).to(device), [s.label for s in ds.samples], boxes,
                   parts, split.classes)


def score_cams(rc: RunCams, result: CamResult, tolerance: float | None = None,
               road: bool = True, road_images: int = 8,
               road_percentiles: Sequence[int] = (20, 40, 60, 80)) -> dict:
    """Localization and faithfulness of one run's CAMs, averaged over its images, with the
    target layer (`layer`, `map_h`, `map_w`) and the pointing game's `tolerance_px`.

    `tolerance` of the pointing game in input pixels; default the classic 15 px at 224,
    scaled to the input size (:func:`default_tolerance`).
    """
    tolerance = default_tolerance(result.cams.shape[-1]) if tolerance is None else tolerance
    energy = [energy_in_box(c, b) for c, b in zip(result.cams, rc.boxes) if b is not None]
    hits = [pointing_hit(c, p, tolerance) for c, p in zip(result.cams, rc.parts)]
    row = {"run_id": rc.run_id, "method": rc.method, "variant": rc.variant, "dataset": rc.dataset,
           "seed": rc.seed, "layer": result.layer, "map_h": result.map_size[0],
           "map_w": result.map_size[1], "n_images": len(result.cams),
           "tolerance_px": float(tolerance),
           "accuracy": 100.0 * float(np.mean(np.array(result.preds) == np.array(rc.labels))),
           "energy_in_box": float(np.nanmean(energy)) if energy else float("nan"),
           "pointing_game": float(np.nanmean(hits)) if not np.all(np.isnan(hits)) else float("nan")}
    if road:
        n = min(road_images, len(result.cams))
        row["road"] = float(road_scores(rc.model, rc.images[:n], result.cams[:n],
                                        result.targets[:n], road_percentiles).mean())
        row["road_images"] = n
    return row


def reference_row(rc: RunCams, shape: tuple[int, int], tolerance: float | None = None) -> dict:
    """The :data:`REFERENCE` row (:func:`uniform_reference`) of a run's images, in
    :func:`score_cams`' columns (no run, layer, accuracy or ROAD: NaN / empty)."""
    tolerance = default_tolerance(shape[-1]) if tolerance is None else tolerance
    return {"run_id": "", "method": REFERENCE, "variant": "", "dataset": rc.dataset,
            "seed": float("nan"), "layer": "", "map_h": float("nan"), "map_w": float("nan"),
            "n_images": len(rc.images), "tolerance_px": float(tolerance),
            "accuracy": float("nan"), **uniform_reference(rc.boxes, rc.parts, shape, tolerance)}


SCORE_COLUMNS = ("accuracy", "energy_in_box", "pointing_game", "road")


def summarize_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, method, variant, layer, map): mean ± std over seeds of every score
    column, `seeds` (runs), `n_images` and `tolerance_px`. Numeric columns only besides the
    keys: the tidy CSV. :data:`REFERENCE` rows (no model) come last, with std and seeds
    empty (NaN / <NA>)."""
    keys = [c for c in ("dataset", "method", "variant", "layer", "map_h", "map_w") if c in scores]
    cols = [c for c in SCORE_COLUMNS if c in scores]
    g = scores.groupby(keys, sort=False, dropna=False)  # keep run order
    mean, std = g[cols].mean(), g[cols].std().fillna(0.0)
    out = pd.concat({"mean": mean, "std": std}, axis=1)
    out.columns = [f"{c}_{stat}" for stat, c in out.columns]
    out["seeds"] = g.size()
    for c in ("n_images", "tolerance_px"):
        if c in scores:
            out[c] = g[c].first()
    out = out.reset_index()
    for c in ("map_h", "map_w"):
        if c in out:
            out[c] = out[c].astype("Int64")
    ref = (out["method"] == REFERENCE).to_numpy()
    out["seeds"] = out["seeds"].astype("Int64").mask(ref)
    out.loc[ref, [f"{c}_std" for c in cols]] = float("nan")
    return pd.concat([out[~ref], out[ref]], ignore_index=True)


def scores_markdown_table(summary: pd.DataFrame) -> pd.DataFrame:
    """`summarize_scores` output as display strings ("0.62 ± 0.03"; the reference row: the
    value alone), with the target layer and its map ("8x8")."""
    cols = [c[:-5] for c in summary.columns if c.endswith("_mean")]
    out = summary[["method", "variant"]].copy()
    if "layer" in summary:
        out["layer"] = summary["layer"].fillna("")
    if "map_h" in summary:
        out["map"] = ["" if pd.isna(h) else f"{h}x{w}"
                      for h, w in zip(summary["map_h"], summary["map_w"])]
    out["seeds"] = ["" if pd.isna(n) else str(n) for n in summary["seeds"]]
    for c in cols:
        digits = 1 if c == "accuracy" else 3
        out[c] = ["" if not np.isfinite(m) else f"{m:.{digits}f}" if not np.isfinite(s)
                  else f"{m:.{digits}f} ± {s:.{digits}f}"
                  for m, s in zip(summary[f"{c}_mean"], summary[f"{c}_std"])]
    return out


def cam_study(run_dirs: Sequence[str | Path], cam: str = "gradcam", target: str = "pred",
              n_images: int = 32, road_images: int = 8, gallery_images: int = 6,
              score: bool = True, road_percentiles: Sequence[int] = (20, 40, 60, 80),
              min_side: int | None = 8) -> tuple[pd.DataFrame, dict | None, list[str]]:
    """CAMs of several runs on the same first test images of their dataset.

    Returns (scores: one row per run, see :func:`score_cams`, then one :data:`REFERENCE`
    row per distinct set of images scored (normally one per dataset), see
    :func:`reference_row`; gallery: the inputs and one column per method from the first run
    of each method, with its layer and map size, or None; skipped: messages for runs that
    could not be loaded, e.g. a missing checkpoint). `target`: explain the predicted
    ('pred') or the true ('true') class. `min_side`: the target layer's map side, see
    :func:`cam_layer` (None: the last stage). Localization needs boxes and parts.
    """
    if target not in ("pred", "true"):
        raise ValueError(f"target {target!r}; valid: ['pred', 'true']")
    rows, columns, skipped, gallery, refs = [], [], [], None, {}
    for run_dir in run_dirs:
        try:
            rc = load_run_cams(run_dir, max(n_images, gallery_images))
        except FileNotFoundError as e:
            skipped.append(str(e))
            continue
        layer = cam_layer(rc.model, tuple(rc.images.shape[-2:]), min_side)
        result = compute_cams(rc.model, rc.images, cam, rc.labels if target == "true" else None,
                              layers=layer)
        has_annotations = any(b is not None for b in rc.boxes)
        if score and has_annotations:
            rows.append(score_cams(rc, result, road=road_images > 0, road_images=road_images,
                                   road_percentiles=road_percentiles))
            ref = reference_row(rc, result.cams.shape[-2:])
            key = (ref["dataset"], ref["n_images"], round(ref["tolerance_px"], 9),
                   round(ref["energy_in_box"], 12), round(ref["pointing_game"], 12))
            refs.setdefault(key, ref)
        if rc.method not in {c["method"] for c in columns}:
            k = gallery_images
            columns.append({"method": rc.method, "seed": rc.seed,
                            "title": f"{rc.method} (s{rc.seed})",
                            "layer": result.layer, "map": result.map_label,
                            "cams": result.cams[:k], "preds": result.preds[:k]})
            if gallery is None:
                gallery = {"images": rc.images[:k], "labels": rc.labels[:k],
                           "classes": rc.classes, "boxes": rc.boxes[:k], "parts": rc.parts[:k]}
    if gallery is not None:
        gallery["columns"] = columns
    scores = pd.DataFrame(rows + list(refs.values()))
    for c in ("seed", "map_h", "map_w", "road_images"):  # whole numbers, <NA> on the reference
        if c in scores:
            scores[c] = scores[c].astype("Int64")
    return scores, gallery, skipped
