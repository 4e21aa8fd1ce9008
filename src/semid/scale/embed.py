"""Embed a catalogue of any size: Parquet record batches in, part files of ``item_id`` + ``embedding`` out.

The local engine streams record batches through one :class:`~semid.scale.batches.EmbedBatch` (with the
embedding cache) and writes one part per batch; the Ray engine runs the same callable class in Ray Data
``map_batches`` actors that load the model once each. Memory is bounded by the batch size either way.
Catalogues in other formats (RecBole, Amazon, MovieLens, JSONL/CSV) are read by :mod:`semid.data` and then
embedded batch by batch the same way. Output goes to a temporary directory renamed into place at the end.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from semid._outputs import atomic_path, check_output
from semid.errors import SemidError
from semid.scale.assign import MANIFEST, _ray_session, check_engine, ray_map_parts, streamed_output
from semid.scale.batches import PATH_COLUMN, EmbedBatch
from semid.scale.parts import check_unique_ids, list_parts

__all__ = ["EmbedJobResult", "embed_dataset"]

EMBED_DIR = "a directory of embeddings"  # for messages


@dataclass
class EmbedJobResult:
    n_items: int
    n_parts: int
    dim: int | None = None
    engine: str = "local"
    seconds: dict[str, float] = field(default_factory=dict)
    template: str = ""  # the item text template used (the default one is built from the catalogue's fields)


def _is_parquet_table(paths: list[Path]) -> bool:
    return len(paths) == 1 and (
        paths[0].suffix == ".parquet" or (paths[0].is_dir() and any(paths[0].glob("*.parquet")))
    )


def embed_dataset(
    catalogue: list[str | os.PathLike] | str | os.PathLike,
    output: str | os.PathLike,
    *,
    model: str | None = None,
    template: str | None = None,
    strip_quotes: str = "tokens",
    id_column: str = "item_id",
    format: str = "auto",
    engine: str = "local",
    address: str | None = None,
    num_workers: int | None = None,
    rows_per_part: int = 8192,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    **embedder_options: Any,
) -> EmbedJobResult:
    """Embed every item and write ``output/part-*.parquet`` (``item_id`` + ``embedding``).

    A Parquet catalogue (a file or a directory of parts, with ``id_column`` and text columns) is streamed
    in record batches of ``rows_per_part`` rows (one part file each); any other catalogue format is loaded with
    :func:`semid.data.load_dataset` first. ``engine="ray"`` needs a Parquet catalogue.
    """
    paths = [Path(p) for p in (catalogue if isinstance(catalogue, (list, tuple)) else [catalogue])]
    output = Path(output)
    check_engine(engine, num_workers)
    if output.suffix == ".parquet":
        raise SemidError(f"{output}: a streamed embed writes a directory of part files; drop '.parquet'")
    check_output(output, is_dir=True, replaceable=streamed_output("embed"), what=EMBED_DIR)
    if rows_per_part < 1:
        raise SemidError(f"rows_per_part={rows_per_part} should be >= 1")
    parquet = _is_parquet_table(paths)
    if engine == "ray" and not parquet:
        raise SemidError("--engine ray reads a Parquet catalogue (a file or a directory of part files)")
    result = EmbedJobResult(n_items=0, n_parts=0, engine=engine)
    t0 = time.perf_counter()
    n_total = None
    if parquet:
        parts = list_parts(paths[0], (id_column,))
        _refuse_the_path_column(pq.read_schema(parts.files[0]).names, parts.files[0])
        check_unique_ids(parts, id_column)
        n_total = parts.n_rows
    if template is None:  # one default for every part, built from the fields of the first rows
        from semid.embed.text import default_template

        if parquet:
            sample = next(pq.ParquetFile(parts.files[0]).iter_batches(batch_size=min(rows_per_part, 10_000)))
            sample = pa.Table.from_batches([sample])
        else:
            sample = next(_loaded_batches(paths, format, id_column, 10_000))
        template = default_template(sample.drop_columns([id_column]), strip_quotes=strip_quotes).template
    result.template = template
    args = dict(model=model, template=template, strip_quotes=strip_quotes, id_column=id_column)
    with (
        atomic_path(output, is_dir=True, replaceable=streamed_output("embed"), what=EMBED_DIR) as tmp,
        _ray_session(engine, address, num_workers, progress) as workers,
    ):
        if engine == "ray":
            ray_map_parts(parts, EmbedBatch, {**args, **embedder_options}, tmp, workers, rows_per_part)
            files = sorted(tmp.glob("*.parquet"))
            result.n_items = sum(pq.read_metadata(f).num_rows for f in files)
            result.n_parts = len(files)
            if result.n_items != n_total:
                raise SemidError(f"internal error: {result.n_items:,} embeddings for {n_total:,} items")
        else:
            fn = EmbedBatch(**args, cache_dir=cache_dir, **embedder_options)
            batches = (
                _parquet_batches(parts.files, rows_per_part)
                if parquet
                else _loaded_batches(paths, format, id_column, rows_per_part)
            )
            from tqdm.auto import tqdm

            with tqdm(
                total=n_total, unit="items", unit_scale=True, desc="embed", disable=not progress
            ) as bar:
                for i, batch in enumerate(batches):
                    out = fn(batch)
                    pq.write_table(out, tmp / f"part-{i:05d}.parquet")
                    result.n_items += out.num_rows
                    result.n_parts += 1
                    bar.update(out.num_rows)
            result.dim = fn.embedder.dim
        result.seconds["embed"] = time.perf_counter() - t0
        manifest = {
            "kind": "embed",
            "n_items": result.n_items,
            "input": [str(p) for p in paths],
            "model": model,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return result


def _refuse_the_path_column(names: list[str], where: Path) -> None:
    """A streamed embed names each row's file in a ``path`` column (Ray Data's ``include_paths`` writes it
    over any such column): a catalogue field of that name would be lost from the item texts."""
    if PATH_COLUMN in names:
        raise SemidError(
            f"{where}: a column is named {PATH_COLUMN!r}, which a streamed embed uses for each row's file; "
            "rename it, or embed in memory (-o FILE.parquet)"
        )


def _parquet_batches(files: list[Path], batch_size: int) -> Iterator[pa.Table]:
    for f in files:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_size):
            yield pa.Table.from_batches([batch]).append_column(
                PATH_COLUMN, pa.array([f.name] * batch.num_rows)
            )


def _loaded_batches(paths: list[Path], format: str, id_column: str, batch_size: int) -> Iterator[pa.Table]:
    from semid.data import load_dataset

    ds = load_dataset(paths, format=format, item_id=None if id_column == "item_id" else id_column)
    if ds.catalogue is None:
        raise SemidError(f"{', '.join(map(str, paths))}: no item catalogue found (only interactions)")
    table = ds.catalogue.table
    _refuse_the_path_column(table.column_names, paths[0])
    if id_column != "item_id":  # load_dataset already mapped it to item_id
        table = table.rename_columns([id_column if c == "item_id" else c for c in table.column_names])
    for start in range(0, table.num_rows, batch_size):
        yield table.slice(start, batch_size)
