"""Flexible requests on Amazon Beauty: a trained query -> item LM vs dense MiniLM retrieval (issue #22).

    python bench/beauty_flex_eval.py --work bench/out/llm60 --splits dev,test --json

Reads the requests of ``bench/data/flex_requests.jsonl`` (``bench/flex_requests.py``: 12 families of
requests whose wording and content no training query uses, each with the set of catalogue items that
satisfy it) and scores, on each split, Hit@1/Hit@10, Precision@10 and NDCG@10 against that set, per family:

- ``semid-llm``: the language model in ``--work/model`` (``bench/beauty_llm.py`` trains it), constrained
  beam search, beam 20, top 10 (the share of valid answers is reported; it must be 1);
- ``dense-minilm``: the request's MiniLM embedding, nearest item embeddings by cosine (zero-shot);
- ``dense-minilm-ft``: the same, with a linear query adapter (initialised to the identity) fine-tuned on
  the LM's own training queries (``--work/data/train.jsonl``, the ``predict_semantic_id`` task, up to
  ``--ft-queries`` of them): in-batch softmax over the whole catalogue (InfoNCE against every item,
  temperature 0.05), Adam, ``--ft-epochs`` epochs. The strong dense baseline issue #22 asks for.

Design choices are made on ``dev``; ``test`` is reported once per trained recipe.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BEAUTY, emit_json, print_table  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="bench/beauty_llm.py's --work (holds model/)")
    p.add_argument(
        "--emb", type=Path, default=None, help="MiniLM item embeddings (default: WORK/emb.parquet)"
    )
    p.add_argument("--requests", type=Path, default=Path(__file__).parent / "data" / "flex_requests.jsonl")
    p.add_argument("--splits", default="dev", help="dev and/or test, comma-separated")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ft-queries", type=int, default=20_000, help="training queries for the dense adapter")
    p.add_argument("--ft-epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from semid.data import load_dataset
    from semid.embed import load_embedder
    from semid.embed.store import read_embeddings
    from semid.llm.generate import QueryRecommender
    from semid.llm.model import load_llm
    from semid.llm.requests import catalogue_fields, load_requests, score_requests

    catalogue = load_dataset([BEAUTY / "recbole_item"]).catalogue
    fields = catalogue_fields(catalogue)
    cat_row = {str(i): r for r, i in enumerate(catalogue.item_ids)}
    llm = load_llm(args.work / "model")
    lm_to_cat = np.array([cat_row.get(str(i), -1) for i in llm.item_ids], dtype=np.int64)  # (n_lm,)
    item_ids, X = read_embeddings(args.emb or args.work / "emb.parquet")
    row_of = {str(i): r for r, i in enumerate(item_ids)}
    X = X[[row_of[str(i)] for i in catalogue.item_ids]]
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    embedder = load_embedder()
    rows, info = [], {"items": len(catalogue), "model": str(args.work / "model")}
    t0 = time.perf_counter()
    adapter, n_ft = finetune_dense(args, embedder, X, lm_to_cat)
    info["dense_ft_queries"], info["dense_ft_seconds"] = n_ft, round(time.perf_counter() - t0, 1)
    for split in [s.strip() for s in args.splits.split(",") if s.strip()]:
        reqs = load_requests(args.requests, split=split)
        relevant = [r.relevant(fields) for r in reqs]
        texts = [r.text for r in reqs]
        t0 = time.perf_counter()
        lm = QueryRecommender.from_llm(llm).recommend(texts, k=10, beam_size=20)
        info[f"{split}/lm_seconds"] = round(time.perf_counter() - t0, 1)
        lm_top = np.where(lm.items >= 0, lm_to_cat[np.maximum(lm.items, 0)], -1)
        info[f"{split}/lm_valid_answers"] = float((lm_top >= 0).mean())
        Q = embedder.encode(texts)
        Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
        dense_top = np.argsort(-(Q @ X.T), axis=1)[:, :10]
        Qa = adapter(Q)
        ft_top = np.argsort(-(Qa @ X.T), axis=1)[:, :10]
        methods = (("semid-llm", lm_top), ("dense-minilm", dense_top), ("dense-minilm-ft", ft_top))
        for method, top in methods:
            for row in score_requests(top, reqs, relevant=relevant, ks=(1, 10)).rows(method=method):
                rows.append({"split": split, **row})
        info[f"{split}/requests"] = len(reqs)
    if args.json:
        emit_json([*rows, info])
    else:
        cols = [c for c in rows[0] if c != "split"]
        for split in sorted({r["split"] for r in rows}):
            print_table([r for r in rows if r["split"] == split], cols, f"Flexible requests, Beauty, {split}")
        print(json.dumps(info, indent=2))


def finetune_dense(args, embedder, X: np.ndarray, lm_to_cat: np.ndarray):
    """A linear adapter on MiniLM query vectors, trained to pick each training query's item among all items.

    Returns ``(adapter, n_queries)``; ``adapter(Q)`` maps ``(n, d)`` unit query vectors to unit vectors.
    """
    import torch
    import torch.nn.functional as F

    from semid.llm.examples import read_jsonl

    train = [
        ex for ex in read_jsonl(args.work / "data" / "train.jsonl") if ex["task"] == "predict_semantic_id"
    ]
    rng = np.random.default_rng(args.seed)
    if len(train) > args.ft_queries:
        train = [train[i] for i in np.sort(rng.choice(len(train), args.ft_queries, replace=False))]
    targets = lm_to_cat[np.array([ex["item"] for ex in train])]
    keep = targets >= 0
    texts = [ex["messages"][1]["content"] for ex, k in zip(train, keep, strict=True) if k]
    Q = embedder.encode(texts)
    Q = torch.from_numpy(Q / np.linalg.norm(Q, axis=1, keepdims=True)).float()  # (n, d)
    y = torch.from_numpy(targets[keep])
    items = torch.from_numpy(X).float()  # (n_items, d) unit rows
    torch.manual_seed(args.seed)
    W = torch.nn.Linear(Q.shape[1], Q.shape[1], bias=False)
    with torch.no_grad():
        W.weight.copy_(torch.eye(Q.shape[1]))
    opt = torch.optim.Adam(W.parameters(), lr=1e-3)
    for _ in range(args.ft_epochs):
        for b in torch.randperm(len(Q)).split(256):
            q = F.normalize(W(Q[b]), dim=1)  # (B, d)
            loss = F.cross_entropy(q @ items.T / 0.05, y[b])  # (B, n_items) logits
            opt.zero_grad()
            loss.backward()
            opt.step()

    def adapter(V: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return F.normalize(W(torch.from_numpy(np.asarray(V, dtype=np.float32))), dim=1).numpy()

    return adapter, len(texts)


if __name__ == "__main__":
    main()
