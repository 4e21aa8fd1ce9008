"""Scale-out: `semid assign` on N synthetic items x 384 dims, in memory vs streamed vs Ray Data.

    python bench/scale.py                      # 2,000,000 items, 3 repeats (1 for ray), ~20 min on 2 cores
    python bench/scale.py --n 200000 --repeats 1 --ray-repeats 1   # a quick look

Each method runs the real CLI in a subprocess (the way a user runs it); the parent samples the resident
memory of the whole process tree (the CLI plus, for Ray, its raylet and workers) every 50 ms. Printed:
median wall seconds, rows/s, peak RSS, and ratios to the in-memory path measured in the same run. Targets
(issue «Scale-out»): streamed peak RSS <= 2 GiB whatever N; streamed throughput within 1.5x of in-memory.
The numbers feed docs/scaling.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_json, print_table  # noqa: E402


def make_data(root: Path, n: int, dim: int, parts: int, seed: int = 0) -> None:
    """Unit vectors around 20,000 centres, written part by part (never all in memory)."""
    from semid.embed.store import write_embeddings

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20_000, dim)).astype(np.float32)
    (root / "emb").mkdir(parents=True)
    for p, rows in enumerate(np.array_split(np.arange(n), parts)):
        X = centres[rng.integers(0, len(centres), len(rows))] + 0.25 * rng.normal(
            size=(len(rows), dim)
        ).astype(np.float32)
        X /= np.linalg.norm(X, axis=1, keepdims=True)
        write_embeddings(root / "emb" / f"part-{p:04d}.parquet", [f"item-{i:09d}" for i in rows], X)


def tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def run_cli(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of the process tree of ``semid argv``."""
    peak = 0
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "semid", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - t
    done.set()
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"semid {' '.join(argv)} failed:\n{err.decode()[-3000:]}")
    return wall, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--parts", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ray-repeats", type=int, default=1)
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument(
        "--no-memory", action="store_true", help="skip the in-memory path (it needs ~4x the data in RAM)"
    )
    ap.add_argument("--workdir", type=Path, default=None, help="where to put the data (default: a temp dir)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    root = args.workdir or Path(tempfile.mkdtemp(prefix="semid-scale-"))
    t = time.perf_counter()
    if not (root / "emb").exists():
        make_data(root, args.n, args.dim, args.parts)
    size = sum(f.stat().st_size for f in (root / "emb").iterdir())
    print(
        f"data: {args.n:,} x {args.dim} in {args.parts} parts, {size / 2**30:.2f} GiB Parquet ({time.perf_counter() - t:.0f}s)"
    )
    if not (root / "model").exists():
        wall, _ = run_cli(["fit", str(root / "emb"), "-o", str(root / "model"), "--sample-size", "200000"])
        print(f"fit RQ-KMeans 3x256 on a 200k sample: {wall:.1f}s")

    methods = []
    if not args.no_memory:
        methods.append(("in memory (-o ids.parquet)", ["-o", str(root / "ids.parquet")], args.repeats))
    methods.append(("streamed (-o ids/)", ["-o", str(root / "ids_stream")], args.repeats))
    if not args.no_ray:
        methods.append(
            ("ray, local 2-CPU cluster", ["-o", str(root / "ids_ray"), "--engine", "ray"], args.ray_repeats)
        )
    rows = []
    for name, extra, repeats in methods:
        walls, peaks = [], []
        for _ in range(repeats):
            wall, peak = run_cli(["assign", str(root / "model"), str(root / "emb"), *extra])
            walls.append(wall)
            peaks.append(peak)
        wall = statistics.median(walls)
        rows.append(
            {
                "method": name,
                "repeats": repeats,
                "wall_s": wall,
                "rows_per_s": args.n / wall,
                "peak_rss_gib": max(peaks) / 2**30,
            }
        )
        print(f"  {name}: {wall:.1f}s, peak {max(peaks) / 2**30:.2f} GiB", flush=True)
    base = rows[0]
    for r in rows:
        r["time_vs_memory"] = r["wall_s"] / base["wall_s"]
        r["rss_vs_memory"] = r["peak_rss_gib"] / base["peak_rss_gib"]
    # Same IDs whichever way: compare what each method wrote.
    from semid.ids.table import read_ids

    outs = [p for p in (root / "ids.parquet", root / "ids_stream", root / "ids_ray") if p.exists()]
    tables = [read_ids(p) for p in outs]
    ref = tables[0]
    order = np.argsort(ref.item_ids.astype(str))
    same = []
    for t in tables[1:]:
        o = np.argsort(t.item_ids.astype(str))
        same.append(
            bool((t.item_ids[o] == ref.item_ids[order]).all() and (t.codes[o] == ref.codes[order]).all())
        )
    if args.json:
        emit_json(rows)
    print_table(
        rows,
        ["method", "repeats", "wall_s", "rows_per_s", "peak_rss_gib", "time_vs_memory", "rss_vs_memory"],
        f"semid assign, {args.n:,} x {args.dim}, RQ-KMeans 3x256, dedup suffix; {os.cpu_count()} CPUs",
    )
    print(f"identical IDs item for item across {', '.join(p.name for p in outs)}: {all(same)}")
    if args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
