"""Quality metrics, checked against values computed by hand."""

import numpy as np
import pytest

from semid.quantize.metrics import (
    codebook_usage,
    collision_stats,
    quality_report,
    relative_reconstruction_error,
    residual_norms,
    row_keys,
)

CODES = np.array([[0, 1], [0, 1], [1, 0], [2, 1]])  # 4 items, one collision pair


def test_usage_and_perplexity_by_hand():
    lv0, lv1 = codebook_usage(CODES, [4, 2])
    assert (lv0["used"], lv0["usage"], lv0["max_bucket"]) == (3, 0.75, 2)
    # level 0 distribution (1/2, 1/4, 1/4): entropy 1.5 ln 2 -> perplexity 2^1.5
    assert lv0["perplexity"] == pytest.approx(2**1.5)
    assert (lv1["used"], lv1["usage"]) == (2, 1.0)
    assert lv1["perplexity"] == pytest.approx(np.exp(-(0.25 * np.log(0.25) + 0.75 * np.log(0.75))))


def test_collisions_by_hand():
    s = collision_stats(CODES)
    assert s == {"n_items": 4, "n_unique": 3, "unique_share": 0.75, "max_collision": 2, "collided_share": 0.5}


def test_row_keys_equal_exactly_when_rows_equal():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 3, size=(200, 4))
    keys = row_keys(codes)
    same = (codes[:, None, :] == codes[None, :, :]).all(-1)
    np.testing.assert_array_equal(keys[:, None] == keys[None, :], same)
    wide = np.array([[2**40, 2**40, 1], [2**40, 2**40, 1], [0, 0, 1]])  # too wide for a mixed radix
    k = row_keys(wide)
    assert k[0] == k[1] != k[2]


def test_relative_error_is_zero_for_perfect_and_one_for_mean():
    X = np.array([[0.0, 0.0], [2.0, 2.0]])
    assert relative_reconstruction_error(X, X) == 0.0
    assert relative_reconstruction_error(X, np.ones_like(X)) == pytest.approx(1.0)


def test_residual_norms_by_hand():
    X = np.array([[3.0, 4.0]])
    cbs = [np.array([[3.0, 0.0]]), np.array([[0.0, 4.0]])]
    assert residual_norms(X, np.array([[0, 0]]), cbs) == pytest.approx([5.0, 4.0, 0.0])


def test_quality_report_bundles_everything():
    X = np.array([[3.0, 4.0], [3.0, 4.0]])
    cbs = [np.array([[3.0, 4.0]])]
    rep = quality_report(np.array([[0], [0]]), codebook_sizes=[1], X=X, X_hat=X, codebooks=cbs)
    assert rep.unique_share == 0.5 and rep.max_collision == 2
    assert rep.reconstruction_error == 0.0 and rep.residual_norms == [5.0, 0.0]
    assert rep.to_dict()["levels"][0]["usage"] == 1.0
