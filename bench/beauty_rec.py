"""Generative retrieval on Amazon Beauty (P5 split): our SASRec and TIGER next to the TIGER paper's rows
and an independent GPU reproduction of TIGER (Snap's GRID).

    python bench/beauty_rec.py --max-minutes 10                 # a short run of each model (smoke test)
    python bench/beauty_rec.py --ids rq-kmeans,rq-vae --out bench/out/beauty-full 2>&1 | tee beauty.log
                                              # full runs (hours on 2 CPU cores; add --resume to continue)
    python bench/beauty_rec.py --json         # also one JSON object per row

Run directories (weights, metrics.jsonl per epoch) go under ``--out`` (``bench/out`` is not committed);
``--out/results.json`` holds the table. Commit the command, its log and results.json under bench/results/.

Data: ``../shared/data/amazon-beauty`` (RecBole item file + P5 sequences: 22,363 users, 12,101 items),
leave-one-out: the last item of each user is the test target, the second last the validation target.
Semantic IDs: RQ-KMeans 3 x 256 on the reference MiniLM item embeddings plus a suffix level for
collisions (as TIGER does with its RQ-VAE); ``--ids rq-vae`` adds an RQ-VAE (3 x 256) when
``semid.quantize.rq_vae`` is present. Each model trains with the library defaults (TIGER: the paper's
4+4 layers, d_model 128, 6 x 64 heads, MLP 1024, with our recipe's item tokens, dropout 0.2 and no user
token; ``--config configs/tiger-paper.json`` for the paper's layout) until early stopping, ``--epochs`` or ``--max-minutes``;
the best validation epoch is then evaluated on all test users with full ranking (SASRec: scores of all
12,101 items; TIGER: beam search of 20 beams constrained to real IDs). Printed: Recall/NDCG@5/10, training
wall time, epochs, decoding users/s and the share of invalid IDs (always 0 when constrained).

One encoder token per history item (the default; ``--model-set encoder_tokens=codes`` for one per code)
gives about 3x the training throughput on CPU. ``--config configs/tiger-beauty.json`` runs our best recipe
with its 145-minute budget (``bench/results/beauty_rec_tiger_nouser.txt``; with user tokens
``beauty_rec_tiger_fast.txt``). ``--sasrec-config configs/sasrec-beauty.json`` trains the tuned SASRec;
``--seeds 0,1,2`` repeats every model per seed and prints mean ± sd; ``--cold-start 0.05`` trains on a
cold-start split and adds the cold-start table (with the MiniLM content baseline). ``--merge OUT1 OUT2 ...``
trains nothing and prints finished invocations' runs as one table (e.g. seeds run in separate --out folders).

RPG (``--models rpg --ids pq``, :mod:`semid.rec.rpg`): long product-quantised IDs, all digits predicted at
once, every item scored exactly. ``--ids pq`` is the paper's ID recipe on our embeddings: OPQ with 32
sub-vectors x 256 codes on the 384-d MiniLM vectors (12 features per sub-vector; 32 digits when they divide
the dimension, else the largest divisor below 32), plus the suffix level (rarely above 0: 256^32 IDs).
The model trains with the library defaults (the paper's Beauty shape: 2 layers, d_model 448, 4 heads,
temperature 0.03); ``--rpg-config`` / ``--rpg-set`` change them::

    python bench/beauty_rec.py --models rpg --ids pq --max-minutes 60 --threads 2 --out bench/out/beauty-rpg

IDs with collaborative signal (issue #21), from the item vectors of the SASRec of the same seed trained just
before in the same invocation (or of ``--collab-run RUN`` when ``--models`` has no sasrec):
``--ids rq-vae-collab`` is the RQ-VAE with its collaborative term (``--collab-weight``), ``--ids fused``
RQ-KMeans 3 x 256 on the MiniLM vector beside the SASRec vector, both unit-norm (``--fuse-weight``)::

    python bench/beauty_rec.py --models sasrec,tiger --ids rq-vae,rq-vae-collab,fused \
        --sasrec-config configs/sasrec-beauty.json --config configs/tiger-beauty.json --out bench/out/beauty-collab

``--hybrid`` adds, right after each TIGER or RPG row, that run's 50 candidates reranked by the SASRec run of
the same seed (:mod:`semid.rec.hybrid`: generative log-probability + weight x SASRec log-probability),
its own row, "TIGER + SASRec rerank, ... (ours)": the weight (0, 0.25, ..., 16) is chosen on all
validation users, then the test users are evaluated once (and once more with the history filtered out, at
the same weight). The SASRec runs are those of this invocation (``--models sasrec,tiger``), or
``--hybrid-sasrec DIR`` names finished ones (seed 0's directory; seed ``s``: ``DIR-s<s>``), which must hold
the same items and interactions. Its "train min" is both models' training; decoding is TIGER with 50 beams::

    python bench/beauty_rec.py --models tiger --resume --hybrid-sasrec bench/out/beauty-rec/sasrec
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BEAUTY, add_set_option, emit_json, print_table  # noqa: E402

# --cold-start adds TIGER + the TIGER paper's rule at the library's default share (fixed in advance)
from semid.rec.unseen import DEFAULT_SHARE as UNSEEN_SHARE  # noqa: E402

REFERENCES = [  # TIGER (Rajput et al., NeurIPS 2023), Table 2, Beauty
    {"model": "SASRec (paper)", "R@5": 0.0387, "N@5": 0.0249, "R@10": 0.0605, "N@10": 0.0318},
    {"model": "TIGER (paper)", "R@5": 0.0454, "N@5": 0.0321, "R@10": 0.0648, "N@10": 0.0384},
    # An independent reproduction: TIGER trained with Snap's GRID framework on a GPU (about 5 h), RQ-KMeans
    # IDs + a suffix level; test metrics from snap-research/GRID jobs/logs/reproducing/beauty/train.log
    # (its two other embedding sizes, reproducing/{L,XXL}/beauty, read N@10 0.0365 and 0.0334).
    {"model": "TIGER (GRID repro.)", "R@5": 0.0452, "N@5": 0.0304, "R@10": 0.0655, "N@10": 0.0369},
    # Later generative models on the same split, as their papers report them (decoded items, no filtering):
    {"model": "RPG (arXiv 2506.05781)", "R@10": 0.0809, "N@10": 0.0464},
    {"model": "LC-Rec, Qwen3-1.7B (phonism/genrec)", "R@10": 0.0791, "N@10": 0.0438},
    {"model": "ActionPiece (arXiv 2502.13581)", "R@10": 0.0775, "N@10": 0.0424},
    # Tuned SASRec of "SASRec is still strong" (arXiv 2508.06450, blondered/transformer_benchmark, RecTools):
    # evaluated with the items a user has seen filtered out, hence the "unseen" columns
    {"model": "SASRec, sampled softmax (2508.06450)", "R@10 unseen": 0.0921, "N@10 unseen": 0.0531},
    {"model": "eSASRec (2508.06450)", "R@10 unseen": 0.0928, "N@10 unseen": 0.0523},
]
COLUMNS = ["model", "R@5", "N@5", "R@10", "N@10", "train min", "epochs", "best epoch", "users/s", "invalid"]
COLUMNS += ["R@10 unseen", "N@10 unseen"]  # the same model never recommending an item of the history
CODED = {"tiger": "TIGER", "rpg": "RPG"}  # the models trained once per ID set
PQ_DIGITS = 32  # RPG's Beauty IDs: OPQ32 x 256 (arXiv 2506.05781)
COLLAB_IDS = ("rq-vae-collab", "fused")  # IDs built from a SASRec run's item vectors too
ID_METHODS = ("rq-kmeans", "rq-vae", "pq", *COLLAB_IDS)


def load_beauty() -> Any:
    from semid.data import load_dataset

    return load_dataset([BEAUTY / "recbole_item", BEAUTY / "p5"])


def make_ids(
    method: str,
    out: Path,
    seed: int,
    *,
    collab_run: Path | None = None,
    collab_weight: float | None = None,
    fuse_weight: float | None = None,
    pq_pca: int | None = None,
    tag: str = "",
) -> Any:
    """Semantic IDs of the Beauty items (cached in ``out``): 3 x 256 codes (``pq``: OPQ 32 x 256) + a suffix
    level for collisions. ``rq-vae-collab`` and ``fused`` also read the item vectors of the SASRec run
    ``collab_run``, joined by item id; their file name carries ``tag`` (e.g. ``-cold``), and a cached one is
    used only if it was made from that run, as trained now, with the same weight.

    ``pq_pca``: ``pq`` reduces the MiniLM vectors to that many principal components first (RPG's recipe:
    128, so 4 features per sub-vector); the file is then ``ids-pq-pca<d>.parquet``.

    Seed 0 keeps the file name of the single-seed runs (``ids-rq-kmeans.parquet``); others add ``-s<seed>``.
    """
    from semid.ids import deduplicate, format_ids
    from semid.ids.table import IdTable, read_ids, write_ids
    from semid.quantize.collab import DEFAULT_COLLAB_WEIGHT, DEFAULT_FUSE_WEIGHT

    meta: dict[str, Any] = {"method": method}
    if method in COLLAB_IDS:
        weight = collab_weight if method == "rq-vae-collab" else fuse_weight
        default = DEFAULT_COLLAB_WEIGHT if method == "rq-vae-collab" else DEFAULT_FUSE_WEIGHT
        meta.update(collab_run=str(collab_run), weight=default if weight is None else weight)
    if method == "pq" and pq_pca:
        meta["pca_dim"] = pq_pca
        tag = f"-pca{pq_pca}"
    path = (
        out
        / f"ids-{method}{tag if method in COLLAB_IDS or 'pca_dim' in meta else ''}{seed_suffix(seed)}.parquet"
    )
    if path.is_file():
        cached = read_ids(path)
        trained = collab_run / "model.safetensors" if method in COLLAB_IDS else None
        if trained is None or (
            all(cached.meta.get(k) == v for k, v in meta.items())
            and trained.is_file()
            and path.stat().st_mtime >= trained.stat().st_mtime
        ):
            return cached
    X = np.load(BEAUTY / "embeddings" / "minilm-l6-v2.npy").astype(np.float32)
    item_ids = np.array(json.loads((BEAUTY / "embeddings" / "items.json").read_text()), dtype=object)
    t = time.perf_counter()
    if method in COLLAB_IDS:
        from semid.quantize.collab import align_by_item_id
        from semid.rec.io import load_sasrec_run, untrained_items

        sasrec, sasrec_data = load_sasrec_run(collab_run)
        C = align_by_item_id(
            item_ids, sasrec_data.item_ids, sasrec.item_embeddings(), name=str(collab_run), catalogue="MiniLM"
        )
        untrained = untrained_items(sasrec_data)
        print(
            f"{method}: {C.shape[1]}-d item vectors of {collab_run} "
            f"({int(untrained.sum()) if untrained is not None else '?'} items in no training sequence)"
        )
    if method == "rq-vae-collab":  # LETTER's alignment term; the IDs encode the MiniLM vector alone
        from semid.quantize.rq_vae import RQVAE

        quantizer = RQVAE(n_levels=3, codebook_size=256, random_state=seed, collab_weight=meta["weight"]).fit(
            X, collab=C
        )
    elif method == "fused":  # both vectors decide the codes
        from semid.quantize import RQKMeans
        from semid.quantize.collab import fit_fused

        quantizer = fit_fused(
            RQKMeans(n_levels=3, codebook_size=256, random_state=seed), X, C, meta["weight"]
        )
        X = quantizer.fusion_.apply(X, C)
    elif method == "rq-kmeans":
        from semid.quantize import RQKMeans

        quantizer = RQKMeans(n_levels=3, codebook_size=256, random_state=seed).fit(X)
    elif method == "rq-vae":
        from semid.quantize.rq_vae import RQVAE

        quantizer = RQVAE(n_levels=3, codebook_size=256, random_state=seed).fit(X)
    elif method == "pq":  # RPG's IDs: OPQ, 32 digits of 256 codes (faiss learns the rotation)
        from semid.quantize import ProductQuantizer

        dim = pq_pca or X.shape[1]
        digits = max(m for m in range(1, PQ_DIGITS + 1) if dim % m == 0)
        quantizer = ProductQuantizer(
            n_subvectors=digits, codebook_size=256, opq=True, pca_dim=pq_pca, random_state=seed
        ).fit(X)
    else:
        raise SystemExit(f"unknown --ids method {method!r} ({', '.join(ID_METHODS)})")
    base = quantizer.encode(X)
    codes = deduplicate(base, "suffix", item_ids=item_ids).codes
    table = IdTable(item_ids, format_ids(codes, "dash"), codes, base, meta)
    write_ids(path, table)
    unique = len(np.unique(base, axis=0)) / len(base)
    print(
        f"{method}: fitted in {time.perf_counter() - t:.0f}s, unique before suffix {unique:.4f}, levels {codes.shape[1]}"
    )
    return table


def seed_suffix(seed: int) -> str:
    return "" if seed == 0 else f"-s{seed}"


def run_model(
    model_type: str, data: Any, run_dir: Path, args: argparse.Namespace, seed: int
) -> dict[str, Any]:
    """Train (or resume) one model into ``run_dir`` and evaluate its best epoch on all test users."""
    from semid.rec.evaluate import evaluate
    from semid.rec.train import LAST, fit, split_examples

    section = {"tiger": args.config, "rpg": args.rpg_config}.get(model_type, args.sasrec_config)
    train = {"valid_users": 5000, **section["train"]}
    train.update(num_threads=args.threads, seed=seed, progress=not args.quiet)
    if args.valid_users is not None:
        train["valid_users"] = args.valid_users
    if args.max_minutes:
        train["max_minutes"] = args.max_minutes
    train.update(args.train_set)
    if args.epochs:
        train["epochs"] = args.epochs
    resume = args.resume and (run_dir / LAST).exists()
    if resume:
        train = {k: v for k, v in train.items() if k in ("num_threads", "progress", "max_minutes", "epochs")}
    model_config = {**section["model"], **{"tiger": args.model_set, "rpg": args.rpg_set}.get(model_type, {})}
    model, result = fit(
        model_type,
        None if resume else data,
        run_dir,
        model_config=model_config,
        train_config=train,
        resume=resume,
    )
    examples = split_examples(model, data, "test")
    test = evaluate(model, examples, batch_size=256, progress=not args.quiet)
    m = test.metrics
    # the protocol of most SASRec benchmarks (RecTools, aprec): never recommend an item of the history
    seen = evaluate(model, examples, batch_size=256, progress=not args.quiet, exclude_history=True).metrics
    cold = {}
    if args.cold_start:  # the same model on the test users whose target is a cold item
        from semid.rec.train import evaluate_run

        res = evaluate_run(run_dir, "test", cold_start=True, item_vectors=args.item_vectors)
        cold = {"cold R@10": res["model"]["recall@10"], "cold N@10": res["model"]["ndcg@10"]}
        cold["cold users"] = res["cold_start"]["users"]
        args.cold_baselines = {"most popular": res["most_popular"], "content (MiniLM text)": res["content"]}
        if model_type == "tiger":  # + the TIGER paper's rule (semid.rec.unseen), its default share, fixed
            res = evaluate_run(run_dir, "test", cold_start=True, unseen_share=UNSEEN_SHARE)
            cold["cold R@10 +prefix"], cold["cold N@10 +prefix"] = (
                res["model"]["recall@10"],
                res["model"]["ndcg@10"],
            )
            every = evaluate_run(run_dir, "test", unseen_share=UNSEEN_SHARE)["model"]  # its cost to all users
            cold["R@10 +prefix"], cold["N@10 +prefix"] = every["recall@10"], every["ndcg@10"]
    return {
        "R@5": m["recall@5"],
        "N@5": m["ndcg@5"],
        "R@10": m["recall@10"],
        "N@10": m["ndcg@10"],
        "train min": result.seconds / 60,
        "epochs": result.epochs,
        "best epoch": result.best_epoch,
        "stopped": result.stopped,
        "users/s": test.users_per_s,
        "invalid": test.invalid_rate,
        "R@10 unseen": seen["recall@10"],
        "N@10 unseen": seen["ndcg@10"],
        "run_dir": str(run_dir),
        "seed": seed,
        **cold,
    }


def run_hybrid(
    gen_dir: Path, sasrec_dir: Path, args: argparse.Namespace, seed: int, train_min: float | None
) -> dict[str, Any]:
    """The generative run's candidates reranked by the SASRec run of its seed (semid.rec.hybrid): the weight
    chosen on all validation users, then all test users once, and once with the history filtered out."""
    from semid.rec.runs import evaluate_hybrid_run

    res = evaluate_hybrid_run(gen_dir, sasrec_dir, "test", progress=not args.quiet)
    w = res["weight"]
    seen = evaluate_hybrid_run(gen_dir, sasrec_dir, "test", weight=w, exclude_history=True)["model"]
    cold = {}
    if args.cold_start:
        c = evaluate_hybrid_run(gen_dir, sasrec_dir, "test", weight=w, cold_start=True)
        cold = {"cold R@10": c["model"]["recall@10"], "cold N@10": c["model"]["ndcg@10"]}
        cold["cold users"] = c["cold_start"]["users"]
    m = res["model"]
    by_weight = ", ".join(f"{k} {v:.4f}" for k, v in res["valid_ndcg_by_weight"].items())
    print(f"{gen_dir.name} + {sasrec_dir.name}: rerank weight {w:g} (validation N@10 by weight: {by_weight})")
    row = {
        "R@5": m["recall@5"],
        "N@5": m["ndcg@5"],
        "R@10": m["recall@10"],
        "N@10": m["ndcg@10"],
        "users/s": m["users_per_s"],
        "invalid": m["invalid_rate"],
        "R@10 unseen": seen["recall@10"],
        "N@10 unseen": seen["ndcg@10"],
        "rerank weight": w,
        "valid N@10 by weight": res["valid_ndcg_by_weight"],
        "candidates N@10": res["generative"]["ndcg@10"],  # the same candidates in generative order
        "run_dir": str(gen_dir),
        "sasrec_dir": str(sasrec_dir),
        "seed": seed,
        **cold,
    }
    if train_min is not None:
        row["train min"] = train_min
    return row


def hybrid_sasrec_dirs(
    args: argparse.Namespace, models: list[str], seeds: list[int], cold: str
) -> dict[int, Path]:
    """The SASRec run each seed's generative runs are reranked by (checked before any training)."""
    if not args.hybrid:
        return {}
    if not set(CODED) & set(models):
        raise SystemExit("--hybrid reranks TIGER or RPG runs: add tiger or rpg to --models")
    if "sasrec" in models:
        if args.hybrid_sasrec:
            raise SystemExit(
                "--hybrid-sasrec reranks with finished SASRec runs, yet --models trains one: drop one"
            )
        return {s: args.out / f"sasrec{cold}{seed_suffix(s)}" for s in seeds}
    if not args.hybrid_sasrec:
        raise SystemExit("--hybrid needs SASRec runs: add sasrec to --models or give --hybrid-sasrec DIR")
    dirs = {s: Path(f"{args.hybrid_sasrec}{seed_suffix(s)}") for s in seeds}
    for d in dirs.values():
        if not (d / "model.safetensors").is_file():
            raise SystemExit(f"--hybrid-sasrec: {d} holds no finished run (no model.safetensors)")
    return dirs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="sasrec,tiger", help="sasrec, tiger and/or rpg (comma-separated)")
    p.add_argument(
        "--ids",
        default="rq-kmeans",
        help="rq-kmeans, rq-vae, pq, rq-vae-collab and/or fused (TIGER and RPG run once per ID set)",
    )
    p.add_argument(
        "--collab-run",
        type=Path,
        help="--ids rq-vae-collab/fused without sasrec in --models: the SASRec run whose item vectors they use",
    )
    p.add_argument(
        "--collab-weight", type=float, help="--ids rq-vae-collab: weight of the collaborative term"
    )
    p.add_argument("--fuse-weight", type=float, help="--ids fused: weight of the SASRec half of the vector")
    p.add_argument(
        "--pq-pca",
        type=int,
        help="--ids pq: reduce the MiniLM vectors to this many principal components before OPQ (RPG: 128)",
    )
    p.add_argument("--max-minutes", type=float, default=0.0, help="training time limit per model (0: none)")
    p.add_argument("--epochs", type=int, default=0, help="most epochs per model (0: the default, 200)")
    p.add_argument(
        "--valid-users", type=int, default=None, help="users validated each epoch (0: all; default 5000)"
    )
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument(
        "--seeds",
        default="0",
        help="comma-separated seeds: each model (and its IDs) is trained once per seed, and the table shows "
        "mean ± sd over them (runs of seed s > 0 go to NAME-s<s>)",
    )
    p.add_argument(
        "--out", type=Path, default=Path("bench/out/beauty-rec"), help="run directories and ID files"
    )
    add_set_option(
        p, "--train-set", "a training option (semid.rec.train.TrainConfig), e.g. lr=0.002; repeatable"
    )
    add_set_option(
        p, "--model-set", "a TIGER option (semid.rec.tiger.TIGERConfig), e.g. dropout=0.2; repeatable"
    )
    p.add_argument(
        "--config",
        type=Path,
        help="TIGER's `semid train tiger --config` file (model: TIGERConfig, train: TrainConfig options), "
        "e.g. configs/tiger-beauty.json; --max-minutes, --valid-users, --train-set, --model-set override it",
    )
    add_set_option(p, "--rpg-set", "an RPG option (semid.rec.rpg.RPGConfig), e.g. d_model=256; repeatable")
    p.add_argument(
        "--rpg-config",
        type=Path,
        help="RPG's `semid train rpg --config` file (model: RPGConfig, train: TrainConfig options); "
        "--max-minutes, --valid-users, --train-set, --rpg-set override it",
    )
    p.add_argument(
        "--sasrec-config",
        type=Path,
        help="SASRec's `semid train sasrec --config` file, e.g. configs/sasrec-beauty.json (default: the "
        "library defaults); --max-minutes, --valid-users and --train-set override it",
    )
    p.add_argument(
        "--cold-start",
        type=float,
        default=0.0,
        help="train every model on a cold-start split with this share of cold items (e.g. 0.05, seeded, the "
        "same for every model) and add the cold-start table (runs go to NAME-cold)",
    )
    p.add_argument(
        "--hybrid",
        action="store_true",
        help="after each TIGER / RPG row, its candidates reranked by the SASRec run of the same seed "
        "(weight chosen on the validation users)",
    )
    p.add_argument(
        "--hybrid-sasrec",
        type=Path,
        help="with --hybrid and no sasrec in --models: the SASRec run of seed 0 (seed s: DIR-s<s>)",
    )
    p.add_argument("--resume", action="store_true", help="continue the runs in --out")
    p.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        metavar="OUT",
        help="train nothing: print the tables of finished invocations' runs together (their --out folders' "
        "results.json, e.g. one seed each), each model's seeds as mean ± sd",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="also print one JSON object per row")
    args = p.parse_args()
    if args.merge:
        merge_results(args.merge, args.json)
        return
    args.train_set, args.model_set, args.rpg_set = (
        dict(args.train_set),
        dict(args.model_set),
        dict(args.rpg_set),
    )
    from semid.rec.train import read_config_file

    args.config = read_config_file(args.config) if args.config else {"model": {}, "train": {}}
    args.sasrec_config = (
        read_config_file(args.sasrec_config) if args.sasrec_config else {"model": {}, "train": {}}
    )
    args.rpg_config = read_config_file(args.rpg_config) if args.rpg_config else {"model": {}, "train": {}}
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if not (BEAUTY / "p5" / "sequential_data.txt").is_file():
        raise SystemExit(f"{BEAUTY} not found (set SEMID_SHARED to the folder holding data/amazon-beauty)")
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    from semid.rec.data import RecData
    from semid.rec.evaluate import evaluate_most_popular

    t = time.perf_counter()
    ds = load_beauty()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - {"sasrec", *CODED})
    if unknown:
        raise SystemExit(f"unknown --models {unknown[0]!r} (sasrec, tiger or rpg)")
    methods = [m.strip() for m in args.ids.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(ID_METHODS))
    if unknown:
        raise SystemExit(f"unknown --ids method {unknown[0]!r} ({', '.join(ID_METHODS)})")
    # each model on the IDs it is built for: TIGER decodes short hierarchical IDs (rq-kmeans, rq-vae and
    # the collaborative ones), RPG predicts the digits of long unordered ones (pq) in parallel
    fits = {"tiger": [m for m in methods if m != "pq"], "rpg": [m for m in methods if m == "pq"]}
    for model_type in set(CODED) & set(models):
        if not fits[model_type]:
            wanted = "pq" if model_type == "rpg" else "rq-kmeans, rq-vae, rq-vae-collab or fused"
            raise SystemExit(f"--models {model_type} needs --ids {wanted} (given: {args.ids})")
    collab_methods = [m for m in methods if m in COLLAB_IDS] if "tiger" in models else []
    if collab_methods and "sasrec" in models and args.collab_run is not None:
        raise SystemExit(
            "--collab-run applies when --models has no sasrec (else that SASRec gives the vectors)"
        )
    if collab_methods and "sasrec" not in models and args.collab_run is None:
        raise SystemExit(
            f"--ids {collab_methods[0]} needs a SASRec run's item vectors: add sasrec to --models "
            "(trained first, seed by seed) or give --collab-run RUN"
        )
    if args.collab_run is not None:  # fail now, not after hours of training
        from semid.rec.io import load_sasrec_run

        load_sasrec_run(args.collab_run)
    args.hybrid = args.hybrid or args.hybrid_sasrec is not None
    sasrec_dirs = hybrid_sasrec_dirs(args, models, seeds, "-cold" if args.cold_start else "")
    id_sets = (
        {
            (method, s): make_ids(method, args.out, s, pq_pca=args.pq_pca)
            for method in methods
            for s in seeds
            if method not in COLLAB_IDS
        }
        if set(CODED) & set(models)
        else {}
    )
    base = RecData.from_dataset(ds)
    print(f"Beauty: {base.n_users:,} users, {base.n_items:,} items, loaded in {time.perf_counter() - t:.1f}s")
    if collab_methods:  # SASRec's vectors join the MiniLM items by id: the two item sets must match
        from semid.quantize.collab import align_by_item_id

        minilm = json.loads((BEAUTY / "embeddings" / "items.json").read_text())
        none = np.zeros((base.n_items, 1), dtype=np.float32)
        align_by_item_id(minilm, base.item_ids, none, name="the catalogue", catalogue="MiniLM's items.json")
    cold = "-cold" if args.cold_start else ""
    args.item_vectors = None
    if args.cold_start:
        base = base.with_cold_start(args.cold_start, 0)
        n_cold_users = int(np.isin(base.split.test_target, base.cold_items).sum())
        print(
            f"cold start: {len(base.cold_items):,} cold items, {n_cold_users:,} test users with a cold target"
        )
        X = np.load(BEAUTY / "embeddings" / "minilm-l6-v2.npy").astype(np.float32)
        order = {i: r for r, i in enumerate(json.loads((BEAUTY / "embeddings" / "items.json").read_text()))}
        args.item_vectors = X[[order[str(i)] for i in base.item_ids]]

    split = base.split
    pop = evaluate_most_popular(split.test_history, split.test_target, base.n_items)
    rows: list[dict[str, Any]] = [
        *REFERENCES,
        {
            "model": "most popular (ours)",
            **{
                k: pop[m]
                for k, m in (
                    ("R@5", "recall@5"),
                    ("N@5", "ndcg@5"),
                    ("R@10", "recall@10"),
                    ("N@10", "ndcg@10"),
                )
            },
        },
    ]
    runs: list[dict[str, Any]] = []  # one row per model and seed
    sasrec_name = (
        "SASRec, tuned (ours)"
        if args.sasrec_config["model"] or args.sasrec_config["train"]
        else "SASRec (ours)"
    )
    for s in seeds:
        if "sasrec" in models:
            run = run_model("sasrec", base, args.out / f"sasrec{cold}{seed_suffix(s)}", args, s)
            runs.append({"model": sasrec_name, **run})
            print_table([*rows, *runs], COLUMNS, "so far (one row per seed)")
        for method in collab_methods:  # after the SASRec of this seed, whose item vectors they read
            collab_run = args.collab_run or args.out / f"sasrec{cold}{seed_suffix(s)}"
            id_sets[method, s] = make_ids(
                method,
                args.out,
                s,
                collab_run=collab_run,
                collab_weight=args.collab_weight,
                fuse_weight=args.fuse_weight,
                tag=cold,
            )
        for model_type, name in CODED.items():
            for method in fits[model_type] if model_type in models else []:
                data = RecData.from_dataset(ds, id_sets[method, s], ids_name=f"ids-{method}{seed_suffix(s)}")
                if args.cold_start:
                    data = data.with_cold_start(args.cold_start, 0)
                label = f"{method}-pca{args.pq_pca}" if method == "pq" and args.pq_pca else method
                run_dir = args.out / f"{model_type}-{label}{cold}{seed_suffix(s)}"
                run = run_model(model_type, data, run_dir, args, s)
                runs.append({"model": f"{name}, {label} IDs (ours)", **run})
                if args.hybrid:
                    sas = [r for r in runs if r.get("run_dir") == str(sasrec_dirs[s])]
                    minutes = run["train min"] + sas[0]["train min"] if sas else None
                    row = run_hybrid(run_dir, sasrec_dirs[s], args, s, minutes)
                    runs.append({"model": f"{name} + SASRec rerank, {label} IDs (ours)", **row})
                print_table([*rows, *runs], COLUMNS, "so far (one row per seed)")
    rows += summarize_seeds(runs) if len(seeds) > 1 else runs
    title = "Amazon Beauty, leave-one-out, full ranking (test users)"
    if len(seeds) > 1:
        print_table(runs, COLUMNS + ["seed"], "each seed")
        title += f", mean ± sd over seeds {', '.join(map(str, seeds))}"
    print_table(rows, COLUMNS, title)
    if args.cold_start:
        cold_rows = [{"model": r["model"], "R@10": r["cold R@10"], "N@10": r["cold N@10"]} for r in runs]
        cold_rows += [
            {
                "model": f"{r['model']} + unseen items by prefix (share {UNSEEN_SHARE:g})",
                "R@10": r["cold R@10 +prefix"],
                "N@10": r["cold N@10 +prefix"],
                "R@10 all users": r["R@10 +prefix"],
                "N@10 all users": r["N@10 +prefix"],
            }
            for r in runs
            if "cold R@10 +prefix" in r
        ]
        for name, m in getattr(args, "cold_baselines", {}).items():
            cold_rows.append({"model": name, "R@10": m["recall@10"], "N@10": m["ndcg@10"]})
        n = runs[0]["cold users"] if runs else 0
        print_table(
            cold_rows,
            ["model", "R@10", "N@10", "R@10 all users", "N@10 all users"],
            f"Cold start: the {n:,} test users whose target is cold (and, with the rule, all test users)",
        )
        rows += [{**r, "model": f"cold start: {r['model']}"} for r in cold_rows]
    (args.out / "results.json").write_text(json.dumps({"rows": rows, "runs": runs}, indent=2) + "\n")
    if args.json:
        emit_json([*rows, *runs])


def merge_results(outs: list[Path], as_json: bool = False) -> None:
    """The tables of several finished invocations (their ``results.json``) as one: the references, most
    popular, every run (one row per model and seed) and each model's mean ± sd over its seeds. The same
    model and seed twice is refused: it would count one run as two seeds."""
    runs: list[dict[str, Any]] = []
    baseline: list[dict[str, Any]] = []
    for out in outs:
        path = out / "results.json"
        if not path.is_file():
            raise SystemExit(f"--merge: {path} not found (an --out folder of a finished invocation)")
        results = json.loads(path.read_text())
        baseline = baseline or [r for r in results["rows"] if r["model"] == "most popular (ours)"]
        for run in results["runs"]:
            twice = [r for r in runs if (r["model"], r["seed"]) == (run["model"], run["seed"])]
            if twice:
                raise SystemExit(
                    f"--merge: {run['model']!r} seed {run['seed']} is in {twice[0]['run_dir']} and "
                    f"{run['run_dir']}: one run per model and seed"
                )
            runs.append(run)
    runs.sort(key=lambda r: r["seed"])  # seed by seed as one invocation prints them (model order kept)
    print_table(runs, COLUMNS + ["seed"], "each seed")
    rows = [*REFERENCES, *baseline, *summarize_seeds(runs)]
    seeds = sorted({r["seed"] for r in runs})
    title = "Amazon Beauty, leave-one-out, full ranking (test users), mean ± sd over seeds"
    print_table(rows, COLUMNS, f"{title} {', '.join(map(str, seeds))}")
    if as_json:
        emit_json([*rows, *runs])


def summarize_seeds(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per model: each metric as "mean ± sd" (sample sd over the seeds) and the raw figures."""
    from semid.rec.evaluate import mean_sd

    out = []
    for name in dict.fromkeys(r["model"] for r in runs):
        group = [r for r in runs if r["model"] == name]
        row: dict[str, Any] = {"model": f"{name}, {len(group)} seeds"}
        for key in COLUMNS[1:]:
            if not all(key in r for r in group):  # e.g. a reranked row has no epochs of its own
                continue
            mean, sd = mean_sd([r[key] for r in group])
            row[key] = f"{mean:.4f} ± {sd:.4f}" if key.startswith(("R@", "N@")) else round(mean, 2)
            row[f"{key} mean"], row[f"{key} sd"] = mean, sd
        if "rerank weight" in group[0]:
            row["rerank weights"] = [r["rerank weight"] for r in group]
        out.append(row)
    return out


if __name__ == "__main__":
    main()
