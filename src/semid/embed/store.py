"""Embedding files: Parquet (``item_id`` + ``embedding`` list<float32>) or ``.npy`` (+ an ids file).

``read_embeddings`` validates everything a quantizer relies on and names the file and row of the first
problem: ragged rows, nulls, NaN/inf, duplicate ids, an empty file. Conversion is vectorised (list offsets
and flat values straight from Arrow), never a Python loop over rows.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from semid._utils import atomic_path
from semid.errors import SemidError


def _check_matrix(X: np.ndarray, name: str, row_offset: int = 0) -> None:
    finite = np.isfinite(X).all(1)
    if not finite.all():
        row = int(np.argmin(finite))
        what = "NaN" if np.isnan(X[row]).any() else "inf"
        raise SemidError(f"{name} row {row + row_offset}: contains {what}")


def _check_unique(ids: np.ndarray, name: str) -> None:
    keys = ids.astype(str) if ids.dtype == object else ids
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    dup = np.flatnonzero(sk[1:] == sk[:-1])
    if dup.size:
        first_rows = sorted(order[np.flatnonzero(sk == sk[dup[0]])][:2].tolist())
        raise SemidError(
            f"{name}: item_id {ids[first_rows[0]]!r} appears at rows {first_rows[0]} and {first_rows[1]}"
        )


def _list_to_matrix(
    col: pa.ChunkedArray | pa.Array, name: str, row_offset: int = 0, dim: int | None = None
) -> np.ndarray:
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    if arr.null_count:
        row = int(np.argmax(arr.is_null().to_numpy(zero_copy_only=False)))
        raise SemidError(f"{name} row {row + row_offset}: embedding is null")
    if pa.types.is_fixed_size_list(arr.type):
        width = arr.type.list_size
        values = arr.flatten().to_numpy(zero_copy_only=False)
    elif pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type):
        lengths = arr.value_lengths().to_numpy(zero_copy_only=False)
        width = int(lengths[0]) if dim is None else dim
        bad = np.flatnonzero(lengths != width)
        if bad.size:
            row = int(bad[0])
            raise SemidError(f"{name} row {row + row_offset}: {lengths[row]} values, expected {width}")
        values = arr.flatten()
        if values.null_count:
            pos = int(np.argmax(values.is_null().to_numpy(zero_copy_only=False)))
            raise SemidError(f"{name} row {pos // max(width, 1) + row_offset}: embedding holds a null value")
        values = values.to_numpy(zero_copy_only=False)
    else:
        raise SemidError(f"{name}: embedding column has type {arr.type}, expected a list of floats")
    if dim is not None and width != dim:
        raise SemidError(f"{name} row {row_offset}: {width} values, expected {dim}")
    if not np.issubdtype(values.dtype, np.number):
        raise SemidError(f"{name}: embedding values have type {arr.type.value_type}, expected floats")
    if width == 0:
        raise SemidError(f"{name} row {row_offset}: 0 values, expected an embedding")
    return np.ascontiguousarray(values, dtype=np.float32).reshape(n, width)


def _read_ids_file(path: Path, n: int) -> np.ndarray:
    if not path.is_file():
        raise SemidError(f"{path}: no such file")
    if path.suffix == ".json":
        try:
            ids = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise SemidError(f"{path} line {e.lineno}: invalid JSON ({e.msg})") from None
        if not isinstance(ids, list):
            raise SemidError(f"{path}: expected a JSON list of item ids")
        arr = np.asarray([str(i) for i in ids], dtype=object)
    elif path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
    else:
        arr = np.asarray(path.read_text().splitlines(), dtype=object)
    if arr.shape[0] != n:
        raise SemidError(f"{path}: {arr.shape[0]} item ids for {n} embedding rows")
    return arr


def read_embeddings(
    path: str | os.PathLike,
    *,
    id_column: str = "item_id",
    embedding_column: str = "embedding",
    ids_path: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(item_ids (n,), X (n, D) float32)`` from a Parquet file/directory or a ``.npy`` matrix."""
    path = Path(path)
    name = path.name
    if not path.exists():
        raise SemidError(f"{path}: no such file")
    if path.suffix == ".npy":
        try:
            X = np.load(path, allow_pickle=False, mmap_mode="r")
        except ValueError as e:
            raise SemidError(f"{path}: not a readable .npy matrix ({e})") from None
        if X.ndim != 2:
            raise SemidError(f"{name}: array has shape {X.shape}, expected (n_items, dim)")
        if X.shape[0] == 0:
            raise SemidError(f"{name}: no rows")
        if not np.issubdtype(X.dtype, np.number):
            raise SemidError(f"{name}: dtype {X.dtype}, expected floats")
        X = np.ascontiguousarray(X, dtype=np.float32)
        ids = _read_ids_file(Path(ids_path), X.shape[0]) if ids_path is not None else np.arange(X.shape[0])
    elif path.suffix == ".parquet" or path.is_dir():
        try:
            table = pq.read_table(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise SemidError(f"{path}: not a readable Parquet file ({e})") from None
        missing = [c for c in (id_column, embedding_column) if c not in table.column_names]
        if missing:
            raise SemidError(f"{name}: no column {missing[0]!r} (columns: {', '.join(table.column_names)})")
        if table.num_rows == 0:
            raise SemidError(f"{name}: no rows")
        X = _list_to_matrix(table[embedding_column], name)
        idcol = table[id_column]
        if idcol.null_count:
            row = int(np.argmax(idcol.is_null().to_numpy(zero_copy_only=False)))
            raise SemidError(f"{name} row {row}: {id_column} is null")
        ids = idcol.to_numpy(zero_copy_only=False)
    else:
        raise SemidError(f"{path}: unknown embeddings format {path.suffix!r} (expected .parquet or .npy)")
    _check_matrix(X, name)
    _check_unique(ids, name)
    return ids, X


def write_embeddings(path: str | os.PathLike, item_ids: np.ndarray | list, X: np.ndarray) -> Path:
    """Write Parquet (``item_id``, ``embedding`` list<float32>) atomically."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    n, d = X.shape
    emb = pa.ListArray.from_arrays(
        pa.array(np.arange(0, n * d + 1, d, dtype=np.int32)), pa.array(X.reshape(-1))
    )
    ids = item_ids.tolist() if isinstance(item_ids, np.ndarray) else list(item_ids)
    table = pa.table({"item_id": pa.array(ids), "embedding": emb})
    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def iter_embedding_batches(
    path: str | os.PathLike,
    batch_size: int = 65536,
    *,
    id_column: str = "item_id",
    embedding_column: str = "embedding",
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Stream ``(item_ids, X)`` batches from a Parquet file or a directory of part files (bounded memory).

    Rows are validated per batch; error messages give the file and the row number within that file.
    """
    path = Path(path)
    files = sorted(path.glob("*.parquet")) if path.is_dir() else [path]
    if not files:
        raise SemidError(f"{path}: no .parquet files")
    dim = None
    for f in files:
        try:
            pf = pq.ParquetFile(f)
        except (pa.ArrowInvalid, OSError) as e:
            raise SemidError(f"{f}: not a readable Parquet file ({e})") from None
        offset = 0
        for batch in pf.iter_batches(batch_size=batch_size, columns=[id_column, embedding_column]):
            X = _list_to_matrix(batch.column(embedding_column), f.name, offset, dim)
            dim = X.shape[1]
            _check_matrix(X, f.name, offset)
            yield batch.column(id_column).to_numpy(zero_copy_only=False), X
            offset += batch.num_rows
