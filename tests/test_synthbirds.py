"""SynthBirds: determinism, CUB layout consistency, class design, ensure() caching and races."""
from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from fgvc.data import synthbirds as sb

TINY = dict(n_genera=2, species_per_genus=3, train_per_class=5, test_per_class=2, image_size=48)


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + b"\0" + hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def rows(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return sb.generate(tmp_path_factory.mktemp("sb") / "tiny", seed=0, **TINY)


def test_same_seed_is_byte_identical_and_other_seed_differs(tiny, tmp_path):
    again = sb.generate(tmp_path / "again", seed=0, **TINY)
    assert tree_hash(again) == tree_hash(tiny)
    meta = sb.read_meta(tiny)
    assert meta["content_sha256"] == sb.content_hash(tiny)
    other = sb.generate(tmp_path / "other", seed=1, **TINY)
    assert sb.content_hash(other) != sb.content_hash(tiny)
    assert sb.read_meta(other)["spec"]["seed"] == 1


def test_more_images_keep_the_existing_ones(tiny, tmp_path):
    """Per-image seeding: a larger train set leaves the test images (and first train images) unchanged."""
    big = sb.generate(tmp_path / "big", seed=0, **{**TINY, "train_per_class": 7})
    for rel in ["001.Finch_A/Finch_A_test_0001.jpg", "001.Finch_A/Finch_A_train_0004.jpg"]:
        assert (big / "images" / rel).read_bytes() == (tiny / "images" / rel).read_bytes()


def test_cub_layout_is_consistent(tiny):
    check_cub_layout(tiny)


def check_cub_layout(tiny: Path) -> None:
    n_cls = TINY["n_genera"] * TINY["species_per_genus"]
    n_img = n_cls * (TINY["train_per_class"] + TINY["test_per_class"])
    size = TINY["image_size"]
    images = rows(tiny / "images.txt")
    assert [int(i) for i, _ in images] == list(range(1, n_img + 1))
    for _, rel in images:
        assert (tiny / "images" / rel).is_file()
    classes = rows(tiny / "classes.txt")
    assert [int(c) for c, _ in classes] == list(range(1, n_cls + 1))
    for c, name in classes:
        assert name.startswith(f"{int(c):03d}.")
    labels = {int(i): int(c) for i, c in rows(tiny / "image_class_labels.txt")}
    split = {int(i): int(t) for i, t in rows(tiny / "train_test_split.txt")}
    assert Counter(labels.values()) == {c: n_img // n_cls for c in range(1, n_cls + 1)}
    assert Counter((labels[i], split[i]) for i in labels) == {
        **{(c, 1): TINY["train_per_class"] for c in range(1, n_cls + 1)},
        **{(c, 0): TINY["test_per_class"] for c in range(1, n_cls + 1)}}
    for i, rel in images:  # the folder of an image is its class
        assert rel.split("/")[0] == classes[labels[int(i)] - 1][1]

    boxes = {int(r[0]): tuple(map(float, r[1:])) for r in rows(tiny / "bounding_boxes.txt")}
    assert sorted(boxes) == list(range(1, n_img + 1))
    for x, y, w, h in boxes.values():
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= size + 0.1 and y + h <= size + 0.1

    parts = rows(tiny / "parts" / "parts.txt")
    assert [(int(p), " ".join(n)) for p, *n in parts] == list(enumerate(sb.PARTS, 1))
    locs = rows(tiny / "parts" / "part_locs.txt")
    assert len(locs) == n_img * len(sb.PARTS)
    by_image: dict[int, dict[str, tuple]] = {}
    for i, p, x, y, v in locs:
        by_image.setdefault(int(i), {})[sb.PARTS[int(p) - 1]] = (float(x), float(y), int(v))
    n_visible = 0
    for i, kp in by_image.items():
        assert len(kp) == len(sb.PARTS)
        bx, by, bw, bh = boxes[i]
        for x, y, v in kp.values():
            assert v in (0, 1)
            if v:
                n_visible += 1
                assert bx - 0.1 <= x <= bx + bw + 0.1 and by - 0.1 <= y <= by + bh + 0.1
            else:
                assert (x, y) == (0.0, 0.0)
        # a side view: the far eye and far wing are never visible
        assert not (kp["left eye"][2] and kp["right eye"][2])
        assert not (kp["left wing"][2] and kp["right wing"][2])
    assert n_visible > 0.5 * n_img * 10


def test_metadata(tiny):
    meta = sb.read_meta(tiny)
    assert meta["spec"] == sb.spec(0, **TINY)
    assert meta["spec"]["generator_version"] == sb.GENERATOR_VERSION
    assert sb.genus_of(tiny) == [g for g in range(TINY["n_genera"]) for _ in range(TINY["species_per_genus"])]
    for c in meta["classes"]:
        assert set(c["discriminative_parts"]) <= set(sb.ATTRIBUTES)
        assert set(c["discriminative_keypoints"]) <= set(sb.PARTS)
        assert len(c["discriminative_parts"]) >= 2


@pytest.mark.parametrize("n_genera,species", [(4, 4), (3, 8), (2, 12)])
def test_species_differ_in_at_least_two_parts(n_genera, species):
    classes = sb.class_definitions(0, n_genera, species)
    assert len(classes) == n_genera * species
    assert len({c["name"] for c in classes}) == len(classes)
    for g in range(n_genera):
        sibs = [c["markings"] for c in classes if c["genus"] == g]
        for a, b in itertools.combinations(sibs, 2):
            differ = [k for k in sb.ATTRIBUTES if a[k] != b[k]]
            assert len(differ) >= 2
            assert len({sb.REGION[k] for k in differ}) >= 2  # erasing the head alone is not enough
    genera = [sb.genus_definition(0, g) for g in range(n_genera)]
    assert len({json.dumps(g["palette"]) for g in genera}) == n_genera  # genera look different


def test_bad_parameters_are_errors_listing_valid_ones():
    with pytest.raises(ValueError, match="part_scale"):
        sb.spec(0, part_sclae=2)
    assert sb.spec(0, part_scale=2)["difficulty"]["part_scale"] == 2.0
    assert sb.spec(0, difficulty={"clutter": 0})["difficulty"]["clutter"] == 0.0


def test_ensure_caches_and_regenerates_on_change(tmp_path, monkeypatch):
    root = tmp_path / "sb"
    calls = []
    real = sb._write_set
    monkeypatch.setattr(sb, "_write_set", lambda out, sp, **kw: calls.append(sp) or real(out, sp, **kw))
    sb.ensure(root, seed=0, **TINY)
    sb.ensure(root, seed=0, **TINY)
    assert len(calls) == 1
    sb.ensure(root, seed=0, **{**TINY, "test_per_class": 1})
    assert len(calls) == 2 and len(rows(root / "images.txt")) == 6 * 6
    sb.ensure(root, seed=0, **{**TINY, "test_per_class": 1}, occlusion=0.0)
    assert len(calls) == 3 and sb.read_meta(root)["spec"]["difficulty"]["occlusion"] == 0.0
    assert [p.name for p in tmp_path.iterdir()] == ["sb"]  # no temporary directories left


def test_ensure_concurrent_calls_agree(tmp_path):
    root = tmp_path / "sb"
    errors = []

    def run():
        try:
            sb.ensure(root, seed=0, **TINY)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sb.read_meta(root)["content_sha256"] == sb.content_hash(root)
    assert [p.name for p in tmp_path.iterdir()] == ["sb"]


def test_refuses_to_overwrite_a_foreign_directory(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    (root / "precious.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not a SynthBirds"):
        sb.generate(root, **TINY)
    assert (root / "precious.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]


def test_cub_loader_reads_it_unchanged(tiny):
    cub = pytest.importorskip("fgvc.data.cub")
    split = cub.load_cub(tiny)
    n_cls = TINY["n_genera"] * TINY["species_per_genus"]
    assert len(split.classes) == n_cls
    assert len(split.train) == n_cls * TINY["train_per_class"]
    assert len(split.test) == n_cls * TINY["test_per_class"]
    assert list(split.part_names) == list(sb.PARTS)
    s = split.train[0]
    assert Path(s.path).is_file() and s.box is not None and len(s.parts) == len(sb.PARTS)
    assert sorted({x.label for x in split.train}) == list(range(n_cls))


@pytest.mark.slow
def test_default_size_generates_every_image(tmp_path):
    """The default set is complete. Its CPU time is printed for the log; the speed goal is the
    benchmark's (fgvc.dev.bench, data section), not a timed test."""
    t, c = time.perf_counter(), time.process_time()
    root = sb.generate(tmp_path / "default")
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    n = len(rows(root / "images.txt"))
    print(f"\nSynthBirds default: {n} images, {cpu:.1f} s CPU ({n / cpu:.0f} img/s), {wall:.1f} s wall")
    assert n == 16 * 200


def test_renderer_draws_the_same_images_on_the_fly(tiny):
    """renderer() (for fresh images every epoch) draws exactly what generate() wrote."""
    import io

    import numpy as np

    draw = sb.renderer(0, **TINY)
    r = draw(4, np.random.default_rng([0, 2, 4, 0, 1]))  # class 5, test image 1
    buf = io.BytesIO()
    r.image.save(buf, "JPEG", quality=sb.JPEG_QUALITY, subsampling=0)
    rel = next(rel for _, rel in rows(tiny / "images.txt") if rel.endswith("_test_0001.jpg") and rel.startswith("005."))
    assert buf.getvalue() == (tiny / "images" / rel).read_bytes()
    assert r.image.size == (TINY["image_size"],) * 2 and len(r.parts) == len(sb.PARTS)


# ----------------------------------------------------------------------------- photo mode

PHOTO = sb.PRESETS["photo"]


@pytest.fixture(scope="module")
def tiny_photo(tmp_path_factory) -> Path:
    return sb.generate(tmp_path_factory.mktemp("sbp") / "photo", seed=0, preset="photo", **TINY)


def test_photo_knobs_at_their_defaults_keep_version_1(tiny, tmp_path):
    """The photo knobs are absent from a default spec and, at 0, change no byte."""
    assert sb.GENERATOR_VERSION == 1
    assert set(sb.ADDED_KNOBS) <= set(sb.DEFAULT_DIFFICULTY)
    assert all(sb.DEFAULT_DIFFICULTY[k] == 0 for k in sb.ADDED_KNOBS)
    assert not set(sb.spec()["difficulty"]) & set(sb.ADDED_KNOBS)
    zeros = {k: 0.0 for k in sb.ADDED_KNOBS}
    assert sb.spec(0, **TINY, **zeros) == sb.spec(0, **TINY)
    again = sb.generate(tmp_path / "zeros", seed=0, **TINY, **zeros)
    assert tree_hash(again) == tree_hash(tiny)
    assert not (tiny / "decoy_boxes.txt").exists()


def test_preset_and_overrides():
    d = sb.spec(0, preset="photo")["difficulty"]
    assert {k: d[k] for k in PHOTO} == {k: float(v) for k, v in PHOTO.items()}
    assert sb.spec(0, preset="photo") == sb.spec(0, **PHOTO)  # the spec holds values, not the name
    assert sb.spec(0, preset="photo", decoys=1)["difficulty"]["decoys"] == 1.0
    assert sb.spec(0, preset="photo", difficulty={"dapple": 0})["difficulty"].get("dapple", 0.0) == 0.0
    with pytest.raises(ValueError, match="photo"):
        sb.spec(0, preset="fotograph")
    # a profile's data.synth dict reaches spec() as keyword arguments (fgvc.data.registry)
    from fgvc.data import synthbirds_root
    assert synthbirds_root({"preset": "photo"}) == synthbirds_root(PHOTO) != synthbirds_root({})
    assert synthbirds_root({"background": 0.0}) == synthbirds_root({})


def test_photo_mode_is_deterministic_and_consistent(tiny, tiny_photo, tmp_path):
    again = sb.generate(tmp_path / "again", seed=0, preset="photo", **TINY)
    assert tree_hash(again) == tree_hash(tiny_photo)
    assert sb.content_hash(tiny_photo) != sb.content_hash(tiny)
    assert sb.read_meta(tiny_photo)["spec"] == sb.spec(0, preset="photo", **TINY)
    check_cub_layout(tiny_photo)
    # same birds: boxes and keypoints are those of the default set, only the scene differs
    for name in ("bounding_boxes.txt", "parts/part_locs.txt", "images.txt", "image_class_labels.txt"):
        assert (tiny_photo / name).read_bytes() == (tiny / name).read_bytes()
    size = TINY["image_size"]
    n_img = len(rows(tiny / "images.txt"))
    decoys = rows(tiny_photo / "decoy_boxes.txt")
    assert len(decoys) > 0.5 * n_img * (PHOTO["decoys"] + PHOTO["decoy_birds"])
    for i, kind, *xywh in decoys:
        x, y, w, h = map(float, xywh)
        assert 1 <= int(i) <= n_img and kind in sb.DECOY_KINDS
        assert 0 <= x and 0 <= y and w >= 0 and h >= 0 and x + w <= size + 0.1 and y + h <= size + 0.1


def _renders(n: int, **kw):
    draw = sb.renderer(0, image_size=96, noise=0.0, **kw)
    return [draw(i % 16, np.random.default_rng([9, i])) for i in range(n)]


def _outside_box(r, a: np.ndarray, pad: int = 2) -> np.ndarray:
    m = np.ones(a.shape[:2], bool)
    x, y, w, h = r.box
    m[max(0, int(y) - pad):int(y + h) + pad + 1, max(0, int(x) - pad):int(x + w) + pad + 1] = False
    return m


def test_photo_background_has_more_fine_texture():
    """Mean |Laplacian| of the grey image outside the bird box: the photo scene has far more
    high-frequency texture than the gradient with clutter (about 2.5x)."""
    def lap(r):
        a = np.asarray(r.image.convert("L"), np.float32)
        L = np.zeros_like(a)
        L[1:-1, 1:-1] = np.abs(4 * a[1:-1, 1:-1] - a[:-2, 1:-1] - a[2:, 1:-1] - a[1:-1, :-2] - a[1:-1, 2:])
        m = _outside_box(r, a)
        m[[0, -1], :] = m[:, [0, -1]] = False
        return L[m].mean()
    plain = np.mean([lap(r) for r in _renders(16)])
    photo = np.mean([lap(r) for r in _renders(16, preset="photo")])
    assert photo > 1.8 * plain, (photo, plain)


def test_decoys_are_drawn_where_their_boxes_are_and_the_bird_is_unchanged():
    """Decoys only (no scene, blur or light): same rng, so the image differs from the default
    one by the decoys alone; they lie mostly beside the bird."""
    plain = _renders(16)
    dec = _renders(16, decoys=5.0, decoy_birds=1.0)
    n, outside, changed_in, changed = 0, 0, 0, 0
    for p, d in zip(plain, dec):
        assert d.box == p.box and d.parts == p.parts and p.decoys == ()
        a, b = np.asarray(p.image, np.int16), np.asarray(d.image, np.int16)
        diff = np.abs(a - b).max(-1) > 12
        inside = np.zeros(diff.shape, bool)
        bx, by, bw, bh = d.box
        for kind, x, y, w, h in d.decoys:
            n += 1
            cx, cy = x + w / 2, y + h / 2
            outside += not (bx < cx < bx + bw and by < cy < by + bh)
            inside[max(0, int(y) - 2):int(y + h) + 3, max(0, int(x) - 2):int(x + w) + 3] = True
        changed += diff.sum()
        changed_in += (diff & inside).sum()
    assert n >= 16 * 6 * 0.6
    assert outside > 0.6 * n
    assert changed > 16 * 100 and changed_in > 0.97 * changed  # pixels change only at decoys
    kinds = Counter(k for r in dec for k, *_ in r.decoys)
    assert set(kinds) == set(sb.DECOY_KINDS), kinds


def test_photo_mode_scene_changes_around_a_sharp_bird():
    """The photo scene replaces the gradient (pixels outside the box change a lot) while the
    bird's keypoints and box stay those of the default image."""
    for p, d in zip(_renders(8), _renders(8, preset="photo")):
        assert d.box == p.box and d.parts == p.parts
        a, b = np.asarray(p.image, np.float32), np.asarray(d.image, np.float32)
        m = _outside_box(p, a)
        assert np.abs(a - b)[m].mean() > 15


def test_own_validation_split_is_drawn_apart_and_leaves_the_rest_unchanged(tiny, tmp_path):
    """val_per_class > 0 (issue: evaluation splits that can measure): validation images of
    their own seeds (split code 2), training images in CUB's split file, listed in
    validation_images.txt; the loader puts them in Split.val; every train and test image is
    the one of the set without them; at 0 the spec and every byte are those of the old set."""
    from fgvc.data import build_data
    from fgvc.data.cub import load_cub

    assert sb.spec(0, **TINY, val_per_class=0) == sb.spec(0, **TINY)
    assert "val_per_class" not in sb.spec()
    assert tree_hash(sb.generate(tmp_path / "zero", seed=0, **TINY, val_per_class=0)) == tree_hash(tiny)
    root = sb.generate(tmp_path / "val", seed=0, **TINY, val_per_class=3)
    assert sb.read_meta(root)["spec"]["val_per_class"] == 3
    split, old = load_cub(root), load_cub(tiny)
    n_cls = TINY["n_genera"] * TINY["species_per_genus"]
    assert len(split.val) == 3 * n_cls and Counter(s.label for s in split.val) == Counter(
        {c: 3 for c in range(n_cls)})
    for new, was in ((split.train, old.train), (split.test, old.test)):
        assert [Path(s.path).read_bytes() for s in new] == [Path(s.path).read_bytes() for s in was]
    val_bytes = {Path(s.path).read_bytes() for s in split.val}
    assert not val_bytes & {Path(s.path).read_bytes() for s in split.train + split.test}
    assert all("_val_" in Path(s.path).name for s in split.val)
    ids = {int(r[0]) for r in rows(root / "validation_images.txt")}
    is_train = {int(i): int(t) for i, t in rows(root / "train_test_split.txt")}
    assert len(ids) == 3 * n_cls and all(is_train[i] == 1 for i in ids)
    assert split.samples == split.train + split.val + split.test
    bundle = build_data("cub", root, resize=48, crop=48, val_fraction=0.5, cache=False)
    assert len(bundle.train) == len(split.train) and len(bundle.val) == len(split.val)
    assert {s.path for s in bundle.val.samples} == {s.path for s in split.val}
