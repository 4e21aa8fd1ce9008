"""The data model: Catalogue, Interactions, Dataset, ParseReport."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from semid.data import Catalogue, Dataset, Interactions, Origin, ParseReport
from semid.errors import SemidError


@pytest.fixture
def catalogue() -> Catalogue:
    return Catalogue.from_pydict(
        {
            "item_id": ["a", "b", "c", "d"],
            "title": ["Red lipstick", "", "None", "Blue mascara"],
            "categories": [["Beauty", "Lips"], [], None, ["Beauty"]],
            "price": [9.5, float("nan"), None, 3.0],
        }
    )


# -- Catalogue -------------------------------------------------------------------------------------------


def test_catalogue_basic_accessors(catalogue: Catalogue) -> None:
    assert len(catalogue) == 4
    assert catalogue.item_ids.tolist() == ["a", "b", "c", "d"]
    assert catalogue.fields == ["title", "categories", "price"]
    assert catalogue.text_fields == ["title", "categories"]
    assert catalogue.column("title").to_pylist()[0] == "Red lipstick"


def test_coverage_counts_empty_none_nan_and_empty_lists_as_missing(catalogue: Catalogue) -> None:
    assert catalogue.coverage() == {"title": 0.5, "categories": 0.5, "price": 0.5}


def test_index_of_is_a_vectorised_lookup(catalogue: Catalogue) -> None:
    assert catalogue.index_of(["d", "a", "a"]).tolist() == [3, 0, 0]
    assert catalogue.index_of(np.array(["c", "zz"]), missing="ignore").tolist() == [2, -1]
    with pytest.raises(SemidError, match=r"^item_id 'zz' is not in the catalogue \(1 of 2 ids unknown\)$"):
        catalogue.index_of(["a", "zz"])


def test_take_keeps_rows_in_the_given_order(catalogue: Catalogue) -> None:
    sub = catalogue.take([3, 0])
    assert sub.item_ids.tolist() == ["d", "a"]
    assert catalogue.take(np.array([False, True, False, True])).item_ids.tolist() == ["b", "d"]


def test_text_column_renders_lists_numbers_and_missing_values(catalogue: Catalogue) -> None:
    assert catalogue.text_column("categories").to_pylist() == ["Beauty, Lips", "", "", "Beauty"]
    assert catalogue.text_column("price").to_pylist()[0] == "9.5"


def test_parquet_round_trip(tmp_path, catalogue: Catalogue) -> None:
    catalogue.to_parquet(tmp_path / "items.parquet")
    back = Catalogue.from_parquet(tmp_path / "items.parquet")
    assert back.table.schema.equals(catalogue.table.schema)
    assert back.table.drop_columns(["price"]).equals(catalogue.table.drop_columns(["price"]))
    np.testing.assert_array_equal(
        back.column("price").to_numpy(zero_copy_only=False), [9.5, np.nan, np.nan, 3.0]
    )
    assert back.column("price").null_count == 1


def test_integer_item_ids_become_strings() -> None:
    cat = Catalogue.from_pydict({"item_id": [10, 20], "title": ["x", "y"]})
    assert cat.item_ids.tolist() == ["10", "20"]


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"id": ["a"], "title": ["x"]}, r"^catalogue: no item_id column \(columns: id, title\)$"),
        (
            {"item_id": ["a", "b"], "price": [1.0, 2.0]},
            r"catalogue has no text fields \(columns: item_id, price\)",
        ),
        (
            {"item_id": ["a", "b", "a"], "title": ["x", "y", "z"]},
            r"^catalogue row 2: item_id 'a' is a duplicate \(first at catalogue row 0\)$",
        ),
        ({"item_id": ["a", None], "title": ["x", "y"]}, r"^catalogue row 1: item_id is missing$"),
    ],
    ids=["no-item-id", "no-text-fields", "duplicate-id", "missing-id"],
)
def test_catalogue_rejects_bad_tables(columns: dict, message: str) -> None:
    with pytest.raises(SemidError, match=message):
        Catalogue.from_pydict(columns)


def test_catalogue_errors_name_file_and_line_when_the_origin_is_known() -> None:
    table = pa.table({"item_id": ["a", "a"], "title": ["x", "y"]})
    with pytest.raises(
        SemidError,
        match=r"^items\.jsonl line 7: item_id 'a' is a duplicate \(first at items\.jsonl line 3\)$",
    ):
        Catalogue(table, origin=Origin("items.jsonl", np.array([3, 7])))


# -- Interactions ----------------------------------------------------------------------------------------


def test_sequences_group_by_user_in_time_order_with_stable_ties() -> None:
    inter = Interactions(
        ["u2", "u1", "u2", "u1", "u2"],
        ["x", "y", "z", "x", "w"],
        timestamps=[5, 9, 1, 3, 5],
    )
    assert inter.users.tolist() == ["u2", "u1"]  # first-appearance order
    assert inter.items.tolist() == ["x", "y", "z", "w"]
    offsets, items = inter.sequences()
    assert offsets.tolist() == [0, 3, 5]
    # u2: z(t=1), x(t=5, row 0), w(t=5, row 4) -- the tie keeps row order; u1: x(t=3), y(t=9)
    assert inter.items[items].tolist() == ["z", "x", "w", "x", "y"]
    assert inter.sequence_lengths().tolist() == [3, 2]
    assert (inter.n_users, inter.n_items, inter.n_interactions) == (2, 4, 5)


def test_sequences_without_timestamps_keep_row_order() -> None:
    inter = Interactions(["u", "v", "u"], ["c", "a", "b"])
    seqs = inter.sequences(["a", "b", "c"])
    assert seqs.offsets.tolist() == [0, 2, 3]
    assert seqs.items.tolist() == [2, 1, 0]  # indices into the given ids
    assert seqs.row(1).tolist() == [0]
    assert seqs.lengths.tolist() == [2, 1]


def test_columns_round_trip_through_codes() -> None:
    inter = Interactions(["u1", "u2", "u1"], ["a", "b", "c"], ratings=[5.0, 3.0, 4.0])
    assert inter.user_ids.tolist() == ["u1", "u2", "u1"]
    assert inter.item_ids.tolist() == ["a", "b", "c"]
    assert inter.ratings.tolist() == [5.0, 3.0, 4.0]
    assert inter.timestamps is None


def test_take_shrinks_the_vocabularies() -> None:
    inter = Interactions(["u1", "u2", "u3"], ["a", "b", "a"], timestamps=[1, 2, 3])
    sub = inter.take(np.array([True, False, True]))
    assert sub.users.tolist() == ["u1", "u3"]
    assert sub.items.tolist() == ["a"]
    assert sub.timestamps.tolist() == [1, 3]


@pytest.mark.parametrize(
    "indices, message",
    [
        ([3], r"^Interactions\.take: row 3 is out of range for 3 rows \(1 of 1 indices\)$"),
        (
            [0, -1],
            r"^Interactions\.take: row -1 is out of range for 3 rows \(a negative row, such as index_of's -1 ",
        ),
        ([True], r"^Interactions\.take: a boolean mask should have one value per row \(3\), got 1$"),
        (
            np.array([0.0, 1.5]),
            r"^Interactions\.take: indices should be integers or a boolean mask, got float64",
        ),
        ([[0]], r"^Interactions\.take: indices should be 1-D \(row numbers or a mask\), got shape \(1, 1\)$"),
        ("a", r"^Interactions\.take: indices should be 1-D"),
    ],
)
def test_take_refuses_rows_it_does_not_have(indices, message: str) -> None:
    inter = Interactions(["u1", "u2", "u3"], ["a", "b", "a"])
    with pytest.raises(SemidError, match=message):
        inter.take(indices)
    with pytest.raises(SemidError, match=message.replace("Interactions", "Catalogue")):
        Catalogue.from_pydict({"item_id": ["a", "b", "c"], "title": ["x", "y", "z"]}).take(indices)


def test_a_missing_id_from_index_of_is_never_taken_as_the_last_row() -> None:
    cat = Catalogue.from_pydict({"item_id": ["a", "b", "c"], "title": ["x", "y", "z"]})
    rows = cat.index_of(["a", "zzz"], missing="ignore")
    assert rows.tolist() == [0, -1]
    with pytest.raises(SemidError, match=r"row -1 is out of range"):
        cat.take(rows)


def test_take_accepts_any_integer_type_whatever_the_row_count() -> None:
    n = 300  # more rows than an int8 holds
    cat = Catalogue.from_pydict({"item_id": [f"i{k}" for k in range(n)], "title": ["t"] * n})
    inter = Interactions([f"u{k}" for k in range(n)], [f"i{k}" for k in range(n)])
    for dtype in (np.int8, np.uint8, np.int16, np.uint64):
        assert cat.take(np.array([2, 0], dtype)).item_ids.tolist() == ["i2", "i0"]
        assert inter.take(np.array([2, 0], dtype)).users.tolist() == ["u2", "u0"]
    assert len(inter.take([])) == 0


def test_interactions_parquet_round_trip(tmp_path) -> None:
    inter = Interactions(["u1", "u2", "u1"], ["a", "b", "c"], timestamps=[3, 2, 1], ratings=[1.0, 2.0, 3.0])
    inter.to_parquet(tmp_path / "inter.parquet")
    back = Interactions.from_parquet(tmp_path / "inter.parquet")
    assert back.user_ids.tolist() == inter.user_ids.tolist()
    assert back.item_ids.tolist() == inter.item_ids.tolist()
    assert back.timestamps.tolist() == [3, 2, 1]
    assert back.ratings.tolist() == [1.0, 2.0, 3.0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"user_ids": ["u", "v"], "item_ids": ["a"]}, r"^2 user ids but 1 item ids"),
        ({"user_ids": ["u", None], "item_ids": ["a", "b"]}, r"^interactions row 1: user_id is missing$"),
        ({"user_ids": ["u"], "item_ids": ["a"], "timestamps": ["x"]}, r"^timestamps should be numbers"),
        ({"user_ids": ["u"], "item_ids": ["a"], "ratings": [1.0, 2.0]}, r"^ratings has 2 values, expected 1"),
    ],
    ids=["length-mismatch", "missing-user", "text-timestamps", "rating-count"],
)
def test_interactions_reject_bad_columns(kwargs: dict, message: str) -> None:
    with pytest.raises(SemidError, match=message):
        Interactions(**kwargs)


# -- Dataset ---------------------------------------------------------------------------------------------


def test_dataset_sequences_index_catalogue_rows(catalogue: Catalogue) -> None:
    inter = Interactions(["u1", "u1", "u2"], ["d", "a", "b"], timestamps=[2, 1, 1])
    seqs = Dataset(catalogue, inter).sequences()
    assert seqs.offsets.tolist() == [0, 2, 3]
    assert seqs.items.tolist() == [0, 3, 1]


def test_dataset_stats(catalogue: Catalogue) -> None:
    inter = Interactions(["u1", "u1", "u1", "u2"], ["d", "a", "b", "a"])
    st = Dataset(catalogue, inter, name="tiny").stats()
    assert (st.n_users, st.n_items, st.n_interactions) == (2, 4, 4)
    assert (st.seq_len_min, st.seq_len_median, st.seq_len_mean, st.seq_len_max) == (1, 2.0, 2.0, 3)
    assert st.coverage["title"] == 0.5
    d = st.to_dict()
    assert d["sequence_length"] == {"min": 1, "median": 2.0, "mean": 2.0, "max": 3}
    assert d["parse_report"]["skipped"] == 0


def test_dataset_rejects_interactions_with_unknown_items_naming_file_and_line(catalogue: Catalogue) -> None:
    inter = Interactions(
        ["u1", "u1", "u2"], ["a", "zz", "zz"], origin=Origin("ratings.csv", np.array([2, 3, 5]))
    )
    with pytest.raises(
        SemidError,
        match=r"^ratings\.csv line 3: item 'zz' is not in the catalogue \(2 of 3 interactions name 1 unknown items\)$",
    ):
        Dataset(catalogue, inter)


def test_dataset_needs_something() -> None:
    with pytest.raises(SemidError, match="needs a catalogue, interactions or both"):
        Dataset()


def test_dataset_save_writes_both_parts(tmp_path, catalogue: Catalogue) -> None:
    inter = Interactions(["u1"], ["a"])
    out = Dataset(catalogue, inter).save(tmp_path / "ds")
    assert sorted(p.name for p in out.iterdir()) == ["interactions.parquet", "items.parquet"]


# -- ParseReport -----------------------------------------------------------------------------------------


def test_parse_report_counts_all_and_keeps_five_examples() -> None:
    rep = ParseReport()
    for i in range(8):
        rep.skip("f.txt", f"f.txt line {i + 1}", "bad")
    rep.repair("f.txt lines 9-10", "rejoined")
    assert (rep.n_skipped, rep.n_repaired) == (8, 1)
    assert [str(i) for i in rep.skipped] == [f"f.txt line {i}: bad" for i in range(1, 6)]
    text = str(rep)
    assert text.splitlines()[0] == "8 lines skipped, 1 repaired"
    assert "skipped (first 5 of 8):" in text
    assert "  f.txt lines 9-10: rejoined" in text


def test_parse_report_check_allows_a_small_share_of_bad_lines() -> None:
    rep = ParseReport()
    rep.skip("big.txt", "big.txt line 17", "rating 'abc' is not a number")
    rep.check("big.txt", 1000, 0.01)  # 0.1%: fine
    with pytest.raises(
        SemidError,
        match=r"^big\.txt line 17: rating 'abc' is not a number \(1 of 20 rows of big\.txt unreadable, more than max_bad_fraction=0\.01\)$",
    ):
        rep.check("big.txt", 20, 0.01)


def test_parse_report_merge() -> None:
    a, b = ParseReport(), ParseReport()
    a.skip("x", "x line 1", "bad")
    b.repair("y lines 1-2", "joined")
    b.note("hello")
    a.merge(b)
    assert (a.n_skipped, a.n_repaired, a.notes) == (1, 1, ["hello"])
    assert not a.clean


@pytest.mark.parametrize("module", ["semid.data", "semid.data.model", "semid.data.split", "semid.data.demo"])
def test_docstring_examples_run(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_item_id_comes_first_whatever_the_input_order() -> None:
    cat = Catalogue.from_pydict({"title": ["x"], "item_id": ["a"]})
    assert cat.table.column_names == ["item_id", "title"]


def test_a_catalogue_from_columns_of_different_lengths_is_one_error() -> None:
    from semid.data import Catalogue
    from semid.errors import SemidError

    with pytest.raises(
        SemidError, match=r"^Catalogue\.from_pydict: Column 1 named title expected length 2 but got length 1$"
    ):
        Catalogue.from_pydict({"item_id": ["a", "b"], "title": ["x"]})
