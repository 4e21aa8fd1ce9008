"""Leave-one-out metrics: Recall@k and NDCG@k against hand-computed values, the most-popular baseline."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from semid.data import Sequences
from semid.errors import SemidError
from semid.rec.data import Batch, Examples
from semid.rec.evaluate import (
    evaluate,
    evaluate_most_popular,
    metrics_from_ranks,
    most_popular,
    rank_of_target,
    recall_ndcg,
)

# Four users, three recommendations each. Targets sit at ranks 1, 2, nowhere and 0.
RECOMMENDED = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [1, 3, 5]])
TARGETS = np.array([2, 6, 0, 1])


def test_rank_of_target_by_hand() -> None:
    assert rank_of_target(RECOMMENDED, TARGETS).tolist() == [1, 2, -1, 0]


def test_recall_and_ndcg_by_hand_on_a_4x3_matrix() -> None:
    m = recall_ndcg(RECOMMENDED, TARGETS, ks=(1, 2, 3))
    # Recall@k: share of users whose target is in their top k.
    assert m["recall@1"] == 0.25  # user 4
    assert m["recall@2"] == 0.5  # users 1 and 4
    assert m["recall@3"] == 0.75  # users 1, 2 and 4
    # NDCG@k: 1 / log2(rank + 2) for a hit at 0-based rank, averaged over all four users.
    assert m["ndcg@1"] == 0.25
    assert m["ndcg@2"] == pytest.approx((1 / math.log2(3) + 1) / 4)  # 0.40773
    assert m["ndcg@3"] == pytest.approx((1 / math.log2(3) + 1 / 2 + 1) / 4)  # 0.53273
    assert m["ndcg@3"] == pytest.approx(0.532732, abs=1e-6)


def test_metrics_accept_tensors_and_never_count_an_invalid_id_as_a_hit() -> None:
    recommended = torch.tensor([[-1, 0, 2], [-1, -1, -1]])
    assert recall_ndcg(recommended, torch.tensor([0, 5]), ks=(1, 3)) == {
        "recall@1": 0.0,
        "ndcg@1": 0.0,
        "recall@3": 0.5,
        "ndcg@3": pytest.approx(0.5 / math.log2(3)),
    }


def test_most_popular_counts_history_and_breaks_ties_by_index() -> None:
    history = Sequences(np.array([0, 3, 6]), np.array([4, 2, 4, 2, 4, 1]))  # item 4 x3, item 2 x2, item 1 x1
    assert most_popular(history, n_items=6, k=4).tolist() == [4, 2, 1, 0]
    m = evaluate_most_popular(history, np.array([2, 5]), n_items=6, ks=(1, 3))
    assert m == {"recall@1": 0.0, "ndcg@1": 0.0, "recall@3": 0.5, "ndcg@3": pytest.approx(0.5 / math.log2(3))}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda: recall_ndcg(RECOMMENDED, TARGETS, ks=(5,)),
            r"^ks=\[5\] go beyond the 3 recommendations per row$",
        ),
        (
            lambda: most_popular(Sequences(np.array([0, 1]), np.array([0])), 2, 3),
            r"^k=3 is larger than the catalogue \(2 items\)$",
        ),
        (lambda: metrics_from_ranks(np.zeros(0, dtype=int)), r"^no users to evaluate$"),
        (lambda: rank_of_target(RECOMMENDED, TARGETS[:2]), r"should be \(n, k\) and targets \(n,\)"),
    ],
    ids=["ks-beyond-list", "k-beyond-catalogue", "no-users", "misaligned-targets"],
)
def test_errors(call, message: str) -> None:
    with pytest.raises(SemidError, match=message):
        call()


class FixedLists:
    """A "model" recommending the same list to everyone, with an invalid ID (-1) in second place."""

    def recommend(self, batch: Batch, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        items = torch.tensor([3, -1, 1, 0, 2])[:k].expand(len(batch), k)
        return items, torch.zeros(len(batch), k)


def test_evaluate_runs_any_recommender_over_length_batches() -> None:
    # Three users with histories of different lengths; targets 3 (rank 0), 1 (rank 2), 4 (absent).
    items = np.array([0, 1, 2, 0, 1, 2])
    ex = Examples(
        items, np.array([0, 1, 3]), np.array([1, 3, 6]), np.array([3, 1, 4]), np.zeros(3, dtype=int)
    )
    res = evaluate(FixedLists(), ex, ks=(1, 5), batch_size=2)
    assert res.metrics == recall_ndcg(np.tile([3, -1, 1, 0, 2], (3, 1)), ex.target, ks=(1, 5))
    assert res.metrics["recall@5"] == pytest.approx(2 / 3)
    assert res.n_users == 3
    assert res.invalid_rate == pytest.approx(1 / 5)


def test_mean_sd_over_seeds_is_the_mean_and_the_sample_standard_deviation():
    from semid.rec.evaluate import mean_sd

    # by hand: mean (0.09 + 0.10 + 0.08) / 3 = 0.09; squared deviations 0, 1e-4, 1e-4 -> sd sqrt(2e-4 / 2) = 0.01
    mean, sd = mean_sd([0.09, 0.10, 0.08])
    assert mean == pytest.approx(0.09, abs=1e-12) and sd == pytest.approx(0.01, abs=1e-12)
    assert mean_sd([0.0777]) == (0.0777, 0.0)  # one seed: no spread to report
    with pytest.raises(SemidError, match="at least one value"):
        mean_sd([])
