"""Generic JSONL / CSV / Parquet tables with a column mapping."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from semid.data import ParseReport
from semid.data.tabular import read_catalogue, read_interactions
from semid.errors import SemidError


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def ratings_csv(path: Path, n: int = 20, bad_line: int | None = None, bad_value: str = "abc") -> Path:
    rows = ["userId,movieId,rating,ts"]
    for i in range(n):
        rows.append(f"u{i % 4},m{i % 5},{1 + i % 5},{1000 + i}")
    if bad_line is not None:
        parts = rows[bad_line - 1].split(",")
        parts[2] = bad_value
        rows[bad_line - 1] = ",".join(parts)
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.parametrize(
    "suffix", [".jsonl", ".csv", ".parquet", ".jsonl.gz", ".csv.gz"], ids=lambda s: s.strip(".")
)
def test_catalogue_from_any_table_format(tmp_path: Path, suffix: str) -> None:
    rows = [
        {"asin": "A", "title": "Red, bold lipstick", "price": 9.5},
        {"asin": "B", "title": "Mascara", "price": None},
    ]
    path = tmp_path / f"items{suffix}"
    if suffix.startswith(".jsonl"):
        text = "".join(json.dumps(r) + "\n" for r in rows)
    elif suffix.startswith(".csv"):
        text = 'asin,title,price\nA,"Red, bold lipstick",9.5\nB,Mascara,\n'
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
        text = None
    if text is not None:
        data = text.encode()
        path.write_bytes(gzip.compress(data) if suffix.endswith(".gz") else data)
    cat = read_catalogue(path, item_id="asin")
    assert cat.item_ids.tolist() == ["A", "B"]
    assert cat.fields == ["title", "price"]
    assert cat.column("title").to_pylist() == ["Red, bold lipstick", "Mascara"]
    assert cat.coverage() == {"title": 1.0, "price": 0.5}


def test_interactions_with_a_column_mapping(tmp_path: Path) -> None:
    inter = read_interactions(
        ratings_csv(tmp_path / "ratings.csv"),
        user_id="userId",
        item_id="movieId",
        timestamp="ts",
        rating="rating",
    )
    assert (inter.n_users, inter.n_items, inter.n_interactions) == (4, 5, 20)
    assert inter.timestamps[:3].tolist() == [1000, 1001, 1002]
    assert inter.ratings[:3].tolist() == [1.0, 2.0, 3.0]
    assert inter.origin.where(0) == "ratings.csv line 2"


def test_a_mistyped_rating_in_a_small_file_is_an_error_with_its_line(tmp_path: Path) -> None:
    path = ratings_csv(tmp_path / "ratings.csv", n=20, bad_line=17)
    with pytest.raises(
        SemidError,
        match=r"^ratings\.csv line 17: rating 'abc' is not a number \(1 of 20 rows of ratings\.csv unreadable, more than max_bad_fraction=0\.01\)$",
    ):
        read_interactions(path, user_id="userId", item_id="movieId", rating="rating")


def test_a_mistyped_rating_in_a_large_file_is_reported_and_left_out(tmp_path: Path) -> None:
    path = ratings_csv(tmp_path / "ratings.csv", n=500, bad_line=17)
    report = ParseReport()
    inter = read_interactions(path, user_id="userId", item_id="movieId", rating="rating", report=report)
    assert inter.n_interactions == 499
    assert [str(i) for i in report.skipped] == ["ratings.csv line 17: rating 'abc' is not a number"]


def test_jsonl_with_a_mistyped_value_names_the_line(tmp_path: Path) -> None:
    rows = [{"user_id": f"u{i}", "item_id": "a", "rating": 4} for i in range(20)]
    rows[16]["rating"] = "abc"
    with pytest.raises(SemidError, match=r"^r\.jsonl line 17: rating 'abc' is not a number \(1 of 20 rows"):
        read_interactions(jsonl(tmp_path / "r.jsonl", rows))


def test_jsonl_malformed_lines_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    lines = [json.dumps({"item_id": f"i{i}", "title": f"t{i}"}) for i in range(300)]
    lines[9] = '{"item_id": "i9", "title": '
    path.write_text("\n".join(lines[:5]) + "\n\n" + "\n".join(lines[5:]) + "\n")  # with a blank line
    report = ParseReport()
    cat = read_catalogue(path, report=report)
    assert len(cat) == 299
    assert str(report.skipped[0]).startswith("items.jsonl line 11: not valid JSON")
    assert cat.origin.where(9) == "items.jsonl line 12"


def test_csv_rows_with_a_wrong_field_count_are_reported_with_their_line(tmp_path: Path) -> None:
    lines = ["item_id,title"] + [f"i{i},title {i}" for i in range(300)]
    lines[50] = "i49,too,many,fields"
    (tmp_path / "items.csv").write_text("\n".join(lines) + "\n")
    report = ParseReport()
    cat = read_catalogue(tmp_path / "items.csv", report=report)
    assert len(cat) == 299
    assert str(report.skipped[0]) == "items.csv line 51: 4 fields, expected 2: i49,too,many,fields"
    assert cat.origin.where(49) == "items.csv line 52"


def test_one_bad_date_among_iso_dates_is_one_skipped_row_named_by_its_line(tmp_path: Path) -> None:
    dated = "".join(f"u{i % 7},i{i % 11},2020-01-{i % 28 + 1:02d}\n" for i in range(300))
    (tmp_path / "dated.csv").write_text("user_id,item_id,timestamp\n" + dated + "u1,i1,yesterday\n")
    report = ParseReport()
    inter = read_interactions(tmp_path / "dated.csv", report=report)
    assert len(inter) == 300 and report.n_skipped == 1  # the 300 dates are kept (all were refused)
    assert str(report).endswith("dated.csv line 302: timestamp 'yesterday' is not a time or a number")
    assert inter.timestamps[0] == 1577836800  # 2020-01-01, unix seconds


def test_iso_timestamps_become_unix_seconds(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "r.jsonl", [{"user_id": "u", "item_id": "a", "timestamp": "2020-01-01T00:00:10"}])
    assert read_interactions(path).timestamps.tolist() == [1577836810]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda p: read_catalogue(p, item_id="asin"),
            r"^items\.jsonl: no column 'asin' for item_id \(columns: item_id, price\); name it with item_id=\.\.\. \(CLI: --item-id\)$",
        ),
        (
            lambda p: read_catalogue(p),
            r"^items\.jsonl: catalogue has no text fields \(columns: item_id, price\)",
        ),
        (lambda p: read_interactions(p), r"^items\.jsonl: no column 'user_id' for user_id"),
        (lambda p: read_catalogue(p.with_name("nope.jsonl")), r"nope\.jsonl: no such file$"),
    ],
    ids=["missing-mapped-column", "no-text-fields", "no-user-column", "missing-file"],
)
def test_mapping_errors(tmp_path: Path, call, message: str) -> None:
    path = jsonl(tmp_path / "items.jsonl", [{"item_id": "a", "price": 1.0}])
    with pytest.raises(SemidError, match=message):
        call(path)


def test_decimal_ids_and_unnamed_trailing_columns_load(tmp_path: Path) -> None:
    import decimal

    ids = pa.array([decimal.Decimal(7), decimal.Decimal(8)], pa.decimal128(10, 0))  # Spark/DuckDB exports
    pq.write_table(pa.table({"item_id": ids, "title": ["a", "b"]}), tmp_path / "items.parquet")
    assert read_catalogue(tmp_path / "items.parquet").item_ids.tolist() == ["7", "8"]
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp,,\nu,a,1,,\nu,b,2,,\n")  # a spreadsheet's
    assert len(read_interactions(tmp_path / "log.csv")) == 2
