"""Registry throughput: batched ``Registry`` calls vs. one SQL statement per item.

Times, on a fresh temp file per repeat (median of ``--repeats``):

- ``assign_new``: ``n`` new items (random ``(n, levels)`` base codes, so some collide), dedup="suffix";
- ``assign_known``: the same ``n`` items again (all known: stored IDs come back);
- ``lookup_items``: item_id -> codes for all ``n`` items;
- ``lookup_codes``: codes -> item_id for all ``n`` final codes.

The naive baseline does what a per-item loop would, on ``--baseline-n`` items against the same schema and
pragmas (WAL, synchronous=NORMAL), every statement in autocommit: for a new item, look the item up, read the
group's largest suffix and INSERT; for the others, one SELECT per item / code. Its time is scaled linearly
to ``n`` and reported as a ratio (``speedup`` = naive / batched).

Usage::

    python bench/registry.py                 # table
    python bench/registry.py --json          # one JSON object per row
    python bench/registry.py --n 20000 --baseline-n 2000 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from semid.ids.registry import Registry

OPS = ("assign_new", "assign_known", "lookup_items", "lookup_codes")


def make_data(n: int, levels: int, codebook_size: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """``n`` item ids and ``(n, levels)`` random base codes."""
    rng = np.random.default_rng(seed)
    ids = [f"item{i:07d}" for i in rng.permutation(n)]  # not in sorted order, like real catalogues
    return ids, rng.integers(0, codebook_size, size=(n, levels))


def time_batched(path: Path, ids: list[str], base: np.ndarray) -> dict[str, float]:
    """Seconds for each operation through the Registry API, on a fresh file."""
    out: dict[str, float] = {}
    with Registry(path, fingerprint="bench") as reg:
        t = time.perf_counter()
        res = reg.assign(ids, base)
        out["assign_new"] = time.perf_counter() - t
        assert res.n_new == len(ids)

        t = time.perf_counter()
        again = reg.assign(ids, base)
        out["assign_known"] = time.perf_counter() - t
        assert again.n_existing == len(ids) and np.array_equal(again.codes, res.codes)

        t = time.perf_counter()
        codes = reg.lookup_items(ids)
        out["lookup_items"] = time.perf_counter() - t
        assert np.array_equal(codes, res.codes)

        t = time.perf_counter()
        found = reg.lookup_codes(codes)
        out["lookup_codes"] = time.perf_counter() - t
        assert found == ids
    return out


def time_naive(path: Path, ids: list[str], base: np.ndarray) -> dict[str, float]:
    """Seconds for each operation done one item at a time, one autocommitted statement each."""
    Registry(path).close()  # the same schema and pragmas as the batched run
    conn = sqlite3.connect(path, isolation_level=None)  # autocommit: every statement is a transaction
    conn.execute("PRAGMA synchronous=NORMAL")
    groups = ["-".join(map(str, row)) for row in base.tolist()]
    out: dict[str, float] = {}

    t = time.perf_counter()
    for item, grp in zip(ids, groups, strict=True):
        if conn.execute("SELECT 1 FROM ids WHERE version = 1 AND item_id = ?", (item,)).fetchone() is None:
            top = conn.execute("SELECT MAX(slot) FROM ids WHERE version = 1 AND grp = ?", (grp,)).fetchone()[
                0
            ]
            conn.execute(
                "INSERT INTO ids (version, item_id, grp, slot) VALUES (1, ?, ?, ?)",
                (item, grp, 0 if top is None else top + 1),
            )
    out["assign_new"] = time.perf_counter() - t

    def per_item(sql: str, params: list[tuple]) -> float:
        t = time.perf_counter()
        for p in params:
            conn.execute(sql, p).fetchone()
        return time.perf_counter() - t

    by_item = "SELECT grp || '-' || slot FROM ids WHERE version = 1 AND item_id = ?"
    out["assign_known"] = per_item(by_item, [(i,) for i in ids])
    out["lookup_items"] = per_item(by_item, [(i,) for i in ids])
    rows = conn.execute("SELECT grp, slot FROM ids WHERE version = 1").fetchall()
    out["lookup_codes"] = per_item("SELECT item_id FROM ids WHERE version = 1 AND grp = ? AND slot = ?", rows)
    conn.close()
    return out


def median_over(repeats: int, run: Callable[[Path], dict[str, float]]) -> dict[str, float]:
    """Median seconds per operation over ``repeats`` runs, each on a fresh temp file."""
    runs = []
    for r in range(repeats):
        with tempfile.TemporaryDirectory(prefix="semid-bench-") as d:
            runs.append(run(Path(d) / f"ids{r}.db"))
    return {op: statistics.median(run[op] for run in runs) for op in OPS}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100_000, help="items in the batched runs")
    p.add_argument("--baseline-n", type=int, default=10_000, help="items in the naive runs (scaled to --n)")
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--codebook-size", type=int, default=64, help="codes per level (small: more collisions)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print one JSON object per row instead of a table")
    args = p.parse_args(argv)

    ids, base = make_data(args.n, args.levels, args.codebook_size)
    batched = median_over(args.repeats, lambda path: time_batched(path, ids, base))
    naive = median_over(
        args.repeats, lambda path: time_naive(path, ids[: args.baseline_n], base[: args.baseline_n])
    )
    scale = args.n / args.baseline_n

    rows = []
    for op in OPS:
        naive_s = naive[op] * scale
        rows.append(
            {
                "op": op,
                "n": args.n,
                "median_s": round(batched[op], 4),
                "us_per_item": round(batched[op] / args.n * 1e6, 2),
                "items_per_s": round(args.n / batched[op]),
                "naive_s_scaled": round(naive_s, 3),
                "baseline_n": args.baseline_n,
                "speedup": round(naive_s / batched[op], 1),
                "repeats": args.repeats,
            }
        )
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(
            f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, SQLite {sqlite3.sqlite_version}, "
            f"levels={args.levels}, codebook_size={args.codebook_size}, median of {args.repeats}"
        )
        header = (
            f"{'op':<14}{'n':>9}{'median s':>11}{'us/item':>10}{'items/s':>12}{'naive s*':>11}{'speedup':>9}"
        )
        print(header)
        print("-" * len(header))
        for r in rows:
            print(
                f"{r['op']:<14}{r['n']:>9}{r['median_s']:>11.3f}{r['us_per_item']:>10.2f}{r['items_per_s']:>12,}"
                f"{r['naive_s_scaled']:>11.2f}{r['speedup']:>8.1f}x"
            )
        print(
            f"* naive: one autocommitted statement per item on {args.baseline_n:,} items, scaled to {args.n:,}"
        )
    return rows


if __name__ == "__main__":
    main()
