"""k-core filtering and the leave-one-out split."""

from __future__ import annotations

import numpy as np
import pytest

from semid.data import Interactions, Sequences, k_core, leave_one_out, make_demo_dataset
from semid.errors import SemidError


def test_k_core_filters_until_it_settles() -> None:
    # Dropping item c (1 interaction) leaves u3 with a single interaction, so u3 goes in a second round.
    inter = Interactions(
        ["u1", "u1", "u2", "u2", "u3", "u3", "u4"],
        ["a", "b", "a", "b", "a", "c", "d"],
        timestamps=[1, 2, 3, 4, 5, 6, 7],
    )
    core = k_core(inter, k=2)
    assert core.users.tolist() == ["u1", "u2"]
    assert core.items.tolist() == ["a", "b"]
    assert core.timestamps.tolist() == [1, 2, 3, 4]


def test_k_core_thresholds_apart() -> None:
    inter = Interactions(["u1", "u1", "u1", "u2"], ["a", "b", "c", "a"])
    assert k_core(inter, user_k=3, item_k=1).user_ids.tolist() == ["u1", "u1", "u1"]
    assert k_core(inter, user_k=1, item_k=2).item_ids.tolist() == ["a", "a"]


def test_k_core_result_satisfies_the_definition_on_the_demo() -> None:
    inter = make_demo_dataset(n_items=400, n_users=300, seed=5).interactions
    core = k_core(inter, k=5)
    assert 0 < core.n_interactions < inter.n_interactions
    assert core.sequence_lengths().min() >= 5
    assert np.bincount(core.item_codes).min() >= 5


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"k": 0}, r"^k=0 should be an integer >= 1$"), ({"k": 50}, r"leaves no interactions of 4; lower k$")],
    ids=["k-zero", "k-too-large"],
)
def test_k_core_errors(kwargs: dict, message: str) -> None:
    inter = Interactions(["u1", "u1", "u1", "u2"], ["a", "b", "c", "a"])
    with pytest.raises(SemidError, match=message):
        k_core(inter, **kwargs)


def test_leave_one_out_by_hand() -> None:
    split = leave_one_out(Sequences(np.array([0, 4, 7]), np.array([1, 2, 3, 4, 5, 6, 7])))
    assert split.train.offsets.tolist() == [0, 2, 3]
    assert split.train.items.tolist() == [1, 2, 5]
    assert split.valid_history is split.train
    assert split.valid_target.tolist() == [3, 6]
    assert split.test_history.offsets.tolist() == [0, 3, 5]
    assert split.test_history.items.tolist() == [1, 2, 3, 5, 6]
    assert split.test_target.tolist() == [4, 7]
    assert split.n_users == 2


def test_leave_one_out_rebuilds_every_sequence_on_the_demo() -> None:
    ds = make_demo_dataset(n_items=200, n_users=100, seed=2)
    full = ds.sequences()
    split = leave_one_out(ds)
    for u in range(0, 100, 7):
        rebuilt = np.concatenate([split.test_history.row(u), [split.test_target[u]]])
        assert rebuilt.tolist() == full.row(u).tolist()
        assert split.train.row(u).tolist() + [split.valid_target[u]] == split.test_history.row(u).tolist()


def test_leave_one_out_needs_three_items_per_user() -> None:
    inter = Interactions(["u1", "u1", "u1", "u2", "u2"], ["a", "b", "c", "a", "b"])
    with pytest.raises(
        SemidError,
        match=r"^user 'u2' has 2 interactions; leave-one-out needs at least 3 \(1 users have fewer; filter with k_core\(interactions, k=3\) first\)$",
    ):
        leave_one_out(inter)
    with pytest.raises(SemidError, match=r"^user row 1 has 2 interactions"):
        leave_one_out(inter.sequences())


def test_leave_one_out_rejects_inconsistent_offsets() -> None:
    with pytest.raises(SemidError, match=r"^offsets should start at 0 and end at len\(items\)=3"):
        leave_one_out((np.array([0, 5]), np.array([1, 2, 3])))


@pytest.mark.parametrize(
    "data, message",
    [
        (5, r"; got int$"),
        (None, r"; got NoneType$"),
        ("abc", r"; got str$"),
        (
            (np.array([0, 3]), np.array([1.5, 2.0, 3.0])),
            r"; its items should be a 1-D array of integers, got float64",
        ),
        (
            ([[0, 3]], [1, 2, 3]),
            r"; its offsets should be a 1-D array of integers, got int64 of shape \(1, 2\)$",
        ),
    ],
)
def test_leave_one_out_says_what_it_takes(data, message: str) -> None:
    with pytest.raises(
        SemidError,
        match=r"^leave_one_out takes a Dataset, Interactions, Sequences or a CSR pair \(offsets, items\)"
        + message,
    ):
        leave_one_out(data)
