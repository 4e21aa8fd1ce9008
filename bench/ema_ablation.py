"""The weight average's ablation inside each run: trained weights against their moving average, same run.

    python bench/ema_ablation.py bench/out/long-fused0/tiger-fused bench/out/long-fused2/tiger-fused-s2

Each argument is a run directory trained with ``ema_decay`` and ``ema_select=false`` (``semid.rec.ema``):
training is the trained weights' alone (the average never feeds back), so every validation scored both on
the same validation users after the same steps, and ``metrics.jsonl`` holds ``valid/*`` (the trained
weights, what the run selected and saved) beside ``valid_ema/*`` (the average). No second run, no seed
noise between the arms: the pair differs only in which weights were validated.

Printed per run: each arm's best validation NDCG@10 and Recall@10 (and the epoch of the best NDCG@10),
the ratio average / trained of the best NDCG@10 (the decision a run with ``ema_select=true`` would have
made instead), and the median same-epoch ratio over the run's second half of validations. Then the mean ±
sd of the per-run ratios. Validation only: a test figure never drives this choice.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit_json, print_table  # noqa: E402

COLUMNS = ["run", "seed", "validations", "trained N@10", "epoch", "average N@10", "epoch avg"]
COLUMNS += ["trained R@10", "average R@10", "avg / trained N@10", "same epoch, 2nd half (median)"]


def compare(run_dir: Path) -> dict[str, Any]:
    """The two arms of one run, from its ``metrics.jsonl``."""
    from semid.rec.checkpoints import read_metrics

    both = [r for r in read_metrics(run_dir) if "valid_ema/ndcg@10" in r]
    if not both:
        raise SystemExit(
            f"Error: {run_dir} logged no validation of a weight average (train with ema_decay and "
            "ema_select=false)"
        )
    config = json.loads((run_dir / "config.json").read_text())
    trained = max(both, key=lambda r: r["valid/ndcg@10"])
    average = max(both, key=lambda r: r["valid_ema/ndcg@10"])
    late = both[len(both) // 2 :]
    return {
        "run": str(run_dir),
        "seed": config.get("train", {}).get("seed"),
        "validations": len(both),
        "trained N@10": trained["valid/ndcg@10"],
        "epoch": trained["epoch"],
        "average N@10": average["valid_ema/ndcg@10"],
        "epoch avg": average["epoch"],
        "trained R@10": max(r["valid/recall@10"] for r in both),
        "average R@10": max(r["valid_ema/recall@10"] for r in both),
        "avg / trained N@10": average["valid_ema/ndcg@10"] / trained["valid/ndcg@10"],
        "same epoch, 2nd half (median)": statistics.median(
            r["valid_ema/ndcg@10"] / r["valid/ndcg@10"] for r in late if r["valid/ndcg@10"] > 0
        ),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+", help="run directories trained with ema_select=false")
    p.add_argument("--json", action="store_true", help="also one JSON object per row")
    args = p.parse_args()
    from semid.rec.evaluate import mean_sd

    rows = [compare(run) for run in args.runs]
    print_table(
        rows, COLUMNS, "validation NDCG@10 / Recall@10 (the run's validation users): trained vs average"
    )
    ratios = [r["avg / trained N@10"] for r in rows]
    mean, sd = mean_sd(ratios)
    wins = sum(x > 1 for x in ratios)
    print(f"\naverage / trained, best validation NDCG@10: {mean:.3f}x ± {sd:.3f} over {len(rows)} run(s); "
          f"the average is ahead in {wins}/{len(rows)}")  # fmt: skip
    if args.json:
        emit_json(rows)


if __name__ == "__main__":
    main()
