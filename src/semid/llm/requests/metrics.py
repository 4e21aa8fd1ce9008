"""Metrics of ranked item lists against each request's relevant *set* (hit, precision, NDCG @k), for one
list or a ``(Q, k)`` array of lists: per request, per family and overall (:func:`score_requests`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from semid._utils import check_positive_int
from semid.data.model import Catalogue
from semid.errors import SemidError
from semid.llm.requests.model import CatalogueFields, Request, catalogue_fields

# --------------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------------


def _gain_matrix(ranked: np.ndarray, relevant: Sequence[np.ndarray]) -> np.ndarray:
    """(Q, K) bool: position j of list q holds a relevant item seen for the first time in that list.

    A repeated item counts once (its later copies are not relevant), ``-1`` (no answer) never counts."""
    G = np.zeros(ranked.shape, dtype=bool)
    for q in range(len(ranked)):
        row = ranked[q]
        hit = np.isin(row, np.asarray(relevant[q], dtype=np.int64)) & (row >= 0)
        if hit.any():
            _, first = np.unique(row, return_index=True)
            once = np.zeros(len(row), dtype=bool)
            once[first] = True
            G[q] = hit & once
    return G


def _check_k(k: int) -> int:
    return check_positive_int("k", k)


def _metric_arrays(G: np.ndarray, n_rel: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """hit, precision and nDCG at ``k`` for each row of the gain matrix (positions past K count as misses)."""
    g = G[:, :k].astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = g @ discounts[: g.shape[1]]
    ideal_n = np.minimum(k, n_rel)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[ideal_n]
    with np.errstate(invalid="ignore", divide="ignore"):
        ndcg = np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1.0), 0.0)
    return {
        f"hit@{k}": (g.sum(axis=1) > 0).astype(np.float64),
        f"precision@{k}": g.sum(axis=1) / k,
        f"ndcg@{k}": ndcg,
    }


def _one(
    ranked: Sequence[int] | np.ndarray, relevant: Sequence[int] | np.ndarray, k: int
) -> dict[str, float]:
    k = _check_k(k)
    row = np.asarray(ranked, dtype=np.int64).reshape(1, -1)
    rel = np.unique(np.asarray(relevant, dtype=np.int64))
    G = _gain_matrix(row, [rel])
    return {name: float(v[0]) for name, v in _metric_arrays(G, np.array([len(rel)]), k).items()}


def hit_at_k(ranked: Sequence[int] | np.ndarray, relevant: Sequence[int] | np.ndarray, k: int) -> float:
    """1.0 if any of the first ``k`` items of ``ranked`` is in ``relevant``, else 0.0."""
    return _one(ranked, relevant, k)[f"hit@{_check_k(k)}"]


def precision_at_k(ranked: Sequence[int] | np.ndarray, relevant: Sequence[int] | np.ndarray, k: int) -> float:
    """Distinct relevant items among the first ``k`` of ``ranked``, divided by ``k`` (a list shorter than
    ``k``, or ``-1`` for no answer, counts the missing places as misses)."""
    return _one(ranked, relevant, k)[f"precision@{_check_k(k)}"]


def ndcg_at_k(ranked: Sequence[int] | np.ndarray, relevant: Sequence[int] | np.ndarray, k: int) -> float:
    """nDCG with binary gains: ``sum_{i<k, ranked[i] relevant} 1/log2(i+2)`` over the ideal DCG, which puts
    ``min(k, |relevant|)`` relevant items first; 0.0 when ``relevant`` is empty. A repeated item gains once."""
    return _one(ranked, relevant, k)[f"ndcg@{_check_k(k)}"]


@dataclass
class RequestScores:
    """Metrics of one method on a request set.

    ``per_request``: metric name (``"hit@10"``, ``"precision@10"``, ``"ndcg@10"`` ...) -> (Q,) array;
    ``per_family``: family -> {metric: mean over its requests, "requests": count}, with ``"all"`` (the
    mean over every request) first; ``n_relevant``: (Q,) size of each relevant set.
    """

    families: list[str]
    n_relevant: np.ndarray
    per_request: dict[str, np.ndarray]
    per_family: dict[str, dict[str, float]] = field(default_factory=dict)

    def rows(self, **extra: Any) -> list[dict[str, Any]]:
        """One dict per family (``"all"`` first): family, requests, the metrics, and ``extra`` columns."""
        return [{"family": fam, **extra, **vals} for fam, vals in self.per_family.items()]


def score_requests(
    ranked: np.ndarray,
    requests: Sequence[Request],
    catalogue: Catalogue | pa.Table | CatalogueFields | None = None,
    *,
    relevant: Sequence[np.ndarray] | None = None,
    ks: Sequence[int] = (1, 10),
) -> RequestScores:
    """Score ranked lists of item rows (``ranked[q]``: catalogue rows for ``requests[q]``, best first,
    ``-1`` for no answer) against each request's relevant set.

    The relevant sets come from ``catalogue`` (computed here) or ``relevant`` (precomputed, one array of
    rows per request). A request with no relevant item, or one whose ``n_relevant`` disagrees with the
    catalogue, means the benchmark does not belong to this catalogue: a :class:`SemidError`. Cost:
    O(Q * n_items) to compute the relevant sets, O(Q * K * log) to score.
    """
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or ranked.dtype.kind not in "iu":
        raise SemidError(f"ranked should be a (Q, k) integer array of item rows, got shape {ranked.shape}")
    if len(ranked) != len(requests):
        raise SemidError(f"ranked has {len(ranked)} rows for {len(requests)} requests")
    ks = [_check_k(k) for k in ks]
    if relevant is None:
        if catalogue is None:
            raise SemidError("score_requests needs the catalogue or the precomputed relevant sets")
        fields = catalogue_fields(catalogue)
        relevant = [r.relevant(fields) for r in requests]
    elif len(relevant) != len(requests):
        raise SemidError(f"{len(relevant)} relevant sets for {len(requests)} requests")
    relevant = [np.unique(np.asarray(r, dtype=np.int64)) for r in relevant]
    n_rel = np.array([len(r) for r in relevant], dtype=np.int64)
    for req, n in zip(requests, n_rel.tolist(), strict=True):
        if n == 0:
            raise SemidError(f"request {req.text!r} has no relevant item in this catalogue")
        if req.n_relevant is not None and req.n_relevant != n:
            raise SemidError(
                f"request {req.text!r} has {n} relevant items here but {req.n_relevant} where it was made: "
                f"the benchmark belongs to another catalogue"
            )
    G = _gain_matrix(ranked.astype(np.int64), relevant)
    per_request: dict[str, np.ndarray] = {}
    for k in ks:
        per_request.update(_metric_arrays(G, n_rel, k))
    families = [r.family for r in requests]
    fam_arr = np.array(families, dtype=object)
    per_family: dict[str, dict[str, float]] = {}
    for fam in ["all", *dict.fromkeys(families)]:
        sel = np.ones(len(requests), bool) if fam == "all" else fam_arr == fam
        per_family[fam] = {"requests": int(sel.sum())}
        per_family[fam].update(
            {m: float(v[sel].mean()) if sel.any() else 0.0 for m, v in per_request.items()}
        )
    return RequestScores(families, n_rel, per_request, per_family)
