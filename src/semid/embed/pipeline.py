"""Catalogue texts -> embeddings, through the cache: only texts the cache has not seen reach the model.

Example::

    from semid.embed import embed_catalogue, load_embedder, render_texts, EmbeddingCache

    texts = render_texts(catalogue)  # "Title: ...; Brand: ...; ..."
    X = embed_catalogue(catalogue.item_ids, texts, load_embedder(), cache=EmbeddingCache())
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from semid.embed.backends import Embedder
from semid.embed.cache import EmbeddingCache, text_keys
from semid.errors import SemidError

__all__ = ["EmbedStats", "embed_catalogue"]

_CHUNK_TEXTS = 8192  # texts embedded between cache writes: an interrupted run keeps what it finished


@dataclass
class EmbedStats:
    """What one :func:`embed_catalogue` call did."""

    n_items: int = 0
    n_unique_texts: int = 0
    n_cached: int = 0  # unique texts found in the cache
    n_embedded: int = 0  # unique texts run through the model


def embed_catalogue(
    item_ids: Sequence | np.ndarray,
    texts: Sequence[str],
    embedder: Embedder,
    *,
    cache: EmbeddingCache | str | os.PathLike | None = None,
    batch_size: int | None = None,
    show_progress: bool | None = None,
    stats: EmbedStats | None = None,
) -> np.ndarray:
    """Embed one text per item -> ``(n_items, embedder.dim)`` float32, rows in item order.

    Identical texts are embedded once. With a ``cache`` (an :class:`EmbeddingCache` or its directory),
    texts already embedded by the same model identity (``embedder.name``) are read back instead of being
    embedded again, and new vectors are stored as they are computed.

    Args:
        item_ids: one id per text (named in messages, e.g. for an item whose text is empty).
        texts: the item texts, e.g. from :func:`semid.embed.render_texts`.
        embedder: the model.
        cache: where to look vectors up and store them; None: no cache.
        batch_size: most texts per forward pass (default: the embedder's).
        show_progress: a progress bar over the texts being embedded (default: for long runs on a terminal).
        stats: filled with counts (items, unique texts, cache hits, texts embedded) if given.
    """
    texts = list(texts)
    if len(item_ids) != len(texts):
        raise SemidError(f"{len(item_ids)} item ids for {len(texts)} texts")
    if not texts:
        return np.empty((0, embedder.dim), dtype=np.float32)
    bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
    if bad is not None:
        raise SemidError(
            f"item {_id(item_ids, bad)}: text is a {type(texts[bad]).__name__}, expected a string"
        )
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise SemidError(
            f"item {_id(item_ids, empty[0])} has no text to embed "
            f"({len(empty)} item(s) like it; check the template's fields)"
        )
    keys = text_keys(texts)
    index: dict[bytes, int] = {}
    for k in keys:  # unique texts, numbered by first occurrence
        index.setdefault(k, len(index))
    ukeys = list(index)
    inverse = np.fromiter((index[k] for k in keys), dtype=np.int64, count=len(keys))  # (n,) -> unique
    urows = np.empty(len(ukeys), dtype=np.int64)  # unique text -> its first row
    urows[inverse[::-1]] = np.arange(len(keys) - 1, -1, -1)

    own_cache = cache is not None and not isinstance(cache, EmbeddingCache)
    store = EmbeddingCache(cache) if own_cache else cache
    try:
        if store is not None:  # no model load yet: on a full hit the model is never loaded
            found, U = store.get(embedder.name, ukeys)
        else:
            found, U = np.zeros(len(ukeys), dtype=bool), np.zeros((len(ukeys), 0), np.float32)
        todo = np.flatnonzero(~found)
        if len(todo) and U.shape[1] != embedder.dim:  # the cache had nothing for this model
            U = np.zeros((len(ukeys), embedder.dim), np.float32)
        # Longest texts first, in chunks: each chunk is batched by token length inside encode, and is
        # stored before the next starts.
        todo = todo[np.argsort([-len(texts[urows[j]]) for j in todo], kind="stable")]
        from tqdm.auto import tqdm

        disable = (None if len(todo) >= 1000 else True) if show_progress is None else not show_progress
        with tqdm(total=len(todo), desc="embed", unit="text", disable=disable) as bar:
            for start in range(0, len(todo), _CHUNK_TEXTS):
                chunk = todo[start : start + _CHUNK_TEXTS]
                V = embedder.encode([texts[urows[j]] for j in chunk], batch_size=batch_size, progress=bar)
                U[chunk] = V
                if store is not None:
                    store.put(embedder.name, [ukeys[j] for j in chunk], V)
    finally:
        if own_cache and store is not None:
            store.close()
    if stats is not None:
        stats.n_items, stats.n_unique_texts = len(texts), len(ukeys)
        stats.n_cached, stats.n_embedded = int(found.sum()), len(todo)
    return U[inverse]


def _id(item_ids: Sequence | np.ndarray, i: int) -> str:
    v = item_ids[i]
    return repr(v.item() if isinstance(v, np.generic) else v)
