"""The catalogue a server answers from: item id <-> Semantic ID <-> row, the items under an ID prefix, and
the errors requests get (each with its HTTP status).

Nothing here keeps a Python object per item: :class:`KeyIndex` maps item ids and Semantic IDs to rows in 12
bytes per key, and a :class:`~semid.ids.PrefixTrie` over the codes answers prefix sizes and the rows under
a prefix, so a 10M-item catalogue answers ``/items`` and ``/ids`` at ~3,000 requests/s in ~0.4 GiB of
lookups (``bench/results/catalogue_scale.txt``; docs/scaling.md, "Million-item catalogues").
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from semid.errors import SemidError

MAX_ID_CHARS = 256  # longest item id, user id or Semantic ID string a request may name


# --------------------------------------------------------------------------------------------------------
# Errors with an HTTP status
# --------------------------------------------------------------------------------------------------------


class RequestError(SemidError):
    """A request the service cannot answer as asked; ``status_code`` is the HTTP status (422: invalid)."""

    status_code = 422


class NotFoundError(RequestError):
    """The request names an item, user or Semantic ID that is not there (HTTP 404)."""

    status_code = 404


class UnavailableError(RequestError):
    """The serving directory has no model for this (e.g. no TIGER run for recommendations; HTTP 503)."""

    status_code = 503


@dataclass(frozen=True)
class ItemScore:
    """One result: an item, its Semantic ID and title, and the score that ranked it (higher is better)."""

    item_id: str
    semantic_id: str | None
    title: str | None
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------------------
# The catalogue: item id <-> Semantic ID
# --------------------------------------------------------------------------------------------------------


class KeyIndex(Mapping[str, int]):
    """A read-only ``{key: row}`` map over an object array of strings, in 12 bytes per key.

    ``KeyIndex(keys)`` answers like ``{str(k): i for i, k in enumerate(keys) if k is not None}``: the last
    row wins when a key repeats, lookups compare with ``==`` and ``len`` counts distinct keys. It keeps no
    Python object per key: the keys' hashes (``hash(str)``, this process's) sorted in an int64 array, the row
    of each in an int32 array (int64 from 2**31 rows), and a reference to ``keys`` (strings already in
    ``keys`` are not copied) to confirm a hit. A dict took about 60 bytes per key with its int (two of them
    kept 127 bytes per item at 10M items; ``bench/results/catalogue_scale.txt``).

    Costs: building hashes every key once (``O(n)`` Python calls, plus one stable sort; with the trie the
    catalogue builds in about the dicts' time at 1M and 10M items); :meth:`get` is one binary search and
    one string comparison, 1.1-4 microseconds against a dict's 0.3-1.5 (measured 0.25-0.88 M lookups/s
    against 0.67-3.7 M/s, well below the cost of one HTTP request); :meth:`get_many` answers a batch with
    vectorised searches, about half a dict loop's speed. Equal hashes of different keys are compared one by
    one, so collisions cost time, never a wrong row.

    >>> index = KeyIndex(np.array(["b", "a", None, "b"], dtype=object))
    >>> index["a"], index.get("b"), index.get("c"), len(index), "a" in index
    (1, 3, None, 2, True)
    """

    _hash = hash  # the hash of keys and queries (a class attribute, so that tests can force collisions)

    def __init__(self, keys: np.ndarray, *, unique: str | None = None) -> None:
        keys = np.asarray(keys, dtype=object)
        if keys.ndim != 1:
            raise SemidError(f"keys should be a 1-D array, got shape {keys.shape}")
        if not all(type(k) is str or k is None for k in keys):  # noqa: E721 - exactly str: str(k) is k
            keys = np.asarray([None if k is None else str(k) for k in keys], dtype=object)
        self._keys = keys  # (n,) object: the strings themselves, shared with the caller when already str
        row_dtype = np.int32 if len(keys) < 2**31 - 1 else np.int64
        present = np.fromiter((k is not None for k in keys), dtype=bool, count=len(keys))
        rows = None if present.all() else np.flatnonzero(present)  # (m,) rows holding a key; None: all
        del present
        held = keys if rows is None else keys[rows]  # (m,)
        hashes = np.fromiter((self._hash(k) for k in held), dtype=np.int64, count=len(held))
        del held
        order = np.argsort(hashes, kind="stable")  # (m,) equal hashes keep ascending rows
        self._hashes = hashes[order]  # (m,) sorted
        del hashes
        self._rows = (order if rows is None else rows[order]).astype(row_dtype)  # (m,) row of each hash
        del order, rows
        self._len = len(self._hashes) - self._repeats(unique)
        self._views()

    def _views(self) -> None:
        # memoryviews give Python ints and let bisect run in C: ~0.6 us less per lookup than numpy scalars
        self._hash_view, self._row_view = memoryview(self._hashes), memoryview(self._rows)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_hash_view", "_row_view")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._views()

    def _repeats(self, unique: str | None) -> int:
        """Keys that repeat an earlier one (found among equal hashes); ``unique`` is the error if any does."""
        same = np.flatnonzero(self._hashes[1:] == self._hashes[:-1])  # (r,) i where hash i == hash i + 1
        if not len(same):
            return 0
        repeats = 0
        run_starts = same[np.concatenate([[True], same[1:] != same[:-1] + 1])]  # first i of each run
        for start in run_starts.tolist():
            end = start + 1
            while end < len(self._hashes) and self._hashes[end] == self._hashes[start]:
                end += 1
            run = [self._keys[r] for r in self._rows[start:end].tolist()]
            repeats += len(run) - len(set(run))
            if repeats and unique is not None:
                raise SemidError(unique)
        return repeats

    def get(self, key: object, default: Any = None) -> Any:
        """The row of ``key`` (the last one if it repeats), else ``default``; like ``dict.get``."""
        h = self._hash(key)
        hashes = self._hash_view
        j = bisect_right(hashes, h) - 1  # the last entry with this hash, if any
        while j >= 0 and hashes[j] == h:  # almost always one step; more only for equal hashes
            row = self._row_view[j]
            if self._keys[row] == key:
                return row
            j -= 1
        return default

    def get_many(self, keys: Iterable[object], default: int = -1) -> np.ndarray:
        """``(q,)`` int64 rows of many keys at once (``default`` for missing ones); ``get`` for each, vectorised."""
        items = list(keys.reshape(-1) if isinstance(keys, np.ndarray) else keys)
        queries = np.fromiter(items, dtype=object, count=len(items))  # (q,) one object per key, even tuples
        out = np.full(len(queries), default, dtype=np.int64)
        if not len(queries) or not len(self._hashes):
            return out
        h = np.fromiter((self._hash(q) for q in queries), dtype=np.int64, count=len(queries))  # (q,)
        by_hash = np.argsort(h)  # searching in ascending order lets numpy narrow each search: ~3x faster
        j = np.empty(len(h), dtype=np.int64)
        j[by_hash] = np.searchsorted(self._hashes, h[by_hash], side="right") - 1  # (q,) last hash <= h
        hit = (j >= 0) & (self._hashes[j.clip(min=0)] == h)
        rows = self._rows[j.clip(min=0)].astype(np.int64)  # (q,)
        same = hit & (self._keys[rows] == queries)  # (q,) the last entry of the run is the key
        out[same] = rows[same]
        for i in np.flatnonzero(hit & ~same).tolist():  # a hash shared with another key: check the run
            out[i] = self.get(queries[i], default)
        return out

    def __getitem__(self, key: object) -> int:
        row = self.get(key)
        if row is None:
            raise KeyError(key)
        return row

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None  # an unhashable key raises TypeError, as ``[] in {}`` does

    def __iter__(self) -> Iterator[str]:
        """Keys in order of first appearance, as a dict built row by row would list them."""
        for row, key in enumerate(self._keys):
            if key is not None and self._first_row(key) == row:
                yield key

    def _first_row(self, key: object) -> int:
        j = bisect_left(self._hash_view, self._hash(key))
        while self._keys[self._row_view[j]] != key:
            j += 1
        return self._row_view[j]

    def __len__(self) -> int:
        return self._len

    @property
    def nbytes(self) -> int:
        """Bytes of the index's own arrays (the keys' strings and their array belong to the catalogue)."""
        return self._hashes.nbytes + self._rows.nbytes

    def __repr__(self) -> str:
        return f"KeyIndex({len(self):,} keys)"


@dataclass
class Catalogue:
    """Items with their titles and Semantic IDs; row ``i`` is item index ``i`` of the recommender.

    Lookups keep no Python object per item, so a catalogue of 10M items fits a server
    (``bench/results/catalogue_scale.txt``): ``index`` (item id -> row) and ``by_semantic_id`` (Semantic ID
    string -> row) are :class:`KeyIndex` maps of 12 bytes per item, and the items under an ID prefix come
    from a :class:`~semid.ids.PrefixTrie` over ``codes`` (about 8 bytes per item for 3 levels of 256) in
    ``O(L log n)`` instead of a scan of every row. Measured at 10M items (3 levels, no titles): the lookups
    keep 0.39 GiB instead of 1.19 GiB, the server 2.2 GiB instead of 3.0 GiB, and ``/items`` and ``/ids``
    answer ~3,000 requests/s in process instead of 3.4 (prefix sizes no longer scan every row).
    """

    item_ids: np.ndarray  # (n,) object array of str
    titles: np.ndarray | None  # (n,) object array of str (or None)
    semantic_ids: np.ndarray | None  # (n,) object array of str (or None)
    codes: np.ndarray | None  # (n, L) int64 (or None)
    index: KeyIndex = field(init=False, repr=False)  # item id -> row
    by_semantic_id: KeyIndex = field(init=False, repr=False)  # Semantic ID string -> row (last wins)
    _trie: Any = field(init=False, repr=False, default=None)  # PrefixTrie over codes, None: scan instead

    def __post_init__(self) -> None:
        self.item_ids = np.asarray([str(i) for i in self.item_ids], dtype=object)
        self.index = KeyIndex(self.item_ids, unique="the catalogue repeats an item id")
        sids = np.zeros(0, dtype=object) if self.semantic_ids is None else self.semantic_ids
        self.by_semantic_id = KeyIndex(np.asarray(sids, dtype=object).reshape(-1))
        self._trie = _codes_trie(self.codes)

    def __len__(self) -> int:
        return len(self.item_ids)

    @property
    def n_levels(self) -> int:
        return 0 if self.codes is None else int(self.codes.shape[1])

    def title(self, row: int) -> str | None:
        return None if self.titles is None or self.titles[row] is None else str(self.titles[row])

    def semantic_id(self, row: int) -> str | None:
        if self.semantic_ids is None or self.semantic_ids[row] is None:
            return None
        return str(self.semantic_ids[row])

    def result(self, row: int, score: float) -> ItemScore:
        return ItemScore(
            str(self.item_ids[row]), self.semantic_id(row), self.title(row), round(float(score), 6)
        )

    def row_of(self, item_id: str) -> int:
        """Row of ``item_id``; :class:`NotFoundError` when the catalogue has no such item."""
        row = self.index.get(item_id)
        if row is None:
            raise NotFoundError(f"item {_show(item_id)} is not in the catalogue ({len(self):,} items)")
        return row

    def describe_short(self, row: int) -> dict[str, Any]:
        """Id, Semantic ID and title of an item."""
        return {
            "item_id": str(self.item_ids[row]),
            "semantic_id": self.semantic_id(row),
            "title": self.title(row),
        }

    def describe(self, row: int) -> dict[str, Any]:
        """An item as the API shows it: id, Semantic ID, codes, title and the size of each ID prefix."""
        codes = None if self.codes is None else [int(c) for c in self.codes[row]]
        prefixes = []
        if codes is not None:
            for depth in range(1, len(codes)):
                prefix = codes[:depth]
                prefixes.append({"prefix": "-".join(map(str, prefix)), "n_items": self.count_under(prefix)})
        return {
            "item_id": str(self.item_ids[row]),
            "semantic_id": self.semantic_id(row),
            "codes": codes,
            "title": self.title(row),
            "prefixes": prefixes,
        }

    def parse_semantic_id(self, text: str, *, prefix: bool = False) -> list[int]:
        """Codes of a Semantic ID (or, with ``prefix=True``, of its first levels) in any known spelling."""
        from semid.ids.formats import detect_format, parse_id

        what = "Semantic ID prefix" if prefix else "Semantic ID"
        if len(text) > MAX_ID_CHARS:
            raise RequestError(f"the {what} is {len(text):,} characters long; the most is {MAX_ID_CHARS}")
        if self.codes is None:
            raise UnavailableError("this catalogue has no Semantic IDs")
        try:
            codes = list(parse_id(text, detect_format(text)))
        except SemidError as e:
            raise RequestError(str(e)) from None
        L = self.n_levels
        if prefix and not 1 <= len(codes) <= L:
            raise RequestError(f"the prefix {_show(text)} has {len(codes)} levels; IDs here have {L}")
        if not prefix and len(codes) != L:
            raise RequestError(f"{_show(text)} has {len(codes)} levels; Semantic IDs here have {L}")
        return codes

    def row_of_codes(self, codes: Sequence[int], text: str) -> int:
        """Row of the item whose full Semantic ID is ``codes``; :class:`NotFoundError` if none has it."""
        rows = self.rows_under(codes)
        if len(rows) != 1 or len(codes) != self.n_levels:
            raise NotFoundError(f"no item has the Semantic ID {_show(text)}")
        return int(rows[0])

    def rows_under(self, prefix: Sequence[int]) -> np.ndarray:
        """Rows of the items whose ID starts with ``prefix`` (codes), in ID order (ties by row).

        Cost: ``O(L log n + m)`` for ``m`` rows through the trie (a scan of all ``n`` rows, about 15 ms per
        million items, only for codes a trie cannot hold, e.g. negative ones). A prefix longer than an ID
        matches no item.
        """
        if self.codes is None or not len(prefix):
            return np.zeros(0, dtype=np.int64)
        top = int(np.iinfo(np.int64).max)
        if any(c > top for c in prefix):
            return np.zeros(0, dtype=np.int64)
        if len(prefix) > self.n_levels:  # longer than an ID: no item (the scan used to fail to broadcast)
            return np.zeros(0, dtype=np.int64)
        if self._trie is not None:
            return self._trie.items_with_prefix(prefix, id_order=True)
        return self._scan_rows_under(prefix)

    def count_under(self, prefix: Sequence[int]) -> int:
        """``len(rows_under(prefix))`` without listing the rows (``O(L log n)`` through the trie)."""
        top = int(np.iinfo(np.int64).max)
        if self._trie is not None and 0 < len(prefix) <= self.n_levels and not any(c > top for c in prefix):
            return self._trie.count(prefix)
        return len(self.rows_under(prefix))

    def _scan_rows_under(self, prefix: Sequence[int]) -> np.ndarray:
        """:meth:`rows_under` by comparing every row (``O(n L)``): the way without a trie."""
        assert self.codes is not None
        match = (self.codes[:, : len(prefix)] == np.asarray(prefix, dtype=np.int64)).all(axis=1)
        rows = np.flatnonzero(match)
        return rows[np.lexsort(self.codes[rows].T[::-1])] if len(rows) else rows


def _codes_trie(codes: np.ndarray | None) -> Any:
    """A :class:`~semid.ids.PrefixTrie` over the catalogue's codes, or None where :meth:`Catalogue.rows_under`
    must scan (no codes, no rows, or codes a trie refuses: negative, not integers, not ``(n, L)``)."""
    if codes is None:
        return None
    arr = np.asarray(codes)
    if arr.ndim != 2 or 0 in arr.shape or not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0:
        return None
    from semid.ids.trie import PrefixTrie

    try:
        return PrefixTrie(arr)
    except SemidError:  # e.g. codes too large for the trie's int64 keys: rows_under scans instead
        return None


def _show(text: str, width: int = 60) -> str:
    """``repr`` of user input, shortened, for messages."""
    return repr(text if len(text) <= width else text[: width - 1] + "…")
