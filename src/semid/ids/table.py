"""The ``ids.parquet`` file: one row per item with its Semantic ID.

Columns: ``item_id`` (as given), ``semantic_id`` (string in the chosen format), ``codes`` (list<int32>,
the unique codes) and ``base_codes`` (list<int32>, the quantizer's codes before dedup). File metadata
(``semid`` key, JSON) records the format, dedup strategy, codebook sizes and quantizer fingerprint.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from semid._utils import atomic_path
from semid.errors import SemidError, first_line

META_KEY = b"semid"


@dataclass
class IdTable:
    """An ``ids.parquet`` in memory: aligned arrays plus the metadata needed to interpret them."""

    item_ids: np.ndarray
    semantic_ids: list[str]
    codes: np.ndarray
    base_codes: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.semantic_ids)


def _list_column(codes: np.ndarray) -> pa.Array:
    codes = np.ascontiguousarray(codes, dtype=np.int32)
    n, L = codes.shape
    offsets = pa.array(np.arange(0, n * L + 1, L, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(codes.reshape(-1)))


def write_ids(path: str | os.PathLike, table: IdTable) -> Path:
    """Write atomically (temp file + rename)."""
    path = Path(path)
    item_ids = table.item_ids
    ids_arr = pa.array(
        item_ids.tolist() if isinstance(item_ids, np.ndarray) and item_ids.dtype == object else item_ids
    )
    t = pa.table(
        {
            "item_id": ids_arr,
            "semantic_id": pa.array(table.semantic_ids, type=pa.string()),
            "codes": _list_column(table.codes),
            "base_codes": _list_column(table.base_codes),
        }
    )
    t = t.replace_schema_metadata({META_KEY: json.dumps(table.meta, sort_keys=True).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(t, tmp)
    return path


def _codes_from_list(col: pa.ChunkedArray, path: Path, name: str) -> np.ndarray:
    arr = col.combine_chunks()
    if arr.null_count:
        raise SemidError(
            f"{path} row {int(np.argmax(arr.is_null().to_numpy(zero_copy_only=False)))}: {name} is null"
        )
    lengths = arr.value_lengths().to_numpy()
    if lengths.size == 0:
        return np.zeros((0, 0), dtype=np.int32)
    if (lengths != lengths[0]).any():
        row = int(np.argmax(lengths != lengths[0]))
        raise SemidError(f"{path} row {row}: {name} has {lengths[row]} levels, expected {lengths[0]}")
    return arr.flatten().to_numpy().astype(np.int32).reshape(-1, int(lengths[0]))


def _parts(path: Path) -> list[Path]:
    """The files an IDs path holds: itself, or a directory's ``*.parquet`` parts (not hidden, not ``_*``)."""
    if path.is_dir():
        return sorted(p for p in path.glob("*.parquet") if not p.name.startswith((".", "_")))
    return [path] if path.is_file() else []


def _meta(schema: pa.Schema) -> dict[str, Any]:
    raw = (schema.metadata or {}).get(META_KEY)
    return json.loads(raw) if raw else {}


def read_ids_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata of an ``ids.parquet`` (or of the first part of a directory of parts) without reading
    its rows: ``{}`` when the path is no readable IDs file. Cost: one Parquet footer."""
    files = _parts(Path(path))
    try:
        return _meta(pq.read_schema(files[0])) if files else {}
    except (pa.ArrowInvalid, OSError, ValueError):
        return {}


def read_ids(path: str | os.PathLike) -> IdTable:
    """Read an ``ids.parquet`` written by ``semid assign``, or the directory of ``part-*.parquet`` files a
    streamed or distributed ``semid assign`` writes (validates the columns)."""
    path = Path(path)
    files = _parts(path)
    if not files:
        raise SemidError(
            f"{path}: no .parquet part files in this directory" if path.is_dir() else f"{path}: no such file"
        )
    tables = []
    for f in files:  # each part on its own: a folder of other Parquet files is named by its first stranger
        where = path if len(files) == 1 else f
        try:
            tables.append(pq.read_table(f))
        except (pa.ArrowInvalid, OSError) as e:
            raise SemidError(f"{where}: not a readable Parquet file ({first_line(e)})") from None
        names = tables[-1].column_names
        missing = [c for c in ("item_id", "semantic_id", "codes") if c not in names]
        if missing:
            raise SemidError(f"{where}: missing column(s) {', '.join(missing)} (has {', '.join(names)})")
    try:
        t = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    except pa.ArrowInvalid as e:
        raise SemidError(f"{path}: its parts do not share one schema ({first_line(e)})") from None
    codes = _codes_from_list(t["codes"], path, "codes")
    base = _codes_from_list(t["base_codes"], path, "base_codes") if "base_codes" in t.column_names else codes
    meta = _meta(t.schema)
    return IdTable(
        item_ids=t["item_id"].to_numpy(zero_copy_only=False),
        semantic_ids=t["semantic_id"].to_pylist(),
        codes=codes,
        base_codes=base,
        meta=meta,
    )
