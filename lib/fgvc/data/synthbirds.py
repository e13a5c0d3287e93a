"""SynthBirds: a procedural fine-grained bird dataset, written in the CUB_200_2011 layout.

Generative model
----------------
Classes are genera x species (class index = genus * species_per_genus + species).

* A **genus** fixes the body plan and the palette: body length/height, head size and
  position, tail shape (fan, square, pointed) and length, leg length, and the colours of
  body, head, wing, tail, belly, beak and legs (hue spread by the golden ratio, so genera
  are far apart). The genus level is meant to be easy.
* A **species** is a code over seven small discriminative parts, each with three variants:
  beak (short / long / hooked), crown patch (plain / red / yellow), eye (plain / white ring /
  white brow), throat patch (plain / white / orange), breast (plain / streaked / spotted),
  wing (plain / one bar / two bars), tail tip (plain / white / rufous). Species of a genus
  share everything else. Codes are drawn near a per-genus base code so that every two
  species of a genus differ in at least ``min_part_diff`` (default 2) and, if possible, at
  most ``max_part_diff`` (default 3) parts, lying in at least two of the regions head /
  body / tail: erasing any one part (or the whole head) leaves another that still tells
  them apart. Each marking covers well under 1% of the image.
* An **image** draws one bird of its class with individual and nuisance variation:
  plumage colour jitter, pose (head, tail and wing angles), rotation, scale, position,
  horizontal flip; a gradient background with clutter (leaves, twigs, blobs, blobs in
  genus colours, and bird-part-like distractors: red/yellow caps, white rings and bars,
  beak triangles, orange/white bibs, spots), an optional perch, optional foreground
  occluders, then white balance / brightness / contrast / lighting-gradient jitter and
  pixel noise. Drawing is done with PIL at 2x and box-downsampled; JPEG quality is fixed.
* **Photo mode** (knobs ``background``, ``background_blur``, ``decoys``, ``decoy_birds``,
  ``dapple``; all 0 by default; preset ``"photo"``) is for the failure seen on real bird
  photographs and not on the plain scenes: methods that crop where the backbone's
  max-over-classes CAM is high (e.g. focus) are drawn to bird-like things that are not the
  bird. The gradient becomes a photo-like scene (multi-octave value-noise textures in
  natural colours: foliage with sky holes, bark with fissures and moss, sky with clouds,
  rippled water with glints, reeds; sometimes a tree trunk or a horizon between two of them;
  crooked branches); large bird-part decoys sit mostly beside the bird (whole heads with
  crown, eye ring and beak, red/yellow caps, white rings, barred wings, orange/white bibs,
  spotted breasts, beaks, berries, tail tips, in the genera's colours, about as large as the
  bird's head), and whole small decoy birds of the bird's build in other genera's colours
  with random markings; depth of field blurs the background layer (all of it, or only
  towards one side) while the bird, its perch and the decoys in the focal plane stay sharp;
  dappled sun and shade with a warm or cool tint fall on scene and bird alike. Decoys are
  behind the bird and carry no label; their boxes are in ``decoy_boxes.txt``
  (``image_id kind x y w h``, kinds in ``DECOY_KINDS``). Photo mode draws from its own
  generator, so the bird, its pose, box and keypoints, the clutter, perch and occluders of
  an image are those of the default set: only the scene around the bird changes.

Ground truth: the 15 CUB part keypoints (a bird facing right shows its right side, so the
far eye and wing are not visible; keypoints under an occluder are not visible; invisible
parts are written ``0.0 0.0 0`` as in CUB) and the bird's bounding box.

Determinism: everything comes from numpy Generators seeded with (seed, tag, ...): genus g
from (seed, 1, g), image k of class c in split s from (seed, 2, c, s, k). So the same seed
and parameters give byte-identical files, adding genera/species/images leaves existing
ones unchanged, and the test set does not depend on ``train_per_class``. Photo mode's
generator is seeded (tag 4) from the image generator's state on entry to ``render``
without drawing from it, and the photo knobs are listed in a spec only when they are not 0,
so with them at 0 sets, specs and data roots are byte-for-byte those of version 1
(``GENERATOR_VERSION`` stays 1).

API: ``generate(root, ...)`` writes a set, ``ensure(root, ...)`` writes it only if `root`
holds another spec, ``genus_of(root)`` gives the coarse labels, ``renderer(...)`` draws fresh
images on the fly, ``class_definitions`` / ``genus_definition`` give the class design.

Difficulty knobs (keyword arguments of :func:`generate`, :func:`ensure`, :func:`spec`; see
``DEFAULT_DIFFICULTY``): ``part_scale``, ``part_contrast``, ``min_part_diff``,
``max_part_diff``, ``scale_min``/``scale_max``, ``rotation``, ``pose``, ``flip``,
``clutter``, ``part_distractors``, ``occlusion``, ``color_jitter``, ``noise``; photo mode:
``background``, ``background_blur``, ``decoys``, ``decoy_birds``, ``dapple``. A named
preset (``PRESETS``) sets several at once: ``spec(preset="photo")``, ``ensure(root,
preset="photo")``, or in a profile ``data: {synth: {preset: photo, ...}}`` (other keys
override the preset's). Speed at image_size 146 on one core, JPEG writing included: about
160-200 images/s by default, about 60 in photo mode (1,600 images: 10 s vs 26 s CPU).
"""
from __future__ import annotations

import colorsys
import hashlib
import io
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from fgvc.data.base import VAL_FILE

if TYPE_CHECKING:
    from fgvc.data.base import Split

GENERATOR_VERSION: int = 1
META_FILE = "synthbirds.json"
JPEG_QUALITY = 90
SUPERSAMPLE = 2

PARTS = ("back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg",
         "left wing", "nape", "right eye", "right leg", "right wing", "tail", "throat")  # CUB's 15
ATTRIBUTES: dict[str, tuple[str, ...]] = {  # discriminative part -> variants
    "beak": ("short", "long", "hooked"),
    "crown": ("plain", "red", "yellow"),
    "eye": ("plain", "ring", "brow"),
    "throat": ("plain", "white", "orange"),
    "breast": ("plain", "streaked", "spotted"),
    "wing": ("plain", "one_bar", "two_bars"),
    "tail": ("plain", "white_tip", "rufous_tip"),
}
ATTRIBUTE_KEYPOINTS = {"beak": ["beak"], "crown": ["crown"], "eye": ["left eye", "right eye"],
                       "throat": ["throat"], "breast": ["breast"], "wing": ["left wing", "right wing"],
                       "tail": ["tail"]}
REGION = {"beak": "head", "crown": "head", "eye": "head", "throat": "head",  # where each part sits
          "breast": "body", "wing": "body", "tail": "tail"}
GENUS_NAMES = ("Finch", "Warbler", "Sparrow", "Tanager", "Wren", "Vireo", "Shrike", "Thrush",
               "Oriole", "Bunting", "Flycatcher", "Grosbeak", "Kinglet", "Junco", "Towhee", "Swallow")

DEFAULT_SIZE: dict[str, int] = dict(n_genera=4, species_per_genus=4, train_per_class=150,
                                    test_per_class=50, image_size=96)
# A validation split of its own (default 0: none, validation is carved from train): per class,
# images drawn apart from train and test (split code 2 in their seeds), written as training
# images in train_test_split.txt and listed in validation_images.txt.
VAL_KEY = "val_per_class"
DEFAULT_DIFFICULTY: dict[str, float] = dict(
    part_scale=1.0,        # size of the species markings (beak, crown, eye ring, bars, ...)
    part_contrast=1.0,     # 1: pure marking colours; 0: markings blend into the plumage
    min_part_diff=2,       # every two species of a genus differ in at least this many parts
    max_part_diff=3,       # ... and at most this many (relaxed only if impossible)
    scale_min=0.45,        # bird length (beak to tail) as a fraction of the image width
    scale_max=0.8,
    rotation=30.0,         # max |rotation| in degrees
    pose=1.0,              # multiplier of head / tail / wing angle jitter
    flip=0.5,              # probability of facing left
    clutter=1.0,           # mean number of background distractors is 10 * clutter
    part_distractors=0.4,  # fraction of distractors shaped and coloured like bird parts
    occlusion=0.3,         # probability of foreground occluders over the bird
    color_jitter=1.0,      # strength of plumage, white-balance, brightness, lighting jitter
    noise=0.02,            # std of additive pixel noise (0..1 scale)
    # photo mode (added after generator version 1; at 0 the output is that of version 1)
    background=0.0,        # 0: gradient; 1: photo-like scene (foliage, bark, sky, water, reeds); between: blend
    background_blur=0.0,   # max depth-of-field blur of the background (Gaussian radius / image size)
    decoys=0.0,            # mean number of large bird-part decoys (heads, caps, rings, bars, bibs, ...)
    decoy_birds=0.0,       # mean number of whole decoy birds in other genera's colours
    dapple=0.0,            # strength of natural light: dappled sun / shade over the scene and bird, tint
)
ADDED_KNOBS = ("background", "background_blur", "decoys", "decoy_birds", "dapple")
"""Knobs added after generator version 1: a spec lists them only when they differ from their
default, so version-1 specs (and the data roots named after them) stay valid."""
PRESETS: dict[str, dict[str, float]] = {
    # photo-like scenes with decoys; leaves every version-1 knob alone, so for a seed the birds,
    # poses, boxes and keypoints are those of the default set and only the scene differs
    "photo": dict(background=1.0, background_blur=0.012, decoys=4.0, decoy_birds=0.7, dapple=0.6),
}

MARK = {"red": (215, 35, 30), "yellow": (245, 215, 40), "white": (245, 245, 238),
        "orange": (240, 135, 30), "rufous": (190, 90, 35), "dark": (35, 28, 25)}
_BEAKS = [(45, 42, 40), (225, 180, 50), (200, 120, 60), (130, 120, 110)]
_LEGS = [(70, 60, 55), (190, 140, 120), (150, 120, 60)]


# ----------------------------------------------------------------------------- spec

def spec(seed: int = 0, *, difficulty: Mapping[str, float] | None = None, preset: str | None = None,
         **size: Any) -> dict:
    """The full, JSON-able description of a SynthBirds set (what `ensure` compares).

    ``size`` takes the keys of DEFAULT_SIZE and, as a shortcut, DEFAULT_DIFFICULTY keys.
    ``preset`` (a key of PRESETS, e.g. "photo") sets its knobs first; ``difficulty`` and
    keyword knobs override it. The spec holds the resolved knobs, not the preset's name.
    """
    diff = dict(DEFAULT_DIFFICULTY)
    sz = dict(DEFAULT_SIZE)
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown SynthBirds preset {preset!r}; valid: {sorted(PRESETS)}")
        diff.update(PRESETS[preset])
    val = 0
    for k, v in {**(difficulty or {}), **size}.items():
        if k == VAL_KEY:
            val = int(v)
        elif k in DEFAULT_SIZE:
            sz[k] = int(v)
        elif k in DEFAULT_DIFFICULTY:
            diff[k] = type(DEFAULT_DIFFICULTY[k])(v)
        else:
            raise ValueError(f"unknown SynthBirds parameter {k!r}; valid: "
                             f"{sorted(DEFAULT_SIZE) + [VAL_KEY] + sorted(DEFAULT_DIFFICULTY)}, or preset ({sorted(PRESETS)})")
    if sz["image_size"] < 16 or min(sz["n_genera"], sz["species_per_genus"]) < 1 or val < 0:
        raise ValueError(f"bad SynthBirds size {sz}, {VAL_KEY} {val}")
    diff = {k: v for k, v in diff.items() if k not in ADDED_KNOBS or v != DEFAULT_DIFFICULTY[k]}
    # val_per_class is listed only when > 0, so sets without it keep their spec, name and files
    return {"generator_version": GENERATOR_VERSION, "seed": int(seed), **sz,
            **({VAL_KEY: val} if val else {}), "difficulty": diff}


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1))) * 255


def genus_definition(seed: int, g: int) -> dict:
    """Body plan and palette of genus g (independent of how many genera there are)."""
    rng = np.random.default_rng([seed, 1, g])
    h = (0.07 + 0.618034 * g + rng.uniform(-0.04, 0.04)) % 1.0
    s = rng.uniform(0.45, 0.8)
    shape = str(rng.choice(["fan", "square", "pointed"]))
    w0 = rng.uniform(0.06, 0.1)
    w1 = w0 * {"fan": rng.uniform(1.6, 2.2), "square": rng.uniform(1.0, 1.3), "pointed": rng.uniform(0.2, 0.4)}[shape]
    name = GENUS_NAMES[g % len(GENUS_NAMES)] + (str(g // len(GENUS_NAMES) + 1) if g >= len(GENUS_NAMES) else "")
    wing = _hsv(h + rng.uniform(-0.05, 0.05), rng.uniform(0.3, 0.7), rng.uniform(0.22, 0.42))
    return {
        "name": name,
        "body_a": rng.uniform(0.42, 0.56), "body_b": rng.uniform(0.2, 0.32),
        "head_r": rng.uniform(0.15, 0.21), "head_dx": rng.uniform(0.7, 0.85), "head_dy": rng.uniform(0.7, 0.95),
        "tail_shape": shape, "tail_len": rng.uniform(0.3, 0.6) * (1.3 if shape == "pointed" else 1.0),
        "tail_w0": w0, "tail_w1": w1, "leg_len": rng.uniform(0.12, 0.32),
        "palette": {  # dark head/wing/tail and light belly, so every marking colour contrasts
            "body": _hsv(h, s, rng.uniform(0.5, 0.75)).round().tolist(),
            "head": _hsv(h + rng.uniform(-0.08, 0.08), rng.uniform(0.3, 0.7), rng.uniform(0.25, 0.45)).round().tolist(),
            "wing": wing.round().tolist(),
            "tail": (wing * rng.uniform(0.85, 1.0)).round().tolist(),
            "belly": _hsv(h + rng.uniform(-0.1, 0.1), rng.uniform(0.08, 0.3), rng.uniform(0.8, 0.95)).round().tolist(),
            "beak": list(_BEAKS[rng.integers(len(_BEAKS))]),
            "legs": list(_LEGS[rng.integers(len(_LEGS))]),
        },
    }


def class_definitions(seed: int = 0, n_genera: int = 4, species_per_genus: int = 4,
                      min_part_diff: int = 2, max_part_diff: int = 3, **_: Any) -> list[dict]:
    """One dict per class: name, genus, markings {part: variant} and discriminative parts.

    A class's discriminative parts are those in which it differs from at least one other
    species of its genus (the parts a classifier must look at to tell it from its siblings).
    """
    names = list(ATTRIBUTES)
    n_attr, n_var = len(names), 3
    if min_part_diff > n_attr:
        raise ValueError(f"min_part_diff={min_part_diff} > number of parts {n_attr}")
    out = []
    for g in range(n_genera):
        rng = np.random.default_rng([seed, 3, g])
        base = rng.integers(n_var, size=n_attr)
        codes: list[np.ndarray] = []
        hi = max(max_part_diff, min_part_diff)
        tries = 0
        while len(codes) < species_per_genus:
            code = base.copy()
            flip = rng.random(n_attr) < 0.3
            code[flip] = (code[flip] + rng.integers(1, n_var, size=int(flip.sum()))) % n_var
            d = [int((code != c).sum()) for c in codes]
            spread = [len({REGION[names[i]] for i in np.flatnonzero(code != c)}) for c in codes]
            if all(min_part_diff <= x <= hi for x in d) and all(r >= min(2, min_part_diff) for r in spread):
                codes.append(code)
            tries += 1
            if tries % 500 == 0:  # the bound cannot be met for this many species: relax it
                hi += 1
                if hi > n_attr + 1:
                    raise ValueError(f"cannot make {species_per_genus} species differing in >= {min_part_diff} parts")
        genus = genus_definition(seed, g)["name"]
        for s, code in enumerate(codes):
            others = [c for j, c in enumerate(codes) if j != s]
            disc = [names[i] for i in range(n_attr) if any(c[i] != code[i] for c in others)]
            letter = chr(65 + s) if s < 26 else f"{s + 1:02d}"
            out.append({"name": f"{genus}_{letter}", "genus": g, "species": s,
                        "markings": {names[i]: ATTRIBUTES[names[i]][code[i]] for i in range(n_attr)},
                        "discriminative_parts": disc,
                        "discriminative_keypoints": sorted({k for a in disc for k in ATTRIBUTE_KEYPOINTS[a]})})
    return out


# ----------------------------------------------------------------------------- geometry

_CIRCLE = np.stack([np.cos(np.linspace(0, 2 * np.pi, 28, endpoint=False)),
                    np.sin(np.linspace(0, 2 * np.pi, 28, endpoint=False))], 1)


def _rot(p, ang: float, c=(0.0, 0.0)) -> np.ndarray:
    """Rotate points (N, 2) by `ang` radians about `c`."""
    ca, sa = np.cos(ang), np.sin(ang)
    c = np.asarray(c, dtype=float)
    return (np.asarray(p, dtype=float) - c) @ np.array(((ca, sa), (-sa, ca))) + c


def _ell(c, a: float, b: float, ang: float = 0.0) -> np.ndarray:
    return _rot(_CIRCLE * (a, b), ang) + c


def _seg(c, r: float, t0: float, t1: float, n: int = 10) -> np.ndarray:
    """Circular segment (arc from t0 to t1 degrees, closed by its chord)."""
    t = np.radians(np.linspace(t0, t1, n))
    return np.asarray(c) + r * np.stack([np.cos(t), np.sin(t)], 1)


def _bar(p0, p1, w: float) -> np.ndarray:
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9) * w / 2
    return np.stack([p0 + n, p1 + n, p1 - n, p0 - n])


def _mix(under, over, a: float) -> tuple:
    return tuple(np.asarray(under) * (1 - a) + np.asarray(over) * a)


class Rendered(NamedTuple):
    """One rendered image and its ground truth (output pixels)."""

    image: Image.Image
    box: tuple[float, float, float, float]        # x, y, w, h in pixels
    parts: list[tuple[float, float, int]]          # per PARTS: x, y, visible
    decoys: tuple = ()                             # photo mode: (kind, x, y, w, h) per decoy


def _bird(gen: dict, marks: dict, d: dict, rng: np.random.Generator):
    """Polygons (canonical frame: facing +x, y down, body centre at 0) and keypoints."""
    cj, ps, pc, pose = d["color_jitter"], d["part_scale"], d["part_contrast"], d["pose"]
    dh, ds, dv = rng.normal(0, 0.02 * cj), rng.uniform(1 - 0.15 * cj, 1 + 0.15 * cj), rng.uniform(1 - 0.15 * cj, 1 + 0.15 * cj)

    def col(rgb):  # individual plumage variation: one HSV shift for the whole bird
        h, s, v = colorsys.rgb_to_hsv(*(np.asarray(rgb) / 255))
        return tuple(_hsv(h + dh, s * ds, v * dv))

    pal = {k: col(v) for k, v in gen["palette"].items()}
    j = lambda x: x * rng.uniform(0.93, 1.07)  # noqa: E731 - individual shape variation
    A, B, R = j(gen["body_a"]), j(gen["body_b"]), j(gen["head_r"])
    head_ang = rng.normal(0, 0.25 * pose)
    tail_ang = rng.normal(0.15, 0.2 * pose)
    wing_ang = rng.normal(0, 0.12 * pose)
    polys: list[tuple[np.ndarray, tuple]] = []
    kp: dict[str, np.ndarray] = {}
    put = lambda p, c: polys.append((np.asarray(p, float), c))  # noqa: E731

    # legs (far leg first, darker), ending at the feet
    ll = j(gen["leg_len"])
    feet = {}
    for side, x0, shade in (("far", -0.08 * A, 0.75), ("near", 0.1 * A, 1.0)):
        top = np.array([x0, 0.8 * B])
        foot = top + _rot([0, ll], rng.normal(0, 0.15 * pose))
        c = tuple(np.asarray(pal["legs"]) * shade)
        put(_bar(top, foot, 0.035), c)
        put(_bar(foot + (-0.04, 0), foot + (0.07, 0), 0.025), c)
        feet[side] = foot

    # tail: a quad in tail coordinates (u along the tail, v across), rotated about its base
    base = np.array([-0.82 * A, -0.15 * B])
    L, w0, w1 = j(gen["tail_len"]), gen["tail_w0"], gen["tail_w1"]
    tail_pt = lambda u, v: _rot([[-u * L, v]], tail_ang)[0] + base  # noqa: E731
    wu = lambda u: w0 + (w1 - w0) * u  # noqa: E731
    put([tail_pt(0, -w0), tail_pt(1, -w1), tail_pt(1, w1), tail_pt(0, w0)], pal["tail"])
    if marks["tail"] != "plain":
        f = min(0.22 * ps, 0.9)
        put([tail_pt(1 - f, -wu(1 - f)), tail_pt(1, -w1), tail_pt(1, w1), tail_pt(1 - f, wu(1 - f))],
            _mix(pal["tail"], MARK["white" if marks["tail"] == "white_tip" else "rufous"], pc))
    kp["tail"] = tail_pt(0.6, 0)

    # body and light belly
    put(_ell((0, 0), A, B), pal["body"])
    put(_seg((0, 0), 1, 15, 165, 14) * (A * 0.97, B * 0.97), pal["belly"])
    kp["back"], kp["belly"] = np.array([-0.1 * A, -0.9 * B]), np.array([0.0, 0.75 * B])

    # breast markings on the front of the belly
    bc = np.array([0.5 * A, 0.45 * B])
    kp["breast"] = bc
    dark = _mix(pal["belly"], MARK["dark"], pc)
    if marks["breast"] == "streaked":
        for dx, dy in ((-0.12, -0.05), (0.0, -0.08), (0.12, -0.04), (-0.06, 0.06), (0.07, 0.05)):
            p = bc + np.array([dx * A, dy * 2 * B]) * ps
            put(_bar(p - (0.02 * ps, -0.035 * ps), p + (0.02 * ps, 0.035 * ps), 0.022 * ps), dark)
    elif marks["breast"] == "spotted":
        for dx, dy in ((-0.12, -0.05), (0.0, -0.08), (0.12, -0.04), (-0.06, 0.06), (0.07, 0.05)):
            put(_ell(bc + np.array([dx * A, dy * 2 * B]) * ps, 0.022 * ps, 0.022 * ps), dark)

    # near wing: a teardrop pointing back, rotated about the shoulder; bars across it
    shoulder = np.array([0.35 * A, -0.35 * B])
    wc, wa, wb = np.array([-0.12 * A, -0.1 * B]), 0.62 * A, 0.5 * B
    wing = _CIRCLE * (wa, wb)
    wing[:, 0] *= np.where(wing[:, 0] < 0, 1.35, 1.0)
    wing = _rot(wing, -0.12) + wc
    put(_rot(wing, wing_ang, shoulder), pal["wing"])
    bars = {"plain": [], "one_bar": [0.35], "two_bars": [0.2, 0.5]}[marks["wing"]]
    for u in bars:  # u: position from the front of the wing
        x = wa * (1 - 2 * u)
        hh = wb * np.sqrt(max(1 - (x / wa) ** 2, 0)) * 0.85
        bar = _rot(_bar((x, -hh), (x - 0.05, hh), 0.06 * ps), -0.12) + wc
        put(_rot(bar, wing_ang, shoulder), _mix(pal["wing"], MARK["white"], pc))
    kp["wing"] = _rot([wc], wing_ang, shoulder)[0]

    # head group (drawn in head coordinates, then rotated about the neck)
    hpolys: list[tuple[np.ndarray, tuple]] = []
    hk: dict[str, np.ndarray] = {}
    hput = lambda p, c: hpolys.append((np.asarray(p, float), c))  # noqa: E731
    hput(_ell((0, 0), R, R), pal["head"])
    if marks["crown"] != "plain":
        span = min(50 * ps, 85)
        hput(_seg((0, 0), R * 1.01, -100 - span, -100 + span), _mix(pal["head"], MARK[marks["crown"]], pc))
    if marks["throat"] != "plain":
        span = min(42 * ps, 80)
        hput(_seg((0, 0), R * 1.01, 70 - span, 70 + span), _mix(pal["head"], MARK[marks["throat"]], pc))
    eye = np.array([0.35 * R, -0.18 * R])
    white = _mix(pal["head"], MARK["white"], pc)
    if marks["eye"] == "ring":
        hput(_ell(eye, (0.17 + 0.15 * ps) * R, (0.17 + 0.15 * ps) * R), white)
    elif marks["eye"] == "brow":
        hput(_bar(eye + (-0.75 * R, -0.3 * R), eye + (0.35 * R, -0.33 * R), 0.16 * ps * R), white)
    hput(_ell(eye, 0.15 * R, 0.15 * R), (15, 12, 10))
    b0 = np.array([0.9 * R, 0.1 * R])
    bl, bw = {"short": (0.5, 0.3), "long": (1.15, 0.16), "hooked": (0.75, 0.24)}[marks["beak"]]
    bl *= R * ps ** 0.5
    bw *= R
    if marks["beak"] == "hooked":
        beak = [b0 + (0, -bw), b0 + (0.7 * bl, -0.6 * bw), b0 + (bl, 0.15 * bw), b0 + (0.85 * bl, 0.7 * bw),
                b0 + (0.55 * bl, 0.3 * bw), b0 + (0, bw)]
    else:
        beak = [b0 + (0, -bw), b0 + (bl, 0.15 * bw), b0 + (0, bw)]
    hput(_rot(beak, -0.1, b0), pal["beak"])
    hk["beak"] = b0 + (0.4 * bl, 0.0)
    hk["eye"] = eye
    for name, t, r in (("crown", -100, 0.85), ("forehead", -35, 0.85), ("nape", -165, 0.85), ("throat", 70, 0.75)):
        hk[name] = r * R * np.array([np.cos(np.radians(t)), np.sin(np.radians(t))])
    hc = np.array([gen["head_dx"] * A, -gen["head_dy"] * B])
    neck = np.array([0.55 * A, -0.45 * B])
    put(_bar(neck, hc, 1.3 * R), pal["head"])  # neck joining head and body
    polys += [(_rot(p + hc, head_ang, neck), c) for p, c in hpolys]
    kp.update({k: _rot([v + hc], head_ang, neck)[0] for k, v in hk.items()})
    kp["far leg"], kp["near leg"] = feet["far"], feet["near"]
    return polys, kp


# ----------------------------------------------------------------------------- rendering

def _ramp(n: int, t: float) -> np.ndarray:
    """(n, n) float32 linear ramp along direction t, in units of the image size."""
    x = np.arange(n, dtype=np.float32) / n
    return np.float32(np.cos(t)) * x[None, :] + np.float32(np.sin(t)) * x[:, None]


def _random_colour(rng) -> np.ndarray:
    return _hsv(rng.random(), rng.uniform(0.1, 0.6), rng.uniform(0.3, 0.9))


def _distractor(draw: ImageDraw.ImageDraw, rng, S: int, part_like: bool, palettes: list[dict]) -> None:
    """One clutter shape at a random place; part-like ones mimic the species markings."""
    c = rng.uniform(0, S, 2)
    r = S * rng.uniform(0.02, 0.1)
    if part_like:
        kind = rng.integers(6)
        col = tuple(int(x) for x in [MARK["red"], MARK["yellow"], MARK["white"], MARK["orange"],
                                     palettes[rng.integers(len(palettes))]["beak"], MARK["dark"]][kind])
        r = S * rng.uniform(0.015, 0.04)
        a = rng.uniform(0, 2 * np.pi)
        if kind in (0, 1, 3):     # cap / bib: a circular segment
            t = np.degrees(a)
            p = _seg(c, r * 1.6, t - 60, t + 60)
        elif kind == 2:           # white ring or bar
            if rng.random() < 0.5:
                draw.ellipse([*(c - r), *(c + r)], outline=col, width=max(1, int(r * 0.5)))
                return
            p = _bar(c, c + _rot([[r * 2.5, 0]], a)[0], r * 0.6)
        elif kind == 4:           # beak triangle
            p = _rot([[0, -r * 0.6], [r * 2.2, 0], [0, r * 0.6]], a) + c
        else:                     # dark spots / streaks
            for _ in range(3):
                q = c + rng.normal(0, r, 2)
                draw.ellipse([*(q - r * 0.35), *(q + r * 0.35)], fill=col)
            return
    else:
        kind = rng.integers(4)
        if kind == 0:             # leaf
            col = _hsv(rng.uniform(0.15, 0.4), rng.uniform(0.3, 0.8), rng.uniform(0.25, 0.7))
            p = _ell(c, r * 1.6, r * 0.6, rng.uniform(0, np.pi))
        elif kind == 1:           # twig
            col = _hsv(rng.uniform(0.05, 0.12), rng.uniform(0.3, 0.6), rng.uniform(0.2, 0.5))
            p = _bar(c, c + _rot([[r * 5, 0]], rng.uniform(0, 2 * np.pi))[0], r * 0.25)
        elif kind == 2:           # star-ish blob
            n = rng.integers(5, 9)
            t = np.sort(rng.uniform(0, 2 * np.pi, n))
            rr = r * rng.uniform(0.5, 1.3, n)
            p = c + np.stack([rr * np.cos(t), rr * np.sin(t)], 1)
            col = _random_colour(rng)
        else:                     # blob in some genus' colour (so colour alone is not the genus)
            pal = palettes[rng.integers(len(palettes))]
            col = np.asarray(pal[["body", "head", "wing", "belly"][rng.integers(4)]])
            p = _ell(c, r, r * rng.uniform(0.4, 1.0), rng.uniform(0, np.pi))
    draw.polygon(p.ravel().tolist(), fill=tuple(int(x) for x in col))


# ----------------------------------------------------------------------------- photo mode
# Everything here draws from its own Generator (see _photo_rng), never from the image's, so
# the version-1 draws -- and with them the bird -- are the same with or without photo mode.

def _photo_rng(rng: np.random.Generator) -> np.random.Generator:
    """A Generator for the photo-mode features, seeded (tag 4) from the state `rng` has on
    entry to render(), without drawing from it."""
    state = json.dumps(rng.bit_generator.state, sort_keys=True, default=lambda o: np.asarray(o).tolist())
    return np.random.default_rng([4, int.from_bytes(hashlib.sha256(state.encode()).digest()[:16], "little")])


def _noise(xr, S: int, kx: int, ky: int) -> np.ndarray:
    """(S, S) float32 smooth value noise in [0, 1]: a random (ky, kx)-cell grid upsampled
    bicubically from a random sub-cell offset (so octaves do not share grid lines)."""
    grid = xr.random((ky + 4, kx + 4), dtype=np.float32)
    ox, oy = xr.uniform(0.5, 1.5, 2)
    im = Image.fromarray(grid, "F").resize((S, S), Image.BICUBIC, box=(ox, oy, ox + kx + 1, oy + ky + 1))
    return np.asarray(im)


def _fbm(xr, S: int, k: float, octaves: int, persistence: float = 0.55, stretch: tuple = (1, 1)) -> np.ndarray:
    """Multi-octave (fractal) value noise, (S, S) float32 with mean 0.5 and std about 0.2,
    clipped to [0, 1]. `k`: cells across the image at the coarsest octave; each octave doubles
    them (up to about 1.5 px a cell); `stretch` multiplies the cells along (x, y), e.g. (8, 1)
    for vertical streaks. Built as a pyramid: each octave's grid is added to the upsampled sum
    of the coarser ones, and only the last is upsampled to S (from a random sub-cell offset)."""
    acc = None
    amp = 1.0
    for o in range(octaves):
        c = k * 2 ** o
        cx, cy = max(1, round(c * stretch[0])), max(1, round(c * stretch[1]))
        if acc is not None and max(cx, cy) > S / 1.5:
            break
        g = xr.random((cy + 4, cx + 4), dtype=np.float32) * np.float32(amp)
        if acc is not None:
            g += np.asarray(Image.fromarray(acc, "F").resize((cx + 4, cy + 4), Image.BILINEAR))
        acc, (kx, ky) = g, (cx, cy)
        amp *= persistence
    acc -= acc.mean()
    acc *= np.float32(0.2 / (acc.std() + 1e-6))
    acc += np.float32(0.5)
    ox, oy = xr.uniform(0.5, 1.5, 2)
    out = np.asarray(Image.fromarray(acc, "F").resize((S, S), Image.BICUBIC, box=(ox, oy, ox + kx + 1, oy + ky + 1)))
    return np.clip(out, 0, 1)


def _cmap(v: np.ndarray, stops) -> np.ndarray:
    """Map v in [0, 1] through equally spaced colour stops (K, 3): (..., 3) float32 (a
    256-entry lookup table)."""
    stops = np.asarray(stops, np.float32)
    x = np.linspace(0, len(stops) - 1, 256, dtype=np.float32)
    i = np.minimum(x.astype(np.int32), len(stops) - 2)
    f = (x - i)[:, None]
    lut = stops[i] * (1 - f) + stops[i + 1] * f
    return lut[(v * np.float32(255.99)).astype(np.uint8)]


def _smooth(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((v - np.float32(lo)) / np.float32(hi - lo), 0, 1)
    return (t * t * (3 - 2 * t))[..., None]


def _jit(xr, rgb, s: float = 0.12) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) * xr.uniform(1 - s, 1 + s, 3).astype(np.float32), 0, 255)


def _sky(xr, S: int) -> np.ndarray:
    top = _jit(xr, _hsv(xr.uniform(0.55, 0.62), xr.uniform(0.35, 0.6), xr.uniform(0.75, 0.92)), 0.05)
    low = _jit(xr, _hsv(xr.uniform(0.53, 0.6), xr.uniform(0.05, 0.2), xr.uniform(0.88, 0.97)), 0.03)
    y = np.linspace(0, 1, S, dtype=np.float32)[:, None, None] ** 0.8
    a = top * (1 - y) + low * y
    cloud = _smooth(_fbm(xr, S, 2, 6, 0.6, (1.6, 1)), xr.uniform(0.45, 0.6), 0.85)
    white = _jit(xr, (238, 240, 243), 0.04)
    shade = _fbm(xr, S, 4, 3)[..., None] * np.float32(0.35) + np.float32(0.8)
    return a * (1 - cloud) + white * shade * cloud


def _foliage(xr, S: int) -> np.ndarray:
    h = xr.uniform(0.17, 0.33)  # yellow-green .. blue-green
    stops = [_hsv(h + xr.uniform(-0.03, 0.03), xr.uniform(0.6, 0.9), xr.uniform(0.08, 0.18)),
             _hsv(h + xr.uniform(-0.03, 0.03), xr.uniform(0.55, 0.85), xr.uniform(0.25, 0.4)),
             _hsv(h - xr.uniform(0.0, 0.06), xr.uniform(0.5, 0.8), xr.uniform(0.45, 0.62)),
             _hsv(h - xr.uniform(0.03, 0.09), xr.uniform(0.35, 0.6), xr.uniform(0.65, 0.85))]
    a = _cmap(_fbm(xr, S, 3, 6, 0.65), stops)
    leaf = _fbm(xr, S, 10, 3, 0.5)  # blobby leaf masses, lit on one side
    a *= np.float32(0.65) + _smooth(leaf, 0.35, 0.7) * np.float32(0.6)
    if xr.random() < 0.6:  # holes of bright sky through the leaves
        hole = _smooth(_fbm(xr, S, 2.5, 4, 0.6), xr.uniform(0.68, 0.8), 0.92)
        a = a * (1 - hole) + _jit(xr, (215, 228, 235), 0.06) * hole
    return a


def _bark(xr, S: int) -> np.ndarray:
    base = _hsv(xr.uniform(0.05, 0.11), xr.uniform(0.15, 0.5), xr.uniform(0.25, 0.5))
    stops = [base * 0.35, base * 0.75, base, np.minimum(base * 1.35 + 20, 255)]
    v = _fbm(xr, S, 2, 6, 0.6, (6, 0.7))
    a = _cmap(v, stops)
    crack = _smooth(_fbm(xr, S, 3, 4, 0.5, (8, 0.6)), 0.28, 0.12)  # dark fissures where low
    a *= 1 - crack * np.float32(0.6)
    moss = _smooth(_fbm(xr, S, 3, 4), 0.65, 0.85) * np.float32(xr.uniform(0, 0.8))
    return a * (1 - moss) + _jit(xr, (95, 115, 45), 0.2) * moss


def _water(xr, S: int) -> np.ndarray:
    stops = [_hsv(xr.uniform(0.45, 0.6), xr.uniform(0.3, 0.7), xr.uniform(0.15, 0.3)),
             _hsv(xr.uniform(0.45, 0.6), xr.uniform(0.25, 0.6), xr.uniform(0.35, 0.55)),
             _hsv(xr.uniform(0.5, 0.6), xr.uniform(0.1, 0.35), xr.uniform(0.6, 0.8))]
    a = _cmap(_fbm(xr, S, 2, 6, 0.6, (1, 5)), stops)
    glint = _smooth(_fbm(xr, S, 4, 4, 0.6, (1, 6)), 0.72, 0.9)
    return a * (1 - glint) + _jit(xr, (230, 235, 235), 0.05) * glint


def _reeds(xr, S: int) -> np.ndarray:
    h = xr.uniform(0.1, 0.2)
    stops = [_hsv(h, 0.5, 0.2), _hsv(h, 0.55, 0.45), _hsv(h - 0.02, 0.45, 0.7)]
    a = _cmap(_fbm(xr, S, 3, 6, 0.6, (5, 0.5)), stops)
    img = Image.fromarray(a.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(xr.integers(40, 90))):  # blades and stems, leaning a little
        x0, y0 = xr.uniform(-0.1, 1.1) * S, xr.uniform(0.7, 1.2) * S
        ln, lean = xr.uniform(0.3, 1.0) * S, xr.normal(0, 0.25)
        c = _hsv(h + xr.uniform(-0.04, 0.08), xr.uniform(0.3, 0.7), xr.uniform(0.2, 0.8))
        draw.line([x0, y0, x0 + lean * ln, y0 - ln], fill=tuple(int(x) for x in c),
                  width=max(1, int(S * xr.uniform(0.004, 0.012))))
    return np.asarray(img, np.float32)


_SCENES = (_foliage, _bark, _sky, _water, _reeds)


def _scene(xr, n: int, S: int) -> Image.Image:
    """A photo-like S x S background: a natural texture (made at the output size n and
    upsampled), sometimes a second one behind a tree trunk or a horizon, then branches."""
    kind = int(xr.choice(5, p=[0.4, 0.15, 0.15, 0.15, 0.15]))
    a = _SCENES[kind](xr, n)
    r = xr.random()
    if kind != 1 and r < 0.3:  # a tree trunk across the scene
        xc, w, tilt = xr.uniform(0.1, 0.9) * n, xr.uniform(0.15, 0.45) * n, xr.normal(0, 0.25)
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
        edge = (_noise(xr, n, 1, 12)[..., None] - 0.5) * np.float32(0.08 * n)
        d = np.abs(xx[..., None] - (xc + tilt * (yy[..., None] - n / 2)) + edge)
        m = np.clip((w / 2 - d) / np.float32(0.01 * n + 1), 0, 1)
        a = a * (1 - m) + _bark(xr, n) * m
    elif kind in (2, 0) and r < 0.45:  # a horizon: the lower part foliage / water / reeds
        y0 = xr.uniform(0.4, 0.8) * n
        edge = (_noise(xr, n, 10, 1)[..., None] - 0.5) * np.float32(0.1 * n)
        yy = np.arange(n, dtype=np.float32)[:, None, None]
        m = np.clip((yy - y0 + edge) / np.float32(0.01 * n + 1), 0, 1)
        a = a * (1 - m) + _SCENES[int(xr.choice([0, 3, 4]))](xr, n) * m
    img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).resize((S, S), Image.BILINEAR)
    if xr.random() < 0.7:
        draw = ImageDraw.Draw(img)
        for _ in range(int(xr.integers(1, 4))):
            _branch(draw, xr, S)
    return img


def _branch(draw: ImageDraw.ImageDraw, xr, S: int) -> None:
    """A crooked branch across the image with a few twigs."""
    col = _hsv(xr.uniform(0.04, 0.11), xr.uniform(0.2, 0.55), xr.uniform(0.12, 0.45))
    a = xr.uniform(0, np.pi)
    d = np.array([np.cos(a), np.sin(a)])
    c = xr.uniform(0.1, 0.9, 2) * S
    n = 7
    t = np.linspace(-0.9, 0.9, n)[:, None] * S
    pts = c + t * d + xr.normal(0, 0.025 * S, (n, 2))
    w = S * xr.uniform(0.01, 0.03)
    for i in range(n - 1):
        ww = max(1, int(w * (1 - 0.4 * i / n)))
        draw.line([*pts[i], *pts[i + 1]], fill=tuple(int(x) for x in col), width=ww)
        draw.ellipse([*(pts[i + 1] - ww / 2), *(pts[i + 1] + ww / 2)], fill=tuple(int(x) for x in col))
        if xr.random() < 0.35:  # a twig
            b = a + xr.choice([-1, 1]) * xr.uniform(0.4, 1.1)
            end = pts[i] + np.array([np.cos(b), np.sin(b)]) * S * xr.uniform(0.08, 0.25)
            draw.line([*pts[i], *end], fill=tuple(int(x) for x in col), width=max(1, int(ww * 0.4)))


def _dapple(xr, n: int, k: float) -> np.ndarray:
    """(n, n, 3) light factor of natural light: patches of sun and shade (leaf shadows) and a
    warm or cool tint, of strength k."""
    f = _fbm(xr, n, xr.uniform(1.5, 3.0), 4, 0.55)
    sun = np.clip((f - np.float32(0.5)) * np.float32(3.0), -1, 1)
    tint = 1 + np.float32(k * 0.08 * xr.uniform(-1, 1)) * np.array([1, 0.2, -1], np.float32)
    return (1 + np.float32(0.45 * k) * sun)[..., None] * tint


DECOY_KINDS = ("head", "cap", "ring", "bars", "bib", "spots", "beak", "berries", "tail_tip", "bird")


def _decoy_part(draw: ImageDraw.ImageDraw, xr, c: np.ndarray, r: float, palettes: list[dict]) -> tuple[str, np.ndarray]:
    """One large bird-part look-alike around `c` (size about `r`); returns its kind and points."""
    kind = DECOY_KINDS[int(xr.integers(9))]
    pal = {k: _jit(xr, v, 0.1) for k, v in palettes[int(xr.integers(len(palettes)))].items()}
    a = xr.uniform(0, 2 * np.pi)
    R = lambda p: _rot(np.asarray(p, float), a) + c  # noqa: E731
    shapes: list[tuple[np.ndarray, Any]] = []
    put = lambda p, col: shapes.append((np.asarray(p, float), col))  # noqa: E731
    mark = lambda *names: MARK[names[int(xr.integers(len(names)))]]  # noqa: E731
    if kind == "head":  # a whole head: crown, eye ring or brow, beak
        put(R(_ell((0, 0), r, r)), pal["head"])
        if xr.random() < 0.8:
            put(R(_seg((0, 0), r * 1.01, -150, -50)), mark("red", "yellow"))
        if xr.random() < 0.5:
            put(R(_seg((0, 0), r * 1.01, 30, 110)), mark("white", "orange"))
        eye = np.array([0.35 * r, -0.18 * r])
        if xr.random() < 0.5:
            put(R(_ell(eye, 0.32 * r, 0.32 * r)), MARK["white"])
        else:
            put(R(_bar(eye + (-0.75 * r, -0.3 * r), eye + (0.35 * r, -0.33 * r), 0.16 * r)), MARK["white"])
        put(R(_ell(eye, 0.15 * r, 0.15 * r)), (15, 12, 10))
        put(R([(0.9 * r, -0.25 * r), (1.8 * r, 0.05 * r), (0.9 * r, 0.3 * r)]), pal["beak"])
    elif kind == "cap":
        put(R(_seg((0, 0), r * 1.2, -60, 60)), mark("red", "yellow"))
    elif kind == "bib":
        put(R(_seg((0, 0), r * 1.2, -55, 55)), mark("orange", "white", "rufous"))
    elif kind == "ring":
        put(R(_ell((0, 0), r * 0.75, r * 0.75)), MARK["white"])
        put(R(_ell((0, 0), r * 0.4, r * 0.4)), pal["head"] * 0.4)
    elif kind == "bars":  # a wing with one or two white bars
        wing = _CIRCLE * (r * 1.4, r * 0.8)
        wing[:, 0] *= np.where(wing[:, 0] < 0, 1.35, 1.0)
        put(R(wing), pal["wing"])
        for u in ([0.35] if xr.random() < 0.5 else [0.2, 0.5]):
            x = 1.4 * r * (1 - 2 * u)
            hh = 0.8 * r * np.sqrt(max(1 - (x / (1.4 * r)) ** 2, 0)) * 0.85
            put(R(_bar((x, -hh), (x - 0.1 * r, hh), 0.15 * r)), MARK["white"])
    elif kind == "spots":  # a pale breast with spots or streaks
        put(R(_ell((0, 0), r * 1.1, r * 0.8)), pal["belly"])
        for _ in range(int(xr.integers(4, 8))):
            q = xr.uniform(-0.6, 0.6, 2) * r
            spot = xr.random() < 0.5
            p = _ell(q, 0.12 * r, 0.12 * r) if spot else _bar(q - (0, 0.15 * r), q + (0, 0.15 * r), 0.1 * r)
            put(R(p), MARK["dark"])
    elif kind == "beak":
        put(R([(0, -0.45 * r), (2.2 * r, 0.05 * r), (0, 0.45 * r)]), pal["beak"])
    elif kind == "berries":  # red / orange / yellow berries on a stalk: a natural look-alike
        col = mark("red", "orange", "yellow")
        put(R(_bar((0, 0), (1.8 * r, 0), 0.08 * r)), (70, 60, 35))
        for _ in range(int(xr.integers(3, 9))):
            q = np.array([xr.uniform(0, 1.6) * r, xr.normal(0, 0.35 * r)])
            br = r * xr.uniform(0.18, 0.3)
            put(R(_ell(q, br, br)), np.asarray(col) * xr.uniform(0.75, 1.05))
    else:  # tail tip: a tail with a white or rufous end
        q = [(0, -0.35 * r), (2.0 * r, -0.55 * r), (2.0 * r, 0.55 * r), (0, 0.35 * r)]
        put(R(q), pal["tail"])
        put(R([(1.5 * r, -0.5 * r), (2.0 * r, -0.55 * r), (2.0 * r, 0.55 * r), (1.5 * r, 0.5 * r)]),
            mark("white", "rufous"))
    for p, col in shapes:
        draw.polygon(p.ravel().tolist(), fill=tuple(int(np.clip(x, 0, 255)) for x in col))
    return kind, np.concatenate([p for p, _ in shapes])


def _decoy_bird(draw: ImageDraw.ImageDraw, xr, c: np.ndarray, length: float, genus: dict,
                palettes: list[dict], d: dict) -> np.ndarray:
    """A whole small bird of the main bird's build in another genus' colours, with random
    markings, centred at `c` and `length` long; returns its points."""
    own = genus["palette"]
    others = [p for p in palettes if p != own]
    if others:
        pal = others[int(xr.integers(len(others)))]
    else:  # a single genus: its colours with the hue turned half way round
        pal = {}
        for k, v in own.items():
            h, s_, v_ = colorsys.rgb_to_hsv(*(np.asarray(v) / 255))
            pal[k] = _hsv(h + 0.5, s_, v_).round().tolist() if k not in ("beak", "legs") else v
    gen = {**genus, "palette": pal}
    marks = {k: v[int(xr.integers(3))] for k, v in ATTRIBUTES.items()}
    polys, _ = _bird(gen, marks, d, xr)
    allp = np.concatenate([p for p, _ in polys])
    sx = np.array([-1.0 if xr.random() < 0.5 else 1.0, 1.0])
    ang = np.radians(xr.uniform(-40, 40))
    scale = length / np.ptp(allp[:, 0])
    q = _rot(allp * sx, ang) * scale
    q += c - (q.min(0) + q.max(0)) / 2
    ends = np.cumsum([len(p) for p, _ in polys])[:-1]
    for p, (_, col) in zip(np.split(q, ends), polys):
        draw.polygon(p.ravel().tolist(), fill=tuple(int(round(x)) for x in col))
    return q


def _decoys(img: Image.Image, xr, S: int, box: tuple[np.ndarray, np.ndarray], genus: dict,
            palettes: list[dict], d: dict, blur: float) -> tuple[Image.Image, list[tuple]]:
    """Decoys behind the bird, then depth of field: the background layer is blurred by up to
    `blur` (canvas px), over all of it or only towards one side, and the decoys that sit in the
    focal plane are drawn sharp on top. Returns the image and the decoys (kind, x, y, w, h)."""
    n_birds, n_parts = int(xr.poisson(d["decoy_birds"])), int(xr.poisson(d["decoys"]))
    lo, hi = box
    todo = [("bird", xr.random() < 0.35) for _ in range(n_birds)] + \
           [("part", xr.random() < 0.5) for _ in range(n_parts)]
    out: list[tuple] = []

    def place(sharp_pass: bool, draw: ImageDraw.ImageDraw) -> None:
        for (what, sharp), seed in zip(todo, seeds):
            if sharp != sharp_pass:
                continue
            r = np.random.default_rng(seed)
            for _ in range(8):  # mostly beside the bird, where a crop would compete with it
                c = r.uniform(0.04, 0.96, 2) * S
                if not np.all((c > lo) & (c < hi)):
                    break
            if what == "bird":
                pts = _decoy_bird(draw, r, c, S * r.uniform(0.2, 0.42), genus, palettes, d)
                kind = "bird"
            else:
                kind, pts = _decoy_part(draw, r, c, S * r.uniform(0.04, 0.08), palettes)
            a, b = np.clip(pts.min(0), 0, S) / SUPERSAMPLE, np.clip(pts.max(0), 0, S) / SUPERSAMPLE
            out.append((kind, float(a[0]), float(a[1]), float(b[0] - a[0]), float(b[1] - a[1])))

    seeds = xr.integers(2 ** 63, size=len(todo))
    place(False, ImageDraw.Draw(img))
    if blur > 0:
        rad = blur * xr.uniform(0.4, 1.0)
        soft = img.reduce(2).filter(ImageFilter.GaussianBlur(rad / 2)).resize((S, S), Image.BILINEAR)
        if xr.random() < 0.4:  # partly in focus: sharp towards one side, soft towards the other
            ramp = _ramp(S, xr.uniform(0, 2 * np.pi))
            ramp = np.clip((ramp - ramp.min()) / (np.ptp(ramp) + 1e-9) * 2.5 - 0.6, 0, 1)
            img = Image.composite(soft, img, Image.fromarray((ramp * 255).astype(np.uint8)))
        else:
            img = soft
    place(True, ImageDraw.Draw(img))
    return img, out


def render(cls: dict, genus: dict, palettes: list[dict], rng: np.random.Generator,
           image_size: int = 96, **difficulty: float) -> Rendered:
    """Draw one image of class `cls` (from class_definitions) with its ground truth."""
    d = {**DEFAULT_DIFFICULTY, **difficulty}
    S = image_size * SUPERSAMPLE
    photo = any(d[k] != DEFAULT_DIFFICULTY[k] for k in ADDED_KNOBS)
    xr = _photo_rng(rng) if photo else None  # photo mode's own stream; rng's draws stay those of v1
    # background: a two-colour linear gradient
    c0, c1 = _random_colour(rng), _random_colour(rng)
    g = _ramp(16, rng.uniform(0, 2 * np.pi))
    g = (g - g.min()) / (np.ptp(g) + 1e-9)
    img = Image.fromarray((c0 + (c1 - c0) * g[..., None]).astype(np.uint8)).resize((S, S), Image.BILINEAR)
    if d["background"] > 0:  # photo-like scene instead of (or blended into) the gradient
        scene = _scene(xr, image_size, S)
        img = scene if d["background"] >= 1 else Image.blend(img, scene, float(d["background"]))
    draw = ImageDraw.Draw(img)

    # bird geometry: flip, rotate, scale to the drawn size, then place fully inside the image
    polys, kp = _bird(genus, cls["markings"], d, rng)
    flip = rng.random() < d["flip"]
    ang = np.radians(rng.uniform(-d["rotation"], d["rotation"]))
    frac = rng.uniform(d["scale_min"], d["scale_max"])
    allp = np.concatenate([p for p, _ in polys])
    sx = np.array([-1.0 if flip else 1.0, 1.0])
    M = lambda p: _rot(np.asarray(p) * sx, ang)  # noqa: E731
    scale = frac * S / np.ptp(allp[:, 0])
    q = M(allp) * scale
    margin = 0.02 * S
    scale *= min(1.0, (S - 2 * margin) / np.ptp(q, 0).max())  # shrink if it would not fit
    q = M(allp) * scale
    lo, hi = q.min(0), q.max(0)
    off = rng.uniform(margin - lo, np.maximum(S - margin - hi, margin - lo + 1e-6))
    T = lambda p: M(p) * scale + off  # noqa: E731

    for _ in range(rng.poisson(10 * d["clutter"])):
        _distractor(draw, rng, S, rng.random() < d["part_distractors"], palettes)
    decoys: list[tuple] = []
    if photo:
        img, decoys = _decoys(img, xr, S, (lo + off, hi + off), genus, palettes, d, d["background_blur"] * S)
        draw = ImageDraw.Draw(img)
    if rng.random() < 0.6:  # a perch under the feet
        feet = T([kp["near leg"], kp["far leg"]]).mean(0) + (0, 0.01 * S)
        a = ang + rng.normal(0, 0.2)
        dirv = np.array([np.cos(a), np.sin(a)]) * S * 1.5
        draw.polygon(_bar(feet - dirv, feet + dirv, S * rng.uniform(0.02, 0.04)).ravel().tolist(),
                     fill=tuple(int(x) for x in _hsv(rng.uniform(0.05, 0.1), 0.5, rng.uniform(0.2, 0.45))))
    ends = np.cumsum([len(p) for p, _ in polys])[:-1]
    for p, (_, c) in zip(np.split(q + off, ends), polys):
        draw.polygon(p.ravel().tolist(), fill=tuple(int(round(x)) for x in c))

    # foreground occluders: leaves or a twig over part of the bird
    mask = None
    if rng.random() < d["occlusion"]:
        mask = Image.new("L", (S, S), 0)
        mdraw = ImageDraw.Draw(mask)
        for _ in range(rng.integers(1, 3)):
            c = rng.uniform(lo + off, hi + off)
            r = (hi - lo).mean() * rng.uniform(0.1, 0.22)
            if rng.random() < 0.7:
                p = _ell(c, r * 1.5, r * 0.7, rng.uniform(0, np.pi))
                col = _hsv(rng.uniform(0.15, 0.4), rng.uniform(0.4, 0.8), rng.uniform(0.25, 0.6))
            else:
                p = _bar(c, c + _rot([[r * 6, 0]], rng.uniform(0, 2 * np.pi))[0], r * 0.35)
                col = _hsv(rng.uniform(0.05, 0.1), 0.5, rng.uniform(0.2, 0.45))
            draw.polygon(p.ravel().tolist(), fill=tuple(int(x) for x in col))
            mdraw.polygon(p.ravel().tolist(), fill=255)

    # downsample, then camera / lighting jitter and noise
    img = img.reduce(SUPERSAMPLE)
    cj = d["color_jitter"]
    n = image_size
    a = np.asarray(img, dtype=np.float32) * np.float32(1 / 255)
    gain = rng.normal(1, 0.06 * cj, 3) * rng.uniform(1 - 0.25 * cj, 1 + 0.25 * cj)
    contrast = rng.uniform(1 - 0.25 * cj, 1 + 0.15 * cj)
    ramp = _ramp(n, rng.uniform(0, 2 * np.pi))
    light = 1 + rng.uniform(0, 0.35 * cj) * (ramp - ramp.mean())  # (n, n)
    mean = a.mean()
    lit = light[..., None]
    if photo and d["dapple"] > 0:
        lit = lit * _dapple(xr, n, float(d["dapple"]))
    a = ((a - mean) * np.float32(contrast) + mean) * gain.astype(np.float32) * lit
    a += rng.standard_normal(a.shape, dtype=np.float32) * np.float32(d["noise"])
    img = Image.fromarray((np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8))

    # ground truth in output pixels
    box_lo, box_hi = np.clip((lo + off) / SUPERSAMPLE, 0, n), np.clip((hi + off) / SUPERSAMPLE, 0, n)
    box = (float(box_lo[0]), float(box_lo[1]), float(box_hi[0] - box_lo[0]), float(box_hi[1] - box_lo[1]))
    near, far = ("left", "right") if flip else ("right", "left")
    named = {k: v for k, v in kp.items() if k not in ("eye", "wing", "near leg", "far leg")}
    named.update({f"{near} eye": kp["eye"], f"{near} wing": kp["wing"],
                  f"{near} leg": kp["near leg"], f"{far} leg": kp["far leg"]})
    xy = dict(zip(named, T(list(named.values()))))  # canvas pixels
    marr = np.asarray(mask) if mask is not None else None
    parts = []
    for name in PARTS:
        p = xy.get(name)
        ix, iy = np.clip(p.astype(int), 0, S - 1) if p is not None else (0, 0)
        if p is None or (marr is not None and marr[iy, ix]):
            parts.append((0.0, 0.0, 0))  # far side, or under an occluder
        else:
            parts.append((float(p[0] / SUPERSAMPLE), float(p[1] / SUPERSAMPLE), 1))
    return Rendered(img, box, parts, tuple(decoys))


# ----------------------------------------------------------------------------- writing

def _definitions(sp: dict) -> tuple[list[dict], list[dict]]:
    d = sp["difficulty"]
    classes = class_definitions(sp["seed"], sp["n_genera"], sp["species_per_genus"],
                                int(d["min_part_diff"]), int(d["max_part_diff"]))
    return classes, [genus_definition(sp["seed"], g) for g in range(sp["n_genera"])]


def renderer(seed: int = 0, **size: Any) -> Callable[[int, np.random.Generator], Rendered]:
    """`renderer(seed, **size)(class_index, rng)` draws a fresh image of a class (e.g. new
    training images every epoch); the classes are those of the set `spec(seed, **size)`."""
    sp = spec(seed, **size)
    classes, genera = _definitions(sp)
    palettes = [g["palette"] for g in genera]

    def draw(class_index: int, rng: np.random.Generator) -> Rendered:
        cls = classes[class_index]
        return render(cls, genera[cls["genus"]], palettes, rng, sp["image_size"], **sp["difficulty"])
    return draw


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str):
    """A progress bar of `total` images (tqdm, on stderr; TQDM_DISABLE=1 turns it off)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # a bare machine may lack tqdm
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="img", leave=True)


def _write_set(out: Path, sp: dict, desc: str = "SynthBirds") -> str:
    """Write every file of the set `sp` into `out`; return the content hash. `desc`: the
    label of the progress bar."""
    classes, genera = _definitions(sp)
    n_val = sp.get(VAL_KEY, 0)
    bar = _progress(len(classes) * (sp["train_per_class"] + sp["test_per_class"] + n_val), desc)
    draw = renderer(sp["seed"], difficulty=sp["difficulty"],
                    **{k: sp[k] for k in DEFAULT_SIZE})
    files: dict[str, str] = {}  # relpath -> sha256 of content

    def put(rel: str, data: bytes) -> None:
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        files[rel] = hashlib.sha256(data).hexdigest()

    images, labels, split, boxes, locs, decoys, val = [], [], [], [], [], [], []
    image_id = 0
    for ci, cls in enumerate(classes):
        folder = f"{ci + 1:03d}.{cls['name']}"
        # split code: 1 train, 0 test, 2 validation (the seed's 4th entry; CUB's is_train for 0/1)
        for code, name, count in ((1, "train", sp["train_per_class"]), (0, "test", sp["test_per_class"]),
                                  (2, "val", n_val)):
            for k in range(count):
                image_id += 1
                rng = np.random.default_rng([sp["seed"], 2, ci, code, k])
                s = draw(ci, rng)
                buf = io.BytesIO()
                s.image.save(buf, "JPEG", quality=JPEG_QUALITY, subsampling=0)
                rel = f"{folder}/{cls['name']}_{name}_{k:04d}.jpg"
                put(f"images/{rel}", buf.getvalue())
                images.append(f"{image_id} {rel}")
                labels.append(f"{image_id} {ci + 1}")
                split.append(f"{image_id} {int(code != 0)}")
                if code == 2:
                    val.append(str(image_id))
                boxes.append(f"{image_id} " + " ".join(f"{v:.1f}" for v in s.box))
                locs += [f"{image_id} {p + 1} {x:.1f} {y:.1f} {v}" for p, (x, y, v) in enumerate(s.parts)]
                decoys += [f"{image_id} {kind} {x:.1f} {y:.1f} {w:.1f} {h:.1f}" for kind, x, y, w, h in s.decoys]
                bar.update(1)
    bar.close()
    text = lambda rows: ("\n".join(rows) + "\n").encode()  # noqa: E731
    put("images.txt", text(images))
    put("image_class_labels.txt", text(labels))
    put("train_test_split.txt", text(split))
    if val:
        put(VAL_FILE, text(val))
    put("classes.txt", text([f"{i + 1} {i + 1:03d}.{c['name']}" for i, c in enumerate(classes)]))
    put("bounding_boxes.txt", text(boxes))
    put("parts/parts.txt", text([f"{i + 1} {n}" for i, n in enumerate(PARTS)]))
    put("parts/part_locs.txt", text(locs))
    if sp["difficulty"].get("decoys", 0) > 0 or sp["difficulty"].get("decoy_birds", 0) > 0:
        put("decoy_boxes.txt", text(decoys))  # photo mode only: a v1 set has no such file
    h = _hash(files)
    meta = {"name": "SynthBirds", "spec": sp, "content_sha256": h, "n_classes": len(classes),
            "n_images": image_id, "parts": list(PARTS), "attributes": {k: list(v) for k, v in ATTRIBUTES.items()},
            "attribute_keypoints": ATTRIBUTE_KEYPOINTS, "jpeg_quality": JPEG_QUALITY,
            "genera": genera, "classes": classes}
    (out / META_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return h


def _hash(files: Mapping[str, str]) -> str:
    return hashlib.sha256("".join(f"{k}\0{files[k]}\n" for k in sorted(files)).encode()).hexdigest()


def content_hash(root: str | os.PathLike) -> str:
    """Recompute the content hash of a set on disk (all files but synthbirds.json)."""
    root = Path(root)
    files = {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in root.rglob("*") if p.is_file() and p.name != META_FILE}
    return _hash(files)


def read_meta(root: str | os.PathLike) -> dict | None:
    """The synthbirds.json of `root`, or None if there is none (or it is unreadable)."""
    try:
        return json.loads((Path(root) / META_FILE).read_text())
    except (OSError, ValueError):
        return None


def _install(tmp: Path, root: Path, sp: dict, force: bool) -> None:
    """Move the finished set `tmp` to `root`; if another process won the race, keep theirs."""
    for _ in range(100):
        try:
            os.rename(tmp, root)  # atomic; succeeds if root is missing or an empty directory
            return
        except OSError:
            if not root.exists():
                continue
            meta = read_meta(root)
            if meta is None and any(root.iterdir()):
                shutil.rmtree(tmp, ignore_errors=True)
                raise FileExistsError(f"{root} exists and is not a SynthBirds set (no {META_FILE}); "
                                      "refusing to overwrite it. Remove it or choose another root.")
            if meta is not None and meta.get("spec") == sp and not force:
                shutil.rmtree(tmp, ignore_errors=True)
                return
            force = False  # replace what is there once; a concurrent equal set is then kept
            trash = root.with_name(f".{root.name}.old-{uuid.uuid4().hex[:8]}")
            try:
                os.rename(root, trash)
            except FileNotFoundError:
                continue
            shutil.rmtree(trash, ignore_errors=True)
    raise OSError(f"could not move the generated set {tmp} to {root}")


def generate(root: str | os.PathLike, seed: int = 0, n_genera: int = 4, species_per_genus: int = 4,
             train_per_class: int = 150, test_per_class: int = 50, image_size: int = 96,
             difficulty: Mapping[str, float] | None = None, val_per_class: int = 0,
             **difficulty_kw: float) -> Path:
    """Write the whole set into `root` (replacing a SynthBirds set already there); return root.

    Written into a temporary directory beside `root` and renamed into place, so `root` is
    never half-written. Difficulty knobs: ``difficulty={...}`` or keyword arguments.
    """
    sp = spec(seed, difficulty=difficulty, n_genera=n_genera, species_per_genus=species_per_genus,
              train_per_class=train_per_class, test_per_class=test_per_class, image_size=image_size,
              val_per_class=val_per_class, **difficulty_kw)
    return _build(Path(root), sp, force=True)


def _build(root: Path, sp: dict, force: bool) -> Path:
    root = root.expanduser().absolute()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes 0700; the set is shared like any dataset
    try:
        _write_set(tmp, sp, desc=f"generating SynthBirds {root.name} (once, kept in {root.parent})")
        _install(tmp, root, sp, force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def ensure(root: str | os.PathLike, seed: int = 0, **size: Any) -> Path:
    """Generate the set into `root` unless it already holds exactly this spec; return root.

    ``size`` takes the size keys (n_genera, species_per_genus, train_per_class,
    test_per_class, image_size), difficulty knobs, or ``difficulty={...}``. Safe when two
    processes call it at once.
    """
    sp = spec(seed, **size)
    root = Path(root)
    meta = read_meta(root)
    if meta is not None and meta.get("spec") == sp:
        return root
    return _build(root, sp, force=False)


def genus_of(root: str | os.PathLike) -> list[int]:
    """Per class index (0-based, the order of classes.txt), the genus index."""
    meta = read_meta(root)
    if meta is None:
        raise FileNotFoundError(f"{Path(root) / META_FILE} not found: not a SynthBirds root "
                                "(create one with fgvc.data.synthbirds.ensure(root)).")
    return [c["genus"] for c in meta["classes"]]


# --------------------------------------------------------------------------- the dataset

def default_root(synth: dict | None = None) -> Path:
    """Default root of a SynthBirds set: ``data/synthbirds/<spec>``, one folder per generator
    spec ("default" for the default one), so runs with different sizes never share a folder."""
    from fgvc.paths import data_dir

    sp = spec(**dict(synth or {}))
    name = "default" if sp == spec() else \
        "spec-" + hashlib.sha256(json.dumps(sp, sort_keys=True).encode()).hexdigest()[:10]
    return data_dir() / "synthbirds" / name


def load_synthbirds(root: str | os.PathLike, seed: int = 0, **size_kwargs) -> Split:
    """Generate SynthBirds in CUB layout under `root` if absent, then read it with the CUB loader
    (which takes each class's genus from the set's synthbirds.json: fgvc.data.cub.synthbirds_genera)."""
    from fgvc.data.cub import load_cub

    return load_cub(ensure(root, seed=seed, **size_kwargs))


def _load(root: Path, synth: dict | None = None, **options) -> Split:
    return load_synthbirds(root, **(synth or {}))


def _inspect(root: Path) -> Split:
    """``check synthbirds`` reads what is on disk; it never generates."""
    from fgvc.data.base import DatasetNotFound
    from fgvc.data.cub import load_cub

    try:
        return load_cub(root)
    except DatasetNotFound as e:
        raise DatasetNotFound(f"{e}\nSynthBirds is generated, not downloaded: "
                              f"`python -m fgvc.data generate synthbirds --root {root}`") from None


def _register() -> None:
    from fgvc.data.registry import DatasetInfo, register_dataset

    register_dataset(DatasetInfo(
        name="synthbirds", title="SynthBirds", load=_load, paper="cub", order=10, root=default_root,
        inspect=_inspect, generate=ensure,
        how_to_get="generate it with `python -m fgvc.data generate synthbirds`"))


_register()
