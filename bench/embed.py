"""Embedding benchmark on the Amazon Beauty item texts: semid vs plain sentence-transformers, same run.

    python bench/embed.py                  # 3,000-text timing subset x 3 repeats, full 12,101-item checks
    python bench/embed.py --quick          # 500 texts, 1 repeat, no full-catalogue run (smoke run)
    python bench/embed.py --json           # one JSON object per measurement as well

What it measures (all with the packaged all-MiniLM-L6-v2 on this machine's CPU threads):

1. texts/s of ``SentenceTransformerEmbedder.encode`` (float32, and bfloat16 weights) vs
   ``SentenceTransformer.encode(texts, batch_size=64, normalize_embeddings=True)`` on the same random subset
   of item texts, alternating them, median over ``--repeats`` (wall and process CPU time: the CPU column is
   steadier on a shared machine);
2. the full catalogue through ``embed_catalogue`` with a fresh cache, and how closely it reproduces the
   reference vectors ``embeddings/minilm-l6-v2.npy`` (share of items with cosine >= 0.999), for both quote
   styles of the category lists (``--quotes single`` is how the reference text was made);
3. a re-run of all 12,101 items that the cache fully answers (a fresh embedder: the model never loads), and
   the same as a ``semid embed`` command (Python start, catalogue read, write included).

Skips with a message when the Beauty data (``../shared/data/amazon-beauty``) is not there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BEAUTY, emit_json, print_table  # noqa: E402


def timed(fn):
    """(wall s, process CPU s, result) of one call."""
    w, c = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - w, time.process_time() - c, result


def load_texts():
    """Beauty item ids in reference order, their texts in both quote styles, and the reference vectors."""
    from semid.data import load_dataset
    from semid.embed.text import TextTemplate, render_texts

    catalogue = load_dataset(BEAUTY / "recbole_item").catalogue
    ref_ids = json.loads((BEAUTY / "embeddings" / "items.json").read_text())
    catalogue = catalogue.take(catalogue.index_of(ref_ids))
    texts = {q: render_texts(catalogue, TextTemplate(strip_quotes=q)) for q in ("single", "tokens")}
    ref = np.load(BEAUTY / "embeddings" / "minilm-l6-v2.npy")
    return catalogue, texts, ref


def speed(texts: list[str], repeats: int, threads: int | None) -> list[dict]:
    import torch
    from sentence_transformers import SentenceTransformer

    from semid.embed.backends import SentenceTransformerEmbedder, default_model_dir

    # Loading sets torch's thread count (physical cores, or --threads): all three run with the same.
    ours = SentenceTransformerEmbedder(device="cpu", num_threads=threads).load()
    bf16 = SentenceTransformerEmbedder(device="cpu", dtype="bfloat16", num_threads=threads).load()
    plain = SentenceTransformer(str(default_model_dir()), device="cpu")
    methods = {
        "semid": lambda: ours.encode(texts, show_progress=False),
        "semid --dtype bfloat16": lambda: bf16.encode(texts, show_progress=False),
        "sentence-transformers": lambda: plain.encode(texts, batch_size=64, normalize_embeddings=True),
    }
    for m in (ours, bf16):  # warm-up (first-batch fast-path check, allocator)
        m.encode(texts[:64])
    plain.encode(texts[:64], batch_size=64)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in methods}
    out: dict[str, np.ndarray] = {}
    for _ in range(repeats):  # alternate, so load from other processes hits all alike
        for name, fn in methods.items():
            w, c, out[name] = timed(fn)
            runs[name].append((w, c))
    base_w = statistics.median(w for w, _ in runs["sentence-transformers"])
    base_c = statistics.median(c for _, c in runs["sentence-transformers"])
    rows = []
    for name, r in runs.items():
        w, c = statistics.median(x for x, _ in r), statistics.median(x for _, x in r)
        rows.append(
            {
                "what": f"encode {len(texts):,} texts",
                "method": name,
                "wall_s": w,
                "texts_per_s": len(texts) / w,
                "speedup_wall": base_w / w,
                "cpu_s": c,
                "speedup_cpu": base_c / c,
                "threads": torch.get_num_threads(),
                "min_cosine_vs_st": float((out[name] * out["sentence-transformers"]).sum(1).min()),
            }
        )
    return rows


def full_catalogue(catalogue, texts: dict[str, list[str]], ref: np.ndarray, cache_dir: Path) -> list[dict]:
    from semid.embed.backends import SentenceTransformerEmbedder
    from semid.embed.cache import EmbeddingCache
    from semid.embed.pipeline import EmbedStats, embed_catalogue

    rows = []
    with EmbeddingCache(cache_dir) as cache:
        for quotes in ("single", "tokens"):  # "tokens" then only embeds the texts that differ
            stats = EmbedStats()
            emb = SentenceTransformerEmbedder(device="cpu")
            w, c, X = timed(lambda e=emb, q=quotes, s=stats: embed_catalogue(
                catalogue.item_ids, texts[q], e, cache=cache, stats=s))  # fmt: skip
            cos = (X * ref).sum(1)
            rows.append(
                {
                    "what": f"full catalogue, --quotes {quotes}",
                    "items": len(X),
                    "embedded": stats.n_embedded,
                    "wall_s": w,
                    "texts_per_s": stats.n_embedded / w if stats.n_embedded else None,
                    "share_cos_ge_0.999": float((cos >= 0.999).mean()),
                    "n_below": int((cos < 0.999).sum()),
                    "min_cos": float(cos.min()),
                }
            )
        times = []
        for _ in range(3):
            emb = SentenceTransformerEmbedder(device="cpu")  # fresh: nothing loaded
            w, _, X2 = timed(
                lambda e=emb: embed_catalogue(catalogue.item_ids, texts["single"], e, cache=cache)
            )
            assert not emb._loaded, "a full cache hit should not load the model"
            times.append(w)
        rows.append({"what": "cache-hit re-run, embed_catalogue", "items": len(X2), "embedded": 0,
                     "wall_s": statistics.median(times)})  # fmt: skip
    return rows


def cli_rerun(cache_dir: Path, out_dir: Path) -> dict:
    env = {**os.environ, "SEMID_CACHE_DIR": str(cache_dir)}
    cmd = [sys.executable, "-m", "semid", "embed", str(BEAUTY / "recbole_item"), "-o",
           str(out_dir / "beauty.parquet"), "--quotes", "single"]  # fmt: skip
    times = []
    for _ in range(3):
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return {"what": "cache-hit re-run, `semid embed` command", "items": 12101, "embedded": 0,
            "wall_s": statistics.median(times)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subset", type=int, default=3000, help="texts in the timing comparison")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: physical cores)")
    ap.add_argument("--quick", action="store_true", help="500 texts, 1 repeat, no full-catalogue run")
    ap.add_argument("--speed-only", action="store_true", help="only the timing comparison")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not (BEAUTY / "recbole_item").is_dir() or not (BEAUTY / "embeddings").is_dir():
        print(f"skipped: the Amazon Beauty data is not at {BEAUTY} (set SEMID_SHARED)")
        return
    if args.quick:
        args.subset, args.repeats = 500, 1

    catalogue, texts, ref = load_texts()
    rng = np.random.default_rng(0)
    subset = [texts["single"][i] for i in rng.choice(len(catalogue), size=args.subset, replace=False)]
    rows = speed(subset, args.repeats, args.threads)
    print_table(rows, ["method", "wall_s", "texts_per_s", "speedup_wall", "cpu_s", "speedup_cpu", "threads",
                       "min_cosine_vs_st"], f"encode {args.subset:,} Beauty item texts, median of {args.repeats}")  # fmt: skip
    if args.json:
        emit_json(rows)
    if args.quick or args.speed_only:
        return
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = Path(tmp) / "cache"
        full = full_catalogue(catalogue, texts, ref, cache_dir)
        full.append(cli_rerun(cache_dir, Path(tmp)))
    print_table(full, ["what", "items", "embedded", "wall_s", "texts_per_s", "share_cos_ge_0.999", "n_below",
                       "min_cos"], "full Beauty catalogue (12,101 items) vs the reference vectors; cache re-runs")  # fmt: skip
    if args.json:
        emit_json(full)


if __name__ == "__main__":
    main()
