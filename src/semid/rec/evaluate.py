"""Leave-one-out evaluation: Recall@k and NDCG@k of each user's held-out item, full ranking over all items.

With one relevant item per user, Recall@k is the share of users whose target is among their top ``k``
recommendations, and NDCG@k averages ``1 / log2(rank + 2)`` over the users whose target is there (``rank``
counted from 0), the protocol of SASRec, S3-Rec, P5 and TIGER. Ranking is over the whole catalogue: no
sampled negatives, and history items are not removed (the papers do not remove them either).

Any model with ``recommend(batch, k) -> (items (B, k), scores (B, k))`` can be evaluated; a returned item
``-1`` (an ID that is no item, from unconstrained decoding) is never a hit and is counted as invalid.

    >>> recall_ndcg(np.array([[3, 1, 2], [0, 2, 1]]), np.array([1, 4]), ks=(1, 3))
    {'recall@1': 0.0, 'ndcg@1': 0.0, 'recall@3': 0.5, 'ndcg@3': 0.31546487678572877}
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from semid._distributed import SINGLE, Dist, all_gather
from semid.data import Sequences
from semid.errors import SemidError
from semid.rec.data import Batch, Examples, collate, length_batches

KS = (5, 10)  # the cut-offs TIGER reports


class Recommender(Protocol):
    """What :func:`evaluate` needs of a model."""

    def recommend(self, batch: Batch, k: int, **options: Any) -> tuple[torch.Tensor, torch.Tensor]: ...


def rank_of_target(recommended: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor) -> np.ndarray:
    """(n,) 0-based position of each row's target in its ``(n, k)`` recommendation list, ``-1`` if absent."""
    rec = np.asarray(recommended.cpu() if isinstance(recommended, torch.Tensor) else recommended)
    tgt = np.asarray(targets.cpu() if isinstance(targets, torch.Tensor) else targets)
    if rec.ndim != 2 or tgt.shape != (rec.shape[0],):
        raise SemidError(f"recommended should be (n, k) and targets (n,), got {rec.shape} and {tgt.shape}")
    hit = rec == tgt[:, None]  # (n, k); items are distinct within a row, so at most one hit
    return np.where(hit.any(axis=1), hit.argmax(axis=1), -1)


def metrics_from_ranks(ranks: np.ndarray, ks: Sequence[int] = KS) -> dict[str, float]:
    """``recall@k`` and ``ndcg@k`` for each ``k`` from 0-based target ranks (``-1``: not recommended)."""
    ranks = np.asarray(ranks)
    if len(ranks) == 0:
        raise SemidError("no users to evaluate")
    out: dict[str, float] = {}
    found = ranks >= 0
    gain = np.where(found, 1.0 / np.log2(np.where(found, ranks, 0) + 2.0), 0.0)
    for k in ks:
        within = found & (ranks < k)
        out[f"recall@{k}"] = float(within.mean())
        out[f"ndcg@{k}"] = float(np.where(within, gain, 0.0).mean())
    return out


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1 in the denominator) of one metric over seeds.

    What a table's "mean ± sd over 3 seeds" means; one value has sd 0 (and is labelled as one seed).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0:
        raise SemidError("mean_sd needs at least one value")
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def recall_ndcg(
    recommended: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor, ks: Sequence[int] = KS
) -> dict[str, float]:
    """Recall@k and NDCG@k of ``(n, k_max)`` recommendation lists against one target per row."""
    rec_k = recommended.shape[1] if recommended.ndim == 2 else 0
    if ks and max(ks) > rec_k:
        raise SemidError(f"ks={list(ks)} go beyond the {rec_k} recommendations per row")
    return metrics_from_ranks(rank_of_target(recommended, targets), ks)


def item_popularity(history: Sequences, n_items: int) -> np.ndarray:
    """(n_items,) number of occurrences of each item in ``history``."""
    return np.bincount(history.items, minlength=n_items)


def most_popular(history: Sequences, n_items: int, k: int) -> np.ndarray:
    """(k,) the ``k`` items that occur most in ``history`` (ties: lower index first)."""
    if k > n_items:
        raise SemidError(f"k={k} is larger than the catalogue ({n_items:,} items)")
    counts = item_popularity(history, n_items)
    return np.lexsort((np.arange(n_items), -counts))[:k]


def evaluate_most_popular(
    history: Sequences, targets: np.ndarray, n_items: int, ks: Sequence[int] = KS
) -> dict[str, float]:
    """The same list for everyone, the most frequent items of ``history``: the floor a model must beat."""
    top = most_popular(history, n_items, max(ks))
    return recall_ndcg(np.broadcast_to(top, (len(targets), len(top))), targets, ks)


@dataclass
class EvalResult:
    """Metrics of one evaluation, with its size and speed."""

    metrics: dict[str, float]  # recall@k, ndcg@k
    n_users: int
    seconds: float
    invalid_rate: float = 0.0  # share of returned IDs that are no item (unconstrained decoding)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def users_per_s(self) -> float:
        return self.n_users / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.metrics,
            "n_users": self.n_users,
            "seconds": round(self.seconds, 3),
            "users_per_s": round(self.users_per_s, 1),
            "invalid_rate": self.invalid_rate,
            **self.extra,
        }


@torch.no_grad()
def evaluate(
    model: Recommender,
    examples: Examples,
    *,
    ks: Sequence[int] = KS,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = False,
    desc: str = "evaluate",
    group: Dist | None = None,
    **recommend_options: Any,
) -> EvalResult:
    """Recall@k / NDCG@k of ``model`` on ``examples`` (one per user: history -> held-out target).

    ``recommend_options`` go to ``model.recommend`` (e.g. TIGER's ``beam_size``, ``constrained``).
    ``group`` (a data-parallel job, :mod:`semid.rec.distributed`): every rank calls this with the same
    examples, decodes every ``world_size``-th batch of the same batch plan, and the ranks exchange the
    targets' ranks, so every rank returns exactly the single-process figures in about 1/N of the time.
    """
    if len(examples) == 0:
        raise SemidError("no users to evaluate")
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()  # type: ignore[attr-defined]
    k = max(ks)
    ranks = np.empty(len(examples), dtype=np.int64)
    n_invalid = 0
    t = time.perf_counter()
    batches = length_batches(examples.lengths, batch_size)
    group = group or SINGLE
    mine = batches[group.rank :: group.world_size]  # the same batches as one process, dealt round-robin
    for idx in tqdm(mine, desc=desc, disable=not progress, leave=False, unit="batch"):
        batch = collate(examples, idx, device)
        items, _ = model.recommend(batch, k, **recommend_options)
        n_invalid += int((items < 0).sum())
        ranks[idx] = rank_of_target(items, examples.target[idx])
    if group.enabled:
        done = np.concatenate(mine) if mine else np.zeros(0, dtype=np.int64)
        gathered = all_gather((done, ranks[done], n_invalid), group)
        for their_idx, their_ranks, _ in gathered:
            ranks[their_idx] = their_ranks
        n_invalid = sum(their_invalid for _, _, their_invalid in gathered)
    seconds = time.perf_counter() - t
    if was_training and hasattr(model, "train"):
        model.train()  # type: ignore[attr-defined]
    return EvalResult(
        metrics=metrics_from_ranks(ranks, ks),
        n_users=len(examples),
        seconds=seconds,
        invalid_rate=n_invalid / (len(examples) * k),
    )
