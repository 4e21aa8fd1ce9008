"""Collect the recorded Beauty runs of issue #21 into one ``{"rows", "runs"}`` file for
``bench/beauty_rec.py --merge``, so that one command prints the tuned SASRec, our TIGER recipe, the step-2
model (TIGER on fused IDs), its hybrid and the cold-start table together, each model as mean ± sd over its
seeds. Their run directories are gone (``bench/out`` is not kept), so the figures are read from the
outputs recorded under ``bench/results/``::

    python bench/collect_rec_runs.py                  # writes bench/results/beauty_rec_runs.json
    python bench/beauty_rec.py --merge bench/results/beauty_rec_runs.json [bench/out/text-s1 ...]

Sources: the ``--json`` lines of each output where it printed them (full precision), else (seeds 0 and 2
of the 73-epoch fused runs, merged without ``--json``) the printed "each seed" table, 4 significant digits.
Every run keeps the file it came from in ``"source"``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
# file -> the models whose per-seed rows it holds (its --json lines)
JSON_RUNS = {
    "beauty_rec_sasrec.txt": ["SASRec, tuned (ours)"],
    "beauty_rec_tiger_nouser.txt": [
        "TIGER, rq-kmeans IDs (ours)"
    ],  # text IDs, seed 0 (printed without a seed)
    "beauty_rec_tiger_text_seeds12.txt": ["TIGER, rq-kmeans IDs (ours)"],  # text IDs, seeds 1 and 2
    "beauty_rec_tiger_fused_73ep.txt": ["TIGER, fused IDs (ours)", "TIGER + SASRec rerank, fused IDs (ours)"],
}
TABLE_RUNS = ("beauty_rec_tiger_fused_3seeds.txt", (0, 2))  # seed 1's rows are the 73ep file's
COLD = ["beauty_rec_cold_start.txt", "beauty_rec_cold_start_tiger.txt", "beauty_rec_cold_start_fused.txt"]


def json_lines(name: str) -> list[dict[str, Any]]:
    out = []
    for line in (RESULTS / name).read_text(encoding="utf-8").splitlines():
        if line.startswith("{") and line.endswith("}"):
            out.append(json.loads(line))
    return out


def json_blocks(name: str) -> list[dict[str, Any]]:
    """The multi-line JSON objects of an output (``semid evaluate --json`` results: a line "{" to a line "}")."""
    blocks, current = [], None
    for line in (RESULTS / name).read_text(encoding="utf-8").splitlines():
        if line == "{":
            current = [line]
        elif current is not None:
            current.append(line)
            if line == "}":
                blocks.append(json.loads("\n".join(current)))
                current = None
    return blocks


def table_runs(name: str, seeds: tuple[int, ...]) -> list[dict[str, Any]]:
    """The rows of a printed "each seed" table (``print_table``: a header, a rule of dashes per column) for
    ``seeds``; a blank cell (the hybrid has no epochs of its own) is left out."""
    lines = (RESULTS / name).read_text(encoding="utf-8").splitlines()
    at = lines.index("each seed")
    header, rule = lines[at + 1], lines[at + 2]
    spans = [(m.start(), m.end()) for m in re.finditer(r"-+", rule)]
    keys = [header[a:b].strip() for a, b in spans]
    runs = []
    for line in lines[at + 3 :]:
        if not line.strip():
            break
        cells = {k: line[a:b].strip() for k, (a, b) in zip(keys, spans, strict=True)}
        run: dict[str, Any] = {"model": cells.pop("model")}
        for key, text in cells.items():
            if text:  # print_table writes thousands with commas (users/s 24,445)
                number = text.replace(",", "")
                run[key] = int(number) if key in ("epochs", "best epoch", "seed") else float(number)
        if run["seed"] in seeds:
            runs.append({**run, "run_dir": f"(gone; {name}, seed {run['seed']})", "source": name})
    return runs


def collect() -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    for name, models in JSON_RUNS.items():
        seen: dict[tuple[str, int], dict[str, Any]] = {}
        for row in json_lines(name):
            if row.get("model") in models and "run_dir" in row:
                key = (row["model"], row.get("seed", 0))
                if key in seen:  # an output may print its rows twice (a --resume re-run): the same figures
                    if seen[key] != row:
                        raise SystemExit(f"{name}: two different rows for {key[0]!r} seed {key[1]}")
                    continue
                seen[key] = row
                runs.append({**row, "seed": row.get("seed", 0), "source": name})
    runs += table_runs(*TABLE_RUNS)
    cold: dict[str, dict[str, Any]] = {}
    for name in COLD:
        for row in json_lines(name):
            if str(row.get("model", "")).startswith("cold start: "):
                cold.setdefault(row["model"], {**row, "source": name})
    # text IDs + the TIGER paper's rule (3-code prefix, share 0.1): `semid evaluate --unseen-share 0.1`, on the
    # cold-target users (--cold-start) and on all test users
    rule = [b for b in json_blocks(COLD[1]) if b["model_type"] == "tiger + unseen by prefix"]
    rule = [b for b in rule if b["unseen"] == {**b["unseen"], "prefix_levels": 3, "share": 0.1}]
    (on_cold,) = [b["model"] for b in rule if "cold_start" in b]
    (on_all,) = [b["model"] for b in rule if "cold_start" not in b]
    name = "cold start: TIGER, rq-kmeans IDs (ours) + unseen items by prefix (share 0.1)"
    cold[name] = {"model": name, "R@10": on_cold["recall@10"], "N@10": on_cold["ndcg@10"]}
    cold[name].update({"R@10 all users": on_all["recall@10"], "N@10 all users": on_all["ndcg@10"]})
    cold[name]["source"] = COLD[1]
    # fused IDs with the untrained items' SASRec rows imputed from the text (bench/cold_impute.py)
    (imputed,) = [
        r for r in json_lines(COLD[2]) if r.get("untrained item's SASRec half") == "row imputed from the text"
    ]
    name = "cold start: TIGER, fused IDs, untrained rows imputed from the text (ours) + unseen items by prefix (share 0.1)"
    cold[name] = {"model": name, "R@10": imputed["cold R@10 +rule"], "N@10": imputed["cold N@10 +rule"]}
    cold[name].update(
        {"R@10 all users": imputed["all R@10 +rule"], "N@10 all users": imputed["all N@10 +rule"]}
    )
    cold[name]["source"] = COLD[2]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    return {
        "command": "python bench/collect_rec_runs.py",
        "commit": f"{commit.strip()}: bench/results as read (the collector is that of the commit that writes this file)",
        "note": "read from the recorded outputs in each entry's source; cold-start rows are one seed each",
        "rows": [
            *[r for r in json_lines("beauty_rec_sasrec.txt") if r.get("model") == "most popular (ours)"],
            *cold.values(),
        ],
        "runs": runs,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", type=Path, default=RESULTS / "beauty_rec_runs.json")
    args = p.parse_args()
    collected = collect()
    tmp = args.output.with_suffix(".tmp")
    tmp.write_text(json.dumps(collected, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(args.output)
    models = {}
    for r in collected["runs"]:
        models.setdefault(r["model"], []).append(r["seed"])
    for model, seeds in models.items():
        print(f"{model}: seeds {sorted(seeds)}")
    print(f"{len(collected['rows'])} rows (most popular, cold start) -> {args.output}")


if __name__ == "__main__":
    main()
