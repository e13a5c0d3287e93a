"""Command line for the datasets.

    python -m fgvc.data check NAME [--root R] [--scan]     verify a dataset root against the manifest
    python -m fgvc.data download NAME [--root R]           fetch + verify + extract (cub, aircraft);
                                                           for cars: says which files to place where
    python -m fgvc.data generate NAME [--root R] [--seed S]   a generated set (synthbirds)
    python -m fgvc.data cut NAME --source S [--root R]    a subset cut from another dataset's
                                                           files (cub30 from a CUB-200-2011)
    python -m fgvc.data prepare NAME --size S [--root R] [--out DIR] [--workers N]
                                                           cache every image resized to S x S
                                                           (S = the profile's data.resize)

NAME is a registered dataset (fgvc.data.registry; the choices below). A relative --root is taken from the current
directory; without --root the default ``data/<name>`` of the repository (env FGVC_DATA) is used.
Exit status: 0 on success, 1 on a problem (missing dataset, count mismatch, bad checksum).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fgvc.cli import one_line
from fgvc.data.registry import dataset_info, dataset_root, list_datasets
from fgvc.data.base import DatasetNotFound
from fgvc.data.download import ChecksumMismatch, check, download


def main(argv: list[str] | None = None) -> int:
    names = list_datasets()
    generated = [n for n in names if dataset_info(n).generate is not None]
    subsets = [n for n in names if dataset_info(n).cut is not None]
    parser = argparse.ArgumentParser(prog="python -m fgvc.data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="load a dataset and compare split counts with the manifest")
    p.add_argument("name", choices=names)
    p.add_argument("--root", type=Path)
    p.add_argument("--scan", action="store_true", help="also decode every image to find corrupt files")
    p = sub.add_parser("download", help="download, verify and extract a dataset")
    p.add_argument("name", choices=names)
    p.add_argument("--root", type=Path)
    p.add_argument("--keep-archive", action="store_true", help="keep the archive after extraction")
    p = sub.add_parser("generate", help="generate a synthetic dataset")
    p.add_argument("name", choices=generated)
    p.add_argument("--root", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("cut", help="cut a subset dataset from another dataset's files")
    p.add_argument("name", choices=subsets)
    p.add_argument("--source", type=Path, required=True, help="the source dataset's root")
    p.add_argument("--root", type=Path)
    # --- prepared-image cache (fgvc.data.prepare) ---
    p = sub.add_parser("prepare", help="store every image once, resized to SIZE x SIZE (uint8), "
                                       "so training does not decode full-size JPEGs every epoch")
    p.add_argument("name", choices=names)
    p.add_argument("--size", type=int, required=True, help="the profile's data.resize (paper: 550)")
    p.add_argument("--root", type=Path)
    p.add_argument("--out", type=Path, help="cache folder (default: $FGVC_CACHE or data/cache, "
                                            "<name>-<size>-<root hash>; found there by build_data)")
    p.add_argument("--workers", type=int, default=None, help="decoding threads (default: min(8, cpus))")
    args = parser.parse_args(argv)

    root = args.root.expanduser().resolve() if args.root else \
        dataset_root(args.name, {"seed": args.seed} if getattr(args, "seed", 0) else None)
    try:
        if args.command == "check":
            report = check(args.name, root, scan=args.scan)
            print(report)
            return 0 if report.ok else 1
        if args.command == "download":
            print(f"dataset ready at {download(args.name, root, keep_archive=args.keep_archive)}")
            report = check(args.name, root)
            print(report)
            return 0 if report.ok else 1
        if args.command == "prepare":
            from fgvc.data.prepare import prepare

            out = prepare(args.name, args.size, root, out=args.out, workers=args.workers)
            print(f"prepared cache ready at {out}")
            return 0
        ds = dataset_info(args.name)
        if args.command == "cut":
            dest = ds.cut(args.source.expanduser(), root)
            split = ds.load(dest)
            print(f"{ds.title}: {len(split.train)} train / {len(split.test)} test images of "
                  f"{split.num_classes} classes written to {dest}")
            return 0
        print(f"{ds.title} (seed {args.seed}) ready at {ds.generate(root, seed=args.seed)}")
        return 0
    except (DatasetNotFound, ChecksumMismatch, ValueError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    from fgvc.cli import run as run_cli

    sys.exit(run_cli(main))
