"""Embeddings files: what reads back, and the one-line message for each way a file can be wrong."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from semid.embed.store import iter_embedding_batches, read_embeddings, read_metadata, write_embeddings
from semid.errors import SemidError


def _vectors(n: int = 20, d: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def _ids(n: int) -> list[str]:
    return [f"B{i:04d}" for i in range(n)]


def _parquet(path: Path, ids: list, rows: list, type: pa.DataType | None = None) -> Path:
    pq.write_table(pa.table({"item_id": ids, "embedding": pa.array(rows, type=type)}), path)
    return path


# --- round trips ----------------------------------------------------------------------------------------


def test_write_then_read_gives_the_same_ids_and_vectors(tmp_path):
    X = _vectors()
    path = write_embeddings(tmp_path / "e.parquet", _ids(20), X, metadata={"model": "st:m@1"})
    ids, Y = read_embeddings(path)
    assert ids.tolist() == _ids(20)
    assert Y.dtype == np.float32 and np.array_equal(Y, X)
    assert read_metadata(path) == {"model": "st:m@1"}
    assert pq.read_schema(path).field("embedding").type == pa.list_(pa.float32())


@pytest.mark.parametrize(
    "type",
    [pa.list_(pa.float32()), pa.list_(pa.float64()), pa.large_list(pa.float32()), pa.list_(pa.float16()),
     pa.list_(pa.float32(), 4), pa.list_(pa.float64(), 4)],
    ids=["list-f32", "list-f64", "large-list", "list-f16", "fixed-f32", "fixed-f64"],
)  # fmt: skip
def test_every_list_type_reads_as_float32(tmp_path, type):
    X = np.arange(12, dtype=np.float32).reshape(3, 4) / 4  # exact in float16 too
    _parquet(tmp_path / "e.parquet", ["a", "b", "c"], X.tolist(), type)
    ids, Y = read_embeddings(tmp_path / "e.parquet")
    assert Y.dtype == np.float32 and np.array_equal(Y, X)
    assert ids.tolist() == ["a", "b", "c"]


def test_integer_ids_come_back_as_integers(tmp_path):
    write_embeddings(tmp_path / "e.parquet", np.array([7, 3, 5]), _vectors(3))
    ids, _ = read_embeddings(tmp_path / "e.parquet")
    assert ids.dtype == np.int64 and ids.tolist() == [7, 3, 5]


def test_npy_without_ids_numbers_the_rows(tmp_path):
    np.save(tmp_path / "e.npy", _vectors(5).astype(np.float64))
    ids, X = read_embeddings(tmp_path / "e.npy")
    assert ids.tolist() == [0, 1, 2, 3, 4] and X.dtype == np.float32 and X.shape == (5, 4)


@pytest.mark.parametrize("suffix", [".json", ".txt", ".npy"])
def test_npy_takes_ids_from_a_json_txt_or_npy_file(tmp_path, suffix):
    np.save(tmp_path / "e.npy", _vectors(3))
    ids_path = tmp_path / f"ids{suffix}"
    if suffix == ".json":
        ids_path.write_text(json.dumps(["x", "y", "z"]))
    elif suffix == ".txt":
        ids_path.write_text("x\ny\nz\n")
    else:
        np.save(ids_path, np.array(["x", "y", "z"]))
    ids, _ = read_embeddings(tmp_path / "e.npy", ids_path=ids_path)
    assert ids.tolist() == ["x", "y", "z"]


def test_a_directory_of_parts_reads_as_one_table_in_name_order(tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    X = _vectors(10)
    write_embeddings(parts / "part-1.parquet", _ids(10)[6:], X[6:])
    write_embeddings(parts / "part-0.parquet", _ids(10)[:6], X[:6])
    ids, Y = read_embeddings(parts)
    assert ids.tolist() == _ids(10) and np.array_equal(Y, X)


def test_iter_batches_streams_every_row_once(tmp_path):
    X = _vectors(25)
    write_embeddings(tmp_path / "e.parquet", _ids(25), X)
    batches = list(iter_embedding_batches(tmp_path / "e.parquet", batch_size=10))
    assert [len(b[0]) for b in batches] == [10, 10, 5]
    assert np.array_equal(np.concatenate([b[1] for b in batches]), X)


# --- errors -------------------------------------------------------------------------------------------------


def _ragged(p: Path) -> Path:
    rows = [[0.5] * 384] * 30
    rows[17] = [0.5] * 383
    return _parquet(p / "embeddings.parquet", _ids(30), rows)


def _nan(p: Path) -> Path:
    X = _vectors(8)
    X[5, 2] = np.nan
    return _parquet(p / "embeddings.parquet", _ids(8), X.tolist())


def _inf(p: Path) -> Path:
    X = _vectors(8)
    X[6, 0] = -np.inf
    return _parquet(p / "embeddings.parquet", _ids(8), X.tolist())


def _dup(p: Path) -> Path:
    ids = _ids(12)
    ids[9] = ids[3] = "B00X"
    return _parquet(p / "embeddings.parquet", ids, _vectors(12).tolist())


def _null_row(p: Path) -> Path:
    rows: list = _vectors(4).tolist()
    rows[2] = None
    return _parquet(p / "embeddings.parquet", _ids(4), rows)


def _null_value(p: Path) -> Path:
    rows: list = _vectors(4).tolist()
    rows[3][1] = None
    return _parquet(p / "embeddings.parquet", _ids(4), rows)


def _null_id(p: Path) -> Path:
    return _parquet(p / "embeddings.parquet", ["a", None, "c"], _vectors(3).tolist())


def _empty(p: Path) -> Path:
    return _parquet(p / "x.parquet", [], [], pa.list_(pa.float32()))


def _no_column(p: Path) -> Path:
    pq.write_table(pa.table({"item_id": ["a"], "vec": [[1.0]]}), p / "e.parquet")
    return p / "e.parquet"


def _strings(p: Path) -> Path:
    return _parquet(p / "e.parquet", ["a"], [["1", "2"]])


def _unknown(p: Path) -> Path:
    (p / "e.csv").write_text("item_id,embedding\n")
    return p / "e.csv"


def _missing(p: Path) -> Path:
    return p / "nope.parquet"


def _npy_3d(p: Path) -> Path:
    np.save(p / "e.npy", np.zeros((2, 3, 4), np.float32))
    return p / "e.npy"


@pytest.mark.parametrize(
    "make, message",
    [
        (_ragged, "embeddings.parquet row 17: 383 values, expected 384"),
        (_nan, "embeddings.parquet row 5: contains NaN"),
        (_inf, "embeddings.parquet row 6: contains inf"),
        (_dup, "embeddings.parquet: item_id 'B00X' appears at rows 3 and 9"),
        (_null_row, "embeddings.parquet row 2: embedding is null"),
        (_null_value, "embeddings.parquet row 3: holds a null value"),
        (_null_id, "embeddings.parquet row 1: item_id is null"),
        (_empty, "x.parquet: no rows"),
        (_no_column, "e.parquet: no column 'embedding' (columns: item_id, vec)"),
        (_strings, "e.parquet: embedding values have type string, expected floats"),
        (_unknown, "e.csv: unknown embeddings format '.csv' (expected .parquet, .npy or a directory of .parquet files)"),
        (_npy_3d, "e.npy: array has shape (2, 3, 4), expected (n_items, dim)"),
    ],
    ids=["ragged", "nan", "inf", "duplicate-id", "null-row", "null-value", "null-id", "empty", "no-column",
         "not-floats", "unknown-extension", "npy-3d"],
)  # fmt: skip
def test_a_bad_file_is_named_with_its_row_and_value(tmp_path, make, message):
    with pytest.raises(SemidError) as e:
        read_embeddings(make(tmp_path))
    assert str(e.value) == message


@pytest.mark.parametrize(
    ("ids", "X", "message"),
    [
        (["a"], np.zeros((1, 0)), r"embeddings have shape \(1, 0\), expected \(n_items, dim >= 1\)"),
        (["a"], np.zeros((1, 2), complex), r"embeddings have dtype complex128, expected real numbers"),
        (["a", None], np.zeros((2, 2)), r"the item id of row 1 is missing \(None\)"),
    ],
    ids=["zero-width", "complex", "missing-id"],
)
def test_write_refuses_what_it_could_not_read_back(tmp_path, ids, X, message):
    with pytest.raises(SemidError, match=f"^e.parquet: {message}$"):
        write_embeddings(tmp_path / "e.parquet", ids, X)
    assert not list(tmp_path.iterdir())


def test_read_metadata_of_a_missing_or_damaged_file_is_one_error(tmp_path):
    with pytest.raises(SemidError, match=r"missing\.parquet: no such file$"):
        read_metadata(tmp_path / "missing.parquet")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(SemidError, match=r"bad\.parquet: not a readable Parquet file \("):
        read_metadata(tmp_path / "bad.parquet")


def test_a_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(SemidError, match=r"nope\.parquet: no such file$"):
        read_embeddings(tmp_path / "nope.parquet")


def test_the_ids_file_must_match_the_npy_rows(tmp_path):
    np.save(tmp_path / "e.npy", _vectors(3))
    (tmp_path / "ids.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(SemidError) as e:
        read_embeddings(tmp_path / "e.npy", ids_path=tmp_path / "ids.json")
    assert str(e.value) == "ids.json: 2 item ids for 3 rows of e.npy"


def test_duplicate_ids_in_an_ids_file_are_caught(tmp_path):
    np.save(tmp_path / "e.npy", _vectors(3))
    (tmp_path / "ids.txt").write_text("a\nb\na\n")
    with pytest.raises(SemidError) as e:
        read_embeddings(tmp_path / "e.npy", ids_path=tmp_path / "ids.txt")
    assert str(e.value) == "ids.txt: item_id 'a' appears at rows 0 and 2"


def test_streamed_errors_number_rows_across_batches_and_parts(tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    write_embeddings(parts / "p0.parquet", _ids(10)[:6], _vectors(6))
    X = _vectors(4)
    X[1, 0] = np.nan
    _parquet(parts / "p1.parquet", _ids(10)[6:], X.tolist())
    with pytest.raises(SemidError) as e:
        list(iter_embedding_batches(parts, batch_size=4))
    assert str(e.value) == "parts row 7 (p1.parquet row 1): contains NaN"


def test_an_id_repeated_in_a_later_batch_is_caught(tmp_path):
    ids = _ids(10)
    ids[8] = ids[2]
    _parquet(tmp_path / "e.parquet", ids, _vectors(10).tolist())
    with pytest.raises(SemidError) as e:
        list(iter_embedding_batches(tmp_path / "e.parquet", batch_size=4))
    assert str(e.value) == "e.parquet: item_id 'B0002' appears at rows 2 and 8"


def test_parts_must_agree_on_the_dimension(tmp_path):
    parts = tmp_path / "parts"
    parts.mkdir()
    write_embeddings(parts / "p0.parquet", ["a"], _vectors(1, 4))
    write_embeddings(parts / "p1.parquet", ["b"], _vectors(1, 5))
    with pytest.raises(SemidError) as e:
        read_embeddings(parts)
    assert str(e.value) == "parts row 1 (p1.parquet row 0): 5 values, expected 4"


def test_writing_bad_vectors_fails_and_leaves_the_old_file(tmp_path):
    path = write_embeddings(tmp_path / "e.parquet", ["a", "b"], _vectors(2))
    before = path.read_bytes()
    X = _vectors(2)
    X[1, 1] = np.inf
    with pytest.raises(SemidError, match=r"^e\.parquet row 1: contains inf$"):
        write_embeddings(path, ["a", "b"], X)
    with pytest.raises(SemidError, match=r"^e\.parquet: item_id 'a' appears at rows 0 and 1$"):
        write_embeddings(path, ["a", "a"], _vectors(2))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.parquet"]  # no temp files left behind
