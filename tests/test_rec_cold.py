"""Cold start: chosen items vanish from training but stay as test targets and in the ID trie."""

import numpy as np
import pytest

from semid.data import Sequences, leave_one_out
from semid.errors import SemidError
from semid.rec.cold import cold_start_split, cold_test_users, content_scores


def sequences(rows):
    lengths = [len(r) for r in rows]
    return Sequences(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), np.concatenate(rows))


def as_rows(seqs):
    return [seqs.items[a:b].tolist() for a, b in zip(seqs.offsets[:-1], seqs.offsets[1:], strict=True)]


@pytest.fixture
def many():
    rng = np.random.default_rng(0)
    return sequences([rng.integers(0, 200, size=rng.integers(3, 12)) for _ in range(500)])


def test_cold_items_leave_every_position_but_the_test_target(many):
    split = cold_start_split(many, n_items=200, share=0.05, seed=3)
    assert len(split.cold_items) == round(0.05 * len(np.unique(many.items)))
    rows = as_rows(split.sequences)
    for row in rows:
        assert not np.isin(row[:-1], split.cold_items).any()  # training, history and validation: no cold item
    # every kept user's test target is the original last item, cold or not
    original = as_rows(many)
    assert [r[-1] for r in rows] == [original[u][-1] for u in split.kept_users]
    # and the rest of each sequence is the original minus the cold items, order kept
    for row, u in zip(rows, split.kept_users, strict=True):
        assert row[:-1] == [i for i in original[u][:-1] if i not in set(split.cold_items.tolist())]
    split_loo = leave_one_out(split.sequences)  # every kept user still splits leave-one-out
    assert len(split_loo.test_target) == len(split.kept_users)


def test_a_user_left_with_fewer_than_3_items_is_dropped():
    seqs = sequences([np.array([5, 1, 2]), np.array([0, 1, 2, 3]), np.array([4, 4, 1])])
    split = cold_start_split(seqs, n_items=6, share=0.2, seed=0)  # 6 interacted items -> 1 cold
    cold = split.cold_items.tolist()
    assert len(cold) == 1
    expected = [
        u for u, row in enumerate(as_rows(seqs)) if len([i for i in row[:-1] if i not in cold]) + 1 >= 3
    ]
    assert split.kept_users.tolist() == expected


def test_the_split_is_seeded(many):
    a = cold_start_split(many, n_items=200, seed=1)
    assert np.array_equal(a.cold_items, cold_start_split(many, n_items=200, seed=1).cold_items)
    assert not np.array_equal(a.cold_items, cold_start_split(many, n_items=200, seed=2).cold_items)


def test_cold_test_users_are_those_whose_target_is_cold(many):
    split = cold_start_split(many, n_items=200, share=0.1, seed=0)
    target = leave_one_out(split.sequences).test_target
    users = cold_test_users(target, split.cold_items)
    assert len(users) > 0
    assert np.isin(target[users], split.cold_items).all()
    assert not np.isin(np.delete(target, users), split.cold_items).any()


@pytest.mark.parametrize("share", [0, 1, -0.1, "5%"])
def test_a_share_outside_0_1_is_one_clear_error(many, share):
    with pytest.raises(SemidError, match=r"cold-start share=.* should be a number in \(0, 1\)"):
        cold_start_split(many, n_items=200, share=share)


def test_content_scores_are_cosines_to_the_mean_history_and_skip_its_items():
    V = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], dtype=np.float32)
    s = content_scores([np.array([0, 1])], V)  # mean of (1,0) and (0,1) points at (1,1)
    assert s[0, 0] == s[0, 1] == -np.inf
    assert s[0, 2] == pytest.approx(1.0)
    assert s[0, 3] == pytest.approx(-np.sqrt(0.5))
