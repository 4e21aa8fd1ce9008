"""Filtering and splitting interactions the way sequential-recommendation papers do.

- :func:`k_core`: keep only users and items with at least ``k`` interactions, repeatedly, until both hold
  (removing a sparse item can push a user under ``k`` and back). Vectorised: one ``np.bincount`` per side
  per round.
- :func:`leave_one_out`: per user, the last item is the test target, the second last the validation
  target, the rest the training sequence (as in TIGER, P5 and S3-Rec). Everything stays in CSR arrays.

Example::

    >>> import numpy as np
    >>> from semid.data.model import Sequences
    >>> s = leave_one_out(Sequences(np.array([0, 4, 7]), np.array([1, 2, 3, 4, 5, 6, 7])))
    >>> s.train.items.tolist(), s.valid_target.tolist(), s.test_target.tolist()
    ([1, 2, 5], [3, 6], [4, 7])
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from semid.data.model import Dataset, Interactions, Sequences
from semid.errors import SemidError


def k_core(
    interactions: Interactions,
    k: int = 5,
    *,
    user_k: int | None = None,
    item_k: int | None = None,
    max_rounds: int = 1000,
) -> Interactions:
    """The largest subset in which every user and every item has at least ``k`` interactions.

    ``user_k``/``item_k`` set the two thresholds apart (default ``k``). Interactions are counted, not
    distinct items (a user who bought an item twice counts twice), as in the Amazon "5-core" files.
    """
    user_k = k if user_k is None else user_k
    item_k = k if item_k is None else item_k
    for name, v in (("k", k), ("user_k", user_k), ("item_k", item_k)):
        if not isinstance(v, (int, np.integer)) or v < 1:
            raise SemidError(f"{name}={v!r} should be an integer >= 1")
    users, items = interactions.user_codes, interactions.item_codes
    keep = np.ones(len(users), dtype=bool)
    for _ in range(max_rounds):
        user_counts = np.bincount(users[keep], minlength=interactions.n_users)
        item_counts = np.bincount(items[keep], minlength=interactions.n_items)
        new_keep = keep & (user_counts[users] >= user_k) & (item_counts[items] >= item_k)
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    else:
        raise SemidError(f"k_core did not settle in max_rounds={max_rounds}")
    if not keep.any():
        raise SemidError(
            f"k_core(user_k={user_k}, item_k={item_k}) leaves no interactions of {len(users):,}; lower k"
        )
    return interactions.take(keep)


@dataclass(frozen=True)
class LeaveOneOut:
    """A leave-one-out split of per-user sequences (rows are users, in the order of the input sequences).

    - validation: predict ``valid_target[u]`` from ``train.row(u)``;
    - test: predict ``test_target[u]`` from ``test_history.row(u)`` (the training items plus the validation
      target).
    """

    train: Sequences  # each sequence without its last two items
    valid_target: np.ndarray  # (n_users,) int64 second-to-last item
    test_history: Sequences  # each sequence without its last item
    test_target: np.ndarray  # (n_users,) int64 last item

    @property
    def valid_history(self) -> Sequences:
        """The validation inputs: the training sequences."""
        return self.train

    @property
    def n_users(self) -> int:
        return len(self.test_target)


def _drop_tail(seqs: Sequences, n: int) -> Sequences:
    """Each row without its last ``n`` items."""
    lengths = seqs.lengths
    pos = np.arange(len(seqs.items)) - np.repeat(seqs.offsets[:-1], lengths)  # position within its row
    keep = pos < np.repeat(lengths - n, lengths)
    return Sequences(seqs.offsets - n * np.arange(len(seqs.offsets)), seqs.items[keep])


def _as_csr(data: object) -> Sequences:
    """``(offsets, items)`` as int64 arrays, or a :class:`SemidError` saying what leave_one_out takes."""
    takes = "leave_one_out takes a Dataset, Interactions, Sequences or a CSR pair (offsets, items)"
    try:
        offsets, items = data  # type: ignore[misc]
    except (TypeError, ValueError):
        raise SemidError(f"{takes}; got {type(data).__name__}") from None
    arrays = []
    for name, values in (("offsets", offsets), ("items", items)):
        try:
            a = np.asarray(values)
        except (TypeError, ValueError) as e:
            raise SemidError(f"{takes}; its {name} are not an array ({e})") from None
        if a.ndim != 1 or not (np.issubdtype(a.dtype, np.integer) or (a.size == 0 and a.dtype == float)):
            raise SemidError(
                f"{takes}; its {name} should be a 1-D array of integers, got {a.dtype} of shape {a.shape}"
            )
        arrays.append(a.astype(np.int64))
    return Sequences(arrays[0], arrays[1])


def leave_one_out(data: Sequences | tuple[np.ndarray, np.ndarray] | Dataset | Interactions) -> LeaveOneOut:
    """Split each user's time-ordered sequence: last item test, second last validation, the rest training.

    ``data`` is CSR ``(offsets, items)`` (e.g. from :meth:`Dataset.sequences`), a :class:`Dataset` (items
    become catalogue rows) or :class:`Interactions`. Every user needs at least 3 items: filter with
    ``k_core(interactions, k=3)`` (or the usual ``k=5``) first.
    """
    users = None
    if isinstance(data, Dataset):
        users = data.interactions.users if data.interactions is not None else None
        seqs = data.sequences()
    elif isinstance(data, Interactions):
        users = data.users
        seqs = data.sequences()
    else:
        seqs = _as_csr(data)
    if (
        seqs.offsets.ndim != 1
        or len(seqs.offsets) < 1
        or seqs.offsets[0] != 0
        or seqs.offsets[-1] != len(seqs.items)
    ):
        raise SemidError(
            f"offsets should start at 0 and end at len(items)={len(seqs.items)}; got {seqs.offsets[:1].tolist()}"
            f"...{seqs.offsets[-1:].tolist()}"
        )
    lengths = seqs.lengths
    if (lengths < 0).any():
        raise SemidError("offsets should be non-decreasing")
    short = np.flatnonzero(lengths < 3)
    if len(short):
        u = int(short[0])
        who = f"user {users[u]!r}" if users is not None else f"user row {u}"
        raise SemidError(
            f"{who} has {int(lengths[u])} interactions; leave-one-out needs at least 3 "
            f"({len(short):,} users have fewer; filter with k_core(interactions, k=3) first)"
        )
    ends = seqs.offsets[1:]
    return LeaveOneOut(
        train=_drop_tail(seqs, 2),
        valid_target=seqs.items[ends - 2],
        test_history=_drop_tail(seqs, 1),
        test_target=seqs.items[ends - 1],
    )
