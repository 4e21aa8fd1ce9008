"""A paired ablation over seeds: arm A against arm B, seed by seed, from finished ``beauty_rec.py`` runs.

    python bench/paired_seeds.py --a bench/out/abl3/text-s1 bench/out/abl3/text-s2 \
        --b bench/out/abl3/fused-s1 bench/out/abl3/fused-s2 --label-a "text IDs" --label-b "fused IDs" \
        --prior bench/results/beauty_rec_fused_ids_seed0.json

Each ``--a`` / ``--b`` is an ``--out`` directory of ``bench/beauty_rec.py`` (its ``results.json``); the arms
pair up by seed. ``--prior`` adds runs recorded earlier in the same JSON shape (``{"runs": [...]}``, each
with ``arm`` "a" or "b"), e.g. a seed whose run directories are gone but whose figures are in
``bench/results/``. Printed: one row per run (with its best validation NDCG@10, read from the run's
``metrics.jsonl``, and its training throughput), each arm's mean ± sd, and the paired ratio B / A per
seed with its mean ± sd: the ratio is what the ablation claims, since seeds share their conditions
(the same catalogue split, the machine's load at the time) within a pair but not across pairs.

"valid N@10, same epoch" is the ratio of the two runs' validation NDCG@10 at the last completed epoch
both validated: under a time budget a slower machine buys fewer epochs, so arms run at different hours
(e.g. set against an earlier session's runs) compare more fairly there than at their best epochs. It
needs both runs' ``metrics.jsonl`` (not available for ``--prior`` runs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit_json, print_table  # noqa: E402

METRICS = ["valid N@10", "R@10", "N@10", "R@10 unseen", "N@10 unseen"]
COLUMNS = ["arm", "seed", *METRICS, "epochs", "train min", "examples/s"]
SAME_EPOCH = "valid N@10, same epoch"


def validation_curve(run_dir: Path) -> tuple[dict[int, float], float | None, float | None]:
    """From the run's ``metrics.jsonl``: its validation NDCG@10 by completed epoch, its best validation
    NDCG@10 (a last epoch cut short by the time budget included) and its mean training throughput."""
    from semid.rec.checkpoints import read_metrics

    records = read_metrics(run_dir)  # [] when the run directory is gone
    valid = [r for r in records if "valid/ndcg@10" in r]
    best = max((r["valid/ndcg@10"] for r in valid), default=None)
    curve = {r["epoch"]: r["valid/ndcg@10"] for r in valid if not r.get("partial")}
    speed = [r["examples_per_s"] for r in records if "examples_per_s" in r]
    return curve, best, (sum(speed) / len(speed) if speed else None)


def read_arm(out_dirs: list[Path], arm: str) -> list[dict[str, Any]]:
    """One row per generative run of each ``beauty_rec.py`` output directory."""
    rows = []
    for out in out_dirs:
        results = out / "results.json"
        if not results.exists():
            raise SystemExit(f"Error: {results} does not exist (is the run finished?)")
        for run in json.loads(results.read_text())["runs"]:
            curve, valid, speed = validation_curve(Path(run["run_dir"]))
            rows.append({**run, "arm": arm, "valid N@10": valid, "examples/s": speed, "curve": curve})
    return rows


def read_prior(path: Path, arms: dict[str, str]) -> list[dict[str, Any]]:
    """The runs of a ``--prior`` file, each checked for an integer seed and an arm named in ``arms``."""
    if not path.is_file():
        raise SystemExit(f"Error: --prior {path} does not exist")
    try:
        prior = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SystemExit(f"Error: --prior {path} is not JSON ({e})") from None
    runs = prior.get("runs") if isinstance(prior, dict) else None
    if not isinstance(runs, list) or not all(isinstance(r, dict) for r in runs):
        raise SystemExit(f'Error: --prior {path} needs the shape {{"runs": [{{...}}, ...]}}')
    if any(r.get("arm") not in arms or not isinstance(r.get("seed"), int) for r in runs):
        raise SystemExit(f"Error: --prior {path}: every run needs a seed and an arm of 'a' or 'b'")
    return runs


def paired(rows: list[dict[str, Any]], labels: dict[str, str]) -> list[dict[str, Any]]:
    """Each arm's mean ± sd, then B / A per metric as the mean ± sd of the per-seed ratios."""
    from semid.rec.evaluate import mean_sd

    by_seed = {(r["arm"], r["seed"]): r for r in rows}
    seeds = sorted({s for arm, s in by_seed if (("a", s) in by_seed and ("b", s) in by_seed)})
    if not seeds:
        raise SystemExit("Error: no seed has a run in both arms")
    seed_list = ",".join(map(str, seeds))
    out = []
    for arm in ("a", "b"):
        row: dict[str, Any] = {"arm": f"{labels[arm]}, mean ± sd", "seed": seed_list}
        for key in METRICS:
            values = [by_seed[arm, s][key] for s in seeds if by_seed[arm, s].get(key) is not None]
            if len(values) == len(seeds):
                mean, sd = mean_sd(values)
                row[key] = f"{mean:.4f} ± {sd:.4f}"
        out.append(row)
    ratio: dict[str, Any] = {"arm": f"{labels['b']} / {labels['a']}, paired", "seed": seed_list}
    for key in METRICS:
        pairs = [(by_seed["a", s].get(key), by_seed["b", s].get(key)) for s in seeds]
        if all(a is not None and b is not None and a > 0 for a, b in pairs):
            mean, sd = mean_sd([b / a for a, b in pairs])
            ratio[key] = f"{mean:.3f}x ± {sd:.3f}"
            ratio[f"{key} wins"] = f"{sum(b > a for a, b in pairs)}/{len(pairs)}"
    curves = [(by_seed["a", s].get("curve"), by_seed["b", s].get("curve")) for s in seeds]
    if all(a and b and set(a) & set(b) for a, b in curves):
        epochs = [max(set(a) & set(b)) for a, b in curves]
        mean, sd = mean_sd([b[e] / a[e] for (a, b), e in zip(curves, epochs, strict=True)])
        ratio[SAME_EPOCH] = f"{mean:.3f}x ± {sd:.3f} (epochs {','.join(map(str, epochs))})"
    out.append(ratio)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", type=Path, nargs="+", default=[], help="beauty_rec.py --out directories of arm A")
    p.add_argument("--b", type=Path, nargs="+", default=[], help="beauty_rec.py --out directories of arm B")
    p.add_argument("--label-a", default="A")
    p.add_argument("--label-b", default="B")
    p.add_argument("--prior", type=Path, nargs="*", default=[], help="JSON files of earlier runs (see above)")
    p.add_argument("--json", action="store_true", help="also one JSON object per row")
    args = p.parse_args()
    labels = {"a": args.label_a, "b": args.label_b}
    rows = read_arm(args.a, "a") + read_arm(args.b, "b")
    for path in args.prior:
        rows += read_prior(path, labels)
    rows.sort(key=lambda r: (r["seed"], r["arm"]))
    shown = [{k: v for k, v in r.items() if k != "curve"} | {"arm": labels[r["arm"]]} for r in rows]
    print_table(shown, COLUMNS, "each run (test: all users, every item ranked; valid: the run's best)")
    summary = paired(rows, labels)
    print_table(summary, ["arm", "seed", *METRICS], "mean ± sd over seeds, and the paired ratio")
    if SAME_EPOCH in summary[-1]:
        print(f"{SAME_EPOCH} ({args.label_b} / {args.label_a}, paired): {summary[-1][SAME_EPOCH]}")
    wins = {k.removesuffix(" wins"): v for k, v in summary[-1].items() if k.endswith(" wins")}
    print(f"seeds where {args.label_b} > {args.label_a}: " + ", ".join(f"{k} {v}" for k, v in wins.items()))
    if args.json:
        emit_json([*shown, *summary])


if __name__ == "__main__":
    main()
