"""Batches made of same-class pairs, for methods that compare two images of one class.

Each epoch, the images of every class are shuffled and cut into pairs; a class with an odd
count pairs its last image with another (random) image of the same class, so every image is
seen at least once per epoch. A class with a single image is paired with itself
(``allow_self_pairs=True``, default) or left out (``False``). The pairs are shuffled and
grouped into batches of ``batch_size // 2`` pairs, laid out by `mode`:

- ``"adjacent"``: ``batch[2k]`` and ``batch[2k + 1]`` share a label;
- ``"halves"``:   ``batch[i]`` and ``batch[i + B/2]`` share a label.

Batch count and DDP: with ``drop_last=False`` (default) the pair list is padded by wrapping
around to a multiple of ``(B/2) * num_replicas``, so every batch is full and every rank gets
the same number of batches (as torch's DistributedSampler pads); with ``drop_last=True`` the
tail is dropped instead. Rank ``r`` takes batches ``r, r + R, r + 2R, ...``: the ranks' batch
positions are disjoint and, apart from the wrap-around padding, so are their images.
The order depends only on (labels, seed, epoch): call :meth:`set_epoch` each epoch.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterator

import numpy as np
import torch


class PairedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yield index batches in which same-class images come in pairs (see module docstring)."""

    MODES = ("adjacent", "halves")

    def __init__(self, labels: list[int], batch_size: int, mode: str = "adjacent", seed: int = 0,
                 num_replicas: int = 1, rank: int = 0, drop_last: bool = False,
                 allow_self_pairs: bool = True):
        if batch_size < 2 or batch_size % 2:
            raise ValueError(f"batch_size must be even and >= 2, got {batch_size}")
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.batch_size, self.mode, self.seed = batch_size, mode, seed
        self.num_replicas, self.rank, self.drop_last = num_replicas, rank, drop_last
        self.epoch = 0
        by_class: dict[int, list[int]] = defaultdict(list)
        for i, y in enumerate(labels):
            by_class[int(y)].append(i)
        self.by_class = {c: by_class[c] for c in sorted(by_class)}
        self.allow_self_pairs = allow_self_pairs
        self.num_pairs = sum(math.ceil(len(v) / 2) for v in self.by_class.values()
                             if len(v) >= 2 or allow_self_pairs)
        per_step = (batch_size // 2) * num_replicas  # pairs consumed by one step of all ranks
        self._steps = self.num_pairs // per_step if drop_last else math.ceil(self.num_pairs / per_step)
        if self.num_pairs == 0:
            raise ValueError("no same-class pairs can be formed from these labels")

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle deterministically for `epoch` (call before iterating, on every rank)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self._steps

    def _pairs(self, rng: np.random.Generator) -> list[tuple[int, int]]:
        pairs = []
        for members in self.by_class.values():
            if len(members) == 1:
                if self.allow_self_pairs:
                    pairs.append((members[0], members[0]))
                continue
            perm = [int(i) for i in rng.permutation(members)]
            if len(perm) % 2:
                partner = perm[int(rng.integers(len(perm) - 1))]  # any other image of the class
                perm.append(partner)
            pairs.extend(zip(perm[0::2], perm[1::2]))
        order = rng.permutation(len(pairs))
        return [pairs[k] for k in order]

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        pairs = self._pairs(rng)
        k = self.batch_size // 2
        total = self._steps * self.num_replicas * k
        pairs = (pairs * math.ceil(total / len(pairs)))[:total] if total else []
        for b in range(self.rank, self._steps * self.num_replicas, self.num_replicas):
            chunk = pairs[b * k:(b + 1) * k]
            if self.mode == "adjacent":
                yield [i for pair in chunk for i in pair]
            else:
                yield [a for a, _ in chunk] + [b_ for _, b_ in chunk]
