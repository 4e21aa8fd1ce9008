"""Parquet inputs as part files: list and validate them up front, count rows from footers, sample, and
check item ids are unique across the whole input with bounded memory.

A "dataset" here is a ``.parquet`` file or a directory of ``*.parquet`` part files (read in name order),
the layout Spark, Ray, DuckDB and ``semid`` itself write.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from semid.data._io import as_utf8_text
from semid.errors import SemidError
from semid.scale.hashing import hash_strings

__all__ = ["Parts", "check_unique_ids", "list_parts", "sample_embeddings"]

IDS_PER_BUCKET = 4_000_000  # item ids held at once by the uniqueness check (~150 MB of strings)


@dataclass(frozen=True)
class Parts:
    """The part files of a Parquet dataset with their row counts (from the footers, no data read)."""

    root: Path
    files: list[Path]
    rows: list[int]

    @property
    def n_rows(self) -> int:
        return sum(self.rows)

    @property
    def starts(self) -> np.ndarray:
        """Global row number of each part's first row."""
        return np.concatenate([[0], np.cumsum(self.rows)[:-1]]).astype(np.int64)

    def name(self, i: int) -> str:
        return self.files[i].name if self.root.is_dir() else self.root.name

    def where(self, global_row: int) -> str:
        """``dir row R (part row r)`` for a directory, ``file row R`` for a file."""
        i = int(np.searchsorted(self.starts, global_row, side="right") - 1)
        if not self.root.is_dir():
            return f"{self.root.name} row {global_row}"
        return f"{self.root.name} row {global_row} ({self.files[i].name} row {global_row - self.starts[i]})"


def list_parts(path: str | os.PathLike, columns: tuple[str, ...] = ()) -> Parts:
    """Open every part's footer: a corrupt file or a missing column fails here, naming the file."""
    path = Path(path)
    if not path.exists():
        raise SemidError(f"{path}: no such file or directory")
    if path.is_dir():
        files = sorted(p for p in path.glob("*.parquet") if not p.name.startswith((".", "_")))
        if not files:
            raise SemidError(f"{path}: no .parquet files in this directory")
    elif path.suffix == ".parquet":
        files = [path]
    else:
        raise SemidError(f"{path.name}: expected a .parquet file or a directory of them, got {path.suffix!r}")
    rows = []
    for f in files:
        try:
            meta = pq.read_metadata(f)
            names = pq.read_schema(f).names
        except (pa.ArrowInvalid, OSError) as e:
            raise SemidError(f"{f.name}: not a readable Parquet file ({e})") from None
        for col in columns:
            if col not in names:
                raise SemidError(f"{f.name}: no column {col!r} (columns: {', '.join(names)})")
        rows.append(meta.num_rows)
    parts = Parts(path, files, rows)
    if parts.n_rows == 0:
        raise SemidError(f"{path.name}: no rows")
    return parts


def check_unique_ids(parts: Parts, id_column: str = "item_id", *, batch_size: int = 1 << 20) -> None:
    """Fail on the first item id that occurs twice anywhere in ``parts``, naming both rows.

    Reads only the id column. Up to :data:`IDS_PER_BUCKET` ids this is one in-memory check; beyond, ids
    are spilled to hash buckets on disk and each bucket is checked alone, so memory stays bounded.
    """
    n_buckets = max(1, -(-parts.n_rows // IDS_PER_BUCKET))
    with tempfile.TemporaryDirectory(prefix="semid-ids-") as tmp:
        writers: dict[int, ipc.RecordBatchStreamWriter] = {}
        held: list[pa.RecordBatch] = []
        schema = pa.schema([("item_id", pa.string()), ("row", pa.int64())])
        start = 0
        for f in parts.files:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=[id_column]):
                ids = batch.column(0)
                if ids.null_count:
                    row = start + int(np.argmax(ids.is_null().to_numpy(zero_copy_only=False)))
                    raise SemidError(f"{parts.where(row)}: {id_column} is null")
                ids = _ids_as_text(ids, parts, start, id_column)
                rows = pa.array(np.arange(start, start + len(ids), dtype=np.int64))
                start += len(ids)
                if n_buckets == 1:
                    held.append(pa.record_batch([ids, rows], schema=schema))
                    continue
                bucket = (hash_strings(ids) % np.uint64(n_buckets)).astype(np.int64)
                order = np.argsort(bucket, kind="stable")
                bounds = np.searchsorted(bucket[order], np.arange(n_buckets + 1))
                for b in range(n_buckets):
                    take = pa.array(order[bounds[b] : bounds[b + 1]])
                    if len(take) == 0:
                        continue
                    if b not in writers:
                        writers[b] = ipc.new_stream(os.path.join(tmp, f"{b}.arrow"), schema)
                    writers[b].write_batch(pa.record_batch([ids.take(take), rows.take(take)], schema=schema))
        for w in writers.values():
            w.close()
        if n_buckets == 1:
            _check_bucket(pa.Table.from_batches(held, schema=schema), parts, id_column)
            return
        for b in sorted(writers):
            with ipc.open_stream(os.path.join(tmp, f"{b}.arrow")) as reader:
                _check_bucket(reader.read_all(), parts, id_column)


def _ids_as_text(ids: pa.Array, parts: Parts, start: int, id_column: str) -> pa.Array:
    """A batch of ids (from global row ``start``) as strings; bytes that are not UTF-8 name their row."""
    if pa.types.is_dictionary(ids.type):  # e.g. a pandas category column
        ids = ids.dictionary_decode()
    return as_utf8_text(ids, lambda r: parts.where(start + r), id_column)


def _check_bucket(table: pa.Table, parts: Parts, id_column: str) -> None:
    ids = table.column("item_id").combine_chunks()
    if pc.count_distinct(ids, mode="all").as_py() == len(ids):
        return
    rows = table.column("row").to_numpy()
    order = pc.sort_indices(table, [("item_id", "ascending"), ("row", "ascending")]).to_numpy()
    sorted_ids = ids.take(pa.array(order))
    same = pc.equal(sorted_ids[1:], sorted_ids[:-1]).to_numpy(zero_copy_only=False)
    dup_pairs = np.flatnonzero(same)
    # The duplicate whose second occurrence comes first in the input is the one to name.
    second_rows = rows[order[dup_pairs + 1]]
    k = int(dup_pairs[np.argmin(second_rows)])
    first, second = int(rows[order[k]]), int(rows[order[k + 1]])
    raise SemidError(
        f"{parts.root.name}: {id_column} {sorted_ids[k].as_py()!r} appears twice: "
        f"at {parts.where(first)} and {parts.where(second)}"
    )


def sample_embeddings(
    path: str | os.PathLike,
    n: int,
    *,
    random_state: int = 0,
    id_column: str = "item_id",
    embedding_column: str = "embedding",
    batch_size: int = 65536,
) -> tuple[np.ndarray, np.ndarray, int]:
    """A seeded uniform sample of ``n`` rows without reading the whole dataset into memory.

    Returns ``(item_ids, X, n_total)``; rows keep their input order. The same seed and input give the
    same sample on any machine. With ``n >= n_total`` every row comes back.
    """
    from semid.embed.store import iter_embedding_batches

    parts = list_parts(path, (id_column, embedding_column))
    total = parts.n_rows
    rng = np.random.default_rng(random_state)
    chosen = np.arange(total) if n >= total else np.sort(rng.choice(total, size=n, replace=False))
    ids_out: list[np.ndarray] = []
    x_out: list[np.ndarray] = []
    start = 0
    for ids, X in iter_embedding_batches(
        path, batch_size, id_column=id_column, embedding_column=embedding_column, check_unique=False
    ):
        lo, hi = np.searchsorted(chosen, [start, start + len(ids)])
        local = chosen[lo:hi] - start
        if len(local):
            ids_out.append(ids[local])
            x_out.append(X[local])
        start += len(ids)
    item_ids = np.concatenate(ids_out)
    if any(a.dtype == object for a in ids_out):
        item_ids = item_ids.astype(object)
    return item_ids, np.concatenate(x_out), total
