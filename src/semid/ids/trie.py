"""A prefix trie over the set of valid Semantic IDs: the engine of constrained decoding.

A decoder that writes an ID one level at a time asks, for a batch of partial IDs, which next codes lead to
a real item. :class:`PrefixTrie` answers with a boolean mask, vectorised over the batch, on the device of
the query tensors.

Layout (no Python object per node). Rows are sorted lexicographically once; the distinct prefixes of
length ``t`` are the nodes of depth ``t``, numbered ``0 .. n_nodes[t] - 1`` in sorted order (depth 0 is the
root, node 0). The edges from depth ``t`` to depth ``t + 1`` are stored as one sorted int64 array of keys
``parent * K_t + code``; because rows are sorted, the child reached by edge ``e`` is node ``e`` of depth
``t + 1``, so stepping is one ``searchsorted``. CSR offsets (edges of node ``p`` are
``offsets[p]:offsets[p + 1]``) give the allowed codes of a node, and per-depth row offsets into the sorted
order give the items below a node.

Node ids are per depth: :meth:`PrefixTrie.step` maps depth-``t`` ids to depth-``t + 1`` ids, and ``-1``
marks a dead end (a prefix of no ID) everywhere.

Memory. Every array is int32 when its values fit (row and node numbers below 2**31, and the edge keys of a
depth while ``n_nodes[t] * K_t < 2**31``), else int64; when all IDs are distinct the leaf row offsets are
implicit (leaf ``j`` is sorted row ``j``). :attr:`PrefixTrie.nbytes` sums the arrays. Measured on random
unique IDs (``bench/catalogue_scale.py``, ``bench/results/catalogue_scale.txt``): 3 levels of 256 hold
8.8 bytes per item at 1M items and 8.1 at 10M, 4 levels of 256 hold 20.4 and 17.1 (the int64 layout held
25.6 / 24.2 and 48.9 / 42.2). Building sorts the rows once and reads them one column at a time: 0.2 s at
1M and 3.3-3.6 s at 10M items (3 levels, one core of the 2-core development machine), with a transient peak
of about 2.3x the codes' own size (518 MiB over 229 MiB of codes at 10M).

>>> trie = PrefixTrie(np.array([[0, 1], [0, 2], [1, 0]]))
>>> trie.allowed_mask(np.array([[0], [1], [2]]))
tensor([[False,  True,  True],
        [ True, False, False],
        [False, False, False]])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from semid._utils import check_positive_int
from semid.errors import SemidError

__all__ = ["PrefixTrie"]

ArrayLike = np.ndarray | torch.Tensor | Sequence[Sequence[int]] | Sequence[int]

# Keys are parent * K_t + code in int64; refuse vocabularies that could overflow them.
_MAX_KEY = 2**62


@dataclass
class _DeviceTables:
    """The trie's lookup tables as tensors on one device (built on first use there)."""

    keys: list[torch.Tensor]  # keys[t]: (n_nodes[t + 1],) sorted edge keys parent * K_t + code (int32/64)
    offsets: list[torch.Tensor]  # offsets[t]: (n_nodes[t] + 1,) CSR edge range of each depth-t node
    dense: dict[int, torch.Tensor] = field(default_factory=dict)  # level -> (n_nodes[t], K_t) bool masks
    leaf_rows: torch.Tensor | None = None  # (n_nodes[L],) first row of codes of each leaf, built on first use
    row_starts: dict[int, torch.Tensor] = field(default_factory=dict)  # depth -> (n_nodes[t] + 1,) int64


class PrefixTrie:
    """The set of distinct rows of ``codes`` (shape ``(n, L)``), queried by prefix.

    Parameters
    ----------
    codes:
        ``(n, L)`` non-negative integer codes, one row per item; duplicate rows are allowed (the trie holds
        the set of IDs, while :meth:`count` and :meth:`items_with_prefix` still see every row).
    vocab_sizes:
        ``K_l`` for each level: the width of the masks of level ``l``. Defaults to ``max + 1`` per level; a
        code ``>= K_l`` raises :class:`SemidError`.
    dense_mask_limit:
        Levels whose ``(n_nodes, K)`` mask table has at most this many entries (bytes) keep it precomputed on
        each device, so :meth:`allowed_mask_nodes` is one gather; deeper, bushier levels build masks by
        scattering the CSR edges of the queried nodes. ``0`` always scatters.

    A prefix that leads to no ID (or holds a code outside ``[0, K_l)``) is *invalid*: its mask row is all
    False and its node id is ``-1``; check with :meth:`is_valid_prefix` or ``walk(prefixes) >= 0``.

    Costs: building is one stable sort of the rows plus ``O(n L)`` array passes; a batched step is one
    ``searchsorted`` over the depth's edges (``O(B log n)``); a single-prefix query walks ``t`` steps. The
    host arrays take :attr:`nbytes` (see the module docstring for measured bytes per item); each device
    holds a copy (CPU tensors share the numpy memory) plus the dense masks of the levels under
    ``dense_mask_limit``.

    >>> trie = PrefixTrie(np.array([[12, 4, 9], [12, 4, 7], [3, 0, 0]]))
    >>> len(trie), trie.count([12]), (12, 4, 9) in trie
    (3, 2, True)
    """

    def __init__(
        self,
        codes: np.ndarray | Sequence[Sequence[int]],
        vocab_sizes: Sequence[int] | None = None,
        *,
        dense_mask_limit: int = 2**24,
    ) -> None:
        arr = _check_codes(codes)
        n, n_levels = arr.shape
        self._vocab_sizes = _check_vocab_sizes(arr, vocab_sizes)
        if (
            isinstance(dense_mask_limit, bool)
            or not isinstance(dense_mask_limit, int)
            or dense_mask_limit < 0
        ):
            raise SemidError(f"dense_mask_limit={dense_mask_limit!r} should be a non-negative integer")
        self._dense_mask_limit = dense_mask_limit

        order = _lexicographic_order(arr, self._vocab_sizes)  # (n,) int64: sorted position -> row
        index_dtype = _index_dtype(n)  # row and node numbers (a depth has at most n nodes)
        changed = np.zeros(max(n - 1, 0), dtype=bool)  # changed[i]: sorted rows i, i+1 differ so far
        node_of_row = np.zeros(n, dtype=index_dtype)  # depth-t node id of each sorted row
        # _row_starts[t]: (n_nodes[t] + 1,) first sorted row of each depth-t node; None at depth L when every
        # ID is distinct (leaf j is sorted row j), which saves one array of n entries.
        self._row_starts: list[np.ndarray | None] = [np.array([0, n], dtype=index_dtype)]
        self._keys: list[np.ndarray] = []  # _keys[t]: (n_nodes[t + 1],) sorted parent * K_t + code
        self._offsets: list[np.ndarray] = []  # _offsets[t]: (n_nodes[t] + 1,) CSR edge range per node
        n_nodes = [1]
        for level, k in enumerate(self._vocab_sizes):
            if n_nodes[-1] * k >= _MAX_KEY:
                raise SemidError(
                    f"vocab_sizes[{level}]={k} is too large: {n_nodes[-1]} prefixes x {k} codes overflow int64 keys"
                )
            col = arr[order, level]  # (n,) this level's codes in sorted order: one column at a time
            changed |= col[1:] != col[:-1]
            starts = np.flatnonzero(changed) + 1
            if n:
                starts = np.concatenate([[0], starts])  # first sorted row of each depth-(level+1) node
            parents = node_of_row[starts].astype(np.int64)
            key_dtype = _index_dtype(n_nodes[-1] * k)  # keys < n_nodes * K
            self._keys.append((parents * k + col[starts]).astype(key_dtype))  # ascending: rows are sorted
            del col
            counts = np.bincount(parents, minlength=n_nodes[-1])
            self._offsets.append(np.concatenate([[0], np.cumsum(counts)]).astype(index_dtype))
            if level + 1 < n_levels:
                self._row_starts.append(np.concatenate([starts, [n]]).astype(index_dtype))
                if n:
                    node_of_row = np.concatenate(
                        [np.zeros(1, index_dtype), np.cumsum(changed, dtype=index_dtype)]
                    )
            elif len(starts) == n:  # every ID distinct: leaf j starts at sorted row j
                self._row_starts.append(None)
            else:
                self._row_starts.append(np.concatenate([starts, [n]]).astype(index_dtype))
            n_nodes.append(len(starts))
            del starts, parents, counts
        del node_of_row, changed
        self._order = order.astype(index_dtype)  # (n,) row of codes at each sorted position
        self._n_nodes = tuple(n_nodes)
        self._n_rows = n
        self._tables: dict[torch.device, _DeviceTables] = {}
        self._device = torch.device("cpu")

    # ----------------------------------------------------------------------------------------------------
    # Size and shape

    @property
    def n_levels(self) -> int:
        """``L``, the number of codes in a full ID."""
        return len(self._vocab_sizes)

    @property
    def vocab_sizes(self) -> tuple[int, ...]:
        """``K_l`` per level: the width of the masks of level ``l``."""
        return self._vocab_sizes

    @property
    def n_nodes(self) -> tuple[int, ...]:
        """Distinct prefixes of each length ``0 .. L`` (``n_nodes[0] == 1``, the root; ``n_nodes[L] == len(self)``)."""
        return self._n_nodes

    @property
    def device(self) -> torch.device:
        """Where :meth:`root` puts node ids (set by :meth:`to`); queries run on their own tensors' device."""
        return self._device

    @property
    def nbytes(self) -> int:
        """Bytes of the host arrays (edge keys, CSR offsets, row offsets, sort order).

        Device copies (CPU tensors share this memory) and the dense masks of :meth:`allowed_mask_nodes`
        (at most ``dense_mask_limit`` bytes per level and device) come on top.
        """
        arrays = [*self._keys, *self._offsets, *self._row_starts, self._order]
        return sum(a.nbytes for a in arrays if a is not None)

    @property
    def order(self) -> np.ndarray:
        """``(n,)`` read-only row indices into ``codes`` in ID order (lexicographic; ties by row)."""
        view = self._order.view()
        view.flags.writeable = False
        return view

    def __len__(self) -> int:
        """The number of distinct full IDs."""
        return self._n_nodes[-1]

    def __repr__(self) -> str:
        return (
            f"PrefixTrie(n_ids={len(self)}, n_items={self._n_rows}, n_levels={self.n_levels}, "
            f"vocab_sizes={list(self._vocab_sizes)})"
        )

    def to(self, device: str | torch.device) -> PrefixTrie:
        """Put the lookup tables on ``device`` now (rather than on first use there); returns ``self``."""
        device = torch.empty(0, device=device).device  # normalised, e.g. "cuda" -> "cuda:0"
        self._tables_on(device)
        self._device = device
        return self

    # ----------------------------------------------------------------------------------------------------
    # Batched, device-side queries (for decoders)

    def root(self, batch_size: int = 1, device: str | torch.device | None = None) -> torch.Tensor:
        """``(batch_size,)`` node ids of the empty prefix (all 0), on ``device`` (default :attr:`device`)."""
        return torch.zeros(batch_size, dtype=torch.long, device=self._device if device is None else device)

    def step(self, node_ids: ArrayLike, level: int, codes: ArrayLike) -> torch.Tensor:
        """Follow one code from each depth-``level`` node: ``(B,)`` ids at depth ``level + 1``, ``-1`` if invalid.

        ``node_ids`` and ``codes`` are ``(B,)``; ``-1`` stays ``-1``, and so does a code that is not a child.
        """
        self._check_level(level)
        nodes = _as_long_tensor(node_ids, "node_ids", ndim=1)
        codes_t = _as_long_tensor(codes, "codes", ndim=1, device=nodes.device)
        if codes_t.shape != nodes.shape:
            raise SemidError(
                f"node_ids has shape {tuple(nodes.shape)} but codes has shape {tuple(codes_t.shape)}"
            )
        keys = self._tables_on(nodes.device).keys[level]
        k = self._vocab_sizes[level]
        ok = (nodes >= 0) & (nodes < self._n_nodes[level]) & (codes_t >= 0) & (codes_t < k)
        if keys.numel() == 0:
            return torch.full_like(nodes, -1)
        query = torch.where(ok, nodes * k + codes_t, -1).to(keys.dtype)  # valid keys fit keys' dtype
        pos = torch.searchsorted(keys, query)
        found = ok & (keys[pos.clamp(max=keys.numel() - 1)] == query)
        return torch.where(found, pos, -1)

    def walk(self, prefixes: ArrayLike) -> torch.Tensor:
        """``(B,)`` node ids of ``(B, t)`` prefixes (``t <= L``), ``-1`` for invalid ones; on their device."""
        pref = _as_long_tensor(prefixes, "prefixes", ndim=2)
        length = pref.shape[1]
        if length > self.n_levels:
            raise SemidError(f"prefixes have length {length} but IDs have {self.n_levels} levels")
        nodes = self.root(pref.shape[0], device=pref.device)
        for level in range(length):  # a loop over levels, never over the batch
            nodes = self.step(nodes, level, pref[:, level])
        return nodes

    def allowed_mask_nodes(self, node_ids: ArrayLike, level: int) -> torch.Tensor:
        """``(B, K_level)`` bool mask of the codes that may follow each depth-``level`` node; ``-1`` -> all False."""
        self._check_level(level)
        nodes = _as_long_tensor(node_ids, "node_ids", ndim=1)
        tables = self._tables_on(nodes.device)
        k, n_nodes = self._vocab_sizes[level], self._n_nodes[level]
        if n_nodes == 0:  # an empty trie has no nodes below the root
            return torch.zeros(nodes.shape[0], k, dtype=torch.bool, device=nodes.device)
        valid = (nodes >= 0) & (nodes < n_nodes)
        safe = torch.where(valid, nodes, 0)
        dense = self._dense_masks(tables, level)
        if dense is not None:
            return dense[safe] & valid[:, None]  # (B, K)
        # Scatter the CSR edges of each queried node: O(sum of their child counts), not O(B * K).
        offsets, keys = tables.offsets[level], tables.keys[level]
        first = offsets[safe].long()  # (B,)
        counts = torch.where(valid, offsets[safe + 1].long() - first, 0)  # (B,)
        batch = nodes.shape[0]
        rows = torch.repeat_interleave(torch.arange(batch, device=nodes.device), counts)  # (E,)
        within = torch.arange(rows.numel(), device=nodes.device) - (torch.cumsum(counts, 0) - counts)[rows]
        edge_codes = keys[first[rows] + within].long() - safe[rows] * k  # (E,)
        mask = torch.zeros(batch, k, dtype=torch.bool, device=nodes.device)
        mask[rows, edge_codes] = True
        return mask

    def allowed_mask(self, prefixes: ArrayLike) -> torch.Tensor:
        """``(B, K_t)`` bool mask of the codes that may follow each of ``(B, t)`` prefixes (``0 <= t < L``).

        ``mask[b, c]`` is True iff ``prefixes[b] + [c]`` is a prefix of some ID; an invalid prefix gives an
        all-False row. The mask is on the prefixes' device (CPU for numpy input).
        """
        pref = _as_long_tensor(prefixes, "prefixes", ndim=2)
        if pref.shape[1] >= self.n_levels:
            raise SemidError(
                f"prefixes have length {pref.shape[1]}; a next code exists only for lengths 0..{self.n_levels - 1}"
            )
        return self.allowed_mask_nodes(self.walk(pref), pref.shape[1])

    # ----------------------------------------------------------------------------------------------------
    # Single-prefix queries (web UI, checks)

    def is_valid_prefix(self, prefix: Sequence[int] | np.ndarray | torch.Tensor) -> bool:
        """Whether ``prefix`` (length ``0 .. L``) starts at least one ID."""
        return self._node_of(prefix) >= 0

    def __contains__(self, codes_row: object) -> bool:
        """Whether ``codes_row`` is a full ID of the set (a row of another length is not)."""
        row = _as_long_tensor(codes_row, "codes_row", ndim=1)  # type: ignore[arg-type]
        return row.numel() == self.n_levels and self._node_of(row) >= 0

    def count(self, prefix: Sequence[int] | np.ndarray | torch.Tensor = (), *, distinct: bool = False) -> int:
        """Items (rows of ``codes``) whose ID starts with ``prefix``; ``distinct=True`` counts distinct IDs.

        An invalid prefix counts 0; the empty prefix counts everything.
        """
        length, node = len(_as_long_tensor(prefix, "prefix", ndim=1)), self._node_of(prefix)
        if node < 0:
            return 0
        lo, hi = self._row_bounds(length, node)
        leaf_starts = self._row_starts[self.n_levels]  # distinct IDs below the node start inside [lo, hi)
        if not distinct or leaf_starts is None:  # None: every row is its own ID
            return hi - lo
        return int(np.searchsorted(leaf_starts, hi) - np.searchsorted(leaf_starts, lo))

    def items_with_prefix(
        self, prefix: Sequence[int] | np.ndarray | torch.Tensor = (), *, id_order: bool = False
    ) -> np.ndarray:
        """Row indices into ``codes`` (int64) of the items whose ID starts with ``prefix`` (empty if invalid).

        Ascending by default; ``id_order=True`` lists them in ID order (ties by row), as
        ``rows[np.lexsort(codes[rows].T[::-1])]`` would, without sorting. Cost: ``O(t log n + m)`` for
        ``m`` items (plus ``O(m log m)`` for the ascending sort).
        """
        length, node = len(_as_long_tensor(prefix, "prefix", ndim=1)), self._node_of(prefix)
        if node < 0:
            return np.zeros(0, dtype=np.int64)
        lo, hi = self._row_bounds(length, node)
        rows = self._order[lo:hi].astype(np.int64)
        return rows if id_order else np.sort(rows)

    def row_ranges(self, node_ids: torch.Tensor, depth: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lo, hi)``, each ``(B,)`` int64: the rows below each depth-``depth`` node are
        ``order[lo:hi]`` (positions in ID order, :attr:`order`); ``-1`` (no node) gives the empty ``0, 0``.

        Vectorised :meth:`items_with_prefix` bounds, on the nodes' device: with a prefix sum of a per-row
        flag in ID order, ``cum[hi] - cum[lo]`` counts the flagged items under each node in ``O(1)``
        (constrained decoding to an item subset, :func:`semid.rec.beam.beam_search`'s ``allow``).
        """
        if (
            isinstance(depth, bool)
            or not isinstance(depth, (int, np.integer))
            or not 0 <= depth <= self.n_levels
        ):
            raise SemidError(f"depth={depth!r} should be an integer in 0..{self.n_levels}")
        nodes = _as_long_tensor(node_ids, "node_ids", ndim=1)
        if self._n_nodes[depth] == 0:  # an empty trie: no rows anywhere
            return torch.zeros_like(nodes), torch.zeros_like(nodes)
        ok = (nodes >= 0) & (nodes < self._n_nodes[depth])
        node = torch.where(ok, nodes, 0)
        starts = self._row_starts[depth]
        if starts is None:  # distinct leaves: leaf j is sorted row j
            lo, hi = node, node + 1
        else:
            tables = self._tables_on(nodes.device)
            if depth not in tables.row_starts:  # kept per device, like the other tables
                tables.row_starts[depth] = torch.from_numpy(starts.astype(np.int64)).to(nodes.device)
            table = tables.row_starts[depth]  # (n_nodes[depth] + 1,)
            lo, hi = table[node], table[node + 1]
        zero = torch.zeros_like(lo)
        return torch.where(ok, lo, zero), torch.where(ok, hi, zero)

    def rows_of_leaves(self, leaves: torch.Tensor) -> torch.Tensor:
        """``(B,)`` int64 row of ``codes`` of each depth-``L`` node id (the first in row order when rows repeat
        an ID); ``-1`` stays ``-1``. On the leaves' device (its table is kept there after the first call)."""
        tables = self._tables_on(leaves.device)
        if tables.leaf_rows is None:
            starts = self._row_starts[self.n_levels]
            rows = self._order if starts is None else self._order[starts[:-1]]  # (n_nodes[L],)
            tables.leaf_rows = torch.from_numpy(rows).to(leaves.device)
        table = tables.leaf_rows
        if table.numel() == 0:
            return torch.full_like(leaves, -1)
        return torch.where(leaves >= 0, table[leaves.clamp(min=0)].long(), -1)

    # ----------------------------------------------------------------------------------------------------
    # Internals

    def _row_bounds(self, length: int, node: int) -> tuple[int, int]:
        """Sorted rows ``[lo, hi)`` below depth-``length`` node ``node``."""
        starts = self._row_starts[length]
        if starts is None:  # distinct leaves: leaf j is sorted row j
            return node, node + 1
        lo, hi = starts[node : node + 2].tolist()
        return lo, hi

    def _node_of(self, prefix: Sequence[int] | np.ndarray | torch.Tensor) -> int:
        pref = _as_long_tensor(prefix, "prefix", ndim=1).cpu()
        return int(self.walk(pref[None, :])[0])

    def _check_level(self, level: int) -> None:
        if (
            isinstance(level, bool)
            or not isinstance(level, (int, np.integer))
            or not 0 <= level < self.n_levels
        ):
            raise SemidError(
                f"level={level!r} has no next code: IDs have {self.n_levels} levels, numbered 0..{self.n_levels - 1}"
            )

    def _tables_on(self, device: torch.device) -> _DeviceTables:
        if device not in self._tables:
            self._tables[device] = _DeviceTables(
                keys=[torch.from_numpy(k).to(device) for k in self._keys],
                offsets=[torch.from_numpy(o).to(device) for o in self._offsets],
            )
        return self._tables[device]

    def _dense_masks(self, tables: _DeviceTables, level: int) -> torch.Tensor | None:
        """The ``(n_nodes[level], K_level)`` mask table of ``level`` if it fits ``dense_mask_limit``, else None."""
        k, n_nodes = self._vocab_sizes[level], self._n_nodes[level]
        if n_nodes * k > self._dense_mask_limit:
            return None
        if level not in tables.dense:
            keys = tables.keys[level]
            dense = torch.zeros(n_nodes, k, dtype=torch.bool, device=keys.device)
            keys = keys.long()
            dense[keys // k, keys % k] = True
            tables.dense[level] = dense
        return tables.dense[level]


def _index_dtype(max_value: int) -> type[np.signedinteger]:
    """int32 for values that never exceed ``max_value`` when it is below ``2**31 - 1``, else int64.

    Most tries fit int32 everywhere, which halves their memory against int64."""
    return np.int32 if max_value < 2**31 - 1 else np.int64


def _lexicographic_order(arr: np.ndarray, vocab_sizes: Sequence[int]) -> np.ndarray:
    """The stable permutation sorting the rows of ``arr`` lexicographically (column 0 first)."""
    if math.prod(vocab_sizes) < 2**63:
        # One mixed-radix int64 key per row sorts ~3x faster than np.lexsort over the columns.
        key = np.zeros(len(arr), dtype=np.int64)
        for level, k in enumerate(vocab_sizes):
            key = key * k + arr[:, level]
        return np.argsort(key, kind="stable")
    return np.lexsort(arr.T[::-1])  # lexsort's last key is the primary one


def _check_codes(codes: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    arr = np.asarray(codes.detach().cpu() if isinstance(codes, torch.Tensor) else codes)
    if arr.ndim != 2:
        raise SemidError(f"codes should be a 2-D (n_items, n_levels) array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise SemidError(f"codes should hold integers, got dtype {arr.dtype}")
    if arr.shape[1] == 0:
        raise SemidError("codes have 0 levels; a Semantic ID needs at least 1")
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        row, level = np.argwhere(arr < 0)[0]
        raise SemidError(f"codes row {row} level {level}: {arr[row, level]} is negative")
    return arr


def _check_vocab_sizes(arr: np.ndarray, vocab_sizes: Sequence[int] | None) -> tuple[int, ...]:
    n, n_levels = arr.shape
    if vocab_sizes is None:
        if n == 0:
            raise SemidError("codes is empty; pass vocab_sizes to build an empty PrefixTrie")
        return tuple(int(v) + 1 for v in arr.max(axis=0))
    sizes = list(vocab_sizes)
    if len(sizes) != n_levels:
        raise SemidError(f"vocab_sizes has {len(sizes)} entries but codes have {n_levels} levels")
    for level, k in enumerate(sizes):
        check_positive_int(f"vocab_sizes[{level}]", k)
    if n:
        too_big = arr >= np.asarray(sizes, dtype=np.int64)
        if too_big.any():
            row, level = np.argwhere(too_big)[0]
            raise SemidError(
                f"codes row {row} level {level}: {arr[row, level]} >= vocab_sizes[{level}]={sizes[level]}"
            )
    return tuple(int(k) for k in sizes)


def _as_long_tensor(
    x: ArrayLike, name: str, *, ndim: int, device: torch.device | None = None
) -> torch.Tensor:
    """``x`` as an int64 tensor with ``ndim`` dims: tensors keep their device, others go to ``device`` or CPU."""
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.bool or x.dtype.is_floating_point or x.dtype.is_complex:
            raise SemidError(f"{name} should hold integers, got dtype {x.dtype}")
        t = x.long()
        if device is not None and t.device != device:
            t = t.to(device)
    else:
        arr = np.asarray(x)
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise SemidError(f"{name} should hold integers, got dtype {arr.dtype}")
        if arr.size == 0 and arr.ndim == 1 and ndim == 2:  # [] as an empty batch of empty prefixes
            arr = arr.reshape(0, 0)
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.int64)).to(device or "cpu")
    if t.dim() != ndim:
        expected = "(batch,)" if ndim == 1 else "(batch, length)"
        raise SemidError(f"{name} should have shape {expected}, got shape {tuple(t.shape)}")
    return t
