"""Codes -> unique IDs: suffix, remap and none, with orders that do not depend on row order."""

import numpy as np
import pytest

from semid.errors import SemidError
from semid.ids import deduplicate

CODES = np.array([[1, 2], [1, 2], [0, 1], [1, 2]])
IDS = ["b", "a", "c", "0"]


def test_suffix_counts_duplicates_in_item_id_order():
    res = deduplicate(CODES, "suffix", item_ids=IDS)
    # group 1-2 holds b, a, 0 -> string order 0, a, b
    np.testing.assert_array_equal(res.codes, [[1, 2, 2], [1, 2, 1], [0, 1, 0], [1, 2, 0]])
    assert res.n_collided == 3


def test_suffix_result_does_not_depend_on_row_order():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 3, size=(300, 2))
    ids = np.array([f"item{i}" for i in range(300)])
    perm = rng.permutation(300)
    a = deduplicate(codes, "suffix", item_ids=ids).codes
    b = deduplicate(codes[perm], "suffix", item_ids=ids[perm]).codes
    np.testing.assert_array_equal(a[perm], b)
    assert len({tuple(r) for r in a.tolist()}) == 300


def test_remap_moves_to_nearest_unused_code_and_keeps_length():
    ranking = {0: [3, 2, 1, 0], 1: [2, 0, 3, 1]}  # by row: the nearest last-level codes

    def rank(rows):
        return np.array([ranking[r] for r in rows])

    res = deduplicate(
        np.array([[1, 2], [1, 2], [1, 3]]), "remap", item_ids=["x", "y", "w"], rank_last_level=rank
    )
    # x keeps 1-2 (first in id order among x, y); y wants 2 (taken), then 0 -> 1-0. w (1-3) is alone.
    np.testing.assert_array_equal(res.codes, [[1, 2], [1, 0], [1, 3]])
    assert (res.n_moved, res.codes.shape[1]) == (1, 2)


def test_remap_full_prefix_is_an_error():
    def rank(rows):
        return np.tile([0, 1], (len(rows), 1))

    with pytest.raises(SemidError, match=r"prefix 5 holds more items than the last level has codes \(2\)"):
        deduplicate(np.array([[5, 0], [5, 0], [5, 1]]), "remap", rank_last_level=rank)


def test_none_keeps_codes_and_unknown_strategy_is_rejected():
    assert deduplicate(CODES, "none").codes.tolist() == CODES.tolist()
    with pytest.raises(SemidError, match=r"dedup='hash' is not one of 'suffix', 'remap', 'none'"):
        deduplicate(CODES, "hash")


@pytest.mark.parametrize(
    ("ranking", "message"),
    [
        (
            lambda rows: np.full((len(rows), 2), 0.5),
            "rank_last_level returned dtype float64, expected integer codes",
        ),
        (
            lambda rows: np.zeros(len(rows), dtype=int),
            r"rank_last_level returned shape \(1,\), expected \(1, K_last\)",
        ),
        (lambda rows: np.full((len(rows), 2), -1), "rank_last_level row 0: code -1 is outside 0..2147483647"),
    ],
    ids=["floats", "one-dimensional", "negative"],
)
def test_remap_refuses_a_ranking_it_could_only_misread(ranking, message) -> None:
    # A float ranking cut to integers handed two items one code: the IDs were no longer unique.
    with pytest.raises(SemidError, match=f"^{message}$"):
        deduplicate(np.array([[1, 0], [1, 0]]), "remap", item_ids=["a", "b"], rank_last_level=ranking)
