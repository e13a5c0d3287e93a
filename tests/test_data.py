"""fgvc.data on tiny fixtures written in each dataset's real on-disk format (tests/fixtures.py)."""
from __future__ import annotations

import hashlib
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import fgvc.data as fd
from fgvc.data import (DATASETS, BadImage, CorruptImagesError, DatasetNotFound, ImageDataset, MalformedIndex,
                       build_data, build_transforms, load_aircraft, load_cars, load_cub, load_rgb, scan_images,
                       stratified_split)
from fgvc.data import download as dl
from fgvc.data.__main__ import main as cli

sys.path.insert(0, str(Path(__file__).parent))
from fixtures import make_aircraft, make_cars, make_cub, make_tar, truncate_file, write_garbage  # noqa: E402

torch.set_num_threads(1)


# ----------------------------------------------------------------------------- loaders

def test_cub_split_labels_boxes_parts(tmp_path):
    base = make_cub(tmp_path, n_classes=3, per_class=4)
    for root in (tmp_path, base):  # parent or the CUB_200_2011 folder itself
        split = load_cub(root)
        assert (len(split.train), len(split.test)) == (6, 6)
        assert split.classes == ["001.Bird_A", "002.Bird_B", "003.Bird_C"]
        assert split.part_names == ["beak", "crown", "left wing"]
        assert Counter(s.label for s in split.train) == {0: 2, 1: 2, 2: 2}
        first = split.train[0]
        assert Path(first.path).is_absolute() and Path(first.path).is_file()
        assert first.label == 0 and first.box == (1.0, 2.0, 20.0, 15.0)
        assert first.parts == ((1.0, 5.0, 1), (0.0, 0.0, 0), (10.0, 1.0, 1))
        assert split.test[-1].label == 2 and split.test[-1].box[0] == 12.0
        assert split.crop_bottom == 0


def test_cub_without_optional_parts_and_boxes(tmp_path):
    make_cub(tmp_path, parts=False, boxes=False)
    split = load_cub(tmp_path)
    assert split.part_names is None
    assert all(s.box is None and s.parts is None for s in split.train + split.test)


@pytest.mark.parametrize("test_annos_in_root", [False, True])
def test_cars_devkit_mat_files(tmp_path, test_annos_in_root):
    make_cars(tmp_path, n_classes=3, per_class=4, test_annos_in_root=test_annos_in_root)
    split = load_cars(tmp_path)
    assert (len(split.train), len(split.test)) == (6, 6)
    assert split.classes[1] == "Make1 Model1 Sedan 2011"
    assert [s.label for s in split.test] == [0, 0, 1, 1, 2, 2]
    # devkit corners (n, 3, n+19, 17), 1-based inclusive -> 0-based (x, y, w, h)
    assert split.train[2].box == (2.0, 2.0, 20.0, 15.0)
    assert split.test[0].path.endswith("cars_test/00001.jpg")
    assert all(Path(s.path).is_file() for s in split.train + split.test)


def test_cars_nested_mirror_layout(tmp_path):
    make_cars(tmp_path)
    for d in ("cars_train", "cars_test"):
        (tmp_path / d).rename(tmp_path / f"{d}_x")
        (tmp_path / d).mkdir()
        (tmp_path / f"{d}_x").rename(tmp_path / d / d)
    split = load_cars(tmp_path)
    assert all(Path(s.path).is_file() for s in split.train + split.test)


def test_aircraft_trainval_split_and_banner(tmp_path):
    make_aircraft(tmp_path, n_classes=3, per_class=6, size=(40, 50), banner=20)
    split = load_aircraft(tmp_path)
    # standard protocol: trainval (train + val files) for training, not train alone
    assert (len(split.train), len(split.test)) == (12, 6)
    assert split.classes == ["707-320", "Boeing 737-200", "F/A-18"]  # spaces and '/' in names
    assert Counter(s.label for s in split.train) == {0: 4, 1: 4, 2: 4}
    assert split.train[0].box == (1.0, 2.0, 20.0, 15.0)
    assert split.crop_bottom == 20
    green = split.train[4]  # class 1: green body, red banner
    assert green.label == 1
    cropped = np.asarray(load_rgb(green.path, split.crop_bottom)).astype(int)
    assert cropped.shape == (30, 40, 3)
    assert (cropped[..., 1] > cropped[..., 0]).mean() > 0.9  # no banner row left
    kept = load_aircraft(tmp_path, remove_banner=False)
    assert kept.crop_bottom == 0
    full = np.asarray(load_rgb(green.path)).astype(int)
    assert full.shape == (50, 40, 3)
    assert (full[-20:, :, 0] > 200).mean() > 0.9 and (full[-20:, :, 1] < 60).mean() > 0.9  # banner present
    ds = ImageDataset(split.train, build_transforms(32, 24, train=False), split.crop_bottom)
    assert ds[0][0].shape == (3, 24, 24)


def test_grayscale_cmyk_palette_rgba_become_rgb(tmp_path):
    base = make_cub(tmp_path)
    split = load_cub(tmp_path)
    modes = [Image.open(s.path).mode for s in split.train[:1] + split.test[:1]]
    assert modes == ["L", "CMYK"]
    for s in split.train[:1] + split.test[:1]:
        img = load_rgb(s.path)
        assert img.mode == "RGB" and img.size == (40, 30)
    Image.new("RGBA", (8, 6), (255, 0, 0, 0)).save(base / "rgba.png")
    Image.new("P", (8, 6), 3).save(base / "palette.png")
    assert load_rgb(base / "rgba.png").getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    assert load_rgb(base / "palette.png").mode == "RGB"
    x, y = ImageDataset(split.train)[0]
    assert x.shape == (3, 30, 40) and x.dtype == torch.float32 and y == 0


# ----------------------------------------------------------------------------- errors

def test_missing_root_says_what_and_how(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DatasetNotFound, match="download cub") as e:
        load_cub(missing)
    assert str(missing) in str(e.value) and "does not exist" in str(e.value)
    with pytest.raises(DatasetNotFound, match="download aircraft"):
        load_aircraft(missing)
    with pytest.raises(DatasetNotFound) as e:
        load_cars(missing)
    msg = str(e.value)
    for f in ("cars_train", "cars_test", "devkit/cars_meta.mat", "devkit/cars_train_annos.mat",
              "cars_test_annos_withlabels.mat", "no working official download"):
        assert f in msg
    assert isinstance(e.value, FileNotFoundError)


def test_missing_index_file_is_named(tmp_path):
    base = make_cub(tmp_path)
    (base / "train_test_split.txt").unlink()
    with pytest.raises(DatasetNotFound, match="train_test_split.txt"):
        load_cub(tmp_path)
    make_cars(tmp_path / "cars")
    (tmp_path / "cars" / "devkit" / "cars_test_annos_withlabels.mat").unlink()
    with pytest.raises(DatasetNotFound) as e:
        load_cars(tmp_path / "cars")
    assert str(e.value).startswith("Stanford Cars: missing ") and "withlabels" in str(e.value).splitlines()[0]


def test_malformed_index_line(tmp_path):
    base = make_cub(tmp_path)
    lines = (base / "image_class_labels.txt").read_text().splitlines()
    lines[2] = "3"
    (base / "image_class_labels.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(MalformedIndex, match=r"line 3 .*image_class_labels.txt") as e:
        load_cub(tmp_path)
    assert isinstance(e.value, DatasetNotFound)
    lines[2] = "3 x"
    (base / "image_class_labels.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(MalformedIndex, match="invalid literal"):
        load_cub(tmp_path)
    lines[2] = "3 9"  # class id out of range
    (base / "image_class_labels.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(MalformedIndex, match="outside 1..3"):
        load_cub(tmp_path)

    data = make_aircraft(tmp_path / "air") / "data"
    with open(data / "images_variant_test.txt", "a") as f:
        f.write("1234567 Concorde\n")
    with pytest.raises(MalformedIndex, match="Concorde"):
        load_aircraft(tmp_path / "air")


def test_bad_images_detected_and_skipped(tmp_path):
    make_cub(tmp_path, n_classes=3, per_class=6)
    split = load_cub(tmp_path)
    truncated, garbage, missing = split.train[1].path, split.train[4].path, split.test[3].path
    truncate_file(Path(truncated), keep=0.5)
    write_garbage(Path(garbage))
    Path(missing).unlink()
    with pytest.raises(BadImage) as e:
        load_rgb(truncated)
    assert e.value.path == truncated and "truncated" in e.value.reason

    bad = dict(scan_images(split.train + split.test))
    assert set(bad) == {truncated, garbage, missing}
    assert "missing" in bad[missing] and "truncated" in bad[truncated]

    with pytest.raises(CorruptImagesError) as e:
        build_data("cub", tmp_path, resize=32, crop=28)
    for p in (truncated, garbage, missing):
        assert p in str(e.value)

    bundle = build_data("cub", tmp_path, resize=32, crop=28, skip_bad_images=True)
    assert sorted(p for p, _ in bundle.bad_images) == sorted([truncated, garbage, missing])
    kept = [s.path for s in bundle.train.samples + bundle.val.samples + bundle.test.samples]
    assert len(kept) == 18 - 3 and not set(kept) & set(bad)
    unchecked = build_data("cub", tmp_path, resize=32, crop=28, check_images=False)
    assert len(unchecked.test) == 9 and unchecked.bad_images == []


# ----------------------------------------------------------------------------- build_data, splits, transforms

def test_build_data_bundle(tmp_path):
    make_cub(tmp_path, n_classes=4, per_class=10)
    b = build_data("cub", tmp_path, resize=36, crop=32, val_fraction=0.2, seed=3)
    assert b.num_classes == 4 and len(b.classes) == 4
    assert (len(b.train), len(b.val), len(b.test)) == (16, 4, 20)
    assert Counter(b.val.targets) == {0: 1, 1: 1, 2: 1, 3: 1}
    assert not {s.path for s in b.train.samples} & {s.path for s in b.val.samples}
    x, y = b.train[0]
    assert x.shape == (3, 32, 32) and isinstance(y, int)
    assert b.test[0][0].shape == (3, 32, 32)
    again = build_data("cub", tmp_path, resize=36, crop=32, val_fraction=0.2, seed=3, check_images=False)
    assert [s.path for s in again.val.samples] == [s.path for s in b.val.samples]


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="aircraft, cars, cub, cub30, synthbirds"):
        build_data("imagenet", resize=8, crop=8)
    assert set(DATASETS) == {"cub", "cub30", "cars", "aircraft", "synthbirds"}
    assert fd.default_root("cub").name == "cub"


def test_synthbirds_delegates_to_generator_then_cub_loader(tmp_path, monkeypatch):
    calls = []

    def ensure(root, seed=0, **kw):
        calls.append((Path(root), seed, kw))
        make_cub(root, n_classes=2, per_class=4)
        return Path(root)

    from fgvc.data import synthbirds

    monkeypatch.setattr(synthbirds, "ensure", ensure)
    b = build_data("synthbirds", tmp_path / "sb", resize=32, crop=32, synth={"seed": 5, "n_species": 2})
    assert calls == [(tmp_path / "sb", 5, {"n_species": 2})]
    assert b.num_classes == 2 and len(b.test) == 4


def test_stratified_split_properties():
    labels = [c for c in range(200) for _ in range(30)]  # CUB-like: 30 per class
    tr, va = stratified_split(labels, 0.1, seed=0)
    assert len(va) == 600 and Counter(labels[i] for i in va) == {c: 3 for c in range(200)}
    assert tr == sorted(tr) and va == sorted(va) and sorted(tr + va) == list(range(len(labels)))
    assert stratified_split(labels, 0.1, seed=0) == (tr, va)
    assert stratified_split(labels, 0.1, seed=1)[1] != va

    uneven = [0] * 7 + [1] * 2 + [2] + [3] * 3  # a singleton class and tiny classes
    for seed in range(5):
        tr, va = stratified_split(uneven, 0.3, seed)
        assert len(va) == round(0.3 * len(uneven))
        assert {uneven[i] for i in tr} == {0, 1, 2, 3}  # every class keeps >= 1 train image
        assert 9 in tr  # the singleton stays in train
    assert stratified_split(uneven, 0.0, 0) == (list(range(len(uneven))), [])
    assert len(stratified_split([0, 0, 1, 1], 0.9, 0)[1]) == 2  # capped: one image per class stays
    with pytest.raises(ValueError):
        stratified_split(labels, 1.0, 0)


def test_transforms_shapes_and_normalisation():
    img = Image.new("RGB", (40, 30), (124, 116, 104))  # ~ ImageNet mean colour
    for train in (True, False):
        x = build_transforms(36, 32, train=train, rotation=15.0 if train else 0.0, vflip=True)(img)
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    x = build_transforms(36, 32, train=False)(img)
    assert x.abs().max() < 0.05
    assert torch.allclose(fd.denormalize(x)[:, 0, 0], torch.tensor([124, 116, 104]) / 255, atol=0.01)
    with pytest.raises(ValueError):
        build_transforms(32, 36, train=True)


# ----------------------------------------------------------------------------- download, check, CLI

def _manifest_for(tgz: Path, md5: str) -> dict:
    m = dl.load_manifest()
    m["cub"]["archives"] = [dict(m["cub"]["archives"][0], url=tgz.as_uri(), md5=md5)]
    return m


def test_download_verifies_and_extracts(tmp_path):
    make_cub(tmp_path / "src")
    tgz = make_tar(tmp_path / "src" / "CUB_200_2011", tmp_path / "CUB_200_2011.tgz")
    md5 = hashlib.md5(tgz.read_bytes()).hexdigest()
    root = tmp_path / "cub"
    (root).mkdir()
    (root / "CUB_200_2011.tgz.part").write_bytes(b"stale partial download")  # restarted, not appended
    out = dl.download("cub", root, manifest=_manifest_for(tgz, md5), log=lambda s: None)
    assert out == root and len(load_cub(root).train) == 6
    assert (root / ".CUB_200_2011.tgz.extracted").exists() and not (root / "CUB_200_2011.tgz").exists()
    # second call: nothing fetched again
    dl.download("cub", root, manifest=_manifest_for(tgz, md5), fetcher=pytest.fail, log=lambda s: None)


def test_download_checksum_mismatch_removes_file(tmp_path):
    make_cub(tmp_path / "src")
    tgz = make_tar(tmp_path / "src" / "CUB_200_2011", tmp_path / "CUB_200_2011.tgz")
    root = tmp_path / "cub"
    with pytest.raises(dl.ChecksumMismatch, match="md5"):
        dl.download("cub", root, manifest=_manifest_for(tgz, "0" * 32), log=lambda s: None)
    assert not (root / "CUB_200_2011.tgz").exists() and not (root / "CUB_200_2011").exists()


def test_download_with_unknown_checksum_reports_digest(tmp_path):
    make_aircraft(tmp_path / "src")
    tgz = make_tar(tmp_path / "src" / "fgvc-aircraft-2013b", tmp_path / "fgvc-aircraft-2013b.tar.gz")
    logs = []

    def fetcher(url, dest):  # a monkeypatched network fetch
        assert url.endswith("fgvc-aircraft-2013b.tar.gz")
        dest.write_bytes(tgz.read_bytes())
        return dest

    dl.download("aircraft", tmp_path / "air", fetcher=fetcher, log=logs.append)
    assert any("no known md5" in line and hashlib.md5(tgz.read_bytes()).hexdigest() in line for line in logs)
    assert len(load_aircraft(tmp_path / "air").test) == 6


def test_manifest_is_honest():
    m = dl.load_manifest()
    assert m["cub"]["expected"] == {"train": 5994, "test": 5794, "classes": 200, "parts": 15}
    assert m["cars"]["expected"] == {"train": 8144, "test": 8041, "classes": 196}
    assert m["aircraft"]["expected"]["train"] == 6667 and m["aircraft"]["expected"]["test"] == 3333
    assert m["aircraft"]["archives"][0]["md5"] == "unknown"  # not invented
    assert m["cars"]["downloadable"] is False


def test_check_and_cli(tmp_path, capsys):
    make_cub(tmp_path / "cub")
    report = dl.check("cub", tmp_path / "cub")
    assert not report.ok and "train: found 6, expected 5994" in report.problems
    fake = dl.load_manifest()
    fake["cub"]["expected"] = {"train": 6, "test": 6, "classes": 3, "parts": 3}
    assert dl.check("cub", tmp_path / "cub", manifest=fake).ok

    assert cli(["check", "cub", "--root", str(tmp_path / "cub")]) == 1
    assert "expected 5994" in capsys.readouterr().out
    assert cli(["check", "aircraft", "--root", str(tmp_path / "none")]) == 1
    assert "download aircraft" in capsys.readouterr().out
    assert cli(["download", "cars", "--root", str(tmp_path / "cars")]) == 1
    err = capsys.readouterr().err
    assert "devkit/cars_meta.mat" in err and "cars_test_annos_withlabels.mat" in err

    make_cars(tmp_path / "cars2")
    assert cli(["check", "cars", "--root", str(tmp_path / "cars2")]) == 1  # counts differ from 8144/8041
    out = capsys.readouterr().out
    assert "train 6  test 6  classes 3" in out and "md5" in out


def test_synthbirds_end_to_end_through_cub_loader(tmp_path):
    pytest.importorskip("fgvc.data.synthbirds")
    synth = dict(n_genera=2, species_per_genus=2, train_per_class=4, test_per_class=2, image_size=32)
    b = build_data("synthbirds", tmp_path / "sb", resize=36, crop=32, val_fraction=0.25, synth=synth)
    assert b.num_classes == 4 and len(b.test) == 8 and len(b.val) == 4
    assert len(b.split.part_names) == 15 and b.split.train[0].parts is not None
    assert b.train[0][0].shape == (3, 32, 32)
    assert cli(["check", "synthbirds", "--root", str(tmp_path / "sb")]) == 0


def test_fetch_resumes_a_partial_download(tmp_path):
    import http.server
    import threading

    payload = bytes(range(256)) * 64
    ranges = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # minimal server honouring "Range: bytes=N-"
            start = int(self.headers["Range"][6:-1]) if self.headers.get("Range") else 0
            ranges.append(start)
            if start >= len(payload):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(payload) - start))
            self.end_headers()
            self.wfile.write(payload[start:])

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/a.tgz"
        dest = tmp_path / "a.tgz"
        (tmp_path / "a.tgz.part").write_bytes(payload[:1000])
        assert dl.fetch(url, dest).read_bytes() == payload and ranges == [1000]
        assert not (tmp_path / "a.tgz.part").exists()
        (tmp_path / "b.tgz.part").write_bytes(payload)  # complete part file: server answers 416
        assert dl.fetch(url, tmp_path / "b.tgz").read_bytes() == payload
    finally:
        server.shutdown()
        server.server_close()
