"""RQ-KMeans benchmark: semid vs faiss ResidualQuantizer vs the `semantic-id` package, same run, same machine.

    python bench/rq_kmeans.py                 # synthetic 100k x 384 + Amazon Beauty (when ../shared exists)
    python bench/rq_kmeans.py --json          # one JSON object per method and dataset
    python bench/rq_kmeans.py --quick         # 20k rows, 1 repeat (smoke run)

Each method runs in its own subprocess (so peak RSS is its own), fits 3 levels x 256 codes and encodes
every row; fit and encode seconds are medians over ``--repeats`` runs. Quality is measured on the encoded
rows: relative reconstruction error, unique-ID share before dedup, codebook usage per level. The
`semantic-id` package (sklearn k-means, n_init=10) is slow, so it runs ``--peer-repeats`` times (default 1).
The last columns give the share of this machine's float32 matmul throughput (a plain ``torch.matmul`` of
the same shapes) that semid's fit and encode reach: the physical limit.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BEAUTY, emit_json, median_time, peak_rss_mib, print_table  # noqa: E402

LEVELS, K = 3, 256


def synthetic(n: int, dim: int = 384, centres: int = 2000, noise: float = 0.08, seed: int = 0) -> np.ndarray:
    """Clustered unit vectors: ``centres`` Gaussian centres, isotropic noise per dimension, L2-normalised."""
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, dim)).astype(np.float32)
    X = c[rng.integers(centres, size=n)] + noise * rng.normal(size=(n, dim)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X


def load(dataset: str, n: int) -> np.ndarray:
    if dataset == "beauty":
        return np.load(BEAUTY / "embeddings" / "minilm-l6-v2.npy").astype(np.float32)
    return synthetic(n)


def quality(X: np.ndarray, codes: np.ndarray, X_hat: np.ndarray) -> dict:
    from semid.quantize.metrics import codebook_usage, collision_stats, relative_reconstruction_error

    return {
        "rel_error": relative_reconstruction_error(X, X_hat),
        "unique_share": collision_stats(codes)["unique_share"],
        "usage": [round(lv["usage"], 3) for lv in codebook_usage(codes, [K] * LEVELS)],
    }


def run_method(method: str, dataset: str, n: int, repeats: int) -> dict:
    X = load(dataset, n)
    if method == "semid":
        from semid.quantize import RQKMeans

        fit_s, model = median_time(lambda: RQKMeans(LEVELS, K, random_state=0).fit(X), repeats)
        enc_s, codes = median_time(lambda: model.encode(X), repeats)
        X_hat = model.decode(codes)
        extra = {"iterations": model.n_iter_, "train_rows": [min(len(X), 256 * K)] * LEVELS}
    elif method == "faiss":
        import faiss

        def fit():
            rq = faiss.ResidualQuantizer(X.shape[1], LEVELS, 8)
            rq.max_beam_size = 1
            rq.train(X)
            return rq

        fit_s, rq = median_time(fit, repeats)
        enc_s, packed = median_time(lambda: rq.compute_codes(X), repeats)
        X_hat = rq.decode(packed)
        codes = packed[:, :LEVELS].astype(np.int32)  # 8 bits per level: one byte each
        extra = {}
    elif method == "semantic-id":
        from semantic_id import RQKMeans as PeerRQKMeans

        fit_s, model = median_time(
            lambda: PeerRQKMeans(n_levels=LEVELS, n_clusters=K, random_state=0).fit(X), repeats
        )
        enc_s, codes = median_time(lambda: model.encode(X), repeats)
        X_hat = model.decode(codes)
        extra = {}
    elif method == "matmul":
        import torch

        Xt = torch.from_numpy(X)
        C = torch.from_numpy(X[:K].copy())
        t, _ = median_time(lambda: [torch.matmul(Xt, C.T) for _ in range(5)], max(3, repeats))
        return {
            "method": "matmul",
            "dataset": dataset,
            "gflops": 5 * 2 * X.shape[0] * X.shape[1] * K / t / 1e9,
        }
    else:
        raise SystemExit(f"unknown method {method}")
    return {
        "method": method,
        "dataset": dataset,
        "n": int(X.shape[0]),
        "dim": int(X.shape[1]),
        "fit_s": fit_s,
        "encode_s": enc_s,
        "encode_rows_per_s": X.shape[0] / enc_s,
        "peak_rss_mib": peak_rss_mib(),
        **quality(X, np.asarray(codes), np.asarray(X_hat)),
        **extra,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="synthetic rows")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peer-repeats", type=int, default=1, help="repeats for the slow semantic-id package")
    ap.add_argument("--methods", default="semid,faiss,semantic-id")
    ap.add_argument("--datasets", default="synthetic,beauty")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", nargs=2, metavar=("METHOD", "DATASET"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.n, args.repeats = 20_000, 1
    if args.worker:
        print(json.dumps(run_method(args.worker[0], args.worker[1], args.n, args.repeats)))
        return

    datasets = [d for d in args.datasets.split(",") if d != "beauty" or (BEAUTY / "embeddings").exists()]
    if "beauty" in args.datasets and "beauty" not in datasets:
        print(f"(skipping beauty: {BEAUTY} not found)", file=sys.stderr)
    rows = []
    for dataset in datasets:
        for method in [*args.methods.split(","), "matmul"]:
            if method == "semantic-id":
                try:
                    import semantic_id  # noqa: F401
                except ImportError:
                    print("(skipping semantic-id: pip install semantic-id==0.2.5)", file=sys.stderr)
                    continue
            reps = args.peer_repeats if method == "semantic-id" else args.repeats
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                method,
                dataset,
                "--n",
                str(args.n),
                "--repeats",
                str(reps),
            ]
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{method} on {dataset} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"  {method:12s} {dataset:10s} done in {time.perf_counter() - t:.0f}s", file=sys.stderr)
            rows.append(row)
    for dataset in datasets:
        rs = {r["method"]: r for r in rows if r["dataset"] == dataset}
        gflops = rs.pop("matmul", {}).get("gflops")
        ref = rs.get("faiss")
        for r in rs.values():
            if ref:
                r["fit_vs_faiss"] = r["fit_s"] / ref["fit_s"]
                r["error_vs_faiss"] = r["rel_error"] / ref["rel_error"]
                r["encode_speed_vs_faiss"] = r["encode_rows_per_s"] / ref["encode_rows_per_s"]
            if "semantic-id" in rs:
                r["speedup_vs_semantic_id"] = rs["semantic-id"]["fit_s"] / r["fit_s"]
            if gflops and r["method"] == "semid":
                n, d = r["n"], r["dim"]
                fit_flops = (
                    sum(2 * min(n, 256 * K) * d * K * it for it in r["iterations"]) + LEVELS * 2 * n * d * K
                )
                r["fit_matmul_share"] = fit_flops / r["fit_s"] / 1e9 / gflops
                r["encode_matmul_share"] = LEVELS * 2 * n * d * K / r["encode_s"] / 1e9 / gflops
                r["matmul_gflops"] = gflops
        if args.json:
            emit_json(list(rs.values()))
        else:
            print_table(
                list(rs.values()),
                [
                    "method",
                    "n",
                    "fit_s",
                    "encode_s",
                    "rel_error",
                    "unique_share",
                    "usage",
                    "peak_rss_mib",
                    "fit_vs_faiss",
                    "error_vs_faiss",
                    "encode_speed_vs_faiss",
                    "speedup_vs_semantic_id",
                    "fit_matmul_share",
                    "encode_matmul_share",
                ],
                f"RQ-KMeans {LEVELS}x{K} on {dataset} (medians; ratios vs faiss: lower fit/error and higher speed are better)",
            )
            if gflops:
                print(f"float32 matmul on this machine: {gflops:.0f} GFLOP/s")


if __name__ == "__main__":
    main()
