"""Streamed interaction logs vs the in-memory path: peak RSS and examples/s of one training epoch's batches.

    python bench/stream_rss.py                         # logs of 1M and 5M interactions, ~5 min on 2 cores
    python bench/stream_rss.py --sizes 200000 --kinds prefixes     # a quick look

Each log (string user and item ids, 16 shards, ~30 interactions per user, 100,000 items) is written once;
each measurement then runs in a fresh subprocess, and its peak RSS is the child's ``ru_maxrss``:

- ``streamed``: :class:`semid.rec.stream.StreamedLog` ``open`` + ``train_batches`` (defaults: record
  batches and shuffle buffer of 65,536) over every shard, as one rank;
- ``in memory``: what :class:`~semid.rec.data.RecData` does: the whole log read into memory, item ids
  mapped, rows sorted by (user, time), :func:`~semid.data.leave_one_out`, then
  ``window_examples``/``prefix_examples`` + ``length_batches`` + ``collate`` of every batch;
- ``imports only``: the interpreter with semid, numpy, pyarrow and torch loaded (the floor of both).

Both make the same examples (``tests/test_stream.py`` checks it) and collate every batch (batch 256,
max_history 50) without training. ``prep_s``: opening the log (streamed) or loading and preparing it (in
memory); ``examples_per_s``: examples / (prep_s + epoch_s). Ratios are streamed / in memory, same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table  # noqa: E402

N_ITEMS = 100_000
N_SHARDS = 16
BATCH, MAX_HISTORY = 256, 50

CHILD = r"""
import json, resource, sys, time
import numpy as np
import pyarrow as pa, pyarrow.compute as pc, pyarrow.parquet as pq
import torch
from semid.data import Sequences, leave_one_out
from semid.rec.data import collate, length_batches, prefix_examples, user_keys, window_examples
from semid.rec.stream import StreamedLog

method, root, kind, n_items, batch, max_history = sys.argv[1:7]
n_items, batch, max_history = int(n_items), int(batch), int(max_history)
catalogue = np.array([f"item-{i}" for i in range(n_items)], dtype=object)
t0 = time.perf_counter()
n = 0
if method == "streamed":
    log = StreamedLog.open(root, catalogue)
    t1 = time.perf_counter()
    for b in log.train_batches(kind, max_history, batch, seed=0, epoch=0):
        n += len(b)
elif method == "in memory":
    table = pq.read_table(root, columns=["user_id", "item_id", "timestamp"])
    table = table.take(pc.sort_indices(table, [("user_id", "ascending"), ("timestamp", "ascending")]))
    index = pc.index_in(table["item_id"], value_set=pa.array(catalogue.tolist()))
    items = index.to_numpy(zero_copy_only=False).astype(np.int64)
    users = table["user_id"].combine_chunks()
    same = pc.equal(users[1:], users[:-1]).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.concatenate([[True], ~same]))  # first row of each user
    keys = user_keys(users.take(pa.array(starts)).to_pylist())
    del table, users, index
    split = leave_one_out(Sequences(np.append(starts, len(items)).astype(np.int64), items))
    make = window_examples if kind == "windows" else prefix_examples
    examples = make(split.train, keys, max_history)
    t1 = time.perf_counter()
    for idx in length_batches(examples.lengths, batch, np.random.default_rng([0, 0])):
        n += len(collate(examples, idx))
else:  # imports only
    t1 = time.perf_counter()
t2 = time.perf_counter()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"examples": n, "prep_s": t1 - t0, "epoch_s": t2 - t1, "peak_rss_mib": rss}))
"""


def write_log(root: Path, n_interactions: int, seed: int = 0) -> None:
    """A log of ``n`` interactions with string ids, written shard by shard (already sorted) from numpy."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    per_shard = n_interactions // N_SHARDS
    for s in range(N_SHARDS):
        lengths = rng.integers(3, 60, per_shard // 25)  # (users,) mean 31 interactions
        lengths = lengths[np.cumsum(lengths) <= per_shard]
        users = pa.array(np.repeat(s + N_SHARDS * np.arange(len(lengths)), lengths))
        user_ids = pc.binary_join_element_wise("user-", pc.utf8_lpad(pc.cast(users, pa.string()), 9, "0"), "")
        items = pc.cast(pa.array(rng.integers(0, N_ITEMS, len(users))), pa.string())
        table = pa.table(
            {
                "user_id": user_ids,  # zero-padded: text order is numeric order, so the shard is sorted
                "item_id": pc.binary_join_element_wise("item-", items, ""),
                "timestamp": np.arange(len(users), dtype=np.int64),
            }
        )
        pq.write_table(table, root / f"part-{s:05d}.parquet", row_group_size=65_536)


def measure(method: str, root: Path, kind: str) -> dict:
    cmd = [sys.executable, "-c", CHILD, method, str(root), kind, str(N_ITEMS), str(BATCH), str(MAX_HISTORY)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000000,5000000", help="interactions per log, comma-separated")
    ap.add_argument("--kinds", default="windows,prefixes", help="windows (SASRec), prefixes (TIGER)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="semid-stream-bench-"))
    try:
        floor = measure("imports only", tmp, "windows")["peak_rss_mib"]
        print(f"imports only (python + semid + numpy + pyarrow + torch): peak {floor:.0f} MiB")
        rows = []
        for size in [int(s) for s in args.sizes.split(",")]:
            root = tmp / f"log-{size}"
            t = time.perf_counter()
            write_log(root, size)
            mib = sum(p.stat().st_size for p in root.iterdir()) / 2**20
            print(
                f"log of {size:,} interactions: {N_SHARDS} shards, {mib:.0f} MiB Parquet "
                f"({time.perf_counter() - t:.0f}s)"
            )
            for kind in args.kinds.split(","):
                res = {m: measure(m, root, kind) for m in ("in memory", "streamed")}
                if res["in memory"]["examples"] != res["streamed"]["examples"]:
                    raise SystemExit(f"example counts differ: {res}")
                for method, r in res.items():
                    speed = r["examples"] / (r["prep_s"] + r["epoch_s"])
                    rows.append(
                        {
                            "interactions": f"{size:,}",
                            "kind": kind,
                            "method": method,
                            "examples": f"{r['examples']:,}",
                            "prep_s": r["prep_s"],
                            "epoch_s": r["epoch_s"],
                            "examples_per_s": speed,
                            "peak_rss_mib": r["peak_rss_mib"],
                            "above_imports_mib": r["peak_rss_mib"] - floor,
                        }
                    )
                mem, st = rows[-2], rows[-1]
                st["rss_vs_memory"] = st["peak_rss_mib"] / mem["peak_rss_mib"]
                st["above_vs_memory"] = st["above_imports_mib"] / mem["above_imports_mib"]
                st["speed_vs_memory"] = st["examples_per_s"] / mem["examples_per_s"]
        columns = [
            "interactions", "kind", "method", "examples", "prep_s", "epoch_s", "examples_per_s",
            "peak_rss_mib", "above_imports_mib", "rss_vs_memory", "above_vs_memory", "speed_vs_memory",
        ]  # fmt: skip
        print_table(
            rows,
            columns,
            f"one epoch of batches (batch {BATCH}, max_history {MAX_HISTORY}), collated, no training",
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
