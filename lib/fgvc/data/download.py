"""Fetch, verify and extract the public datasets; check any dataset root against the manifest.

``manifest.json`` (beside this file) lists, per dataset (under the key its module declares,
:attr:`fgvc.data.registry.DatasetInfo.manifest_key`), its archives (name, URL, size,
checksums, with ``"unknown"`` where we could not verify a value) and the expected split
counts. A download goes to ``<archive>.part`` and is resumed with an HTTP Range request
when the server supports it; only a fully fetched file whose checksums match is renamed
to its final name and extracted (``tarfile`` with the ``data`` filter, so no path escapes
the root). A marker file ``.<archive>.extracted`` records a finished extraction.
A dataset may replace the archive download (Stanford Cars has no public source: its `place`
explains which files to put where) or add lines to :func:`check` (its `notes`).
"""
from __future__ import annotations

import hashlib
import json
import os
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from fgvc.data.base import DatasetNotFound, Split, scan_images

MANIFEST_PATH = Path(__file__).with_name("manifest.json")
CHUNK = 1 << 20


class ChecksumMismatch(RuntimeError):
    """A fetched file does not match the checksum recorded in the manifest."""


def load_manifest() -> dict:
    """The dataset manifest (see module docstring)."""
    return json.loads(MANIFEST_PATH.read_text())


def known(value):
    """`value`, or None when the manifest marks it unknown."""
    return None if value in (None, "", "unknown") else value


def file_hashes(path: str | os.PathLike, algorithms: tuple[str, ...] = ("md5", "sha256")) -> dict[str, str]:
    """Hex digests of a file, read once in chunks."""
    hs = {a: hashlib.new(a) for a in algorithms}
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            for h in hs.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hs.items()}


def fetch(url: str, dest: str | os.PathLike, timeout: float = 60.0) -> Path:
    """Download `url` to `dest` through ``dest.part``, resuming a previous partial download.

    If the server ignores the Range request (status 200, or a ``file://`` URL) the partial
    file is restarted from zero. `dest` appears only once the transfer is complete.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code != 416 or not offset:  # 416: nothing left after `offset`, the part file is complete
            raise
        os.replace(part, dest)
        return dest
    with resp:
        resumed = offset > 0 and getattr(resp, "status", None) == 206
        if not resumed:
            offset = 0
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length else None
        with open(part, "ab" if resumed else "wb") as f, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, desc=dest.name
        ) as bar:
            for block in iter(lambda: resp.read(CHUNK), b""):
                f.write(block)
                bar.update(len(block))
    os.replace(part, dest)
    return dest


def verify(path: str | os.PathLike, entry: dict) -> dict[str, str]:
    """Check `path` against the manifest `entry` (size, md5, sha256 where known).

    Returns the computed digests. Raises :class:`ChecksumMismatch` on any known mismatch.
    """
    path = Path(path)
    size = known(entry.get("size_bytes"))
    if size is not None and path.stat().st_size != int(size):
        raise ChecksumMismatch(f"{path}: size {path.stat().st_size} bytes, expected {size}")
    got = file_hashes(path)
    for algo in ("md5", "sha256"):
        want = known(entry.get(algo))
        if want is not None and got[algo] != want.lower():
            raise ChecksumMismatch(f"{path}: {algo} {got[algo]}, expected {want}")
    return got


def extract(archive: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Extract a tar archive (any compression) into `dest`, refusing unsafe members."""
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")


def download(name: str, root: str | os.PathLike | None = None, *, manifest: dict | None = None,
             fetcher: Callable[[str, Path], Path] = fetch, keep_archive: bool = False,
             log: Callable[[str], None] = print) -> Path:
    """Fetch, verify and extract dataset `name` into `root` (default: ``default_root(name)``).

    Skips what is already done (extraction marker present). A checksum mismatch deletes the
    bad file and raises :class:`ChecksumMismatch`. A dataset that declares `place` is not
    fetched (Stanford Cars, no public source: :class:`DatasetNotFound` with placement
    instructions unless the files are there).
    """
    from fgvc.data.registry import dataset_info, dataset_root

    ds = dataset_info(name)  # an unknown name is an error listing the valid ones
    manifest = manifest or load_manifest()
    info = manifest.get(ds.manifest_key) or {}
    root = Path(root).expanduser() if root is not None else dataset_root(name)
    if ds.place is not None:
        return ds.place(root, info, log)
    if not info.get("downloadable"):
        raise ValueError(f"{name} is not downloaded: {ds.how_to_get}")
    root.mkdir(parents=True, exist_ok=True)
    for entry in info["archives"]:
        archive = root / entry["filename"]
        marker = root / f".{entry['filename']}.extracted"
        if marker.exists():
            log(f"{entry['filename']}: already extracted in {root}")
            continue
        if not archive.exists():
            log(f"fetching {entry['url']}")
            fetcher(entry["url"], archive)
        try:
            digests = verify(archive, entry)
        except ChecksumMismatch:
            archive.unlink(missing_ok=True)
            raise
        unverified = [a for a in ("md5", "sha256") if known(entry.get(a)) is None]
        if unverified:
            log(f"{entry['filename']}: no known {'/'.join(unverified)} to verify against; computed "
                + ", ".join(f"{a}={digests[a]}" for a in unverified) + " (compare with the dataset page)")
        log(f"extracting {archive} into {root}")
        extract(archive, root)
        marker.write_text(json.dumps(digests) + "\n")
        if not keep_archive:
            archive.unlink()
    return root


@dataclass
class CheckReport:
    """Result of :func:`check`: counts found and every problem (empty `problems`: all good)."""

    name: str
    root: Path
    split: Split | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        lines = [f"{self.name} at {self.root}"]
        if self.split is not None:
            s = self.split
            lines.append(f"  train {len(s.train)}  test {len(s.test)}  classes {len(s.classes)}"
                         + (f"  parts {len(s.part_names)}" if s.part_names else "")
                         + (f"  crop_bottom {s.crop_bottom}" if s.crop_bottom else ""))
        lines += [f"  note: {n}" for n in self.notes]
        lines += [f"  PROBLEM: {p}" for p in self.problems]
        lines.append("  OK" if self.ok else f"  {len(self.problems)} problem(s)")
        return "\n".join(lines)


def check(name: str, root: str | os.PathLike | None = None, *, scan: bool = False,
          manifest: dict | None = None) -> CheckReport:
    """Load dataset `name` and compare its split counts with the manifest's expected counts.

    With ``scan=True`` every image is also decoded once and each bad one is a problem.
    A missing dataset is reported as a problem carrying the DatasetNotFound message.
    """
    from fgvc.data.registry import dataset_info, dataset_root

    ds = dataset_info(name)  # an unknown name is an error listing the valid ones
    manifest = manifest or load_manifest()
    root = Path(root).expanduser() if root is not None else dataset_root(name)
    report = CheckReport(name, root)
    try:
        split = (ds.inspect or ds.load)(root)
    except DatasetNotFound as e:
        report.problems.append(str(e))
        return report
    report.split = split
    expected = (manifest.get(ds.manifest_key) or {}).get("expected") or {}
    found = {"train": len(split.train), "test": len(split.test), "classes": len(split.classes),
             "parts": len(split.part_names or [])}
    for key in ("train", "test", "classes", "parts"):
        if key in expected and expected[key] != found[key]:
            report.problems.append(f"{key}: found {found[key]}, expected {expected[key]}")
    if ds.notes is not None:
        report.notes += ds.notes(root, manifest)
    if scan:
        for path, reason in scan_images(split.samples, split.crop_bottom):
            report.problems.append(f"bad image {path}: {reason}")
    return report

