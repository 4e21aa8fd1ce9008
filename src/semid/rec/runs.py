"""Evaluation entry points of a run directory: its best model on the validation or test targets.

    print(evaluate_run("runs/tiger", "test"))   # the model's Recall/NDCG@5/10 next to most-popular
    print(evaluate_hybrid_run("runs/tiger", "runs/sasrec", "test"))   # TIGER's beam reranked by SASRec

:func:`split_examples` gives those targets, one per user; training validates on them too.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from torch import nn

from semid._utils import resolve_device
from semid.errors import SemidError
from semid.rec.cold import cold_test_users, content_scores
from semid.rec.data import Examples, RecData, data_fingerprint, history_examples
from semid.rec.evaluate import KS, EvalResult, evaluate, evaluate_most_popular, recall_ndcg
from semid.rec.hybrid import (
    GRID,
    N_CANDIDATES,
    HybridRecommender,
    check_weight,
    choose_weight,
    collect_candidates,
)
from semid.rec.io import load_model, read_config, untrained_items
from semid.rec.tiger import TIGER
from semid.rec.unseen import UnseenByPrefix


def split_examples(model: nn.Module, data: RecData, split: str = "test") -> Examples:
    """One example per user: the validation (``"valid"``) or test (``"test"``) target after its history.

    For data with a streamed log (:attr:`RecData.log`) the log is read once, shard by shard.
    """
    if data.log is not None:
        if split not in ("valid", "test"):
            raise SemidError(f"split={split!r} is not one of 'valid', 'test'")
        return data.stream.eval_examples(split, model.max_history)
    s = data.split
    if split == "valid":
        return history_examples(s.train, s.valid_target, data.user_keys, model.max_history)
    if split == "test":
        return history_examples(s.test_history, s.test_target, data.user_keys, model.max_history)
    raise SemidError(f"split={split!r} is not one of 'valid', 'test'")


def evaluate_run(
    run_dir: str | os.PathLike,
    split: str = "test",
    *,
    device: str = "cpu",
    batch_size: int = 256,
    beam_size: int | None = None,
    constrained: bool = True,
    progress: bool = False,
    cold_start: bool = False,
    item_vectors: np.ndarray | None = None,
    exclude_history: bool = False,
    unseen_share: float | None = None,
    unseen_prefix: int | None = None,
) -> dict[str, Any]:
    """Test (or validation) metrics of a run's best model next to the most-popular baseline.

    ``cold_start``: only the test users whose target is a cold item of the run's cold-start split
    (``semid train --cold-start``; :mod:`semid.rec.cold`). ``item_vectors`` ((n_items, D), rows in the run's
    item order, e.g. text embeddings) adds the content baseline: the items nearest the mean of the history.
    ``exclude_history``: never recommend an item of the history the model reads ("filter seen items").
    ``unseen_share`` (TIGER): up to that share of each list goes to items no training sequence holds whose
    ID shares ``unseen_prefix`` leading codes (default: all but the last) with a decoded item
    (:mod:`semid.rec.unseen`, the TIGER paper's cold-start rule); the result's ``"unseen"`` says how many
    such items there are and how many the rule can reach.
    """
    device = resolve_device(device)
    model = load_model(run_dir, device=device)
    data = RecData.load(run_dir)
    _check_data_unchanged(run_dir, data)
    options = _decoding_options(model, beam_size, constrained, exclude_history)
    unseen_info = None
    if unseen_share is not None:
        model, unseen_info = _with_unseen(run_dir, model, data, unseen_share, unseen_prefix, constrained)
    elif unseen_prefix is not None:
        raise SemidError("unseen_prefix applies with unseen_share")
    if cold_start:
        _check_cold_start(run_dir, data, split)
    if item_vectors is not None and np.shape(item_vectors)[0] != data.n_items:
        raise SemidError(f"item vectors have {np.shape(item_vectors)[0]:,} rows for {data.n_items:,} items")
    examples = split_examples(model, data, split)
    users = np.arange(len(examples))
    if cold_start:
        users = _cold_users(run_dir, data, examples)
        examples = examples.take(users)
    res: EvalResult = evaluate(
        model, examples, batch_size=batch_size, device=device, progress=progress, **options
    )
    out = {
        "model_type": model.model_type,
        "split": split,
        "model": res.to_dict(),
        "most_popular": _most_popular(data, split, examples),
    }
    if cold_start:
        out["cold_start"] = {"cold_items": len(data.cold_items), "users": len(users)}
    if unseen_info is not None:
        out["unseen"] = unseen_info
    if item_vectors is not None:
        if data.log is not None:
            raise SemidError("the content baseline reads the histories in memory; not for a streamed log")
        history = data.split.train if split == "valid" else data.split.test_history
        histories = [history.items[history.offsets[u] : history.offsets[u + 1]] for u in users]
        top = np.concatenate(  # (n_users, k) in blocks of 1,024 users: the score matrix stays small
            [
                np.argsort(-content_scores(histories[i : i + 1024], item_vectors), axis=1)[:, : max(KS)]
                for i in range(0, len(histories), 1024)
            ]
        )
        out["content"] = recall_ndcg(top, examples.target, KS)
    return out


def load_hybrid(
    run_dir: str | os.PathLike,
    sasrec_dir: str | os.PathLike,
    *,
    device: str = "cpu",
    n_candidates: int = N_CANDIDATES,
) -> tuple[HybridRecommender, RecData]:
    """The generative run's best model reranked by the SASRec run's, and the generative run's data.

    The two runs must hold the same items in the same order and the same users' interactions (the same
    data and split), so that SASRec scores the candidates' items after the histories it was trained on;
    otherwise one error naming both runs (and both sizes).
    """
    kind = read_config(run_dir)["model_type"]
    if kind == "sasrec":
        raise SemidError(
            f"{run_dir} is a SASRec run: only a generative run (TIGER or RPG) is reranked by SASRec"
        )
    reranker = read_config(sasrec_dir)["model_type"]
    if reranker != "sasrec":
        raise SemidError(f"{sasrec_dir} is a {reranker} run, not SASRec: the reranker must be a SASRec run")
    data, sas_data = RecData.load(run_dir), RecData.load(sasrec_dir)
    if data.n_items != sas_data.n_items:
        raise SemidError(
            f"{run_dir} has {data.n_items:,} items and {sasrec_dir} has {sas_data.n_items:,}: "
            "the two runs must be built on the same item set"
        )
    differ = np.flatnonzero(data.item_ids.astype(str) != sas_data.item_ids.astype(str))
    if len(differ):
        i = int(differ[0])
        raise SemidError(
            f"{run_dir} and {sasrec_dir} have {data.n_items:,} items each but not the same ones in the same "
            f"order (item {i}: {data.item_ids[i]!r} vs {sas_data.item_ids[i]!r}): the two runs must be built "
            "on the same item set"
        )
    same = data.log == sas_data.log and (
        data.log is not None
        or (
            np.array_equal(data.sequences.offsets, sas_data.sequences.offsets)
            and np.array_equal(data.sequences.items, sas_data.sequences.items)
            and np.array_equal(data.user_ids.astype(str), sas_data.user_ids.astype(str))
        )
    )
    if not same:
        raise SemidError(
            f"{run_dir} and {sasrec_dir} were trained on different interactions ({data.n_users:,} and "
            f"{sas_data.n_users:,} users): rerank with a SASRec run of the same data and split"
        )
    device = resolve_device(device)
    hybrid = HybridRecommender(
        load_model(run_dir, device=device), load_model(sasrec_dir, device=device), n_candidates=n_candidates
    )
    return hybrid, data


def evaluate_hybrid_run(
    run_dir: str | os.PathLike,
    sasrec_dir: str | os.PathLike,
    split: str = "test",
    *,
    weight: float | None = None,
    grid: tuple[float, ...] = GRID,
    n_candidates: int = N_CANDIDATES,
    device: str = "cpu",
    batch_size: int = 256,
    beam_size: int | None = None,
    constrained: bool = True,
    progress: bool = False,
    cold_start: bool = False,
    exclude_history: bool = False,
) -> dict[str, Any]:
    """A generative run's candidates reranked by a SASRec run (:mod:`semid.rec.hybrid`) on ``split``, next
    to the same candidates in generative order and the most-popular baseline.

    ``weight`` None: the weight of ``grid`` with the best validation NDCG@10 (one more decoding pass, over
    the validation users, with the same options), reported as ``weight_from: "valid"`` with the metric at
    every weight. Other options as :func:`evaluate_run`.
    """
    if weight is not None:
        weight = check_weight(weight)
    hybrid, data = load_hybrid(run_dir, sasrec_dir, device=device, n_candidates=n_candidates)
    if cold_start:
        _check_cold_start(run_dir, data, split)
    options = _decoding_options(hybrid.generative, beam_size, constrained, exclude_history)
    passes = {"batch_size": batch_size, "device": resolve_device(device), "progress": progress, **options}
    out: dict[str, Any] = {"model_type": f"{hybrid.generative.model_type} + sasrec", "split": split}
    valid = None
    if weight is None:
        valid = collect_candidates(hybrid, split_examples(hybrid, data, "valid"), desc="validation", **passes)
        weight, by_weight = choose_weight(valid, grid)
        out.update(weight_from="valid", valid_ndcg_by_weight={f"{w:g}": v for w, v in by_weight.items()})
    else:
        out["weight_from"] = "given"
    examples = split_examples(hybrid, data, split)
    if cold_start:  # only the cold-target users are decoded (cold start is a test split: no reuse of valid)
        users = _cold_users(run_dir, data, examples)
        examples = examples.take(users)
        out["cold_start"] = {"cold_items": len(data.cold_items), "users": len(users)}
    found = (
        valid if split == "valid" and valid is not None else collect_candidates(hybrid, examples, **passes)
    )
    out.update(
        weight=weight,
        n_candidates=hybrid.width,
        model=found.result(weight).to_dict(),
        generative=found.result(None).to_dict(),
        most_popular=_most_popular(data, split, examples),
    )
    return out


def _with_unseen(
    run_dir: str | os.PathLike,
    model: nn.Module,
    data: RecData,
    share: float,
    prefix: int | None,
    constrained: bool,
) -> tuple[UnseenByPrefix, dict[str, Any]]:
    """``model`` wrapped in :class:`UnseenByPrefix` over the run's untrained items, and what it reaches."""
    if not isinstance(model, TIGER):
        raise SemidError(
            f"{run_dir} is a {model.model_type} run: unseen items by prefix apply to TIGER, which decodes IDs"
        )
    if not constrained:
        raise SemidError("unseen items by prefix need constrained decoding (every decoded ID an item)")
    untrained = untrained_items(data)
    if untrained is None:
        raise SemidError(
            "unseen items are read from the training sequences in memory; not for a streamed log"
        )
    unseen = np.flatnonzero(untrained)
    wrapped = UnseenByPrefix(model, data.codes, unseen, share=share, prefix_levels=prefix)
    info = {
        "share": wrapped.share,
        "prefix_levels": wrapped.siblings.prefix_levels,
        "unseen_items": len(unseen),
        "reachable": wrapped.siblings.reachable,
    }
    return wrapped, info


def _check_cold_start(run_dir: str | os.PathLike, data: RecData, split: str) -> None:
    if data.cold_items is None:
        raise SemidError(
            f"{run_dir} was trained without a cold-start split; train with --cold-start 0.05 to measure one"
        )
    if split != "test":
        raise SemidError("cold items are test targets only: --cold-start evaluates the test split")


def _cold_users(run_dir: str | os.PathLike, data: RecData, examples: Examples) -> np.ndarray:
    """The test examples whose target is a cold item (an error when there is none)."""
    users = cold_test_users(examples.target, data.cold_items)
    if len(users) == 0:
        raise SemidError(f"{run_dir}: no test user has a cold target")
    return users


def _decoding_options(
    model: nn.Module, beam_size: int | None, constrained: bool, exclude_history: bool
) -> dict[str, Any]:
    """What ``model.recommend`` takes besides the batch: TIGER's beam options, and the history filter."""
    options: dict[str, Any] = {"exclude_history": exclude_history}
    if isinstance(model, TIGER):
        options.update(beam_size=beam_size, constrained=constrained)
    elif beam_size is not None or not constrained:
        raise SemidError("beam size and unconstrained decoding apply to TIGER runs only")
    return options


def _most_popular(data: RecData, split: str, examples: Examples) -> dict[str, float]:
    """Recall/NDCG of the most frequent items of the ``split`` histories, the same list for every example."""
    if data.log is None:
        s = data.split
        history = s.train if split == "valid" else s.test_history
        return evaluate_most_popular(history, examples.target, data.n_items, KS)
    counts = _streamed_popularity(data, split)  # the histories' items, counted over the streamed log
    top = np.lexsort((np.arange(data.n_items), -counts))[: max(KS)]
    return recall_ndcg(np.broadcast_to(top, (len(examples), len(top))), examples.target, KS)


def _streamed_popularity(data: RecData, split: str) -> np.ndarray:
    """(n_items,) occurrences of each item in every user's history before the ``split`` target (one pass)."""
    log = data.stream
    drop = 2 if split == "valid" else 1  # the validation history ends before the last two items
    counts = np.zeros(data.n_items, dtype=np.int64)
    chunk: list[np.ndarray] = []
    held = 0
    for _, items in log.iter_users():
        if len(items) < 3:  # left out of training and evaluation (leave-one-out needs 3)
            continue
        chunk.append(items[:-drop])
        held += len(items)
        if held >= 1 << 20:  # count a million items at a time: memory stays flat
            counts += np.bincount(np.concatenate(chunk), minlength=data.n_items)
            chunk, held = [], 0
    if chunk:
        counts += np.bincount(np.concatenate(chunk), minlength=data.n_items)
    return counts


def _check_data_unchanged(run_dir: str | os.PathLike, data: RecData) -> None:
    """The run's items and sequences are still the data it was trained on (its config.json keeps their
    fingerprint): scores on edited files, e.g. another run's sequences, would be silently wrong. A streamed
    run's fingerprint is of its log's files, and runs from before the fingerprint was kept are not checked.
    Cost: one hash of the sequences (milliseconds on Beauty)."""
    stored = read_config(run_dir).get("data_fingerprint")
    if not stored or data.log is not None:
        return
    now = data_fingerprint(data)
    if now != stored:
        raise SemidError(
            f"{run_dir}: its items.parquet/sequences.parquet are not the data it was trained on "
            f"(fingerprint {now}, trained on {stored}); the run was changed after training"
        )
