"""Seeded, stratified validation split carved from the official training set."""
from __future__ import annotations

from collections import defaultdict

import numpy as np


def stratified_split(labels: list[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split indices of `labels` into (train_idx, val_idx), both sorted.

    About ``round(fraction * len(labels))`` indices go to validation, spread over classes in
    proportion to their size: each class first gets ``floor(fraction * n_c)``, and the
    remaining slots go to the classes with the largest remainders (ties broken by the seed).
    A class keeps at least one image in train (a class with a single image stays in train),
    so every class is learnable. The result depends only on (labels, fraction, seed).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        by_class[int(y)].append(i)
    classes = sorted(by_class)

    sizes = np.array([len(by_class[c]) for c in classes])
    cap = np.maximum(sizes - 1, 0)  # at least one image of each class stays in train
    quota = fraction * sizes
    n_val = np.minimum(np.floor(quota).astype(int), cap)
    target = min(int(round(fraction * len(labels))), int(cap.sum()))
    # Hand out the remaining slots by largest remainder; random tie-break keeps it unbiased.
    order = sorted(range(len(classes)), key=lambda k: (-(quota[k] - np.floor(quota[k])), rng.random()))
    while n_val.sum() < target:  # more than one pass only when caps bind (tiny classes)
        for k in order:
            if n_val.sum() < target and n_val[k] < cap[k]:
                n_val[k] += 1

    train_idx, val_idx = [], []
    for k, c in enumerate(classes):
        perm = rng.permutation(by_class[c])
        val_idx.extend(int(i) for i in perm[: n_val[k]])
        train_idx.extend(int(i) for i in perm[n_val[k]:])
    return sorted(train_idx), sorted(val_idx)
