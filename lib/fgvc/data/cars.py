"""Stanford Cars (Krause et al. 2013), read from the devkit layout.

The official download (the Stanford page and its archives) is no longer served, so this
dataset cannot be fetched by the study: place the files yourself. Expected layout under
``root`` (``root/stanford_cars`` is accepted too, as written by torchvision)::

    cars_train/00001.jpg ...             8,144 images   (from cars_train.tgz)
    cars_test/00001.jpg ...              8,041 images   (from cars_test.tgz)
    devkit/cars_meta.mat                 class_names (1 x 196)     (from car_devkit.tgz)
    devkit/cars_train_annos.mat          annotations struct array  (from car_devkit.tgz)
    devkit/cars_test_annos_withlabels.mat   test labels (separate file; root/ is accepted too)

Some mirrors nest the image folders (``cars_train/cars_train/*.jpg``); that is accepted.
Each annotation has fields ``bbox_x1 bbox_y1 bbox_x2 bbox_y2 class fname``; corners are
1-based inclusive pixels and become a 0-based ``(x, y, w, h)`` box; ``class`` is 1-based.
``Split.genera`` gives each class its make (:func:`cars_make`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io

from fgvc.data.base import DatasetNotFound, MalformedIndex, Sample, Split, xyxy1_to_xywh
from fgvc.data.registry import DatasetInfo, register_dataset

NAME = "Stanford Cars"
TEST_ANNOS = "cars_test_annos_withlabels.mat"

CARS_MULTIWORD_MAKES = ("AM General", "Aston Martin", "Land Rover")
"""The makes of Stanford Cars' 196 class names written as two words; every other make is the
first word of its class names (Mercedes-Benz, Rolls-Royce, HUMMER, Ram, smart, Eagle, ...)."""


def _base(root: Path) -> Path:
    for cand in (root, root / "stanford_cars"):
        if (cand / "devkit").is_dir() or (cand / "cars_train").is_dir():
            return cand
    return root


def _image_dir(base: Path, name: str) -> Path | None:
    for cand in (base / name / name, base / name):  # nested mirror layout first
        if cand.is_dir():
            return cand
    return None


def _test_annos(base: Path) -> Path | None:
    for cand in (base / "devkit" / TEST_ANNOS, base / TEST_ANNOS):
        if cand.is_file():
            return cand
    return None


def instructions(root: str | os.PathLike) -> str:
    """What to place where for Stanford Cars (there is no working official download)."""
    r = Path(root).expanduser()
    return (
        f"{NAME} has no working official download any more; place the files yourself under {r}:\n"
        f"  {r}/cars_train/*.jpg                    8,144 images (extract cars_train.tgz)\n"
        f"  {r}/cars_test/*.jpg                     8,041 images (extract cars_test.tgz)\n"
        f"  {r}/devkit/cars_meta.mat                (extract car_devkit.tgz)\n"
        f"  {r}/devkit/cars_train_annos.mat         (extract car_devkit.tgz)\n"
        f"  {r}/devkit/{TEST_ANNOS}  (the separate test-label file; {r}/{TEST_ANNOS} also works)\n"
        "Copies of these original files are kept by several public dataset hubs and academic mirrors "
        "(search for the file names above); check them against the MD5 sums in data/README.md, "
        "then run `python -m fgvc.data check cars`."
    )


def missing_files(root: str | os.PathLike) -> list[str]:
    """The required Cars items that are absent under `root` (empty list: all present)."""
    base = _base(Path(root).expanduser())
    missing = []
    for d in ("cars_train", "cars_test"):
        if _image_dir(base, d) is None:
            missing.append(f"{base / d}/ (image folder)")
    for f in ("cars_meta.mat", "cars_train_annos.mat"):
        if not (base / "devkit" / f).is_file():
            missing.append(str(base / "devkit" / f))
    if _test_annos(base) is None:
        missing.append(f"{base / 'devkit' / TEST_ANNOS} (or {base / TEST_ANNOS})")
    return missing


def _annotations(path: Path) -> np.ndarray:
    try:
        mat = scipy.io.loadmat(path, squeeze_me=True)
    except Exception as e:  # scipy raises several types for a corrupt .mat
        raise MalformedIndex(f"{NAME}: cannot read {path} ({type(e).__name__}: {e}). Replace the file.") from None
    if "annotations" not in mat:
        raise MalformedIndex(f"{NAME}: {path} has no 'annotations' variable. Replace the file.")
    annos = np.atleast_1d(mat["annotations"])
    need = {"bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"}
    have = set(annos.dtype.names or ())
    if not need <= have:
        raise MalformedIndex(f"{NAME}: {path} annotations lack fields {sorted(need - have)} "
                             f"(is it the test file without labels?). Use {TEST_ANNOS} for test.")
    return annos


def _samples(annos: np.ndarray, image_dir: Path, n_classes: int, path: Path) -> list[Sample]:
    out = []
    for k, a in enumerate(annos):
        label = int(a["class"]) - 1
        if not 0 <= label < n_classes:
            raise MalformedIndex(f"{NAME}: annotation {k} in {path} has class {int(a['class'])}, "
                                 f"outside 1..{n_classes}. Replace the file.")
        box = xyxy1_to_xywh(a["bbox_x1"], a["bbox_y1"], a["bbox_x2"], a["bbox_y2"])
        out.append(Sample(str(image_dir / str(a["fname"])), label, box))
    return out


def load_cars(root: str | os.PathLike) -> Split:
    """Read Stanford Cars (devkit layout) into a :class:`Split` with boxes."""
    root = Path(root).expanduser()
    missing = missing_files(root)
    if missing:
        raise DatasetNotFound(f"{NAME}: missing " + ", ".join(missing) + ".\n" + instructions(_base(root)))
    base = _base(root).resolve()
    meta_path = base / "devkit" / "cars_meta.mat"
    try:
        classes = [str(c) for c in np.atleast_1d(scipy.io.loadmat(meta_path, squeeze_me=True)["class_names"])]
    except Exception as e:
        raise MalformedIndex(f"{NAME}: cannot read class_names from {meta_path} ({e}). Replace the file.") from None
    train_annos = base / "devkit" / "cars_train_annos.mat"
    test_annos = _test_annos(base)
    train = _samples(_annotations(train_annos), _image_dir(base, "cars_train"), len(classes), train_annos)
    test = _samples(_annotations(test_annos), _image_dir(base, "cars_test"), len(classes), test_annos)
    return Split(train=train, test=test, classes=classes, genera=[cars_make(c) for c in classes])


def cars_make(class_name: str) -> str:
    """The make of a Stanford Cars class name (``AM General Hummer SUV 2000`` -> ``AM General``)."""
    for make in CARS_MULTIWORD_MAKES:
        if class_name == make or class_name.startswith(make + " "):
            return make
    return class_name.split()[0]


def _place(root: Path, info: dict, log) -> Path:
    """``download cars``: there is no public source; say which files go where unless they are there."""
    if missing_files(root):
        raise DatasetNotFound(instructions(root))
    log(f"{info['title']}: all files in place under {root}")
    return root


def _label_file_notes(root: Path, manifest: dict) -> list[str]:
    """``check cars``: whether the test-label file is the original one (by its md5 in the manifest)."""
    from fgvc.data.download import file_hashes, known

    path = _test_annos(_base(root))
    entry = next((a for a in (manifest.get("cars") or {}).get("archives", []) if a["filename"] == TEST_ANNOS), None)
    if path is None or entry is None or known(entry.get("md5")) is None:
        return []
    md5 = file_hashes(path, ("md5",))["md5"]
    if md5 == entry["md5"]:
        return [f"{TEST_ANNOS}: md5 matches the original file"]
    return [f"{TEST_ANNOS}: md5 {md5} differs from the original file's {entry['md5']} "
            "(a re-saved mirror copy may still be correct; the split counts above are what matter)"]


def _load(root: Path, **options) -> Split:
    return load_cars(root)


DATASET = register_dataset(DatasetInfo(name="cars", title=NAME, load=_load, paper="cars", short="Cars", order=30,
                                       place=_place, notes=_label_file_notes))
