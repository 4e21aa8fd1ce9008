"""Flexible requests on Amazon Beauty: the query -> item LM, its ablations and dense MiniLM retrieval (#22).

    python bench/beauty_flex_eval.py --work bench/out/lmS0 bench/out/lmS1 bench/out/lmS2 --splits dev,test

Reads the requests of ``bench/data/flex_requests.jsonl`` (``bench/flex_requests.py``: 12 families of
requests whose wording and content no training query uses, each with the set of catalogue items that
satisfy it) and scores, on each split, Hit@1/Hit@10, Precision@10 and NDCG@10 against that set, per family,
for every trained model given (one ``--work`` directory of ``bench/beauty_llm.py`` per training seed; the
tables show mean ± sd over them):

- ``semid-llm``: the full model (query prefix + code head), constrained beam search, beam 20, top 10;
- ``llm-no-head``: the same weights, the code head's scores zeroed (``head_weight=0``);
- ``code-head-only``: the same weights, the language model's logits zeroed (``lm_weight=0``): the trained
  adapter and temperatures of the head alone;
- ``semid-llm+filter``: the full model decoding only items that satisfy the brand and price the request
  states (:class:`semid.llm.constraints.RequestFilter`, the ID trie pruned at every level; fewer than 10
  such items are followed by the unrestricted beam's best);
- ``dense-minilm``: the request's MiniLM embedding, nearest item embeddings by cosine (zero-shot);
- ``dense-minilm-ft``: the same, with a linear query adapter (initialised to the identity) fine-tuned on
  the LM's own training queries (``WORK/data/train.jsonl``, ``predict_semantic_id``, up to
  ``--ft-queries``): InfoNCE against every item, temperature 0.05, Adam, ``--ft-epochs`` epochs, seeded
  with the LM's training seed. The strong dense baseline issue #22 asks for;
- ``dense-minilm-ft+filter``: that ranking with the same filter (the best allowed items, then the rest):
  what the filter alone is worth, on the baseline.

Also per model: ID -> attribute accuracy (brand, category, price range named from a Semantic ID, greedy,
on ``--attr-items`` seeded items with the field, against always answering the most common value).
``--filter-variants`` adds, on dev only, the filter without price words and without misspelt brands.

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

METRICS = ("hit@1", "hit@10", "precision@10", "ndcg@10")


def filtered(order: np.ndarray, allow: np.ndarray, k: int = 10) -> np.ndarray:
    """``(Q, k)``: each row's best allowed items of a full ranking ``order`` (Q, n), then its best others."""
    out = np.empty((len(order), k), dtype=np.int64)
    for q in range(len(order)):
        ok = allow[q][order[q]]
        out[q] = np.concatenate([order[q][ok][:k], order[q][~ok][:k]])[:k]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--work", type=Path, nargs="+", required=True, help="bench/beauty_llm.py --work dirs, one per seed"
    )
    p.add_argument(
        "--emb", type=Path, default=None, help="MiniLM item embeddings (default: WORK/emb.parquet)"
    )
    p.add_argument("--requests", type=Path, default=Path(__file__).parent / "data" / "flex_requests.jsonl")
    p.add_argument("--splits", default="dev", help="dev and/or test, comma-separated")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ft-queries", type=int, default=20_000, help="training queries for the dense adapter")
    p.add_argument("--ft-epochs", type=int, default=3)
    p.add_argument("--attr-items", type=int, default=500, help="items per attribute (0: skip)")
    p.add_argument("--filter-variants", action="store_true", help="dev: the filter without parts of it")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from semid.data import load_dataset
    from semid.embed import load_embedder
    from semid.embed.store import read_embeddings
    from semid.llm.attributes import attribute_accuracy
    from semid.llm.constraints import RequestFilter
    from semid.llm.generate import QueryRecommender
    from semid.llm.model import load_llm
    from semid.llm.requests import catalogue_fields, load_requests, score_requests
    from semid.rec.evaluate import mean_sd

    catalogue = load_dataset([BEAUTY / "recbole_item"]).catalogue
    fields = catalogue_fields(catalogue)
    cat_row = {str(i): r for r, i in enumerate(catalogue.item_ids)}
    embedder = load_embedder()
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    rows, info = [], {"items": len(catalogue), "models": [str(w) for w in args.work]}
    attrs = []
    filters = {"": RequestFilter()}
    if args.filter_variants:
        filters["-no-price-words"] = RequestFilter(vague_prices=False)
        filters["-no-typos"] = RequestFilter(fuzzy=False)
    for run, work in enumerate(args.work):
        llm = load_llm(work / "model")
        seed = int(json.loads((work / "model" / "semid_llm.json").read_text())["train"]["seed"])
        lm_to_cat = np.array([cat_row.get(str(i), -1) for i in llm.item_ids], dtype=np.int64)  # (n_lm,)
        cat_to_lm = np.full(len(catalogue), -1, dtype=np.int64)
        cat_to_lm[lm_to_cat[lm_to_cat >= 0]] = np.flatnonzero(lm_to_cat >= 0)
        item_ids, X = read_embeddings(args.emb or work / "emb.parquet")
        row_of = {str(i): r for r, i in enumerate(item_ids)}
        X = X[[row_of[str(i)] for i in catalogue.item_ids]]
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
        fitted = {name: f.fit(catalogue, item_ids=llm.item_ids) for name, f in filters.items()}
        t0 = time.perf_counter()
        adapter, n_ft = finetune_dense(args, work, seed, embedder, X, lm_to_cat)
        info[f"seed{seed}/dense_ft_queries"], info[f"seed{seed}/dense_ft_seconds"] = (
            n_ft,
            round(time.perf_counter() - t0, 1),
        )
        rec = QueryRecommender.from_llm(llm)
        for split in splits:
            reqs = load_requests(args.requests, split=split)
            relevant = [r.relevant(fields) for r in reqs]
            texts = [r.text for r in reqs]
            qvecs = rec.query_embeddings(texts)  # once for every variant
            variants = {
                "semid-llm": {},
                "llm-no-head": {"head_weight": 0.0},
                "code-head-only": {"lm_weight": 0.0},
            }
            for name, f in fitted.items():
                if name == "" or split == "dev":
                    variants[f"semid-llm+filter{name}"] = {"allow": f.masks(texts)}
            tops = {}
            for method, kw in variants.items():
                t0 = time.perf_counter()
                lm = rec.recommend(texts, k=10, beam_size=20, query_embeddings=qvecs, **kw)
                info[f"seed{seed}/{split}/{method}_seconds"] = round(time.perf_counter() - t0, 1)
                top = np.where(lm.items >= 0, lm_to_cat[np.maximum(lm.items, 0)], -1)
                info[f"seed{seed}/{split}/{method}_valid"] = float((top >= 0).mean())
                tops[method] = top
            Q = embedder.encode(texts)
            Q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
            tops["dense-minilm"] = np.argsort(-(Q @ X.T), axis=1)[:, :10]
            ft_order = np.argsort(-(adapter(Q) @ X.T), axis=1)  # (Q, n_items) catalogue rows
            tops["dense-minilm-ft"] = ft_order[:, :10]
            allow_cat = np.zeros((len(texts), len(catalogue)), bool)  # the filter in catalogue order
            allow_lm = fitted[""].masks(texts)
            allow_cat[:, lm_to_cat[lm_to_cat >= 0]] = allow_lm[:, lm_to_cat >= 0]
            tops["dense-minilm-ft+filter"] = filtered(ft_order, allow_cat)
            info[f"{split}/requests"] = len(reqs)
            info[f"{split}/filtered_requests"] = int((~allow_lm.all(axis=1)).sum())
            for method, top in tops.items():
                for row in score_requests(top, reqs, relevant=relevant, ks=(1, 10)).rows(method=method):
                    rows.append({"split": split, "seed": seed, **row})
        if args.attr_items:
            t0 = time.perf_counter()
            scores = attribute_accuracy(llm, catalogue, n_items=args.attr_items, seed=0)
            for s in scores.values():
                d = s.to_dict()
                attrs.append({"seed": seed, **{k: d[k] for k in ("attribute", "accuracy", "majority")}})
            info[f"seed{seed}/attribute_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"scored {work} (seed {seed}, model {run + 1} of {len(args.work)})", file=sys.stderr)
    table = aggregate(rows, mean_sd)
    attr_table = aggregate(attrs, mean_sd, keys=("attribute",), metrics=("accuracy", "majority"))
    if args.json:
        emit_json([*rows, *attrs, *table, *attr_table, info])
        return
    n = len(args.work)
    for split in splits:
        part = [r for r in table if r["split"] == split]
        cols = ["family", "method", "requests", *METRICS]
        title = f"Flexible requests, Beauty, {split}: mean ± sd over {n} seed{'s' if n > 1 else ''}"
        print_table([r for r in part if r["family"] == "all"], cols, title + ", all families")
        print_table([r for r in part if r["family"] != "all"], cols, title + ", per family")
    if attr_table:
        print_table(
            attr_table, ["attribute", "accuracy", "majority"], f"ID -> attribute accuracy ({n} seeds)"
        )
    print(json.dumps(info, indent=2))


def aggregate(rows, mean_sd, keys=("split", "family", "method"), metrics=METRICS) -> list[dict]:
    """One row per ``keys``: each metric as "mean ± sd" over the seeds (the order of first appearance)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for key, part in groups.items():
        row = dict(zip(keys, key, strict=True))
        if "requests" in part[0]:
            row["requests"] = part[0]["requests"]
        for m in metrics:
            mean, sd = mean_sd([float(r[m]) for r in part])
            row[m] = f"{mean:.4f} ± {sd:.4f}"
        row["seeds"] = len(part)
        out.append(row)
    return out


def finetune_dense(args, work: Path, seed: int, embedder, X: np.ndarray, lm_to_cat: np.ndarray):
    """A linear adapter on MiniLM query vectors, trained to pick each training query's item among all items.

    Returns ``(adapter, n_queries)``; ``adapter(Q)`` maps ``(n, d)`` unit query vectors to unit vectors.
    """
    import torch
    import torch.nn.functional as F

    from semid.llm.examples import read_jsonl

    train = [ex for ex in read_jsonl(work / "data" / "train.jsonl") if ex["task"] == "predict_semantic_id"]
    rng = np.random.default_rng(seed)
    if len(train) > args.ft_queries:
        train = [train[i] for i in np.sort(rng.choice(len(train), args.ft_queries, replace=False))]
    targets = lm_to_cat[np.array([ex["item"] for ex in train])]
    keep = targets >= 0
    texts = [ex["messages"][1]["content"] for ex, k in zip(train, keep, strict=True) if k]
    Q = embedder.encode(texts)
    Q = torch.from_numpy(Q / np.linalg.norm(Q, axis=1, keepdims=True)).float()  # (n, d)
    y = torch.from_numpy(targets[keep])
    items = torch.from_numpy(X).float()  # (n_items, d) unit rows
    torch.manual_seed(seed)
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
