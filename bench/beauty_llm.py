"""Query -> item on Amazon Beauty: semid's language model vs dense retrieval (MiniLM), same queries, same run.

    python bench/beauty_llm.py --minutes 12                    # a short CPU run
    python bench/beauty_llm.py --minutes 60 --json             # the issue's budget
    python bench/beauty_llm.py --minutes 12 --no-query-prefix  # the LM without the query-embedding prefix

Steps: Semantic IDs for the 12,101 items (``semid fit`` + ``semid assign`` on MiniLM item embeddings,
3 levels x 256, cached in ``--work``), training examples (``prepare_dataset``: 4 queries per item from the
training templates), the offline scratch Llama trained for ``--minutes`` on this machine's CPU, then both
methods answer the *held-out* templates (phrasings never seen in training) for ``--eval-items`` items:

- semid LM: constrained beam search (beam 20), top 10; the share of valid answers is reported (must be 1).
  By default (the library's) the LM also reads the query's MiniLM embedding as soft-prompt vectors
  (``semid.llm.prefix``) and its code head scores the ID tokens from the items' MiniLM vectors;
  ``--no-code-head`` drops the head, ``--no-query-prefix`` both. Embedding the training queries and the
  item texts happens once, before the training clock starts, and is reported as ``embed_seconds``
  (cached in ``--work``); ``--eval-limit N`` scores N of the held-out queries (a smoke run);
- dense: the MiniLM embedding of the query, nearest item embeddings by cosine, top 10.

Hit@1 / Hit@10 of the right item, per template. ``attribute_query`` ("I want a {category} from {brand},
{price band}") is where dense retrieval is weak; ``recommend_title`` quotes the title.

The report of issue #22, from models trained with ``--steps N --seed S --skip-eval`` (one ``--work`` per seed)::

    python bench/beauty_llm.py --report bench/out/lmS0 bench/out/lmS1 bench/out/lmS2 \
        --tiger-run bench/out/ptiger/tiger-rq-kmeans

prints each seed's training minutes, then runs ``bench/beauty_flex_eval.py`` (flexible requests, dev and
test: the ablation table per family and overall, mean ± sd over the seeds, and ID -> attribute accuracy)
and, with ``--tiger-run``, ``bench/beauty_personal.py`` on the first seed's model (personalised search:
query only, TIGER only, both, the weight chosen on dev).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BEAUTY, emit_json, print_table  # noqa: E402


def semantic_ids(emb: Path, work: Path) -> Path:
    ids = work / "ids.parquet"
    if not ids.exists():
        q = work / "quantizer"
        run = [sys.executable, "-m", "semid"]
        subprocess.run(
            [*run, "fit", str(emb), "-o", str(q), "--levels", "3", "--codebook-size", "256"], check=True
        )
        subprocess.run([*run, "assign", str(q), str(emb), "-o", str(ids)], check=True)
    return ids


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=12.0, help="training time budget")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="train exactly this many steps (no time budget; seeds comparable)",
    )
    p.add_argument("--seed", type=int, default=0, help="training seed (model init, batch order); data seed 0")
    p.add_argument(
        "--skip-eval", action="store_true", help="train and save only (bench/beauty_flex_eval.py scores it)"
    )
    p.add_argument("--eval-items", type=int, default=300, help="items with held-out queries to score")
    p.add_argument(
        "--eval-limit",
        type=int,
        default=0,
        help="score only this many of those queries (0: all; a smoke run)",
    )
    p.add_argument("--emb", type=Path, default=Path("/tmp/beauty_emb.parquet"), help="MiniLM item embeddings")
    p.add_argument("--work", type=Path, default=Path("/tmp/semid_beauty_llm"))
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--query-prefix",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="the query-embedding prefix (default: the library's, on)",
    )
    p.add_argument(
        "--code-head",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the prefix's code head: the query embedding scores the ID tokens (default: on)",
    )
    p.add_argument(
        "--report", type=Path, nargs="+", default=None, metavar="WORK", help="trained --work dirs: the report"
    )
    p.add_argument("--tiger-run", type=Path, default=None, help="--report: a TIGER run on the same IDs")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.report:
        report(args)
        return

    from semid.data import load_dataset
    from semid.embed import load_embedder, read_embeddings
    from semid.ids.table import read_ids
    from semid.llm.examples import ExampleConfig, prepare_dataset
    from semid.llm.generate import QueryRecommender
    from semid.llm.model import ScratchConfig, load_llm
    from semid.llm.prefix import PrefixConfig
    from semid.llm.train import TrainConfig, train_llm

    args.work.mkdir(parents=True, exist_ok=True)
    if not args.emb.exists():  # the reference MiniLM vectors (../shared) as an embeddings file
        from semid.embed.store import write_embeddings

        ref = BEAUTY / "embeddings"
        asins = np.asarray(json.loads((ref / "items.json").read_text()), dtype=object)
        write_embeddings(args.emb, asins, np.load(ref / "minilm-l6-v2.npy").astype(np.float32))
    catalogue = load_dataset([BEAUTY / "recbole_item"]).catalogue
    ids = read_ids(semantic_ids(args.emb, args.work))
    data = args.work / "data"
    t0 = time.perf_counter()
    examples = prepare_dataset(
        catalogue, ids, data, ExampleConfig(n_per_item=4, n_valid_items=args.eval_items, seed=0)
    )
    prep_s = time.perf_counter() - t0
    use_prefix = TrainConfig().query_prefix is not None if args.query_prefix is None else args.query_prefix
    print(f"query prefix: {'on (packaged MiniLM)' if use_prefix else 'off'}", file=sys.stderr)
    config = TrainConfig(
        scratch=ScratchConfig(
            hidden_size=args.hidden,
            n_layers=args.layers,
            intermediate_size=(args.hidden * 8 // 3 + 7) // 8 * 8,
        ),
        query_prefix=PrefixConfig(code_head=args.code_head) if use_prefix else None,
        max_minutes=None if args.steps else args.minutes,
        max_steps=args.steps,
        seed=args.seed,
        batch_size=64,
        lr=2e-3,
        eval_every=0,
        eval_queries=64,
        save_every=0,
        progress=False,
    )
    result = train_llm(data, args.work / "model", config)
    if args.skip_eval:
        info = {"train_examples": len(examples.train), "train_steps": result.steps, "seed": args.seed}
        emit_json([{**info, "train_minutes": result.seconds / 60, "embed_seconds": result.embed_seconds}])
        return

    valid = [ex for ex in examples.valid if ex["task"] == "predict_semantic_id"]
    if args.eval_limit and args.eval_limit < len(valid):
        pick = np.sort(np.random.default_rng(0).choice(len(valid), args.eval_limit, replace=False))
        valid = [valid[i] for i in pick]
    queries = [ex["messages"][1]["content"] for ex in valid]
    targets = np.array([ex["item"] for ex in valid])
    templates = np.array([ex["template"] for ex in valid])

    llm = load_llm(args.work / "model")
    t0 = time.perf_counter()
    lm = QueryRecommender.from_llm(llm).recommend(queries, k=10, beam_size=20)
    lm_s = time.perf_counter() - t0
    valid_share = float((lm.items >= 0).mean())

    item_ids, X = read_embeddings(args.emb)
    row_of = {str(i): r for r, i in enumerate(item_ids)}
    X = X[[row_of[str(i)] for i in catalogue.item_ids]]
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    t0 = time.perf_counter()
    Q = load_embedder().encode(queries)
    Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    dense_top = np.argsort(-(Q @ X.T), axis=1)[:, :10]
    dense_s = time.perf_counter() - t0

    rows = []
    for name in ["all", *sorted(set(templates.tolist()))]:
        sel = np.ones(len(valid), bool) if name == "all" else templates == name
        for method, top in (("semid-llm", lm.items), ("dense-minilm", dense_top)):
            hit = top[sel] == targets[sel, None]
            rows.append(
                {
                    "template": name,
                    "method": method,
                    "queries": int(sel.sum()),
                    "hit@1": float(hit[:, :1].any(1).mean()),
                    "hit@10": float(hit.any(1).mean()),
                }
            )
    info = {
        "items": len(catalogue),
        "train_examples": len(examples.train),
        "train_steps": result.steps,
        "train_minutes": result.seconds / 60,
        "prepare_seconds": prep_s,
        "model": f"scratch Llama hidden={args.hidden} layers={args.layers}",
        "query_prefix": f"n_prefix={llm.prefix.n_prefix}, {llm.prefix.encoder_name}" if llm.prefix else "off",
        "code_head": bool(llm.prefix and llm.prefix.codebook_sizes),
        "embed_seconds": result.embed_seconds,
        "params_m": sum(p.numel() for p in llm.model.parameters()) / 1e6,
        "prefix_params_m": sum(p.numel() for p in llm.prefix.parameters()) / 1e6 if llm.prefix else 0.0,
        "lm_valid_answers": valid_share,
        "lm_eval_seconds": lm_s,
        "dense_eval_seconds": dense_s,
        "threads": args.threads,
    }
    if args.json:
        emit_json([*rows, info])
    else:
        print_table(
            rows, ["template", "method", "queries", "hit@1", "hit@10"], "Held-out query templates, Beauty"
        )
        print(json.dumps(info, indent=2))


def report(args: argparse.Namespace) -> None:
    """Training minutes per seed, then the flexible-request and personalised-search benchmarks (docs)."""
    rows = []
    for work in args.report:
        meta = json.loads((work / "model" / "semid_llm.json").read_text())
        rows.append({"work": str(work), "seed": meta["train"]["seed"], "steps": meta["step"],
                     "train_minutes": round(meta["train_seconds"] / 60, 1)})  # fmt: skip
    print_table(rows, ["work", "seed", "steps", "train_minutes"], "Query -> item language models, training")
    here = Path(__file__).resolve().parent
    threads = ["--threads", str(args.threads)]
    flex = [sys.executable, str(here / "beauty_flex_eval.py"), "--work", *map(str, args.report)]
    subprocess.run([*flex, "--splits", "dev,test", *threads], check=True)
    if args.tiger_run is not None:
        personal = [sys.executable, str(here / "beauty_personal.py"), "--llm", str(args.report[0] / "model")]
        subprocess.run([*personal, "--run", str(args.tiger_run), *threads], check=True)


if __name__ == "__main__":
    main()
