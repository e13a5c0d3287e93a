"""The coarse level of each dataset ("genus"): one name per class, aligned with the class list.

Fine-grained errors are of two kinds: a wrong genus (an albatross taken for a gull) and a
wrong species inside the right genus (one albatross for another). The genus of a class is

* SynthBirds: its generator's genus (``synthbirds.json``: genera x species);
* CUB-200-2011: the bird group, the last word of the class name
  (``001.Black_footed_Albatross`` -> ``Albatross``, ``110.Geococcyx`` -> ``Geococcyx``);
* Stanford Cars: the make, the first word of the class name, or the first two words for the
  multi-word makes of :data:`CARS_MULTIWORD_MAKES` (``AM General Hummer SUV 2000`` ->
  ``AM General``); hyphenated makes (``Mercedes-Benz``, ``Rolls-Royce``) are one word. The
  196 official class names give 49 makes;
* FGVC-Aircraft: the family (70 in all), from the dataset's own ``families.txt`` and
  ``images_family_{trainval,test}.txt`` (each image's variant and family joined by image id).

The loaders fill ``Split.genera`` (None where the files to tell are absent, e.g. an Aircraft
copy without the family files); :func:`genus_index` turns the names into the per-class genus
index that :func:`fgvc.engine.evaluate` takes.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from fgvc.data.base import MalformedIndex, genus_index, read_rows

__all__ = ["CARS_MULTIWORD_MAKES", "SYNTHBIRDS_META", "aircraft_families", "cars_make", "cub_genus", "genus_index",
           "synthbirds_genera"]

SYNTHBIRDS_META = "synthbirds.json"  # fgvc.data.synthbirds.META_FILE (not imported: generation stays apart)

CARS_MULTIWORD_MAKES = ("AM General", "Aston Martin", "Land Rover")
"""The makes of Stanford Cars' 196 class names written as two words; every other make is the
first word of its class names (Mercedes-Benz, Rolls-Royce, HUMMER, Ram, smart, Eagle, ...)."""


def cub_genus(class_name: str) -> str:
    """The CUB bird group of a class name: its last word (``NNN.`` prefix and ``_`` separators)."""
    number, dot, rest = class_name.partition(".")
    name = rest if dot and number.isdigit() else class_name
    return name.replace(" ", "_").strip("_").split("_")[-1]


def synthbirds_genera(base: Path, classes: Sequence[str]) -> list[str] | None:
    """The genus of each class of a SynthBirds set in CUB layout, from its synthbirds.json
    (the generator's genera x species); None for a folder that is not such a set, or whose
    classes are not those of `classes` (``NNN.<name>``, in order)."""
    try:
        meta = json.loads((Path(base) / SYNTHBIRDS_META).read_text())
        names = [g["name"] for g in meta["genera"]]
        if [c["name"] for c in meta["classes"]] != [c.partition(".")[2] for c in classes]:
            return None
        return [names[c["genus"]] for c in meta["classes"]]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def cars_make(class_name: str) -> str:
    """The make of a Stanford Cars class name (``AM General Hummer SUV 2000`` -> ``AM General``)."""
    for make in CARS_MULTIWORD_MAKES:
        if class_name == make or class_name.startswith(make + " "):
            return make
    return class_name.split()[0]


def aircraft_families(data: Path, classes: Sequence[str], dataset: str = "FGVC-Aircraft",
                      fix: str = "") -> list[str] | None:
    """The family of each variant in `classes`, from the family files in the ``data`` folder.

    None when ``images_family_trainval.txt`` / ``images_family_test.txt`` are absent. A variant
    seen with two families, a variant without any image in the family files, or a family not
    in ``families.txt`` (when that file is there) raises :class:`MalformedIndex`.
    """
    data = Path(data)
    family_files = [data / f"images_family_{s}.txt" for s in ("trainval", "test")]
    if not all(p.is_file() for p in family_files):
        return None
    variant_of: dict[str, str] = {}
    for s in ("trainval", "test"):
        for image_id, variant in read_rows(data / f"images_variant_{s}.txt", (str, str), dataset,
                                           text_last=True, how_to_fix=fix):
            variant_of[image_id] = variant
    family: dict[str, str] = {}
    for path in family_files:
        for image_id, fam in read_rows(path, (str, str), dataset, text_last=True, how_to_fix=fix):
            variant = variant_of.get(image_id)
            if variant is None:
                continue  # an image without a variant line: no class to name
            if family.setdefault(variant, fam) != fam:
                raise MalformedIndex(f"{dataset}: variant {variant!r} has two families in {data} "
                                     f"({family[variant]!r} and {fam!r}, image {image_id}). {fix}".rstrip())
    missing = [v for v in classes if v not in family]
    if missing:
        raise MalformedIndex(f"{dataset}: no family for variant(s) {missing} in "
                             f"{family_files[0].name} / {family_files[1].name} under {data}. {fix}".rstrip())
    out = [family[v] for v in classes]
    listed = data / "families.txt"
    if listed.is_file():
        known = {line.strip() for line in listed.read_text(encoding="utf-8").splitlines() if line.strip()}
        unknown = sorted(set(out) - known)
        if unknown:
            raise MalformedIndex(f"{dataset}: families {unknown} are not listed in {listed}. {fix}".rstrip())
    return out

