"""Cold start: items that no training sequence holds, but whose text and Semantic ID are known.

The promise of Semantic IDs is that a generative model can recommend an item it never saw in training,
because the item's ID shares prefixes with similar items it did see. :func:`cold_start_split` makes such
items on purpose: a seeded share of the catalogue loses every interaction except where it is a user's
*test* target, so the models train and validate without them, and the test users whose target is one of
them (:func:`cold_test_users`) measure how well each model reaches unseen items.

- TIGER can decode a cold item: its ID is in the prefix trie of constrained decoding.
- SASRec cannot rank one well: a cold item's embedding only ever received the softmax's negative gradient.
- :func:`content_scores` is the text baseline: the cosine of each item's text embedding to the mean of the
  user's history, which treats cold and warm items alike.

Example::

    >>> seqs = Sequences(np.array([0, 4, 8]), np.array([0, 1, 2, 3, 4, 3, 1, 2]))
    >>> split = cold_start_split(seqs, n_items=5, share=0.2, seed=1)
    >>> split.cold_items.tolist(), split.sequences.items.tolist()
    ([3], [0, 1, 2, 3, 4, 1, 2])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from semid.data import Sequences
from semid.errors import SemidError


@dataclass
class ColdStartSplit:
    """Sequences without the cold items (except as last items), and which users and items that leaves."""

    sequences: Sequences  # the kept users' sequences
    cold_items: np.ndarray  # (n_cold,) sorted item indices
    kept_users: np.ndarray  # (n_kept,) indices of the users still having >= 3 items, in order


def cold_start_split(
    sequences: Sequences, n_items: int, share: float = 0.05, seed: int = 0
) -> ColdStartSplit:
    """Make a seeded ``share`` of the items cold: remove them from every position but each user's last.

    Cold items are drawn uniformly among the items that occur in ``sequences`` (a catalogue item with no
    interaction is cold anyway). A user's last item (the leave-one-out test target) stays even when cold;
    every earlier occurrence (training items, history, validation target) goes. Users left with fewer than
    3 items cannot be split leave-one-out and are dropped (:attr:`ColdStartSplit.kept_users` says who
    remains). Cost: O(total items).
    """
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
        raise SemidError(f"cold-start share={share!r} should be a number in (0, 1), e.g. 0.05")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SemidError(f"seed={seed!r} should be a non-negative integer")
    seen = np.unique(sequences.items)
    n_cold = int(round(share * len(seen)))
    if n_cold < 1:
        raise SemidError(f"cold-start share={share} of {len(seen)} interacted items makes no cold item")
    rng = np.random.default_rng([seed, 0xC01D])
    cold = np.sort(rng.choice(seen, size=n_cold, replace=False))
    is_cold = np.zeros(n_items, dtype=bool)
    is_cold[cold] = True
    lengths = sequences.lengths
    last = np.zeros(len(sequences.items), dtype=bool)
    last[sequences.offsets[1:][lengths > 0] - 1] = True  # each user's final position
    keep_pos = ~is_cold[sequences.items] | last
    user_of = np.repeat(np.arange(len(lengths)), lengths)  # (total,) the user of each position
    new_lengths = np.bincount(user_of[keep_pos], minlength=len(lengths))
    kept_users = np.flatnonzero(new_lengths >= 3)
    keep_pos &= np.isin(user_of, kept_users)
    offsets = np.concatenate([[0], np.cumsum(new_lengths[kept_users])]).astype(np.int64)
    return ColdStartSplit(Sequences(offsets, sequences.items[keep_pos]), cold, kept_users)


def cold_test_users(test_target: np.ndarray, cold_items: np.ndarray) -> np.ndarray:
    """Indices of the users whose test target is a cold item."""
    return np.flatnonzero(np.isin(np.asarray(test_target), cold_items))


def content_scores(histories: list[np.ndarray], item_vectors: np.ndarray) -> np.ndarray:
    """(n_users, n_items) cosine of each item's vector to the mean of each user's history vectors.

    ``item_vectors`` (n_items, D), e.g. the items' MiniLM text embeddings. Items in a user's own history
    score ``-inf`` (a next-item task rarely repeats one). Cost: one (n_users, D) x (D, n_items) product.
    """
    V = np.asarray(item_vectors, dtype=np.float32)
    V = V / np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-12)
    if any(len(h) == 0 for h in histories):
        raise SemidError("content_scores needs a non-empty history for every user")
    U = np.stack([V[h].mean(axis=0) for h in histories])  # (n_users, D)
    U /= np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
    scores = U @ V.T  # (n_users, n_items)
    for row, h in enumerate(histories):
        scores[row, h] = -np.inf
    return scores
