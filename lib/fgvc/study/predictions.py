"""Per-image predictions of a run: `results/runs/<run_id>/predictions.json`.

Every finished run records, for its test split and (protocol "val") its validation split, the
top-1 class of each image and its label, in the split's order (the order of
`fgvc.data` splits, which is fixed by the dataset's files), evaluated with the model that was
tested (the best validation epoch). They are what paired comparisons over images need
(fgvc.study.noise: evaluation noise against training noise; a paired bootstrap over seeds and
images), and they let a reader recompute every top-1 of metrics.json.

Compact form: each array is stored as the base64 of the zlib-compressed little-endian unsigned
integers (uint8 when every class index is below 256, else uint16): SynthBirds' 400 test images
take about 0.3 kB, CUB-200's 5,794 test images about 8 kB. The file carries the run's config
hash, as config.json and metrics.json do.
"""
from __future__ import annotations

import base64
import zlib
from pathlib import Path

import numpy as np

from fgvc import io

FILE = "predictions.json"
FORMAT = "zlib+base64 of little-endian uint8/uint16 class indices, in the split's order"


def pack(values: np.ndarray) -> dict:
    """Non-negative integers -> {"dtype", "n", "data"} (see the module's docstring)."""
    values = np.asarray(values)
    if values.size and (values.min() < 0 or values.max() >= 2 ** 16):
        raise ValueError("pack: class indices must lie in 0..65535")
    dtype = "<u1" if not values.size or values.max() < 256 else "<u2"
    raw = values.astype(dtype).tobytes()
    return {"dtype": np.dtype(dtype).name, "n": int(values.size),
            "data": base64.b64encode(zlib.compress(raw, 9)).decode("ascii")}


def unpack(packed: dict) -> np.ndarray:
    """The inverse of :func:`pack`, as int64."""
    dtype = np.dtype(packed["dtype"]).newbyteorder("<")
    raw = zlib.decompress(base64.b64decode(packed["data"]))
    out = np.frombuffer(raw, dtype=dtype).astype(np.int64)
    if out.size != packed["n"]:  # pragma: no mutate block
        raise ValueError(f"predictions: {out.size} values where {packed['n']} were recorded")
    return out


def record(config_hash: str, splits: dict[str, dict]) -> dict:
    """The file's content from evaluate() results holding "pred" and "target" (a split whose
    result has no predictions, e.g. no validation split, is left out)."""
    out = {"config_hash": config_hash, "format": FORMAT}
    for name, result in splits.items():
        if result and "pred" in result:
            out[name] = {"pred": pack(result["pred"]), "target": pack(result["target"])}
    return out


def write(run_dir: str | Path, config_hash: str, splits: dict[str, dict]) -> None:
    io.write_json(Path(run_dir) / FILE, record(config_hash, splits))


def read(run_dir: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """{split: (pred, target)} of a run folder, or None where it has no predictions (runs
    recorded before they were kept) or they belong to other settings than its config.json."""
    run_dir = Path(run_dir)
    path = run_dir / FILE
    if not path.is_file():
        return None
    data = io.read_json(path)
    cfg = run_dir / "config.json"
    if cfg.is_file() and io.read_json(cfg).get("config_hash") != data.get("config_hash"):
        return None
    return {k: (unpack(v["pred"]), unpack(v["target"])) for k, v in data.items()
            if isinstance(v, dict) and "pred" in v}


def correct(run_dir: str | Path, split: str = "test") -> np.ndarray | None:
    """Per image of `split`: 1.0 where the run's top-1 is right, else 0.0 (None: not recorded)."""
    preds = read(run_dir)
    if preds is None or split not in preds:
        return None
    pred, target = preds[split]
    return (pred == target).astype(float)
