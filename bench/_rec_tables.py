"""The tables of ``bench/beauty_rec.py``: the reference rows with their sources, the columns, each model's
mean ± sd over seeds, the cold-start table, and ``--merge`` (finished invocations as one table)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_json, print_table  # noqa: E402

# --cold-start adds TIGER + the TIGER paper's rule at the library's default share (fixed in advance)
from semid.rec.unseen import DEFAULT_SHARE as UNSEEN_SHARE  # noqa: E402

REFERENCES = [  # TIGER (Rajput et al., NeurIPS 2023), Table 2, Beauty
    {"model": "SASRec (paper)", "R@5": 0.0387, "N@5": 0.0249, "R@10": 0.0605, "N@10": 0.0318},
    {"model": "TIGER (paper)", "R@5": 0.0454, "N@5": 0.0321, "R@10": 0.0648, "N@10": 0.0384},
    # An independent reproduction: TIGER trained with Snap's GRID framework on a GPU (about 5 h), RQ-KMeans
    # IDs + a suffix level; test metrics from snap-research/GRID jobs/logs/reproducing/beauty/train.log
    # (its two other embedding sizes, reproducing/{L,XXL}/beauty, read N@10 0.0365 and 0.0334).
    {"model": "TIGER (GRID repro.)", "R@5": 0.0452, "N@5": 0.0304, "R@10": 0.0655, "N@10": 0.0369},
    # Later generative models on the same split, as their papers report them (decoded items, no filtering):
    {"model": "RPG (arXiv 2506.05781)", "R@10": 0.0809, "N@10": 0.0464},
    {"model": "LC-Rec, Qwen3-1.7B (phonism/genrec)", "R@10": 0.0791, "N@10": 0.0438},
    {"model": "ActionPiece (arXiv 2502.13581)", "R@10": 0.0775, "N@10": 0.0424},
    # Tuned SASRec of "SASRec is still strong" (arXiv 2508.06450, blondered/transformer_benchmark, RecTools):
    # evaluated with the items a user has seen filtered out, hence the "unseen" columns
    {"model": "SASRec, sampled softmax (2508.06450)", "R@10 unseen": 0.0921, "N@10 unseen": 0.0531},
    {"model": "eSASRec (2508.06450)", "R@10 unseen": 0.0928, "N@10 unseen": 0.0523},
]
COLUMNS = ["model", "R@5", "N@5", "R@10", "N@10", "train min", "epochs", "best epoch", "users/s", "invalid"]
COLUMNS += ["R@10 unseen", "N@10 unseen"]  # the same model never recommending an item of the history


COLD_COLUMNS = ["model", "R@10", "N@10", "R@10 all users", "N@10 all users"]
RULE_NOTE = " (and, with the rule, all test users)"
COLD_PREFIX = "cold start: "  # the cold-start rows in results.json's "rows"


def most_popular_row(pop: dict[str, float]) -> dict[str, Any]:
    """The most-popular baseline's row, from ``semid.rec.evaluate.evaluate_most_popular``'s metrics."""
    names = (("R@5", "recall@5"), ("N@5", "ndcg@5"), ("R@10", "recall@10"), ("N@10", "ndcg@10"))
    return {"model": "most popular (ours)", **{k: pop[m] for k, m in names}}


def print_cold_start(
    runs: list[dict[str, Any]], baselines: dict[str, dict[str, float]]
) -> list[dict[str, Any]]:
    """Print the cold-start table, the test users whose target is a cold item: each run, each TIGER run
    with the TIGER paper's rule (and that rule's cost to all test users), and the ``baselines`` (name ->
    metrics); return its rows."""
    rows = [{"model": r["model"], "R@10": r["cold R@10"], "N@10": r["cold N@10"]} for r in runs]
    rows += [
        {
            "model": f"{r['model']} + unseen items by prefix (share {UNSEEN_SHARE:g})",
            "R@10": r["cold R@10 +prefix"],
            "N@10": r["cold N@10 +prefix"],
            "R@10 all users": r["R@10 +prefix"],
            "N@10 all users": r["N@10 +prefix"],
        }
        for r in runs
        if "cold R@10 +prefix" in r
    ]
    rows += [{"model": name, "R@10": m["recall@10"], "N@10": m["ndcg@10"]} for name, m in baselines.items()]
    n = runs[0]["cold users"] if runs else 0
    print_table(rows, COLD_COLUMNS, f"Cold start: the {n:,} test users whose target is cold{RULE_NOTE}")
    return rows


def merge_results(outs: list[Path], as_json: bool = False) -> None:
    """The tables of several finished invocations as one: the references, most popular, every run (one row
    per model and seed), each model's mean ± sd over its seeds, and the cold-start rows the invocations
    recorded. Each of ``outs`` is an ``--out`` folder (its ``results.json``) or a JSON file of the same shape
    (``{"rows": [...], "runs": [...]}``, e.g. ``bench/collect_rec_runs.py``'s). The same model and seed twice
    is refused: it would count one run as two seeds."""
    runs: list[dict[str, Any]] = []
    baseline: list[dict[str, Any]] = []
    cold: list[dict[str, Any]] = []
    for out in outs:
        path = out if out.is_file() else out / "results.json"
        if not path.is_file():
            raise SystemExit(
                f"--merge: {path} not found (an --out folder of a finished invocation, or a results JSON file)"
            )
        results = json.loads(path.read_text())
        baseline = baseline or [r for r in results["rows"] if r["model"] == "most popular (ours)"]
        cold += [r for r in results["rows"] if r["model"].startswith(COLD_PREFIX) and r not in cold]
        for run in results["runs"]:
            twice = [r for r in runs if (r["model"], r["seed"]) == (run["model"], run["seed"])]
            if twice:
                raise SystemExit(
                    f"--merge: {run['model']!r} seed {run['seed']} is in {twice[0]['run_dir']} and "
                    f"{run['run_dir']}: one run per model and seed"
                )
            runs.append(run)
    runs.sort(key=lambda r: r["seed"])  # seed by seed as one invocation prints them (model order kept)
    print_table(runs, COLUMNS + ["seed"], "each seed")
    rows = [*REFERENCES, *baseline, *summarize_seeds(runs)]
    seeds = sorted({r["seed"] for r in runs})
    title = "Amazon Beauty, leave-one-out, full ranking (test users), mean ± sd over seeds"
    print_table(rows, COLUMNS, f"{title} {', '.join(map(str, seeds))}")
    if cold:
        shown = [{**r, "model": r["model"].removeprefix(COLD_PREFIX)} for r in cold]
        print_table(
            shown, COLD_COLUMNS, f"Cold start, as recorded: the test users whose target is cold{RULE_NOTE}"
        )
    if as_json:
        emit_json([*rows, *cold, *runs])


def summarize_seeds(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model: each metric as "mean ± sd" (sample sd over the seeds) and the raw figures; a model
    run with one seed is labelled "1 seed" and shows its figure without a spread it does not have."""
    from semid.rec.evaluate import mean_sd

    out = []
    for name in dict.fromkeys(r["model"] for r in runs):
        group = [r for r in runs if r["model"] == name]
        row: dict[str, Any] = {"model": f"{name}, {len(group)} seed{'s' if len(group) > 1 else ''}"}
        for key in COLUMNS[1:]:
            if not all(key in r for r in group):  # e.g. a reranked row has no epochs of its own
                continue
            mean, sd = mean_sd([r[key] for r in group])
            spread = f" ± {sd:.4f}" if len(group) > 1 else ""
            row[key] = f"{mean:.4f}{spread}" if key.startswith(("R@", "N@")) else round(mean, 2)
            row[f"{key} mean"], row[f"{key} sd"] = mean, sd
        if "rerank weight" in group[0]:
            row["rerank weights"] = [r["rerank weight"] for r in group]
        out.append(row)
    return out
