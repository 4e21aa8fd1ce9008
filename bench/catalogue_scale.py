"""Million-item catalogues: constrained decoding and serving lookups at 100k, 1M and 10M items.

    python bench/catalogue_scale.py                          # 100k, 1M, 10M (~6 min on the 2-core machine)
    python bench/catalogue_scale.py --sizes 1M --quick       # a quick look
    python bench/catalogue_scale.py --json                   # also one JSON line per measure

Items are synthetic: ``N`` random *unique* Semantic IDs drawn with a fixed seed, 3 levels of 256 codes and
a 4-level variant (4 x 256). For each size, every measurement runs in a fresh subprocess (so that resident
memory is its own), once for **today** (the code before issue #23 part 4, rebuilt inline below) and once
for **new** (the library as it is), and the table prints both with their ratio ``new / today``:

- *CodeIndex* (the prefix trie plus the leaf -> item map of constrained decoding): build seconds, bytes of
  its arrays, and the process's resident memory during the build (peak over the baseline, via
  ``/proc/self/clear_refs``) and after it (kept). Today's trie held int64 arrays, sorted a full copy of the
  rows and the CodeIndex sorted them a second time (``np.lexsort``) for its own int64 leaf table.
- *beam search* (``semid.rec.beam.beam_search``, beam 20, k 10, constrained) with a step function that
  returns **seeded random logits** (torch.randn), so the times are the search and the trie, no model:
  milliseconds per user at batch 1 and users per second at batch 32, today's and the new index in one
  process, alternating rounds (medians), as the machine's load varies. Every answer is checked: k
  distinct real items. At 1M (3 levels) also a small real TIGER decoder (random weights, d_model 64, 2+2 layers,
  histories of 20 items), new only.
- *serving catalogue* (``semid.serve.service.Catalogue``) with item ids like ``B0123456789``, dash Semantic
  IDs (``12-4-9``) and no titles, 3 levels: construction seconds, resident memory of what it builds (kept
  and peak over the input arrays), the server's whole RSS, and lookups per second: ``row_of`` (item id ->
  row), ``by_semantic_id.get`` (Semantic ID string -> row), ``Service.item`` (``/items/{id}``: lookup plus
  the item's prefix sizes) and ``Service.by_semantic_id`` (``/ids/{id}``), plus the bulk id -> row map the
  server runs at start-up for dense search. Today's catalogue kept two dicts (``{item id: row}``,
  ``{Semantic ID: row}``) and answered prefix sizes by comparing every row.

Ratios under 1 are better for seconds and bytes, above 1 for rates. The machine is shared: seconds are
indicative, bytes are exact (arrays) or measured (RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table  # noqa: E402

SIZES = {"100k": 100_000, "1M": 1_000_000, "10M": 10_000_000}
K = 256  # codes per level
BEAM, TOPK, BATCH = 20, 10, 32
MiB = 2**20


# --------------------------------------------------------------------------------------------------------
# Memory probes (Linux /proc; peak reset with clear_refs, else the lifetime peak)
# --------------------------------------------------------------------------------------------------------


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss() -> int:
    return _status("VmRSS")


def reset_peak() -> bool:
    """Reset the peak RSS (VmHWM) to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak() -> int:
    return _status("VmHWM")


class Probe:
    """Resident memory around a block: ``kept`` (RSS after - before) and ``peak`` (max RSS - before)."""

    def __enter__(self) -> Probe:
        import gc

        gc.collect()
        self.before = rss()
        self.exact_peak = reset_peak()
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.t
        self.kept = rss() - self.before
        self.peak = peak() - self.before


# --------------------------------------------------------------------------------------------------------
# Synthetic catalogues
# --------------------------------------------------------------------------------------------------------


def synthetic_codes(n: int, levels: int, seed: int) -> np.ndarray:
    """``(n, levels)`` int64 random unique codes of ``K`` per level, in random order (seeded)."""
    rng = np.random.default_rng(seed)
    flat = rng.choice(K**levels, size=n, replace=False)  # (n,) distinct mixed-radix IDs, random order
    codes = np.empty((n, levels), dtype=np.int64)
    for level in range(levels):
        codes[:, level] = (flat // K ** (levels - 1 - level)) % K
    return codes


def synthetic_item_ids(n: int) -> np.ndarray:
    """``(n,)`` object array of distinct ASIN-like ids: ``B`` + 10 digits (i * an odd prime mod 10^10)."""
    return np.asarray([f"B{(i * 2654435761) % 10**10:010d}" for i in range(n)], dtype=object)


def dash_ids(codes: np.ndarray) -> np.ndarray:
    cols = [codes[:, level].tolist() for level in range(codes.shape[1])]
    return np.asarray(["-".join(map(str, row)) for row in zip(*cols, strict=True)], dtype=object)


# --------------------------------------------------------------------------------------------------------
# Today's implementation, rebuilt inline for comparison
# --------------------------------------------------------------------------------------------------------


def today_trie(codes: np.ndarray, vocab_sizes: list[int]) -> Any:
    """The PrefixTrie as it was built before: int64 arrays, a sorted copy of all rows, explicit leaf offsets.

    Its arrays are put into a :class:`PrefixTrie` object, whose (dtype-agnostic) query methods then serve.
    """
    import torch

    from semid.ids.trie import PrefixTrie, _check_codes, _check_vocab_sizes, _lexicographic_order

    trie = object.__new__(PrefixTrie)
    arr = _check_codes(codes)
    n, n_levels = arr.shape
    trie._vocab_sizes = _check_vocab_sizes(arr, vocab_sizes)
    trie._dense_mask_limit = 2**24
    trie._order = _lexicographic_order(arr, trie._vocab_sizes)
    rows = arr[trie._order]  # (n, L) sorted copy
    changed = np.zeros(max(n - 1, 0), dtype=bool)
    node_of_row = np.zeros(n, dtype=np.int64)
    trie._row_starts = [np.array([0, n], dtype=np.int64)]
    trie._keys, trie._offsets = [], []
    n_nodes = [1]
    for level, k in enumerate(trie._vocab_sizes):
        changed |= rows[1:, level] != rows[:-1, level]
        starts = np.flatnonzero(changed) + 1
        if n:
            starts = np.concatenate([[0], starts])
        parents = node_of_row[starts]
        trie._keys.append(parents * k + rows[starts, level])
        counts = np.bincount(parents, minlength=n_nodes[-1])
        trie._offsets.append(np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
        trie._row_starts.append(np.concatenate([starts, [n]]).astype(np.int64))
        if level + 1 < n_levels:
            node_of_row = np.concatenate([[0], np.cumsum(changed)]) if n else node_of_row
        n_nodes.append(len(starts))
    trie._n_nodes = tuple(n_nodes)
    trie._n_rows = n
    trie._tables = {}
    trie._device = torch.device("cpu")
    return trie


def today_code_index(codes: np.ndarray, vocab_sizes: list[int]) -> Any:
    """CodeIndex as it was: today's trie plus a second sort (``np.lexsort``) for an int64 leaf -> item table."""
    import torch

    from semid.rec.beam import CodeIndex

    class TodayCodeIndex(CodeIndex):
        def __init__(self, codes: np.ndarray, vocab_sizes: list[int]) -> None:
            codes = np.asarray(codes, dtype=np.int64)
            self.trie = today_trie(codes, vocab_sizes)
            assert len(self.trie) == len(codes)
            self.codes = codes
            self.today_leaf_items = torch.from_numpy(np.lexsort(codes.T[::-1]).astype(np.int64))

        def items_of_leaves(self, leaves: torch.Tensor) -> torch.Tensor:
            table = self.today_leaf_items.to(leaves.device)
            return torch.where(leaves >= 0, table[leaves.clamp(min=0)], -1)

    return TodayCodeIndex(codes, vocab_sizes)


def today_catalogue_class() -> type:
    """The serving Catalogue with today's lookups: two dicts, and prefix sizes by a scan of every row."""
    from semid.errors import SemidError
    from semid.serve.service import Catalogue

    class TodayCatalogue(Catalogue):
        def __post_init__(self) -> None:  # verbatim from before
            self.item_ids = np.asarray([str(i) for i in self.item_ids], dtype=object)
            self.index = {item: i for i, item in enumerate(self.item_ids)}
            if len(self.index) != len(self.item_ids):
                raise SemidError("the catalogue repeats an item id")
            sids = [] if self.semantic_ids is None else self.semantic_ids
            self.by_semantic_id = {str(s): i for i, s in enumerate(sids) if s is not None}
            # no trie: rows_under and count_under take the scan of every row, as all prefix queries did

    return TodayCatalogue


# --------------------------------------------------------------------------------------------------------
# Workers (one subprocess each)
# --------------------------------------------------------------------------------------------------------


def per_second(fn: Any, args: list[Any], budget_s: float, min_calls: int = 3) -> float:
    """Calls of ``fn(arg)`` per second, cycling through ``args`` for about ``budget_s`` seconds."""
    calls, t0 = 0, time.perf_counter()
    while True:
        fn(args[calls % len(args)])
        calls += 1
        elapsed = time.perf_counter() - t0
        if (elapsed >= budget_s and calls >= min_calls) or calls >= 10 * len(args):
            return calls / elapsed


def check_beam(result: Any, n_items: int) -> None:
    items = result.items
    assert bool((items >= 0).all()) and bool((items < n_items).all()), "an answer is no item"
    for row in items.tolist():
        assert len(set(row)) == len(row), "an answer repeats an item"


def worker_trie(n: int, levels: int, impl: str, seed: int, quick: bool) -> dict[str, Any]:
    """Build one CodeIndex (``impl``) in this fresh process: seconds, array bytes, resident memory."""
    import gc

    from semid.rec.beam import CodeIndex

    codes = synthetic_codes(n, levels, seed)
    sizes = [K] * levels

    def build() -> Any:
        return CodeIndex(codes, sizes) if impl == "new" else today_code_index(codes, sizes)

    with Probe() as p:
        index = build()
    nbytes = index.trie.nbytes + (index.today_leaf_items.numel() * 8 if impl == "today" else 0)
    del index
    gc.collect()
    t0 = time.perf_counter()
    build()  # a second build: the time is the faster of the two (the machine is shared)
    seconds = min(p.seconds, time.perf_counter() - t0)
    return {"build_s": seconds, "index_bytes": nbytes, "build_peak": p.peak, "build_kept": p.kept}


def worker_beam(n: int, levels: int, seed: int, quick: bool) -> dict[str, dict[str, Any]]:
    """Beam search over today's and the new CodeIndex in one process, alternating rounds (medians)."""
    import statistics

    import torch

    from semid.rec.beam import CodeIndex, beam_search

    torch.set_num_threads(1)
    codes = synthetic_codes(n, levels, seed)
    indexes = {"today": today_code_index(codes, [K] * levels), "new": CodeIndex(codes, [K] * levels)}
    gen = torch.Generator().manual_seed(seed)

    def step(prefix: torch.Tensor, parent: torch.Tensor | None) -> torch.Tensor:  # seeded random logits
        return torch.randn(prefix.shape[0], prefix.shape[1], K, generator=gen)  # (B, W, K)

    times: dict[tuple[str, int], list[float]] = {}
    rounds, budget = (3, 0.2) if quick else (5, 0.4)
    for index in indexes.values():  # warm-up: device tables, dense masks
        check_beam(beam_search(step, index, BATCH, beam_size=BEAM, k=TOPK), n)
    for _ in range(rounds):
        for impl, index in indexes.items():
            for batch in (1, BATCH):
                t0, calls = time.perf_counter(), 0
                while time.perf_counter() - t0 < budget or calls < 3:
                    check_beam(beam_search(step, index, batch, beam_size=BEAM, k=TOPK), n)
                    calls += 1
                times.setdefault((impl, batch), []).append((time.perf_counter() - t0) / (calls * batch))
    out: dict[str, dict[str, Any]] = {}
    for impl in indexes:
        out[impl] = {
            "beam_ms_b1": statistics.median(times[impl, 1]) * 1e3,
            "beam_users_s_b32": 1 / statistics.median(times[impl, BATCH]),
        }
    if levels == 3 and n == 1_000_000 and not quick:
        del indexes
        out["new"]["tiger_users_s_b32"] = tiger_rate(codes, seed)
    return out


def tiger_rate(codes: np.ndarray, seed: int) -> float:
    """Users per second of a small random-weight TIGER's constrained beam search over ``codes`` (batch 32)."""
    import torch

    from semid.rec.data import histories_batch
    from semid.rec.tiger import TIGER, TIGERConfig

    torch.manual_seed(seed)
    config = TIGERConfig(
        codebook_sizes=[K] * codes.shape[1],
        d_model=64,
        n_heads=2,
        d_head=32,
        d_ff=256,
        n_encoder_layers=2,
        n_decoder_layers=2,
    )
    model = TIGER(config, codes).eval()
    rng = np.random.default_rng(seed)
    batch = histories_batch([rng.integers(0, len(codes), 20) for _ in range(BATCH)])
    with torch.inference_mode():
        items, _ = model.recommend(batch, TOPK, beam_size=BEAM)  # warm-up (builds the CodeIndex)
        assert bool((items >= 0).all())
        t0, calls = time.perf_counter(), 0
        while time.perf_counter() - t0 < 3.0 or calls < 3:
            model.recommend(batch, TOPK, beam_size=BEAM)
            calls += 1
    return calls * BATCH / (time.perf_counter() - t0)


def worker_lookup(n: int, impl: str, seed: int, quick: bool) -> dict[str, Any]:
    import torch

    from semid.serve.service import Catalogue, NotFoundError, Service

    torch.set_num_threads(1)
    codes = synthetic_codes(n, 3, seed)
    item_ids = synthetic_item_ids(n)
    sids = dash_ids(codes)
    cls = Catalogue if impl == "new" else today_catalogue_class()
    with Probe() as p:
        cat = cls(item_ids, None, sids, codes)
    out: dict[str, Any] = {
        "cat_build_s": p.seconds,
        "cat_kept": p.kept,
        "cat_peak": p.peak,
        "server_rss": rss(),
    }
    if impl == "new":
        out["lookup_bytes"] = cat.index.nbytes + cat.by_semantic_id.nbytes + cat._trie.nbytes
    del cat
    t0 = time.perf_counter()
    cat = cls(item_ids, None, sids, codes)  # a second build: the time is the faster of the two
    out["cat_build_s"] = min(out["cat_build_s"], time.perf_counter() - t0)
    service = Service(cat)
    rng = np.random.default_rng(seed + 1)
    rows = rng.integers(0, n, 2000).tolist()
    ids = [str(item_ids[r]) for r in rows]
    sid_q = [str(sids[r]) for r in rows]
    angle = [f"<a_{a}><b_{b}><c_{c}>" for a, b, c in codes[rows[:200]].tolist()]  # another spelling
    assert [cat.row_of(i) for i in ids[:50]] == rows[:50]
    try:
        cat.row_of("missing-item")
        raise AssertionError("a missing item was found")
    except NotFoundError:
        pass
    budget = 0.3 if quick else 1.5
    out["row_of_per_s"] = per_second(cat.row_of, ids, budget)
    out["sid_get_per_s"] = per_second(cat.by_semantic_id.get, sid_q, budget)
    out["items_per_s"] = per_second(service.item, ids, budget)
    out["ids_per_s"] = per_second(service.by_semantic_id, sid_q, budget)
    out["ids_angle_per_s"] = per_second(service.by_semantic_id, angle, budget)
    bulk = [str(i) for i in item_ids[: min(n, 200_000)]]
    t0 = time.perf_counter()
    if impl == "new":
        got = cat.index.get_many(bulk)
    else:
        got = np.array([cat.index.get(i, -1) for i in bulk], dtype=np.int64)  # as _dense_search did
    out["bulk_per_s"] = len(bulk) / (time.perf_counter() - t0)
    assert (got == np.arange(len(bulk))).all()
    return out


# --------------------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------------------


def run_worker(args: list[str]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", *args], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise SystemExit(f"worker {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


ROWS = [
    # (part, key, label, unit scale, lower is better)
    ("trie", "build_s", "CodeIndex build (trie + leaf map), s (best of 2)", 1, True),
    ("trie", "index_bytes", "CodeIndex arrays, MiB", MiB, True),
    ("trie", "index_bytes_per_item", "CodeIndex arrays, bytes/item", 1, True),
    ("trie", "build_peak", "CodeIndex build peak RSS over codes, MiB", MiB, True),
    ("trie", "build_kept", "CodeIndex RSS kept after build, MiB", MiB, True),
    ("trie", "beam_ms_b1", "beam search, ms/user (batch 1, random logits)", 1, True),
    ("trie", "beam_users_s_b32", "beam search, users/s (batch 32, random logits)", 1, False),
    ("trie", "tiger_users_s_b32", "TIGER d64 2+2 layers beam, users/s (batch 32)", 1, False),
    ("lookup", "cat_build_s", "Catalogue build (lookups), s (best of 2)", 1, True),
    ("lookup", "cat_kept", "Catalogue lookups RSS kept, MiB", MiB, True),
    ("lookup", "cat_kept_per_item", "Catalogue lookups RSS kept, bytes/item", 1, True),
    ("lookup", "lookup_bytes", "Catalogue lookup arrays (2 KeyIndex + trie), MiB", MiB, True),
    ("lookup", "cat_peak", "Catalogue build peak RSS over inputs, MiB", MiB, True),
    ("lookup", "server_rss", "server RSS after catalogue (data + lookups), MiB", MiB, True),
    ("lookup", "row_of_per_s", "item id -> row (row_of), lookups/s", 1, False),
    ("lookup", "sid_get_per_s", "Semantic ID -> row (by_semantic_id.get), lookups/s", 1, False),
    ("lookup", "items_per_s", "/items/{id} (Service.item), requests/s", 1, False),
    ("lookup", "ids_per_s", "/ids/{sid} (Service.by_semantic_id), requests/s", 1, False),
    ("lookup", "ids_angle_per_s", "/ids/{sid} in another spelling (parsed), requests/s", 1, False),
    ("lookup", "bulk_per_s", "bulk item ids -> rows (server start-up), ids/s", 1, False),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--sizes", default=None, help="comma-separated of 100k, 1M, 10M (default all; --quick: 100k)"
    )
    p.add_argument("--quick", action="store_true", help="shorter timings, no TIGER, default size 100k")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        part, n, *rest = args.worker
        if part == "trie":
            res = worker_trie(int(n), int(rest[0]), rest[1], args.seed, args.quick)
        elif part == "beam":
            res = worker_beam(int(n), int(rest[0]), args.seed, args.quick)
        else:
            res = worker_lookup(int(n), rest[0], args.seed, args.quick)
        print(json.dumps(res))
        return
    names = (args.sizes or ("100k" if args.quick else "100k,1M,10M")).split(",")
    bad = [s for s in names if s not in SIZES]
    if bad:
        raise SystemExit(f"--sizes: unknown {', '.join(bad)} (choose from {', '.join(SIZES)})")
    extra = ["--seed", str(args.seed)] + (["--quick"] if args.quick else [])
    print(
        f"# {os.cpu_count()} cpus, 1 thread per process, beam {BEAM}, k {TOPK}, random unique codes of {K} "
        f"per level (seed {args.seed}); today = code before issue #23 part 4 (rebuilt inline), new = library"
    )
    rows = []
    t_start = time.perf_counter()
    for name in names:
        n = SIZES[name]
        for levels in (3, 4):
            res = {impl: run_worker(["trie", str(n), str(levels), impl, *extra]) for impl in ("today", "new")}
            beam = run_worker(["beam", str(n), str(levels), *extra])
            for impl in res:
                res[impl]["index_bytes_per_item"] = res[impl]["index_bytes"] / n
                res[impl].update(beam[impl])
            rows += table_rows(name, f"{levels}x{K}", "trie", res)
            print(
                f"  [{time.perf_counter() - t_start:6.0f}s] {name} {levels} levels: trie + beam done",
                flush=True,
            )
        res = {impl: run_worker(["lookup", str(n), impl, *extra]) for impl in ("today", "new")}
        for impl in res:
            res[impl]["cat_kept_per_item"] = res[impl]["cat_kept"] / n
        rows += table_rows(name, f"3x{K}", "lookup", res)
        print(f"  [{time.perf_counter() - t_start:6.0f}s] {name}: catalogue lookups done", flush=True)
    print_table(
        rows,
        ["N", "IDs", "measure", "today", "new", "new/today"],
        "Million-item catalogues: today vs new (ratio new/today; seconds and bytes: lower is better)",
    )
    print(f"\ntotal {time.perf_counter() - t_start:.0f}s")
    if args.json:
        for r in rows:
            print(json.dumps(r, sort_keys=True))


def table_rows(name: str, ids: str, part: str, res: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row_part, key, label, scale, _ in ROWS:
        if row_part != part or all(key not in r for r in res.values()):
            continue
        today, new = (res[i].get(key) for i in ("today", "new"))
        today = None if today is None else today / scale
        new = None if new is None else new / scale
        ratio = None if today in (None, 0) or new is None else new / today
        out.append({"N": name, "IDs": ids, "measure": label, "today": today, "new": new, "new/today": ratio})
    return out


if __name__ == "__main__":
    main()
