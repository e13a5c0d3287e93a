"""fgvc.study.fair_transplant: the three arms read from run records and paired by seed."""
import json

from fgvc.study.fair_transplant import METHODS, arms, table


def _run(root, rel, top1):
    d = root / rel
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"test_top1": top1}))


def test_arms_pair_by_seed(tmp_path):
    for m in METHODS:
        _run(tmp_path, f"readings/fair_transplant/runs/transfer_next-synthbirds-{m}-full-s0", 80.0)
        _run(tmp_path, f"readings/fair_transplant/runs/transfer_next-synthbirds-{m}-full-s1", 70.0)
        for s, v in enumerate((40.0, 30.0, 50.0)):
            _run(tmp_path, f"runs/transfer-synthbirds-{m}-full-s{s}", v)
    for s, v in enumerate((75.0, 65.0, 60.0)):
        _run(tmp_path, f"runs/transfer-synthbirds-baseline-full-s{s}", v)
    a = arms("ma_ea", tmp_path)
    assert a["new"] == {0: 80.0, 1: 70.0}          # seed 2 not run: left out, not zero
    assert a["today"] == {0: 40.0, 1: 30.0, 2: 50.0}
    text = table(tmp_path)
    # new - baseline over the common seeds 0, 1: (5 + 5) / 2; new - today's: (40 + 40) / 2
    assert "| ma_ea | 80.00 / 70.00 (75.00) | 40.00 / 30.00 / 50.00 | 75.00 / 65.00 / 60.00 | +5.00 [" in text
    assert "+40.00 [" in text and text.count("\n") == 3


def test_real_photo_arms_all_come_from_their_folder(tmp_path):
    runs = "readings/fair_transplant_cub_dev/runs"
    for s, (new, old, base) in enumerate(((80.0, 60.0, 70.0), (82.0, 62.0, 71.0))):
        _run(tmp_path, f"{runs}/transfer_next-cub-ma_ea-full-s{s}", new)
        _run(tmp_path, f"{runs}/transfer-cub-ma_ea-full-s{s}", old)
        _run(tmp_path, f"{runs}/transfer-cub-baseline-full-s{s}", base)
    a = arms("ma_ea", tmp_path, "cub")
    assert a == {"new": {0: 80.0, 1: 82.0}, "today": {0: 60.0, 1: 62.0}, "baseline": {0: 70.0, 1: 71.0}}
    text = table(tmp_path, "cub")
    assert "| ma_ea | 80.00 / 82.00 (81.00) |" in text and "pcanet" not in text  # no pcanet runs: no row
