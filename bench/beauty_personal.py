"""Personalised search on Amazon Beauty: a request *and* a user's history in one beam search (issue #22, step 4).

    python bench/beauty_personal.py --llm bench/out/lmS0/model --run bench/out/ptiger/tiger-rq-kmeans

For seeded samples of users, the request is the leaf category of the user's held-out item, phrased as a
shopper would (``bench/flex_requests.py``'s everyday word for that leaf when it has one, else the leaf's
own name, in one of the flexible generator's ``synonym`` phrasings: "any good blow dryers?"). Relevance is
the exact held-out item, so the request narrows the catalogue to a category and the history must pick the
item inside it. Scored as Recall@10 / NDCG@10 for:

- ``query only``: the query -> item language model (``history_weight=0``);
- ``history only``: TIGER on the history (``query_weight=0``; TIGER's own beam, tested equal);
- ``query + history``: both in one beam search (:class:`semid.llm.personal.PersonalisedSearch`), with
  TIGER's weight chosen on **dev** (the validation item, predicted from the training sequence) from
  ``--weights`` by NDCG@10, then reported once on **test** (the test item, from the sequence before it).

The language model and the TIGER run must be trained on the same Semantic IDs (here both use the
RQ-KMeans 3x256 + suffix IDs of the reference MiniLM embeddings). Beam 20, top 10, history items may be
answered (as in TIGER's evaluation). Dev and test users are disjoint seeded samples.
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


def leaf_requests(catalogue, item_ids: np.ndarray, seed: int) -> tuple[list[str | None], list[str]]:
    """One request per item id: ``(texts, leaves)``; ``None`` for an item without a category below the
    root. The everyday word is one whose category nodes end in the item's leaf (``"blow dryers"`` for
    ``Hair Dryers``), drawn seeded among several; otherwise the leaf, lower-cased."""
    from flex_requests import LEXICON
    from semid.llm.requests import DEFAULT_PHRASINGS

    rng = np.random.default_rng(seed)
    words_of: dict[str, list[str]] = {}
    for word, nodes in LEXICON.categories.items():
        for node in nodes:
            words_of.setdefault(node.split(" > ")[-1], []).append(word)
    paths = catalogue.table["categories"].to_pylist()
    row = {str(i): r for r, i in enumerate(catalogue.item_ids)}
    phrasings = DEFAULT_PHRASINGS["synonym"]
    texts: list[str | None] = []
    leaves: list[str] = []
    for item in item_ids:
        path = paths[row[str(item)]] if str(item) in row else None
        if isinstance(path, str):
            path = path.split(" > ")
        if not path or len(path) < 2:
            texts.append(None)
            leaves.append("")
            continue
        leaf = path[-1]
        words = words_of.get(leaf)
        word = words[int(rng.integers(len(words)))] if words else leaf.lower()
        texts.append(phrasings[int(rng.integers(len(phrasings)))].format(x=word))
        leaves.append(leaf)
    return texts, leaves


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--llm", type=Path, required=True, help="a bench/beauty_llm.py model directory")
    p.add_argument(
        "--run", type=Path, required=True, help="a TIGER run on the same IDs (bench/beauty_rec.py)"
    )
    p.add_argument("--dev-users", type=int, default=400)
    p.add_argument("--test-users", type=int, default=1000)
    p.add_argument("--weights", default="0.5,1,2", help="TIGER weights tried on dev (query weight 1)")
    p.add_argument("--seed", type=int, default=0, help="user sample and request phrasing")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from semid.data import load_dataset
    from semid.llm.model import load_llm
    from semid.llm.personal import PersonalisedSearch
    from semid.rec.data import RecData
    from semid.rec.evaluate import metrics_from_ranks, rank_of_target
    from semid.rec.io import load_model

    catalogue = load_dataset([BEAUTY / "recbole_item"]).catalogue
    llm = load_llm(args.llm)
    data = RecData.load(args.run)
    search = PersonalisedSearch.from_llm(llm, load_model(args.run), data)
    run_row = {str(i): r for r, i in enumerate(data.item_ids)}
    lm_to_run = np.array([run_row.get(str(i), -1) for i in llm.item_ids], dtype=np.int64)  # (n_lm,)
    weights = [float(w) for w in args.weights.split(",") if w.strip()]

    split = data.split
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(data.n_users)
    cases = {
        "dev": (order[: args.dev_users], split.train, split.valid_target),
        "test": (
            order[args.dev_users : args.dev_users + args.test_users],
            split.test_history,
            split.test_target,
        ),
    }
    info: dict = {"llm": str(args.llm), "run": str(args.run), "users": data.n_users}
    rows = []

    def score(name: str, split_name: str, users, histories, queries, targets, **kw) -> dict:
        t0 = time.perf_counter()
        res = search.search(queries, histories, k=10, beam_size=20, users=list(data.user_ids[users]), **kw)
        seconds = time.perf_counter() - t0
        answered = np.where(res.items >= 0, lm_to_run[np.maximum(res.items, 0)], -1)  # (n, 10) run rows
        m = metrics_from_ranks(rank_of_target(answered, targets), ks=(1, 5, 10))
        row = {"split": split_name, "method": name, "users": len(users), **m,
               "users/s": round(len(users) / seconds, 1), "invalid": float((answered < 0).mean())}  # fmt: skip
        rows.append(row)
        print(
            f"{split_name} {name}: R@10 {m['recall@10']:.4f} N@10 {m['ndcg@10']:.4f} ({seconds:.0f}s)",
            file=sys.stderr,
        )
        return row

    chosen = None
    for split_name in ("dev", "test"):
        users, seqs, target_of = cases[split_name]
        targets = target_of[users]
        queries, leaves = leaf_requests(
            catalogue, data.item_ids[targets], seed=args.seed + (split_name == "test")
        )
        keep = np.array([q is not None for q in queries])
        info[f"{split_name}/users_without_leaf"] = int((~keep).sum())
        users, targets = users[keep], targets[keep]
        queries = [q for q in queries if q is not None]
        info[f"{split_name}/leaves"] = len(set(np.array(leaves, dtype=object)[keep]))
        info[f"{split_name}/examples"] = queries[:5]
        histories = [[str(i) for i in data.item_ids[seqs.row(int(u))]] for u in users]
        common = (split_name, users, histories, queries, targets)
        score("query only", *common, history_weight=0.0)
        score("history only (TIGER)", *common, query_weight=0.0)
        if split_name == "dev":
            tried = [
                score(f"query + history, w={w:g}", *common, history_weight=w) | {"w": w} for w in weights
            ]
            chosen = max(tried, key=lambda r: (r["ndcg@10"], r["recall@10"]))["w"]
            info["chosen_weight"] = chosen
        else:
            score(f"query + history, w={chosen:g} (dev)", *common, history_weight=chosen)
    if args.json:
        emit_json([*rows, info])
        return
    cols = ["method", "users", "recall@1", "recall@5", "recall@10", "ndcg@10", "users/s", "invalid"]
    for split_name in ("dev", "test"):
        print_table(
            [r for r in rows if r["split"] == split_name],
            cols,
            f"Personalised search, Beauty {split_name}: request = the held-out item's leaf category, "
            "relevant = that item",
        )
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
