"""Amazon Beauty end to end: read -> item text -> MiniLM embeddings -> RQ-KMeans 3x256 -> unique IDs.

    python bench/beauty_ids.py                        # cache in bench/out/cache (re-runs skip embedding)
    python bench/beauty_ids.py --cache-dir DIR --json

Prints the wall time of each stage and the ID quality metrics (usage and perplexity per level, unique
share before dedup, largest collision, relative reconstruction error). Skips when ../shared is absent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BEAUTY, emit_json, peak_rss_mib, print_table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache-dir", type=Path, default=Path(__file__).resolve().parent / "out" / "cache")
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--codebook-size", type=int, default=256)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if not BEAUTY.exists():
        print(f"skipping: {BEAUTY} not found")
        return

    from semid.data import load_dataset
    from semid.embed import EmbeddingCache, embed_catalogue, load_embedder, render_texts
    from semid.ids import deduplicate
    from semid.quantize import RQKMeans
    from semid.quantize.metrics import quality_report

    stages = []

    def stage(name, fn):
        t = time.perf_counter()
        result = fn()
        stages.append({"stage": name, "seconds": time.perf_counter() - t})
        print(f"  {name}: {stages[-1]['seconds']:.1f}s", file=sys.stderr)
        return result

    ds = stage(
        "read (RecBole items + P5 sequences)", lambda: load_dataset([BEAUTY / "recbole_item", BEAUTY / "p5"])
    )
    cat = ds.catalogue
    texts = stage("item text (TIGER template)", lambda: render_texts(cat))
    with EmbeddingCache(args.cache_dir) as cache:
        before = cache.count() if hasattr(cache, "count") else None
        X = stage(
            "embed (all-MiniLM-L6-v2, cached)",
            lambda: embed_catalogue(cat.item_ids, texts, load_embedder(), cache=cache),
        )
    model = stage(
        f"RQ-KMeans fit {args.levels}x{args.codebook_size}",
        lambda: RQKMeans(args.levels, args.codebook_size, random_state=0).fit(X),
    )
    codes = stage("encode", lambda: model.encode(X))
    unique = stage("unique IDs (suffix)", lambda: deduplicate(codes, "suffix", item_ids=cat.item_ids).codes)
    rep = quality_report(codes, codebook_sizes=model.codebook_sizes_, X=X, X_hat=model.decode(codes))
    summary = {
        "items": rep.n_items,
        "users": ds.interactions.n_users if ds.interactions is not None else None,
        "unique_share_before_dedup": rep.unique_share,
        "max_collision": rep.max_collision,
        "rel_error": rep.reconstruction_error,
        "usage": [round(lv["usage"], 3) for lv in rep.levels],
        "perplexity": [round(lv["perplexity"], 1) for lv in rep.levels],
        "unique_after_dedup": len({tuple(r) for r in unique.tolist()}) / len(unique),
        "cache_entries_before": before,
        "peak_rss_mib": peak_rss_mib(),
    }
    if args.json:
        emit_json([*stages, summary])
        return
    print_table(stages, ["stage", "seconds"], "Amazon Beauty end to end (wall seconds per stage)")
    print_table([summary], list(summary), "ID quality")


if __name__ == "__main__":
    main()
