"""Codes -> unique Semantic IDs. Items that share all codes (a collision) are told apart by a strategy:

- ``"suffix"``: one extra level counts duplicates, ``12-4-9-0``, ``12-4-9-1`` (as TIGER and the
  ``semantic-id`` package do). Inside a collision group the order is that of the item ids (string order),
  so the result does not depend on how the input rows are ordered or partitioned.
- ``"remap"``: IDs keep their length: the first item of a group (same order) keeps its codes, every other
  one moves to the nearest *unused* code of the last level under the same prefix (as in "Purely Semantic
  Indexing", arXiv 2509.16446). Nearness comes from the quantizer's ``rank_last_level``.
- ``"none"``: codes as they are (not unique).

The SQLite :class:`~semid.ids.registry.Registry` applies the same rules to items it has not seen before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from semid.errors import SemidError
from semid.quantize.metrics import row_keys

DEDUP_STRATEGIES = ("suffix", "remap", "none")


@dataclass
class DedupResult:
    """Unique codes plus what it took: ``n_collided`` items shared codes, ``n_moved`` were remapped."""

    codes: np.ndarray
    strategy: str
    n_collided: int
    n_moved: int = 0


def check_strategy(strategy: str) -> str:
    if strategy not in DEDUP_STRATEGIES:
        raise SemidError(f"dedup={strategy!r} is not one of {', '.join(map(repr, DEDUP_STRATEGIES))}")
    return strategy


def stable_order(item_ids: Sequence[Any] | np.ndarray | None, n: int) -> np.ndarray:
    """Row order used inside collision groups: by item id as a string (row order when ids are absent)."""
    if item_ids is None:
        return np.arange(n)
    keys = (
        np.asarray([str(i) for i in item_ids])
        if not isinstance(item_ids, np.ndarray)
        else item_ids.astype(str)
    )
    if keys.shape[0] != n:
        raise SemidError(f"{keys.shape[0]} item ids for {n} rows of codes")
    return np.argsort(keys, kind="stable")


def deduplicate(
    codes: Any,
    strategy: str = "suffix",
    *,
    item_ids: Sequence[Any] | np.ndarray | None = None,
    rank_last_level: Callable[[np.ndarray], np.ndarray] | None = None,
) -> DedupResult:
    """Make rows of ``codes`` (n, L) unique with ``strategy``; returns codes in the input row order.

    ``rank_last_level(rows)`` (needed for ``"remap"``) returns, for those row indices, the last level's
    codes ordered nearest first, e.g. ``lambda rows: model.rank_last_level(X[rows])``.
    """
    check_strategy(strategy)
    codes = np.asarray(codes)
    if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
        raise SemidError(
            f"codes have shape {codes.shape} and dtype {codes.dtype}, expected an integer (n, levels) matrix"
        )
    n = codes.shape[0]
    order = stable_order(item_ids, n)
    keys = row_keys(codes)
    # Rank of each row inside its collision group, in the stable order. (n,)
    sorted_rows = order[np.argsort(keys[order], kind="stable")]
    sk = keys[sorted_rows]
    group_start = np.r_[0, np.flatnonzero(sk[1:] != sk[:-1]) + 1] if n else np.zeros(0, dtype=np.int64)
    start_of = np.repeat(group_start, np.diff(np.r_[group_start, n])) if n else group_start
    rank = np.empty(n, dtype=np.int64)
    rank[sorted_rows] = np.arange(n) - start_of
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    n_collided = int((counts[inverse.reshape(-1)] > 1).sum())

    if strategy == "none":
        return DedupResult(codes.copy(), strategy, n_collided)
    if strategy == "suffix":
        out = np.concatenate([codes, rank[:, None].astype(codes.dtype)], axis=1)
        return DedupResult(out, strategy, n_collided)

    # remap
    movers = np.flatnonzero(rank > 0)
    out = codes.copy()
    if movers.size == 0:
        return DedupResult(out, strategy, n_collided, 0)
    if rank_last_level is None:
        raise SemidError("dedup='remap' needs the quantizer's rank_last_level (nearest last-level codes)")
    movers = movers[np.lexsort((np.argsort(order)[movers], rank[movers]))]  # earlier ranks move first
    ranking = check_ranking(rank_last_level(movers), len(movers))
    prefix_keys = row_keys(codes[:, :-1]) if codes.shape[1] > 1 else np.zeros(n, dtype=np.int64)
    # Codes already taken under each prefix that a mover needs: everything that stays put.
    needed = np.unique(prefix_keys[movers])
    stay = np.flatnonzero((rank == 0) & np.isin(prefix_keys, needed))
    used: dict[int, set[int]] = {int(p): set() for p in needed}
    for p, c in zip(prefix_keys[stay].tolist(), codes[stay, -1].tolist(), strict=True):
        used[p].add(c)
    for j, row in enumerate(movers.tolist()):
        p = int(prefix_keys[row])
        taken = used[p]
        for c in ranking[j].tolist():
            if c not in taken:
                taken.add(c)
                out[row, -1] = c
                break
        else:
            prefix = "-".join(map(str, codes[row, :-1].tolist()))
            raise SemidError(
                f"dedup='remap': prefix {prefix} holds more items than the last level has codes "
                f"({ranking.shape[1]}); use dedup='suffix' (CLI: --dedup suffix) or a larger last codebook"
            )
    return DedupResult(out, strategy, n_collided, int(movers.size))


MAX_CODE = np.iinfo(np.int32).max  # exports store codes as int32


def check_ranking(ranking: np.ndarray, n: int) -> np.ndarray:
    """The ranking a ``rank_last_level`` callable returned, checked: ``(n, K_last)`` integer codes in
    range (a float ranking would be cut to integers and could hand two items one code)."""
    arr = np.asarray(ranking)
    if arr.ndim != 2 or arr.shape[0] != n or arr.shape[1] == 0:
        raise SemidError(f"rank_last_level returned shape {arr.shape}, expected ({n}, K_last)")
    if arr.dtype.kind not in "iu":
        raise SemidError(f"rank_last_level returned dtype {arr.dtype}, expected integer codes")
    if ((arr < 0) | (arr > MAX_CODE)).any():
        r, c = np.argwhere((arr < 0) | (arr > MAX_CODE))[0]
        raise SemidError(f"rank_last_level row {r}: code {arr[r, c]} is outside 0..{MAX_CODE}")
    return arr.astype(np.int64, copy=False)
