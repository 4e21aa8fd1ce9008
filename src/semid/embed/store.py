"""Embedding files: Parquet (``item_id`` + ``embedding``) or a ``.npy`` matrix (+ an optional ids file).

Formats read:

- Parquet file, or a directory of ``*.parquet`` part files (read in name order): an id column (default
  ``item_id``) and an embedding column (default ``embedding``) of type ``list<float>``, ``large_list<float>``
  or ``fixed_size_list<float, D>``; float16/32/64 and integer values are converted to float32.
- ``.npy``: a 2-D numeric array; item ids from ``ids_path`` (a ``.json`` list, a ``.npy`` array, or text
  with one id a line), else ``0..n-1``.

:func:`write_embeddings` writes ``list<float32>`` (not ``fixed_size_list``): every Arrow/Parquet reader
(pandas, polars, DuckDB, HF datasets) reads it, and the readers here accept both.

Everything a quantizer relies on is validated and the first problem is named by file and 0-based row:
ragged rows (``embeddings.parquet row 17: 383 values, expected 384``), null embeddings, NaN/inf, duplicate
item ids, an empty file. Conversion is vectorised (list lengths and flat values straight from Arrow);
nothing loops over rows in Python.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from semid._utils import atomic_path, read_json_file, read_utf8
from semid.data._io import as_utf8_text
from semid.errors import SemidError, first_line

__all__ = ["iter_embedding_batches", "read_embeddings", "write_embeddings"]


def read_embeddings(
    path: str | os.PathLike,
    *,
    id_column: str = "item_id",
    embedding_column: str = "embedding",
    ids_path: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(item_ids (n,), X (n, D) float32)`` from Parquet (file or directory of parts) or ``.npy``.

    Item ids come back as an object array of ``str`` for string ids, an ``int64`` array for integer ids.

    Example::

        ids, X = read_embeddings("embeddings.parquet")
        ids, X = read_embeddings("minilm.npy", ids_path="items.json")
    """
    path = Path(path)
    if not path.exists():
        raise SemidError(f"{path}: no such file")
    if path.is_dir() or path.suffix == ".parquet":
        if ids_path is not None:
            raise SemidError(
                f"{path}: ids_path only applies to .npy embeddings (Parquet holds {id_column!r})"
            )
        if path.is_dir():
            batches = list(
                iter_embedding_batches(path, id_column=id_column, embedding_column=embedding_column)
            )
            return _concat_ids([b[0] for b in batches]), np.concatenate([b[1] for b in batches])
        table = _read_table(path, id_column, embedding_column)
        ids, X = _to_arrays(table, _Where(path.name), id_column, embedding_column)
        _check_unique(table.column(id_column), _Where(path.name))
        return ids, X
    if path.suffix == ".npy":
        return _read_npy(path, ids_path)
    raise SemidError(
        f"{path.name}: unknown embeddings format {path.suffix!r} "
        f"(expected .parquet, .npy or a directory of .parquet files)"
    )


def write_embeddings(
    path: str | os.PathLike,
    item_ids: Sequence | np.ndarray | pa.Array,
    X: np.ndarray,
    *,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``item_id`` + ``embedding`` (``list<float32>``) to a Parquet file, atomically.

    ``metadata`` (e.g. the model and template that made the vectors) is stored in the schema metadata;
    :func:`read_metadata` reads it back. The same checks as :func:`read_embeddings` run first, so a file
    written here always reads back.
    """
    path = Path(path)
    if path.suffix != ".parquet":
        raise SemidError(f"{path.name}: embeddings are written as .parquet, got {path.suffix!r}")
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] == 0:
        raise SemidError(f"{path.name}: embeddings have shape {X.shape}, expected (n_items, dim >= 1)")
    if X.dtype.kind not in "fiu":  # complex would lose its imaginary part, objects fail deep in numpy
        raise SemidError(f"{path.name}: embeddings have dtype {X.dtype}, expected real numbers")
    X = np.ascontiguousarray(X, dtype=np.float32)
    try:
        ids = item_ids if isinstance(item_ids, pa.Array) else pa.array(np.asarray(item_ids).tolist())
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
        raise SemidError(f"{path.name}: item ids should be text or integers ({first_line(e)})") from None
    if ids.null_count:
        raise SemidError(f"{path.name}: the item id of row {ids.to_pylist().index(None)} is missing (None)")
    n, d = X.shape
    if len(ids) != n:
        raise SemidError(f"{path.name}: {len(ids)} item ids for {n} embedding rows")
    where = _Where(path.name)
    _check_finite(X, where, 0)
    _check_unique(ids, where)
    offsets = np.arange(0, n * d + 1, d, dtype=np.int64 if n * d >= 2**31 else np.int32)
    list_type = pa.large_list if offsets.dtype == np.int64 else pa.list_
    emb = pa.ListArray if list_type is pa.list_ else pa.LargeListArray
    embedding = emb.from_arrays(pa.array(offsets), pa.array(X.reshape(-1)))
    schema_meta = {f"semid.{k}": str(v) for k, v in (metadata or {}).items()}
    table = pa.table({"item_id": ids, "embedding": embedding}).replace_schema_metadata(schema_meta or None)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``metadata`` given to :func:`write_embeddings` (empty for files written elsewhere)."""
    if not Path(path).is_file():
        raise SemidError(f"{path}: no such file")
    try:
        meta = pq.read_schema(path).metadata or {}
    except (pa.ArrowInvalid, OSError) as e:
        raise SemidError(f"{path}: not a readable Parquet file ({first_line(e)})") from None
    return {k.decode()[6:]: v.decode() for k, v in meta.items() if k.startswith(b"semid.")}


def iter_embedding_batches(
    path: str | os.PathLike,
    batch_size: int = 65536,
    *,
    id_column: str = "item_id",
    embedding_column: str = "embedding",
    check_unique: bool = True,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream ``(item_ids, X)`` batches from a Parquet file or a directory of part files (bounded memory).

    Each batch gets the checks of :func:`read_embeddings`; rows are numbered across the whole input
    (``parts row 70017 (part-1.parquet row 17)``), every batch must have the same dimension, and with
    ``check_unique`` an id repeated in a later batch is caught too (this keeps one dict of the ids seen).
    """
    if batch_size < 1:
        raise SemidError(f"batch_size={batch_size} should be >= 1")
    path = Path(path)
    if not path.exists():
        raise SemidError(f"{path}: no such file")
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise SemidError(f"{path.name}: no .parquet files in this directory")
    elif path.suffix == ".parquet":
        files = [path]
    else:
        raise SemidError(f"{path.name}: unknown embeddings format {path.suffix!r} (expected .parquet)")
    seen: dict = {}
    dim: int | None = None
    start = 0
    for f in files:
        pf = _open_parquet(f, id_column, embedding_column)
        local = 0
        for batch in pf.iter_batches(batch_size=batch_size, columns=[id_column, embedding_column]):
            where = _Where(f.name) if f == path else _Where(path.name, f.name, start - local)
            ids, X = _to_arrays(batch, where, id_column, embedding_column, offset=local, dim=dim)
            dim = X.shape[1]
            if check_unique:
                _check_unique(batch.column(id_column), where, offset=local)
                _check_unseen(ids, seen, where, local)
            local += batch.num_rows
            yield ids, X
        start += local
    if start == 0:
        raise SemidError(f"{path.name}: no rows")


# --- helpers ---------------------------------------------------------------------------------------------


class _Where:
    """Names rows in messages: ``file row R``, or ``dir row R (part row r)`` for a directory of parts."""

    def __init__(self, name: str, part: str | None = None, part_start: int = 0) -> None:
        self.name, self.part, self.part_start = name, part, part_start

    def row(self, r: int) -> str:
        if self.part is None:
            return f"{self.name} row {r}"
        return f"{self.name} row {self.part_start + r} ({self.part} row {r})"

    def rows(self, a: int, b: int) -> str:
        if self.part is None:
            return f"rows {a} and {b}"
        return f"rows {self.part_start + a} and {self.part_start + b} ({self.part} rows {a} and {b})"

    def __str__(self) -> str:
        return self.name if self.part is None else f"{self.name} ({self.part})"


def _open_parquet(path: Path, id_column: str, embedding_column: str) -> pq.ParquetFile:
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise SemidError(f"{path.name}: not a readable Parquet file ({e})") from None
    names = pf.schema_arrow.names
    for col in (id_column, embedding_column):
        if col not in names:
            raise SemidError(f"{path.name}: no column {col!r} (columns: {', '.join(names)})")
    return pf


def _read_table(path: Path, id_column: str, embedding_column: str) -> pa.Table:
    pf = _open_parquet(path, id_column, embedding_column)
    if pf.metadata.num_rows == 0:
        raise SemidError(f"{path.name}: no rows")
    return pf.read(columns=[id_column, embedding_column])


def _to_arrays(
    table: pa.Table | pa.RecordBatch,
    where: _Where,
    id_column: str,
    embedding_column: str,
    *,
    offset: int = 0,
    dim: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Validate one table/batch and convert it; ``offset`` is the row number of its first row."""
    ids = table.column(id_column)
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    if ids.null_count:
        raise SemidError(f"{where.row(offset + _first_true(ids.is_null()))}: {id_column} is null")
    ids = _ids_as_text_or_int(ids, where, id_column, offset)
    X = _list_to_matrix(table.column(embedding_column), where, offset, dim)
    _check_finite(X, where, offset)
    return ids.to_numpy(zero_copy_only=False), X


def _ids_as_text_or_int(ids: pa.Array, where: _Where, id_column: str, offset: int) -> pa.Array:
    """Item ids as strings or integers; a binary column is read as UTF-8, naming the first row that is not."""
    if pa.types.is_dictionary(ids.type):  # e.g. a pandas category column
        ids = ids.dictionary_decode()
    t = ids.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t):
        return ids
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return as_utf8_text(ids, lambda r: where.row(offset + r), id_column)
    raise SemidError(f"{where}: {id_column} has type {t}; item ids should be strings or integers")


def _list_to_matrix(
    col: pa.Array | pa.ChunkedArray, where: _Where, offset: int, dim: int | None
) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    t = arr.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
        raise SemidError(f"{where}: embedding column has type {t}, expected a list of floats")
    if not (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type)):
        raise SemidError(f"{where}: embedding values have type {t.value_type}, expected floats")
    if arr.null_count:
        raise SemidError(f"{where.row(offset + _first_true(arr.is_null()))}: embedding is null")
    n = len(arr)
    if pa.types.is_fixed_size_list(t):
        width = t.list_size
        if dim is not None and width != dim:
            raise SemidError(f"{where.row(offset)}: {width} values, expected {dim}")
    else:
        lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False)
        if dim is None:  # the most common length is the dimension, so the odd row out is the one named
            values, counts = np.unique(lengths, return_counts=True)
            width = int(values[np.argmax(counts)])
        else:
            width = dim
        bad = np.flatnonzero(lengths != width)
        if bad.size:
            row = int(bad[0])
            raise SemidError(f"{where.row(offset + row)}: {lengths[row]} values, expected {width}")
    if width == 0:
        raise SemidError(f"{where.row(offset)}: 0 values, expected a vector")
    flat = arr.flatten()
    if flat.null_count:
        raise SemidError(f"{where.row(offset + _first_true(flat.is_null()) // width)}: holds a null value")
    values = flat.to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(values, dtype=np.float32).reshape(n, width)  # (n, D)


def _check_finite(X: np.ndarray, where: _Where, offset: int) -> None:
    finite = np.isfinite(X).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        what = "NaN" if np.isnan(X[row]).any() else "inf"
        raise SemidError(f"{where.row(offset + row)}: contains {what}")


def _check_unique(ids: pa.Array | pa.ChunkedArray | np.ndarray, where: _Where, offset: int = 0) -> None:
    """Fast path: a hash count of distinct values; only input with duplicates pays for finding them."""
    arr = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(np.asarray(ids).tolist())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pc.count_distinct(arr, mode="all").as_py() == len(arr):
        return
    codes = pc.dictionary_encode(arr).indices.to_numpy(zero_copy_only=False)
    uniq, first = np.unique(codes, return_index=True)
    seen = np.zeros(len(codes), dtype=bool)
    seen[first] = True
    second = int(np.flatnonzero(~seen)[0])
    first_row = int(first[np.searchsorted(uniq, codes[second])])
    raise SemidError(
        f"{where.name}: item_id {arr[second].as_py()!r} appears at {where.rows(offset + first_row, offset + second)}"
    )


def _check_unseen(ids: np.ndarray, seen: dict, where: _Where, local: int) -> None:
    """Ids repeated across batches of a stream (:func:`_check_unique` already looked within the batch).

    ``seen`` maps each id met so far to its row number across the whole input.
    """
    keys = ids.tolist()
    start = where.part_start + local
    if seen:
        repeated = seen.keys() & keys  # a set operation in C; the loop below only runs on an error
        if repeated:
            i = next(i for i, k in enumerate(keys) if k in repeated)
            raise SemidError(
                f"{where.name}: item_id {keys[i]!r} appears at rows {seen[keys[i]]} and {start + i}"
            )
    seen.update(zip(keys, range(start, start + len(keys)), strict=True))


def _first_true(mask: pa.Array) -> int:
    return int(np.argmax(mask.to_numpy(zero_copy_only=False)))


def _concat_ids(parts: list[np.ndarray]) -> np.ndarray:
    out = np.concatenate(parts)
    return out.astype(object) if any(p.dtype == object for p in parts) else out


def open_npy(path: str | os.PathLike, label: str | None = None) -> np.ndarray:
    """A ``.npy`` array memory-mapped (no pickles); an empty or unreadable file is one error naming it
    (as ``label``, default the path)."""
    label = label or str(path)
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r")
    except EOFError:
        raise SemidError(f"{label}: empty file, not a .npy array") from None
    except (ValueError, OSError) as e:
        reason = " ".join(str(e).split())[:300]
        raise SemidError(f"{label}: not a readable .npy array ({reason})") from None


def _read_npy(path: Path, ids_path: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray]:
    X = open_npy(path, path.name)
    if X.ndim != 2:
        raise SemidError(f"{path.name}: array has shape {X.shape}, expected (n_items, dim)")
    if X.shape[0] == 0:
        raise SemidError(f"{path.name}: no rows")
    if X.shape[1] == 0:
        raise SemidError(f"{path.name}: 0 values per row, expected a vector")
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise SemidError(f"{path.name}: dtype {X.dtype}, expected floats")
    X = np.ascontiguousarray(X, dtype=np.float32)
    _check_finite(X, _Where(path.name), 0)
    if ids_path is None:
        return np.arange(X.shape[0], dtype=np.int64), X
    ids = _read_ids_file(Path(ids_path))
    if len(ids) != X.shape[0]:
        raise SemidError(f"{Path(ids_path).name}: {len(ids)} item ids for {X.shape[0]} rows of {path.name}")
    _check_unique(ids, _Where(Path(ids_path).name))
    return ids, X


def _read_ids_file(path: Path) -> np.ndarray:
    """Ids from ``.json`` (a list), ``.npy`` (a 1-D array) or text (one id a line, as strings)."""
    if not path.is_file():
        raise SemidError(f"{path}: no such file")
    if path.suffix == ".json":
        ids = read_json_file(path, "the ids")
        if not isinstance(ids, list):
            raise SemidError(f"{path.name}: expected a JSON list of item ids, got {type(ids).__name__}")
        arr = pa.array(ids)
        if arr.null_count:
            raise SemidError(f"{path.name} item {_first_true(arr.is_null())}: item id is null")
        if not (pa.types.is_string(arr.type) or pa.types.is_integer(arr.type)):
            raise SemidError(f"{path.name}: item ids should be strings or integers, got {arr.type}")
        return arr.to_numpy(zero_copy_only=False)
    if path.suffix == ".npy":
        arr = open_npy(path, path.name)
        if arr.ndim != 1:
            raise SemidError(f"{path.name}: ids array has shape {arr.shape}, expected (n_items,)")
        return arr.astype(object) if arr.dtype.kind == "U" else arr
    lines = read_utf8(path, "the ids").splitlines()
    if lines and lines[-1] == "":
        lines.pop()
    return np.asarray(lines, dtype=object)
