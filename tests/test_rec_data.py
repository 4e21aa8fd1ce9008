"""What the sequence models read: next-item examples, length batches, RecData and its run-directory files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from semid.data import Catalogue, Dataset, Interactions, Sequences
from semid.errors import SemidError
from semid.ids.table import IdTable
from semid.rec.data import (
    PAD,
    RecData,
    collate,
    history_examples,
    length_batches,
    prefix_examples,
    window_examples,
)

# Two users: [10, 11, 12, 13] and [20, 21, 22].
SEQS = Sequences(np.array([0, 4, 7]), np.array([10, 11, 12, 13, 20, 21, 22]))
USERS = np.array([100, 200])


def histories(ex) -> list[list[int]]:
    return [ex.items[s:e].tolist() for s, e in zip(ex.start, ex.end, strict=True)]


def test_prefix_examples_make_every_prefix_a_target() -> None:
    ex = prefix_examples(SEQS, USERS, max_history=2)
    assert histories(ex) == [[10], [10, 11], [11, 12], [20], [20, 21]]
    assert ex.target.tolist() == [11, 12, 13, 21, 22]
    assert ex.user.tolist() == [100, 100, 100, 200, 200]


@pytest.mark.parametrize("max_len", [1, 2, 3, 6], ids=["len1", "len2", "len3", "len6"])
def test_windows_cover_every_target_once(max_len: int) -> None:
    seqs = Sequences(np.array([0, 7, 9, 10]), np.arange(10))  # rows of 7, 2 and 1 items
    ex = window_examples(seqs, np.arange(3), max_len=max_len)
    assert (ex.lengths >= 1).all() and (ex.lengths <= max_len).all()
    # The targets of a window are the items after each of its inputs.
    targets = sorted(t for s, e in zip(ex.start, ex.end, strict=True) for t in range(s + 1, e + 1))
    assert targets == [1, 2, 3, 4, 5, 6, 8]  # every item but each row's first, once
    assert (ex.target == ex.items[ex.end]).all()


def test_windows_by_hand() -> None:
    ex = window_examples(SEQS, USERS, max_len=2)
    assert histories(ex) == [[11, 12], [10], [20, 21]]  # the first user's row is cut from its end
    assert ex.target.tolist() == [13, 11, 22]


def test_history_examples_keep_the_last_items() -> None:
    ex = history_examples(SEQS, np.array([14, 23]), USERS, max_history=3)
    assert histories(ex) == [[11, 12, 13], [20, 21, 22]]
    assert ex.target.tolist() == [14, 23]


def test_collate_pads_on_the_left() -> None:
    ex = prefix_examples(SEQS, USERS, max_history=3)
    batch = collate(ex, np.array([0, 2, 4]))
    assert batch.history.tolist() == [[PAD, PAD, 10], [10, 11, 12], [PAD, 20, 21]]
    assert batch.target.tolist() == [11, 13, 22]
    assert batch.user.tolist() == [100, 100, 200]


def test_length_batches_use_every_example_once_with_almost_no_padding() -> None:
    lengths = np.random.default_rng(0).integers(1, 21, 1000)
    batches = length_batches(lengths, 64, np.random.default_rng(1))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    # About 50 examples per length and 64 per batch: a batch spans at most three adjacent lengths.
    assert max(lengths[b].max() - lengths[b].min() for b in batches) <= 2

    def padding(batches: list[np.ndarray]) -> int:
        return sum(len(b) * lengths[b].max() - lengths[b].sum() for b in batches)

    shuffled = np.array_split(np.random.default_rng(2).permutation(1000), len(batches))
    assert padding(batches) < padding(shuffled) / 10
    again = length_batches(lengths, 64, np.random.default_rng(1))
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))  # seeded
    assert [len(b) for b in length_batches(lengths, 64)][:2] == [64, 64]


@pytest.fixture
def dataset() -> Dataset:
    catalogue = Catalogue.from_pydict(
        {"item_id": ["a", "b", "c", "d"], "title": ["Apple", "Banana", "Cherry", "Date"]}
    )
    inter = Interactions(
        ["u1", "u1", "u1", "u2", "u2", "u3", "u3", "u3", "u3"],
        ["a", "b", "c", "a", "d", "d", "c", "b", "a"],
        timestamps=[1, 2, 3, 1, 2, 1, 2, 3, 4],
    )
    return Dataset(catalogue, inter, name="fruit")


# IDs in another row order than the catalogue: RecData aligns them by item id.
IDS = IdTable(
    item_ids=np.array(["d", "c", "b", "a"], dtype=object),
    semantic_ids=["1-1", "1-0", "0-1", "0-0"],
    codes=np.array([[1, 1], [1, 0], [0, 1], [0, 0]]),
    base_codes=np.array([[1, 1], [1, 0], [0, 1], [0, 0]]),
)


def test_rec_data_from_a_dataset(dataset: Dataset) -> None:
    data = RecData.from_dataset(dataset, IDS)
    assert data.item_ids.tolist() == ["a", "b", "c", "d"]
    assert data.titles.tolist() == ["Apple", "Banana", "Cherry", "Date"]
    assert data.codes.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert data.semantic_ids.tolist() == ["0-0", "0-1", "1-0", "1-1"]
    assert data.user_ids.tolist() == ["u1", "u3"]  # u2 has 2 interactions: too few to split
    assert data.n_dropped_users == 1
    assert data.split.test_target.tolist() == [2, 0]
    assert data.parse_history(["b", "d"]).tolist() == [1, 3]


def test_rec_data_round_trip(dataset: Dataset, tmp_path: Path) -> None:
    data = RecData.from_dataset(dataset, IDS)
    data.save(tmp_path)
    back = RecData.load(tmp_path)
    for name in ("item_ids", "titles", "codes", "semantic_ids", "user_ids"):
        assert np.array_equal(getattr(back, name), getattr(data, name)), name
    assert np.array_equal(back.sequences.offsets, data.sequences.offsets)
    assert np.array_equal(back.sequences.items, data.sequences.items)


def test_ids_must_cover_every_item(dataset: Dataset) -> None:
    partial = IdTable(IDS.item_ids[:3], IDS.semantic_ids[:3], IDS.codes[:3], IDS.base_codes[:3])
    with pytest.raises(
        SemidError,
        match=r"^ids.parquet has no Semantic ID for item 'a' \(1 of 4 items have none; assign IDs to the whole catalogue\)$",
    ):
        RecData.from_dataset(dataset, partial, ids_name="ids.parquet")


def test_ids_must_be_unique(dataset: Dataset) -> None:
    shared = IdTable(IDS.item_ids, ["0-0"] * 4, np.array([[1, 1], [0, 0], [0, 1], [0, 0]]), IDS.base_codes)
    with pytest.raises(
        SemidError, match=r"^ids: items 'a' and 'c' share the Semantic ID 0-0; .*--dedup suffix\)$"
    ):
        RecData.from_dataset(dataset, shared)


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ([], r"^the history is empty; give at least one item id$"),
        (["a", "zz"], r"^history item 'zz' is not in this run's catalogue \(4 items\)$"),
        (
            ["x", "y"],
            r"^history item 'x' is not in this run's catalogue \(4 items\); 2 unknown items in all$",
        ),
    ],
    ids=["empty", "unknown", "two-unknown"],
)
def test_bad_histories(dataset: Dataset, history: list[str], message: str) -> None:
    with pytest.raises(SemidError, match=message):
        RecData.from_dataset(dataset).parse_history(history)
