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
trains nothing and prints finished invocations' runs as one table (e.g. seeds run in separate --out folders;
``bench/results/beauty_rec_runs.json``, written by ``bench/collect_rec_runs.py``, holds the recorded runs).

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

This file is the command line and the loop over seeds and models; its parts are ``_rec_ids.py`` (the data
and the ID sets), ``_rec_runs.py`` (one model trained and evaluated, and its hybrid row) and
``_rec_tables.py`` (reference rows, mean ± sd over seeds, the cold-start table, ``--merge``).
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
from _rec_ids import COLLAB_IDS, ID_METHODS, load_beauty, make_ids, minilm, seed_suffix  # noqa: E402
from _rec_runs import CODED, hybrid_sasrec_dirs, run_hybrid, run_model  # noqa: E402
from _rec_tables import (  # noqa: E402
    COLD_PREFIX,
    COLUMNS,
    REFERENCES,
    merge_results,
    most_popular_row,
    print_cold_start,
    summarize_seeds,
)


def build_parser() -> argparse.ArgumentParser:
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
        "results.json, e.g. one seed each, or results JSON files such as bench/results/beauty_rec_runs.json), "
        "each model's seeds as mean ± sd, and the cold-start rows they recorded",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="also print one JSON object per row")
    return p


def plan(args: argparse.Namespace) -> tuple[list[str], list[str], dict[str, list[str]], list[str]]:
    """The models, the ID sets, the ID sets each coded model trains on, and the ID sets that need a SASRec
    run's item vectors: checked against each other before anything trains."""
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
    return models, methods, fits, collab_methods


def main() -> None:
    args = build_parser().parse_args()
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
    models, methods, fits, collab_methods = plan(args)
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

        none = np.zeros((base.n_items, 1), dtype=np.float32)
        align_by_item_id(
            minilm()[1], base.item_ids, none, name="the catalogue", catalogue="MiniLM's items.json"
        )
    cold = "-cold" if args.cold_start else ""
    args.item_vectors = None
    if args.cold_start:
        base = base.with_cold_start(args.cold_start, 0)
        n_cold_users = int(np.isin(base.split.test_target, base.cold_items).sum())
        print(
            f"cold start: {len(base.cold_items):,} cold items, {n_cold_users:,} test users with a cold target"
        )
        X, minilm_items = minilm()
        order = {i: r for r, i in enumerate(minilm_items)}
        args.item_vectors = X[[order[str(i)] for i in base.item_ids]]

    split = base.split
    pop = evaluate_most_popular(split.test_history, split.test_target, base.n_items)
    rows: list[dict[str, Any]] = [*REFERENCES, most_popular_row(pop)]
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
        cold_rows = print_cold_start(runs, getattr(args, "cold_baselines", {}))
        rows += [{**r, "model": f"{COLD_PREFIX}{r['model']}"} for r in cold_rows]
    (args.out / "results.json").write_text(json.dumps({"rows": rows, "runs": runs}, indent=2) + "\n")
    if args.json:
        emit_json([*rows, *runs])


if __name__ == "__main__":
    main()
