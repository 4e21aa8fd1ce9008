"""The embed room: item texts -> vectors.

- :mod:`~semid.embed.text`: templates over catalogue fields (``Title: {title}; Brand: {brand}; ...``).
- :mod:`~semid.embed.backends`: :class:`Embedder` over sentence-transformers and Hugging Face models.
- :mod:`~semid.embed.cache`: vectors keyed by (model identity, sha256 of the text), in SQLite.
- :mod:`~semid.embed.pipeline`: :func:`embed_catalogue`, the three together.
- :mod:`~semid.embed.store`: embeddings files (Parquet / ``.npy``): read, validate, write.

Names are imported on first use, so ``import semid.embed`` stays cheap (no torch, no transformers).

Example::

    from semid.embed import EmbeddingCache, embed_catalogue, load_embedder, render_texts, write_embeddings

    texts = render_texts(catalogue)
    X = embed_catalogue(catalogue.item_ids, texts, load_embedder(), cache=EmbeddingCache())
    write_embeddings("embeddings.parquet", catalogue.item_ids, X)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "DEFAULT_TEMPLATE": "text",
    "TextTemplate": "text",
    "render_texts": "text",
    "Embedder": "backends",
    "HFEmbedder": "backends",
    "SentenceTransformerEmbedder": "backends",
    "load_embedder": "backends",
    "EmbeddingCache": "cache",
    "default_cache_dir": "cache",
    "text_keys": "cache",
    "EmbedStats": "pipeline",
    "embed_catalogue": "pipeline",
    "iter_embedding_batches": "store",
    "read_embeddings": "store",
    "read_metadata": "store",
    "write_embeddings": "store",
}

__all__ = [
    "DEFAULT_TEMPLATE",
    "EmbedStats",
    "Embedder",
    "EmbeddingCache",
    "HFEmbedder",
    "SentenceTransformerEmbedder",
    "TextTemplate",
    "default_cache_dir",
    "embed_catalogue",
    "iter_embedding_batches",
    "load_embedder",
    "read_embeddings",
    "read_metadata",
    "render_texts",
    "text_keys",
    "write_embeddings",
]

if TYPE_CHECKING:
    from semid.embed.backends import Embedder, HFEmbedder, SentenceTransformerEmbedder, load_embedder
    from semid.embed.cache import EmbeddingCache, default_cache_dir, text_keys
    from semid.embed.pipeline import EmbedStats, embed_catalogue
    from semid.embed.store import iter_embedding_batches, read_embeddings, read_metadata, write_embeddings
    from semid.embed.text import DEFAULT_TEMPLATE, TextTemplate, render_texts


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"semid.embed.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'semid.embed' has no attribute {name!r}")
