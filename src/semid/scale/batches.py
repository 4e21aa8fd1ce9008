"""Pure functions over batches, the unit of work of both engines (one process, or Ray Data workers).

Each is a callable class: the constructor loads the model from a directory (once per worker), ``__call__``
maps one ``pyarrow.Table`` batch to another. Nothing here holds more than one batch.

- :class:`EncodeBatch`: ``item_id`` + ``embedding`` -> ``item_id`` + ``base_codes`` + ``bucket`` (the hash
  bucket of the code prefix, which decides where an item is deduplicated).
- :class:`EmbedBatch`: catalogue rows -> ``item_id`` + ``embedding`` (text template, then the model).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from semid.errors import SemidError
from semid.scale.hashing import prefix_buckets

__all__ = ["EmbedBatch", "EncodeBatch", "codes_column", "embedding_column", "matrix_from_column"]

PATH_COLUMN = "path"  # added by ray.data.read_parquet(include_paths=True): names the file in errors


def codes_column(codes: np.ndarray) -> pa.FixedSizeListArray:
    """``(n, L)`` ints -> ``fixed_size_list<int32, L>`` (zero copy)."""
    codes = np.ascontiguousarray(codes, dtype=np.int32)
    return pa.FixedSizeListArray.from_arrays(pa.array(codes.reshape(-1)), codes.shape[1])


def embedding_column(X: np.ndarray) -> pa.FixedSizeListArray:
    X = np.ascontiguousarray(X, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1)), X.shape[1])


def matrix_from_column(col: pa.Array | pa.ChunkedArray, width: int, dtype: Any) -> np.ndarray:
    """A fixed-size (or equal-length) list column -> ``(n, width)`` array."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=dtype).reshape(-1, width)


def _file_of(batch: pa.Table, row: int) -> str:
    if PATH_COLUMN in batch.column_names:
        return os.path.basename(str(batch.column(PATH_COLUMN)[row].as_py()))
    return "input"


class EncodeBatch:
    """Quantizer codes and dedup buckets for a batch of embeddings.

    Args:
        model_dir: a directory from ``semid fit`` (loaded once, without pickle).
        n_buckets: how many prefix buckets the job deduplicates in.
        keep_embeddings: also return the embeddings (``dedup="remap"`` ranks codes by them later).
    """

    def __init__(
        self,
        model_dir: str | os.PathLike,
        *,
        n_buckets: int,
        id_column: str = "item_id",
        embedding_column: str = "embedding",
        keep_embeddings: bool = False,
        device: str = "cpu",
    ) -> None:
        from semid.quantize import load_quantizer

        self.model = load_quantizer(model_dir, device=device)
        self.n_buckets = n_buckets
        self.id_column, self.embedding_column = id_column, embedding_column
        self.keep_embeddings = keep_embeddings

    @property
    def dim(self) -> int:
        return int(self.model.n_features_in_)

    def encode_arrays(self, item_ids: pa.Array | np.ndarray, X: np.ndarray) -> pa.Table:
        codes = self.model.encode(X, balanced=False)  # (n, L); a batch alone cannot be balanced
        ids = item_ids if isinstance(item_ids, pa.Array) else pa.array(np.asarray(item_ids).tolist())
        cols = {
            "item_id": ids,
            "base_codes": codes_column(codes),
            "bucket": pa.array(prefix_buckets(codes, self.n_buckets)),
        }
        if self.keep_embeddings:
            cols["embedding"] = embedding_column(X)
        return pa.table(cols)

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Validate a batch read by Ray Data (errors name the part file and the item) and encode it."""
        ids = batch.column(self.id_column).combine_chunks()
        if ids.null_count:
            row = int(np.argmax(ids.is_null().to_numpy(zero_copy_only=False)))
            raise SemidError(f"{_file_of(batch, row)}: {self.id_column} is null")
        col = batch.column(self.embedding_column).combine_chunks()
        name = lambda row: f"{_file_of(batch, row)}: item_id {ids[row].as_py()!r}"  # noqa: E731
        t = col.type
        if not (pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)):
            raise SemidError(
                f"{_file_of(batch, 0)}: embedding column has type {t}, expected a list of floats"
            )
        if col.null_count:
            raise SemidError(
                f"{name(int(np.argmax(col.is_null().to_numpy(zero_copy_only=False))))}: no embedding"
            )
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(lengths != self.dim)
        if bad.size:
            raise SemidError(f"{name(int(bad[0]))}: {lengths[bad[0]]} values, expected {self.dim}")
        X = matrix_from_column(col, self.dim, np.float32)
        finite = np.isfinite(X).all(axis=1)
        if not finite.all():
            raise SemidError(f"{name(int(np.argmin(finite)))}: embedding contains NaN or inf")
        return self.encode_arrays(ids, X)


class EmbedBatch:
    """Embeddings for a batch of catalogue rows: render each item's text, then run the model.

    Args:
        model: a model directory or hub name (None: the packaged all-MiniLM-L6-v2).
        template: the item text template (see :class:`semid.embed.TextTemplate`).
        embedder_options: passed to :func:`semid.embed.load_embedder` (backend, dim, device, ...).
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        template: str | None = None,
        strip_quotes: str = "tokens",
        id_column: str = "item_id",
        cache_dir: str | os.PathLike | None = None,
        **embedder_options: Any,
    ) -> None:
        from semid.embed.backends import load_embedder
        from semid.embed.text import DEFAULT_TEMPLATE, TextTemplate

        self.embedder = load_embedder(model, **embedder_options)
        self.template = TextTemplate(template or DEFAULT_TEMPLATE, strip_quotes=strip_quotes)
        self.id_column = id_column
        self.cache_dir = cache_dir

    def __call__(self, batch: pa.Table) -> pa.Table:
        from semid.data.model import Catalogue
        from semid.embed.pipeline import embed_catalogue

        table = batch.drop_columns([PATH_COLUMN]) if PATH_COLUMN in batch.column_names else batch
        if self.id_column != "item_id":
            if "item_id" in table.column_names:
                table = table.drop_columns(["item_id"])
            table = table.rename_columns(
                ["item_id" if c == self.id_column else c for c in table.column_names]
            )
        where = _file_of(batch, 0)
        try:
            cat = Catalogue(table)
        except SemidError as e:
            raise SemidError(f"{where}: {e}") from None
        texts = self.template.render(cat)
        ids = cat.table.column("item_id").combine_chunks()
        try:
            X = embed_catalogue(cat.item_ids, texts, self.embedder, cache=self.cache_dir, show_progress=False)
        except SemidError as e:
            raise SemidError(f"{where}: {e}") from None
        return pa.table({"item_id": ids, "embedding": embedding_column(X)})
