"""PairedBatchSampler: same-class pairs in both layouts, determinism, DDP sharding, length."""
from __future__ import annotations

import pytest
import torch

from fgvc.data import PairedBatchSampler

torch.set_num_threads(1)

LABELS = [c for c in range(7) for _ in range(5)] + [7]  # odd class sizes and one singleton (36 images)


def batches(**kw) -> list[list[int]]:
    kw = {"labels": LABELS, "batch_size": 8, **kw}
    return list(PairedBatchSampler(**kw))


@pytest.mark.parametrize("mode", ["adjacent", "halves"])
def test_pairs_share_a_label(mode):
    for batch in batches(mode=mode):
        assert len(batch) == 8
        half = len(batch) // 2
        for k in range(half):
            a, b = (batch[2 * k], batch[2 * k + 1]) if mode == "adjacent" else (batch[k], batch[k + half])
            assert LABELS[a] == LABELS[b]


def test_every_image_seen_each_epoch_and_len():
    s = PairedBatchSampler(LABELS, batch_size=8)
    # pairs: 7 classes x ceil(5/2) + 1 self-pair = 22 -> ceil(22 / 4) = 6 full batches
    assert s.num_pairs == 22 and len(s) == 6
    out = list(s)
    assert len(out) == len(s)
    assert set(i for b in out for i in b) == set(range(len(LABELS)))
    assert [36 - 1, 36 - 1] in [b[2 * k:2 * k + 2] for b in out for k in range(4)]  # singleton self-pair


def test_drop_last_and_singletons_excluded():
    s = PairedBatchSampler(LABELS, batch_size=8, drop_last=True, allow_self_pairs=False)
    assert s.num_pairs == 21 and len(s) == 5 and len(list(s)) == 5
    assert all(35 not in b for b in s)


def test_deterministic_and_set_epoch_reshuffles():
    assert batches(seed=1) == batches(seed=1)
    assert batches(seed=1) != batches(seed=2)
    s = PairedBatchSampler(LABELS, batch_size=8, seed=1)
    e0 = list(s)
    s.set_epoch(1)
    e1 = list(s)
    s.set_epoch(0)
    assert list(s) == e0 and e1 != e0


def test_ddp_shards_are_disjoint_and_equal():
    for drop_last in (True, False):
        shards = [batches(num_replicas=3, rank=r, seed=4, drop_last=drop_last) for r in range(3)]
        lens = {len(sh) for sh in shards}
        assert len(lens) == 1 and lens == {len(PairedBatchSampler(LABELS, 8, num_replicas=3, drop_last=drop_last))}
        if drop_last:  # no wrap-around padding: no pair is served to two ranks
            pairs = [{tuple(bt[2 * k:2 * k + 2]) for bt in sh for k in range(4)} for sh in shards]
            assert sum(map(len, pairs)) == len(set().union(*pairs)) == 3 * len(shards[0]) * 4
    # the union of the shards is the single-process epoch
    single = batches(seed=4, drop_last=True, batch_size=8)
    merged = [b for step in zip(*[batches(num_replicas=2, rank=r, seed=4, drop_last=True) for r in range(2)])
              for b in step]
    assert merged == single[:len(merged)]


def test_errors_and_dataloader():
    with pytest.raises(ValueError, match="even"):
        PairedBatchSampler(LABELS, batch_size=7)
    with pytest.raises(ValueError, match="mode"):
        PairedBatchSampler(LABELS, batch_size=8, mode="random")
    with pytest.raises(ValueError, match="rank"):
        PairedBatchSampler(LABELS, batch_size=8, num_replicas=2, rank=2)
    ds = torch.utils.data.TensorDataset(torch.arange(len(LABELS)), torch.tensor(LABELS))
    loader = torch.utils.data.DataLoader(ds, batch_sampler=PairedBatchSampler(LABELS, 8, mode="halves"))
    for _, y in loader:
        assert torch.equal(y[:4], y[4:])
