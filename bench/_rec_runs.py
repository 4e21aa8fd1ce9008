"""One model of ``bench/beauty_rec.py`` trained (or resumed) and evaluated on the Beauty test users, and
its hybrid row (its candidates reranked by the SASRec run of its seed)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _rec_ids import seed_suffix  # noqa: E402
from _rec_tables import UNSEEN_SHARE  # noqa: E402

CODED = {"tiger": "TIGER", "rpg": "RPG"}  # the models trained once per ID set


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
