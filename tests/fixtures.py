"""Tiny datasets written in each benchmark's REAL on-disk format, for tests (reusable by anyone).

    make_cub(tmp_path)        -> <tmp>/CUB_200_2011     (index txt files, boxes, parts)
    make_cars(tmp_path)       -> <tmp>                  (cars_train/, cars_test/, devkit/*.mat)
    make_aircraft(tmp_path)   -> <tmp>/fgvc-aircraft-2013b  (data/images, variants, families, splits, boxes)

Images are small noisy JPEGs (default 40 x 30) whose mean colour encodes the class. The first two
images each fixture writes are a grayscale and a CMYK JPEG. Aircraft
images carry a pure red banner of `banner` rows at the bottom, like the real copyright strip.
Helpers `truncate_file` and `write_garbage` corrupt an image in place for bad-image tests.
"""
from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40), (200, 40, 200), (40, 200, 200)]


def write_jpeg(path: Path, size: tuple[int, int] = (40, 30), colour=(128, 128, 128), mode: str = "RGB",
               seed: int = 0, banner: int = 0) -> Path:
    """A noisy JPEG of `size` (w, h) around `colour`, saved in `mode` (RGB, L or CMYK)."""
    w, h = size
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour, dtype=np.int16) + rng.integers(-30, 31, (h, w, 3)), 0, 255).astype(np.uint8)
    if banner:
        arr[h - banner:] = (255, 0, 0)
    img = Image.fromarray(arr, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=95)
    return path


def truncate_file(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to a fraction of its bytes (a truncated download)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return Path(path)


def write_garbage(path: Path) -> Path:
    """Replace a file with bytes that are not an image."""
    Path(path).write_bytes(b"this is not a jpeg\x00\x01\x02" * 8)
    return Path(path)


def _special_mode(k_global: int) -> str:
    """The first image is grayscale, the second CMYK, the rest RGB."""
    return {0: "L", 1: "CMYK"}.get(k_global, "RGB")


def make_cub(root: Path, n_classes: int = 3, per_class: int = 4, size: tuple[int, int] = (40, 30),
             parts: bool = True, boxes: bool = True, names: list[str] | None = None) -> Path:
    """CUB_200_2011 layout under `root`; images alternate train/test within each class.

    Image ids run 1..n_classes*per_class; the k-th image of a class is train when k is even.
    Box of image id i: (i, 2, 20, 15). Parts (3): beak at (i, 5), crown invisible, left wing at (10, i).
    Class folders are ``NNN.Bird_A``, ``NNN.Bird_B``, ... or ``NNN.<name>`` for `names`
    (e.g. ``["Black_footed_Albatross", "Laysan_Albatross"]``; `n_classes` is then their number).
    """
    base = Path(root) / "CUB_200_2011"
    if names is not None:
        n_classes = len(names)
    names = [f"{c + 1:03d}." + (names[c] if names is not None else f"Bird_{chr(65 + c)}") for c in range(n_classes)]
    images, labels, split, bbs, locs = [], [], [], [], []
    i = 0
    for c, name in enumerate(names):
        for k in range(per_class):
            i += 1
            rel = f"{name}/{name.split('.')[1]}_{i:04d}.jpg"
            write_jpeg(base / "images" / rel, size, COLOURS[c % len(COLOURS)], _special_mode(i - 1), seed=i)
            images.append(f"{i} {rel}")
            labels.append(f"{i} {c + 1}")
            split.append(f"{i} {1 if k % 2 == 0 else 0}")
            bbs.append(f"{i} {float(i)} 2.0 20.0 15.0")
            locs += [f"{i} 1 {float(i)} 5.0 1", f"{i} 2 0.0 0.0 0", f"{i} 3 10.0 {float(i)} 1"]
    (base / "images.txt").write_text("\n".join(images) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split) + "\n")
    (base / "classes.txt").write_text("\n".join(f"{c + 1} {n}" for c, n in enumerate(names)) + "\n")
    if boxes:
        (base / "bounding_boxes.txt").write_text("\n".join(bbs) + "\n")
    if parts:
        (base / "parts").mkdir(exist_ok=True)
        (base / "parts" / "parts.txt").write_text("1 beak\n2 crown\n3 left wing\n")
        (base / "parts" / "part_locs.txt").write_text("\n".join(locs) + "\n")
    return base


def _annotations(rows: list[tuple[int, int, int, int, int, str]], with_class: bool = True) -> np.ndarray:
    """A 1 x N MATLAB struct array shaped like the devkit's `annotations` (2-D numeric fields)."""
    names = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2"] + (["class"] if with_class else []) + ["fname"]
    out = np.zeros((1, len(rows)), dtype=[(n, "O") for n in names])
    for j, (x1, y1, x2, y2, cls, fname) in enumerate(rows):
        vals = [x1, y1, x2, y2] + ([cls] if with_class else [])
        for n, v in zip(names, vals):
            out[0, j][n] = np.array([[v]], dtype=np.uint16)
        out[0, j]["fname"] = np.array([fname])
    return out


def make_cars(root: Path, n_classes: int = 3, per_class: int = 4, size: tuple[int, int] = (40, 30),
              test_annos_in_root: bool = False, class_names: list[str] | None = None) -> Path:
    """Stanford Cars devkit layout under `root`; per class, even k -> train, odd k -> test.

    Boxes are 1-based inclusive corners (x1, y1, x2, y2) = (n, 3, n + 19, 17) for the n-th
    image of its split, i.e. (n - 1, 2, 20, 15) as a 0-based (x, y, w, h) box. Class names are
    ``Make<c> Model<c> Sedan 20<10+c>``, or `class_names` (`n_classes` is then their number).
    """
    root = Path(root)
    if class_names is not None:
        n_classes = len(class_names)
    else:
        class_names = [f"Make{c} Model{c} Sedan 20{10 + c}" for c in range(n_classes)]
    rows = {"train": [], "test": []}
    g = 0
    for c in range(n_classes):
        for k in range(per_class):
            which = "train" if k % 2 == 0 else "test"
            n = len(rows[which]) + 1
            fname = f"{n:05d}.jpg"
            write_jpeg(root / f"cars_{which}" / fname, size, COLOURS[c % len(COLOURS)], _special_mode(g), seed=g)
            rows[which].append((n, 3, n + 19, 17, c + 1, fname))
            g += 1
    devkit = root / "devkit"
    devkit.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(devkit / "cars_meta.mat", {"class_names": np.array([class_names], dtype=object)})
    scipy.io.savemat(devkit / "cars_train_annos.mat", {"annotations": _annotations(rows["train"])})
    scipy.io.savemat(devkit / "cars_test_annos.mat", {"annotations": _annotations(rows["test"], with_class=False)})
    target = (root if test_annos_in_root else devkit) / "cars_test_annos_withlabels.mat"
    scipy.io.savemat(target, {"annotations": _annotations(rows["test"])})
    return root


AIRCRAFT_VARIANTS = ["707-320", "Boeing 737-200", "F/A-18", "A320", "DHC-8-100", "Cessna 172", "737-300"]
AIRCRAFT_FAMILIES = {"707-320": "Boeing 707", "Boeing 737-200": "Boeing 737", "F/A-18": "F/A-18", "A320": "A320",
                     "DHC-8-100": "DHC-8", "Cessna 172": "Cessna 172", "737-300": "Boeing 737"}  # variant -> family


def make_aircraft(root: Path, n_classes: int = 3, per_class: int = 6, size: tuple[int, int] = (40, 50),
                  banner: int = 20, families: bool = True, variants: list[str] | None = None) -> Path:
    """fgvc-aircraft-2013b layout; per class 2/3 trainval (halved into train/val), 1/3 test.

    Every image has a red banner of `banner` rows at the bottom. Box of image id n:
    1-based (xmin, ymin, xmax, ymax) = (2, 3, 21, 17) -> 0-based (1, 2, 20, 15).
    Classes: the first `n_classes` of AIRCRAFT_VARIANTS, or `variants` (names from it).
    `families`: also write the family level as the real archive does (families.txt, every
    family of AIRCRAFT_FAMILIES in sorted order, and images_family_{train,val,trainval,test}.txt).
    """
    base = Path(root) / "fgvc-aircraft-2013b"
    data = base / "data"
    variants = list(variants) if variants is not None else AIRCRAFT_VARIANTS[:n_classes]
    files = {"train": [], "val": [], "test": []}
    family_files = {"train": [], "val": [], "test": []}
    boxes = []
    g = 0
    for c, variant in enumerate(variants):
        for k in range(per_class):
            image_id = f"{1000000 + g:07d}"
            write_jpeg(data / "images" / f"{image_id}.jpg", size, COLOURS[c % len(COLOURS)],
                       _special_mode(g), seed=g, banner=banner)
            which = ("train", "val", "test")[k % 3]
            files[which].append(f"{image_id} {variant}")
            family_files[which].append(f"{image_id} {AIRCRAFT_FAMILIES[variant]}")
            boxes.append(f"{image_id} 2 3 21 17")
            g += 1
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    for which, lines in files.items():
        (data / f"images_variant_{which}.txt").write_text("\n".join(lines) + "\n")
    (data / "images_variant_trainval.txt").write_text("\n".join(sorted(files["train"] + files["val"])) + "\n")
    if families:
        (data / "families.txt").write_text("\n".join(sorted(set(AIRCRAFT_FAMILIES.values()))) + "\n")
        for which, lines in family_files.items():
            (data / f"images_family_{which}.txt").write_text("\n".join(lines) + "\n")
        (data / "images_family_trainval.txt").write_text(
            "\n".join(sorted(family_files["train"] + family_files["val"])) + "\n")
    (data / "images_box.txt").write_text("\n".join(boxes) + "\n")
    return base


def make_tar(src: Path, tar_path: Path, arcname: str | None = None) -> Path:
    """Pack folder `src` into a .tgz whose top-level entry is `arcname` (default: src's name)."""
    with tarfile.open(tar_path, "w:gz") as tar:
        tar.add(src, arcname=arcname or Path(src).name)
    return tar_path


def write_run_record(root: Path, method: str, seed: int, *, variant: str = "full",
                     dataset: str = "synthbirds", profile: str = "p", run_id: str | None = None,
                     overrides: dict | None = None, epochs: int = 1, protocol: str | None = "val",
                     metrics: dict | None = None, history=None, backbone: str = "b",
                     crop: int = 8, train: dict | None = None) -> Path:
    """A finished run's record (config.json, metrics.json, history.csv if `history`, a
    DataFrame) under `root`/runs/<run id>, as fgvc.study.results.load_runs reads it (`train`:
    further train settings beside the epochs): the run id
    `<profile>-<dataset>-<method>-<variant>-s<seed>` unless given, its config hash the run id.
    protocol None: an older record without the key. Returns the run's folder."""
    import json

    rid = run_id or f"{profile}-{dataset}-{method}-{variant}-s{seed}"
    d = Path(root) / "runs" / rid
    d.mkdir(parents=True, exist_ok=True)
    ident = {"run_id": rid, "config_hash": rid, "method": method, "variant": variant,
             "dataset": dataset, "profile": profile, "seed": seed}
    cfg = {**ident, "overrides": overrides or {}, "model": {"backbone": backbone},
           "data": {"crop": crop}, "train": {"epochs": epochs, **(train or {})}}
    if protocol is not None:
        cfg["protocol"] = protocol
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "metrics.json").write_text(json.dumps({**ident, **(metrics or {})}))
    if history is not None:
        history.to_csv(d / "history.csv", index=False)
    return d
