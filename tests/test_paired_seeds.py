"""bench/paired_seeds.py: a paired ablation over seeds, checked on hand-made run directories."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import load_bench


def paired_seeds():
    return load_bench("paired_seeds")


def finished_run(
    out: Path, seed: int, r10: float, curve: dict[int, float], partial: tuple[int, float] | None = None
) -> Path:
    """A ``beauty_rec.py --out`` directory: results.json with one TIGER row, its run's metrics.jsonl;
    ``partial``: (epoch, validation NDCG@10) of a last epoch cut short by the time budget."""
    run_dir = out / f"tiger-s{seed}"
    run_dir.mkdir(parents=True)
    records = [{"epoch": e, "examples_per_s": 500.0, "valid/ndcg@10": v} for e, v in sorted(curve.items())]
    if partial is not None:  # stopped by the time budget mid-epoch, validated there
        epoch, value = partial
        records.append({"epoch": epoch, "examples_per_s": 300.0, "valid/ndcg@10": value, "partial": True})
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    run = {"model": "TIGER", "seed": seed, "R@10": r10, "N@10": r10 / 2, "run_dir": str(run_dir)}
    (out / "results.json").write_text(json.dumps({"runs": [run]}))
    return out


def test_the_ratio_is_the_mean_and_sample_sd_of_the_per_seed_ratios(tmp_path: Path) -> None:
    ps = paired_seeds()
    a = [finished_run(tmp_path / f"a{s}", s, r10, {2: 0.02}) for s, r10 in [(0, 0.05), (1, 0.04)]]
    b = [finished_run(tmp_path / f"b{s}", s, r10, {2: 0.02}) for s, r10 in [(0, 0.055), (1, 0.05)]]
    rows = ps.read_arm(a, "a") + ps.read_arm(b, "b")
    summary = ps.paired(rows, {"a": "text", "b": "fused"})
    # per-seed ratios 1.10 and 1.25: mean 1.175, sample sd |1.25 - 1.10| / sqrt(2) = 0.106
    assert summary[-1]["R@10"] == "1.175x ± 0.106"
    assert summary[-1]["R@10 wins"] == "2/2"
    assert summary[0]["R@10"] == "0.0450 ± 0.0071"  # arm A: (0.05 + 0.04) / 2, sd 0.01 / sqrt(2)


def test_same_epoch_validation_uses_the_last_completed_epoch_both_runs_validated(tmp_path: Path) -> None:
    ps = paired_seeds()
    # arm A (a faster hour) completed epoch 8; arm B completed 7 (validated at 6) and was cut short in epoch 8
    a = [finished_run(tmp_path / "a", 0, 0.05, {2: 0.010, 4: 0.020, 6: 0.025, 8: 0.030})]
    b = [finished_run(tmp_path / "b", 0, 0.05, {2: 0.012, 4: 0.022, 6: 0.030}, partial=(8, 0.031))]
    rows = ps.read_arm(a, "a") + ps.read_arm(b, "b")
    by_arm = {r["arm"]: r for r in rows}
    assert by_arm["a"]["valid N@10"] == 0.030 and by_arm["b"]["valid N@10"] == 0.031  # best, partial included
    summary = ps.paired(rows, {"a": "A", "b": "B"})
    assert summary[-1]["valid N@10"] == "1.033x ± 0.000"  # best against best: 0.031 / 0.030
    assert summary[-1][ps.SAME_EPOCH] == "1.200x ± 0.000 (epochs 6)"  # 0.030 / 0.025, not B's partial epoch 8


def test_prior_runs_without_metrics_leave_out_the_same_epoch_ratio(tmp_path: Path) -> None:
    ps = paired_seeds()
    rows = ps.read_arm([finished_run(tmp_path / "a", 0, 0.05, {2: 0.02})], "a")
    rows.append({"arm": "b", "seed": 0, "R@10": 0.06, "valid N@10": 0.03})  # a --prior row: no curve
    summary = ps.paired(rows, {"a": "A", "b": "B"})
    assert summary[-1]["R@10"] == "1.200x ± 0.000"
    assert ps.SAME_EPOCH not in summary[-1]


def test_an_unfinished_run_and_a_malformed_prior_are_one_error_line(tmp_path: Path, monkeypatch) -> None:
    ps = paired_seeds()
    (tmp_path / "running").mkdir()
    monkeypatch.setattr(sys, "argv", ["paired_seeds.py", "--a", str(tmp_path / "running")])
    with pytest.raises(SystemExit, match=r"^Error: .*results.json does not exist \(is the run finished\?\)$"):
        ps.main()
    prior = tmp_path / "prior.json"
    prior.write_text(json.dumps({"runs": [{"arm": "c", "seed": 0}]}))
    monkeypatch.setattr(sys, "argv", ["paired_seeds.py", "--prior", str(prior)])
    with pytest.raises(SystemExit, match="every run needs a seed and an arm of 'a' or 'b'"):
        ps.main()


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", r"^Error: --prior .*prior.json is not JSON \("),
        ('[{"arm": "a", "seed": 0}]', r'needs the shape \{"runs": \[\{\.\.\.\}, \.\.\.\]\}$'),
        ('{"runs": 3}', r'needs the shape \{"runs"'),
        ('{"runs": [{"arm": "a", "seed": "0"}]}', "every run needs a seed and an arm of 'a' or 'b'"),
    ],
)
def test_a_prior_file_that_is_not_a_list_of_runs_is_one_error_line(
    tmp_path: Path, monkeypatch, text, message
) -> None:
    ps = paired_seeds()
    prior = tmp_path / "prior.json"
    prior.write_text(text)
    monkeypatch.setattr(sys, "argv", ["paired_seeds.py", "--prior", str(prior)])
    with pytest.raises(SystemExit, match=message):
        ps.main()
