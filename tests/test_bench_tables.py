"""Tables the benchmarks build from finished runs, checked on hand-made run directories:
``bench/beauty_rec.py --merge`` (seeds trained in separate invocations, as one table) and
``bench/ema_ablation.py`` (trained weights against their moving average inside one run)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import load_bench as load


def invocation(out: Path, runs: list[tuple[str, int, float]]) -> Path:
    """A finished ``beauty_rec.py --out`` folder: results.json with most popular and one run per
    (model, seed, R@10)."""
    out.mkdir(parents=True)
    rows = [{"model": "most popular (ours)", "R@10": 0.0115}]
    runs_json = [
        {"model": m, "seed": s, "R@10": r10, "N@10": r10 / 2, "run_dir": str(out / f"{m}-{s}")}
        for m, s, r10 in runs
    ]
    (out / "results.json").write_text(json.dumps({"rows": rows, "runs": runs_json}))
    return out


def test_merge_prints_each_model_as_the_mean_and_sample_sd_of_its_seeds(tmp_path: Path, capsys) -> None:
    bench = load("_rec_tables")
    outs = [
        invocation(tmp_path / "s1", [("TIGER", 1, 0.08), ("hybrid", 1, 0.09)]),
        invocation(tmp_path / "s0", [("TIGER", 0, 0.07)]),
        invocation(tmp_path / "s2", [("TIGER", 2, 0.09), ("hybrid", 2, 0.10)]),
    ]
    bench.merge_results(outs, as_json=True)
    printed = capsys.readouterr().out
    rows = {r["model"]: r for r in (json.loads(x) for x in printed.splitlines() if x.startswith("{"))}
    # TIGER over seeds 0, 1, 2: mean 0.08, sample sd 0.01; the hybrid over its two seeds: 0.095 ± 0.0071
    assert rows["TIGER, 3 seeds"]["R@10"] == "0.0800 ± 0.0100"
    assert rows["hybrid, 2 seeds"]["R@10"] == "0.0950 ± 0.0071"
    assert rows["most popular (ours)"]["R@10"] == 0.0115  # once, from the first folder
    assert "eSASRec (2508.06450)" in rows  # the reference rows with their sources
    assert "mean ± sd over seeds 0, 1, 2" in printed


def test_merge_refuses_one_run_counted_as_two_seeds_and_a_missing_folder(tmp_path: Path) -> None:
    bench = load("_rec_tables")
    a = invocation(tmp_path / "a", [("TIGER", 1, 0.08)])
    with pytest.raises(
        SystemExit, match=r"^--merge: 'TIGER' seed 1 is in .*a/TIGER-1 and .*a/TIGER-1: one run"
    ):
        bench.merge_results([a, a])
    with pytest.raises(SystemExit, match=r"^--merge: .*nope/results.json not found"):
        bench.merge_results([a, tmp_path / "nope"])


def test_merge_reads_a_results_file_beside_folders_and_prints_the_recorded_cold_start_rows(
    tmp_path: Path, capsys
) -> None:
    bench = load("_rec_tables")
    recorded = {
        "rows": [
            {"model": "most popular (ours)", "R@10": 0.0115},
            {"model": "cold start: content (MiniLM text)", "R@10": 0.0349, "N@10": 0.0174},
            {"model": "cold start: TIGER (ours)", "R@10": 0.0, "N@10": 0.0},
        ],
        "runs": [{"model": "TIGER", "seed": 0, "R@10": 0.07, "N@10": 0.035, "run_dir": "(gone)"}],
    }
    path = tmp_path / "recorded.json"
    path.write_text(json.dumps(recorded))
    folder = invocation(tmp_path / "s1", [("TIGER", 1, 0.09), ("SASRec", 1, 0.08)])
    bench.merge_results([path, folder], as_json=True)
    printed = capsys.readouterr().out
    rows = {r["model"]: r for r in (json.loads(x) for x in printed.splitlines() if x.startswith("{"))}
    assert rows["TIGER, 2 seeds"]["R@10"] == "0.0800 ± 0.0141"  # 0.07 and 0.09: sample sd 0.01414
    # one seed is labelled as one, with no spread it does not have
    assert rows["SASRec, 1 seed"]["R@10"] == "0.0800" and "SASRec, 1 seeds" not in rows
    assert rows["cold start: content (MiniLM text)"]["R@10"] == 0.0349
    table = printed.split("Cold start, as recorded")[1]
    assert "content (MiniLM text)" in table and "cold start:" not in table.split("{")[0]


def test_the_collected_runs_file_holds_every_recorded_seed_of_the_headline_models() -> None:
    """bench/results/beauty_rec_runs.json is what bench/collect_rec_runs.py reads from the outputs today."""
    collect = load("collect_rec_runs")
    collected = collect.collect()
    seeds: dict[str, list[int]] = {}
    for run in collected["runs"]:
        seeds.setdefault(run["model"], []).append(run["seed"])
    assert sorted(seeds["SASRec, tuned (ours)"]) == [0, 1, 2]
    assert sorted(seeds["TIGER, fused IDs (ours)"]) == [0, 1, 2]
    assert sorted(seeds["TIGER + SASRec rerank, fused IDs (ours)"]) == [0, 1, 2]
    fused = {r["seed"]: r for r in collected["runs"] if r["model"] == "TIGER, fused IDs (ours)"}
    assert fused[1]["R@10"] == pytest.approx(0.08134, abs=5e-6)  # the --json line of seed 1
    assert fused[0]["R@10"] == 0.08049 and fused[2]["N@10"] == 0.04329  # the printed table of seeds 0 and 2
    assert all(r["source"] for r in collected["runs"])
    committed = json.loads((Path(collect.RESULTS) / "beauty_rec_runs.json").read_text())
    assert committed["runs"] == collected["runs"] and committed["rows"] == collected["rows"]


def ema_run(run_dir: Path, seed: int, curve: list[tuple[int, float, float]]) -> Path:
    """A run trained with ema_select=false: (epoch, trained N@10, average N@10) per validation."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"train": {"seed": seed}}))
    records = [
        {
            "epoch": e,
            "valid/ndcg@10": t,
            "valid/recall@10": 2 * t,
            "valid_ema/ndcg@10": a,
            "valid_ema/recall@10": 2 * a,
        }
        for e, t, a in curve
    ]
    records.insert(0, {"epoch": 0, "loss": 3.0})  # an epoch without validation is skipped
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run_dir


def test_ema_ablation_compares_each_arms_best_and_the_late_same_epoch_ratio(tmp_path: Path) -> None:
    ema = load("ema_ablation")
    run = ema_run(
        tmp_path / "r", 2, [(2, 0.010, 0.012), (4, 0.020, 0.021), (6, 0.030, 0.029), (8, 0.025, 0.033)]
    )
    row = ema.compare(run)
    assert row["seed"] == 2 and row["validations"] == 4
    # the trained weights peak at epoch 6 (0.030), the average at epoch 8 (0.033): 1.1x
    assert (row["trained N@10"], row["epoch"], row["average N@10"], row["epoch avg"]) == (0.030, 6, 0.033, 8)
    assert row["avg / trained N@10"] == pytest.approx(1.1)
    assert row["trained R@10"] == 0.060 and row["average R@10"] == 0.066
    # the second half of the validations (epochs 6 and 8): ratios 0.967 and 1.32, median 1.143
    assert row["same epoch, 2nd half (median)"] == pytest.approx((0.029 / 0.030 + 0.033 / 0.025) / 2)


def test_ema_ablation_refuses_a_run_that_validated_no_average(tmp_path: Path) -> None:
    ema = load("ema_ablation")
    run = tmp_path / "plain"
    run.mkdir()
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "valid/ndcg@10": 0.01}) + "\n")
    with pytest.raises(SystemExit, match=r"^Error: .*plain logged no validation of a weight average"):
        ema.compare(run)
