"""A generative recommender's candidates reranked with SASRec's scores: generative retrieval, SASRec ranking.

The generative model (TIGER's beam search, RPG's exact scores) proposes its ``n_candidates`` best items with
their log-probabilities; SASRec reads the same history and scores the whole catalogue; each candidate gets

    score(item) = log p_gen(item) + weight * log softmax_SASRec(item)

and the best ``k`` are returned: a product of the two models' distributions (SASRec's raised to ``weight``)
restricted to the generative candidates. Every returned item is one the generative model proposed, an
invalid ID (item ``-1``, from unconstrained decoding) always comes last, and ``weight`` 0 keeps the
generative order. :func:`choose_weight` picks the weight on validation users from one decoding pass.

Cost per batch: one generative decode (TIGER: a beam of at least ``n_candidates``, so with the default 50
it is wider, and slower, than TIGER's own 20) plus one SASRec forward and a ``(B, n_items)`` log-softmax;
the rerank itself is a sort of ``(B, n_candidates)``. Effect on Beauty (``bench/results/beauty_rec_hybrid.txt``,
one seed each: a 40-minute TIGER, the tuned SASRec): R@10 0.0746 vs 0.0602 for TIGER's candidates in order,
but below SASRec alone (0.0824): only TIGER's candidates can be reordered.

Both models read the same batch. A batch holds the longer of the two models' history windows
(:attr:`HybridRecommender.max_history`), and each model cuts the newest ``max_history`` items of it itself,
so each reads exactly the history it would read alone. With ``exclude_history`` both leave out every item
of the batch's (longer) window, so the generative model filters more than it would alone (the SASRec
protocol's filter, applied to both).

Example (``tiger`` and ``sasrec`` trained on the same items; :func:`semid.rec.runs.evaluate_hybrid_run` does
this for two run directories)::

    hybrid = HybridRecommender(tiger, sasrec, weight=0.5)
    items, scores = hybrid.recommend(batch, k=10)                    # (B, 10) each, best first
    valid = collect_candidates(hybrid, split_examples(hybrid, data, "valid"))
    weight, by_weight = choose_weight(valid)                          # the best validation NDCG@10
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from semid._utils import check_positive_int
from semid.errors import SemidError
from semid.rec.data import Batch, Examples, collate, length_batches
from semid.rec.evaluate import KS, EvalResult, metrics_from_ranks, rank_of_target

N_CANDIDATES = 50  # generative candidates reranked per user
GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # weights :func:`choose_weight` tries
CHOICE_METRIC = "ndcg@10"


def check_weight(weight: float) -> float:
    """``weight`` as a float; a negative, infinite or non-numeric one is an error quoting it."""
    if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not 0 <= weight < math.inf:
        raise SemidError(f"weight={weight!r} should be a finite number >= 0")
    return float(weight)


def rerank(
    items: torch.Tensor, generative: torch.Tensor, sasrec: torch.Tensor, weight: float, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The best ``k`` of each row's candidates by ``generative + weight * sasrec``: (B, k) items and scores.

    ``items`` (B, c) are the candidates in generative order (``-1``: no item), ``generative`` and ``sasrec``
    (B, c) their two log-probabilities. Invalid candidates get score ``-inf`` and keep their places at the
    end; ties keep the generative order (a stable sort), so ``weight`` 0 returns the valid candidates in
    generative order.
    """
    if k > items.shape[1]:
        raise SemidError(f"k={k} is larger than the {items.shape[1]} candidates per user")
    valid = items >= 0
    # where(), not 0 * -inf: an invalid candidate's SASRec term is -inf, and it must not turn into NaN
    score = torch.where(valid, generative.float() + weight * sasrec.float(), float("-inf"))  # (B, c)
    order = score.sort(dim=1, descending=True, stable=True).indices[:, :k]  # (B, k)
    return items.gather(1, order), score.gather(1, order)


class HybridRecommender(nn.Module):
    """A generative recommender (TIGER, RPG) whose top ``n_candidates`` are reranked by SASRec.

    ``recommend(batch, k)`` satisfies :class:`semid.rec.evaluate.Recommender`, so :func:`evaluate` scores
    it like any model. ``generative`` needs ``recommend(batch, k, **options) -> (items, log-probabilities)``
    best first; ``sasrec`` needs ``scores(history) -> (B, n_items)``; both need ``config.n_items`` and
    ``max_history``, and must be built on the same items in the same order.
    """

    model_type: ClassVar[str] = "hybrid"

    def __init__(
        self,
        generative: nn.Module,
        sasrec: nn.Module,
        *,
        weight: float = 1.0,
        n_candidates: int = N_CANDIDATES,
    ) -> None:
        super().__init__()
        n_gen, n_sas = generative.config.n_items, sasrec.config.n_items
        if n_gen != n_sas:
            raise SemidError(
                f"the generative model has {n_gen:,} items and SASRec {n_sas:,}: "
                "both must be built on the same item set"
            )
        check_positive_int("n_candidates", n_candidates, numpy_ok=False)
        self.generative = generative
        self.sasrec = sasrec
        self.weight = check_weight(weight)
        self.n_candidates = n_candidates

    @property
    def n_items(self) -> int:
        return int(self.generative.config.n_items)

    @property
    def max_history(self) -> int:
        """History items a batch should hold: the longer of the two windows (each model cuts its own)."""
        return max(int(self.generative.max_history), int(self.sasrec.max_history))

    @property
    def width(self) -> int:
        """Candidates per user: ``n_candidates``, or the whole catalogue when it is smaller."""
        return min(self.n_candidates, self.n_items)

    @torch.no_grad()
    def candidates(
        self, batch: Batch, *, exclude_history: bool = False, **generative_options: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(items, generative log-probabilities, SASRec log-probabilities)``, each (B, width), in
        generative order (item ``-1``: no item, SASRec term ``-inf``).

        ``generative_options`` go to the generative model (TIGER: ``beam_size``, ``constrained``; its beam is
        at least ``width``). ``exclude_history``: no candidate is an item of the history the batch holds.
        """
        items, gen = self.generative.recommend(
            batch, self.width, exclude_history=exclude_history, **generative_options
        )  # (B, c) each
        logp = self.sasrec.scores(batch.history).float().log_softmax(dim=-1)  # (B, n_items)
        at = items.to(logp.device)
        sas = logp.gather(1, at.clamp(min=0)).masked_fill(at < 0, -math.inf)  # (B, c)
        return items, gen.float(), sas.to(gen.device)

    @torch.no_grad()
    def recommend(
        self,
        batch: Batch,
        k: int,
        *,
        weight: float | None = None,
        exclude_history: bool = False,
        **generative_options: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The best ``k`` candidates by ``gen + weight * sasrec``: ``(items (B, k), scores (B, k))``.

        ``weight`` overrides :attr:`weight` for this call.
        """
        weight = self.weight if weight is None else check_weight(weight)
        if k > self.width:
            raise SemidError(f"k={k} is larger than the {self.width} candidates per user (n_candidates)")
        items, gen, sas = self.candidates(batch, exclude_history=exclude_history, **generative_options)
        return rerank(items, gen, sas, weight, k)

    def extra_repr(self) -> str:
        return f"weight={self.weight:g}, n_candidates={self.n_candidates}"


# --------------------------------------------------------------------------------------------------------
# Candidates of many users, decoded once; the weight chosen on them
# --------------------------------------------------------------------------------------------------------


@dataclass
class Candidates:
    """Every example's candidates with both scores, from one decoding pass: a weight is then a sort away.

    ``result(w)`` gives exactly ``evaluate(HybridRecommender(..., weight=w), examples)`` (same batches, same
    candidates), without decoding again.
    """

    items: np.ndarray  # (n, c) int64 candidates in generative order (-1: no item)
    generative: np.ndarray  # (n, c) float32 generative log-probabilities
    sasrec: np.ndarray  # (n, c) float32 SASRec log-probabilities (-inf at -1)
    target: np.ndarray  # (n,) int64 held-out item of each example
    seconds: float  # wall time of the decoding pass

    def __len__(self) -> int:
        return len(self.target)

    def take(self, idx: np.ndarray) -> Candidates:
        """The examples at ``idx`` (e.g. the users whose target is a cold item)."""
        return Candidates(
            self.items[idx], self.generative[idx], self.sasrec[idx], self.target[idx], self.seconds
        )

    def result(self, weight: float | None, ks: Sequence[int] = KS) -> EvalResult:
        """Recall/NDCG@ks of the candidates reranked with ``weight``; ``None``: the generative list itself
        (the first candidates as decoded, invalid IDs where the decoder put them). With fewer candidates
        than ``max(ks)`` per user, the lists are that short (a target beyond them is not found)."""
        k = min(max(ks), self.items.shape[1])
        if weight is None:
            top = self.items[:, :k]
        else:
            top = rerank(
                torch.from_numpy(self.items),
                torch.from_numpy(self.generative),
                torch.from_numpy(self.sasrec),
                check_weight(weight),
                k,
            )[0].numpy()
        return EvalResult(
            metrics=metrics_from_ranks(rank_of_target(top, self.target), ks),
            n_users=len(self),
            seconds=self.seconds,
            invalid_rate=float((top < 0).mean()) if top.size else 0.0,
        )


@torch.no_grad()
def collect_candidates(
    hybrid: HybridRecommender,
    examples: Examples,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool = False,
    desc: str = "candidates",
    **options: Any,
) -> Candidates:
    """The candidates of every example (one per user), in the batches :func:`evaluate` would use.

    ``options`` go to :meth:`HybridRecommender.candidates` (``exclude_history``, TIGER's ``beam_size`` and
    ``constrained``). Cost: one generative decode and one SASRec forward per batch, as one evaluation.
    """
    if len(examples) == 0:
        raise SemidError("no users to evaluate")
    was_training = hybrid.training
    hybrid.eval()
    c = hybrid.width
    items = np.empty((len(examples), c), dtype=np.int64)
    gen = np.empty((len(examples), c), dtype=np.float32)
    sas = np.empty((len(examples), c), dtype=np.float32)
    t = time.perf_counter()
    for idx in tqdm(
        length_batches(examples.lengths, batch_size), desc=desc, disable=not progress, leave=False
    ):
        batch_items, batch_gen, batch_sas = hybrid.candidates(collate(examples, idx, device), **options)
        items[idx], gen[idx], sas[idx] = batch_items.cpu(), batch_gen.cpu(), batch_sas.cpu()
    seconds = time.perf_counter() - t
    hybrid.train(was_training)
    return Candidates(items, gen, sas, np.asarray(examples.target, dtype=np.int64), seconds)


def choose_weight(
    candidates: Candidates, grid: Sequence[float] = GRID, *, metric: str = CHOICE_METRIC
) -> tuple[float, dict[float, float]]:
    """The weight of ``grid`` with the best ``metric`` (NDCG@10) on ``candidates`` (validation users), and
    the metric at every weight. Ties go to the smaller weight (the closer to the generative model)."""
    weights = sorted({check_weight(w) for w in grid})
    if not weights:
        raise SemidError("the weight grid is empty")
    name, _, at = metric.partition("@")
    if name not in ("recall", "ndcg") or not at.isdigit() or int(at) < 1:
        raise SemidError(f"metric={metric!r} should be recall@K or ndcg@K")
    scores = {w: candidates.result(w, (int(at),)).metrics[metric] for w in weights}
    best = max(weights, key=lambda w: (scores[w], -w))
    return best, scores
