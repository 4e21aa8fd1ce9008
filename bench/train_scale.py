"""Training beyond one process: examples/s of 1 vs 2 data-parallel ranks on Amazon Beauty (issue #23).

    SEMID_SHARED=../shared python bench/train_scale.py --steps 150 2>&1 | tee bench/results/train_scale.txt

For SASRec (configs/sasrec-beauty.json) and TIGER (configs/tiger-beauty.json, RQ-KMeans IDs built as
bench/beauty_rec.py builds them) it trains ``--steps`` optimizer steps of the recipe's global batch three
ways, each a fresh `semid train` run:

* one process, 1 torch thread (the per-core rate);
* one process, 2 threads (what a 2-core laptop gets from one process);
* `torchrun --nproc-per-node 2`, 1 thread per rank (DDP over gloo).

The rate is the training loop's examples/s from the run's metrics.jsonl (validation excluded). On this
2-core machine the two ranks share the cores that the 2-thread process uses, so the ratio says what data
parallelism costs or gains *at equal cores*; it is not a measure of scaling to more machines, where each
rank brings its own cores. The streamed-log memory figures are in bench/stream_rss.py and the
million-item trie figures in bench/catalogue_scale.py (their outputs: bench/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import BEAUTY, free_port  # noqa: E402
from _rec_ids import load_beauty, make_ids  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = [
    ("1 process x 1 thread", 1, 1),
    ("1 process x 2 threads", 1, 2),
    ("2 ranks x 1 thread (DDP)", 2, 1),
]


def run(model: str, procs: int, threads: int, steps: int, out: Path, ids: Path) -> dict:
    recipe = json.loads((ROOT / "configs" / f"{model}-beauty.json").read_text())
    train = {**recipe["train"], "max_steps": steps, "epochs": 1, "valid_users": 256, "max_minutes": 0,
             "tensorboard": False, "num_threads": threads}  # fmt: skip
    config = out / f"{model}-{procs}x{threads}.json"
    config.write_text(json.dumps({"model": recipe["model"], "train": train}))
    run_dir = out / f"{model}-{procs}x{threads}"
    args = ["train", model, str(BEAUTY / "recbole_item"), str(BEAUTY / "p5"), "-o", str(run_dir),
            "--config", str(config), "--quiet"] + (["--ids", str(ids)] if model == "tiger" else [])  # fmt: skip
    launcher = [sys.executable, "-m", "semid"]
    if procs > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs),
                    "--master-port", str(free_port()), "-m", "semid"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t = time.perf_counter()
    job = subprocess.run(launcher + args, env=env, capture_output=True, text=True)
    if job.returncode:
        raise SystemExit(f"{' '.join(launcher + args)} failed:\n{job.stderr[-3000:]}")
    wall = time.perf_counter() - t
    record = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    return {"examples_per_s": record["examples_per_s"], "loss": record["loss"], "wall_s": wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="sasrec,tiger")
    p.add_argument("--steps", type=int, default=150, help="optimizer steps per run (the recipe's batch)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "train_scale")
    p.add_argument(
        "--all",
        action="store_true",
        help="then run bench/stream_rss.py (streamed vs in-memory loader RSS) and bench/catalogue_scale.py "
        "(trie and lookups at 100k, 1M, 10M items) and print their tables too",
    )
    args = p.parse_args()
    if not BEAUTY.is_dir():
        raise SystemExit(f"{BEAUTY} not found (set SEMID_SHARED to the folder holding data/amazon-beauty)")
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in args.out.glob("*x*"):
        if stale.is_dir():
            import shutil

            shutil.rmtree(stale)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    print(f"command: python bench/train_scale.py {' '.join(sys.argv[1:])}")
    print(f"commit: {commit.stdout.strip()}  cores: {os.cpu_count()}  torch threads per rank as listed")
    ids_path = args.out / "ids-rq-kmeans.parquet"
    if "tiger" in args.models:
        load_beauty()
        make_ids("rq-kmeans", args.out, 0)
    print(f"\n{'model':8} {'setting':28} {'examples/s':>11} {'vs 1 thread':>12} {'vs 2 threads':>13} "
          f"{'wall s':>7} {'last loss':>10}")  # fmt: skip
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        rows = [
            (name, run(model, procs, threads, args.steps, args.out, ids_path))
            for name, procs, threads in SETTINGS
        ]
        base1, base2 = rows[0][1]["examples_per_s"], rows[1][1]["examples_per_s"]
        for name, r in rows:
            rate = r["examples_per_s"]
            print(f"{model:8} {name:28} {rate:11,.0f} {rate / base1:11.2f}x {rate / base2:12.2f}x "
                  f"{r['wall_s']:7.1f} {r['loss']:10.4f}", flush=True)  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"\npeak RSS of the largest single process: {peak:,.0f} MiB")
    for script in ("stream_rss.py", "catalogue_scale.py"):
        if args.all:
            print(f"\n$ python bench/{script}", flush=True)
            subprocess.run([sys.executable, str(Path(__file__).parent / script)], check=True)
        else:
            print(f"(streamed-log memory and million-item tries: bench/{script}, or --all)")


if __name__ == "__main__":
    main()
