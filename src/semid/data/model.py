"""The one data model every reader produces: a :class:`Catalogue` of items, :class:`Interactions` of users,
bundled in a :class:`Dataset` with the :class:`ParseReport` of what the readers could not read.

Everything is held column-wise (pyarrow arrays and numpy arrays), never as dicts of dicts: a catalogue is a
``pyarrow.Table``; interactions are two dictionary-encoded id columns (int codes + vocabularies) with
optional timestamp and rating columns. Sequences are a CSR pair ``(offsets, items)``: user ``u``'s items, in
time order, are ``items[offsets[u]:offsets[u + 1]]``.

Example::

    >>> cat = Catalogue.from_pydict({"item_id": ["a", "b"], "title": ["Red lipstick", "Blue mascara"]})
    >>> inter = Interactions(["u1", "u1", "u2"], ["b", "a", "a"], timestamps=[2, 1, 5])
    >>> seqs = Dataset(cat, inter).sequences()
    >>> seqs.offsets.tolist(), seqs.items.tolist()  # u1 bought a (t=1) then b (t=2); u2 bought a
    ([0, 2, 3], [0, 1, 0])
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from semid._utils import atomic_path
from semid.errors import SemidError, first_line

ArrayLike = Sequence[Any] | np.ndarray | pa.Array | pa.ChunkedArray


# --------------------------------------------------------------------------------------------------------
# Parse reports: what the readers could not read, or had to repair
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParseIssue:
    """One line a reader skipped or repaired: ``where`` is ``"file line N"``, ``message`` says why."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class ParseReport:
    """Counts of skipped and repaired lines, the first few of each as examples, and notes.

    Readers never drop a line silently: every line left out is counted here (``n_skipped``), every line
    fixed up (e.g. a title broken by a raw newline, rejoined) is counted as ``n_repaired``.
    """

    MAX_EXAMPLES = 5

    def __init__(self) -> None:
        self.n_skipped = 0
        self.n_repaired = 0
        self.skipped: list[ParseIssue] = []
        self.repaired: list[ParseIssue] = []
        self.notes: list[str] = []
        self._skipped_by_file: Counter[str] = Counter()
        self._first_by_file: dict[str, ParseIssue] = {}

    def skip(self, file: str, where: str, message: str) -> None:
        """Count one line of ``file`` that was left out."""
        self.n_skipped += 1
        self._skipped_by_file[file] += 1
        issue = ParseIssue(where, message)
        self._first_by_file.setdefault(file, issue)
        if len(self.skipped) < self.MAX_EXAMPLES:
            self.skipped.append(issue)

    def skip_many(self, file: str, n: int, examples: Iterable[tuple[str, str]]) -> None:
        """Count ``n`` left-out lines of ``file`` at once; ``examples`` yields ``(where, message)`` of the first.

        Only the first few examples are consumed, so a lazy iterable costs nothing for the other lines.
        """
        if n <= 0:
            return
        self.n_skipped += n
        self._skipped_by_file[file] += n
        for k, (where, message) in enumerate(examples):
            if k >= self.MAX_EXAMPLES:
                break
            issue = ParseIssue(where, message)
            self._first_by_file.setdefault(file, issue)
            if len(self.skipped) < self.MAX_EXAMPLES:
                self.skipped.append(issue)

    def repair(self, where: str, message: str) -> None:
        """Count one line (or group of lines) that was read after a repair."""
        self.n_repaired += 1
        if len(self.repaired) < self.MAX_EXAMPLES:
            self.repaired.append(ParseIssue(where, message))

    def note(self, message: str) -> None:
        """Record a one-line remark that is neither a skip nor a repair (e.g. items left out by a join)."""
        self.notes.append(message)

    def skipped_in(self, file: str) -> int:
        return self._skipped_by_file[file]

    def check(self, file: str, n_total: int, max_bad_fraction: float) -> None:
        """Raise if more than ``max_bad_fraction`` of the ``n_total`` lines of ``file`` were skipped.

        A few bad lines in a large file are reported and left out; a file that is largely unreadable (or a
        small file with a bad line) is more likely the wrong file or a wrong column mapping: that is an error
        naming the first bad line.
        """
        bad = self._skipped_by_file[file]
        if bad and bad > max_bad_fraction * max(n_total, 1):
            first = self._first_by_file[file]
            raise SemidError(
                f"{first} ({bad:,} of {n_total:,} rows of {file} unreadable, "
                f"more than max_bad_fraction={max_bad_fraction:g})"
            )

    def merge(self, other: ParseReport) -> None:
        self.n_skipped += other.n_skipped
        self.n_repaired += other.n_repaired
        self.skipped = (self.skipped + other.skipped)[: self.MAX_EXAMPLES]
        self.repaired = (self.repaired + other.repaired)[: self.MAX_EXAMPLES]
        self.notes += other.notes
        self._skipped_by_file.update(other._skipped_by_file)
        for f, issue in other._first_by_file.items():
            self._first_by_file.setdefault(f, issue)

    @property
    def clean(self) -> bool:
        """True when nothing was skipped or repaired."""
        return self.n_skipped == 0 and self.n_repaired == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "skipped": self.n_skipped,
            "repaired": self.n_repaired,
            "skipped_examples": [str(i) for i in self.skipped],
            "repaired_examples": [str(i) for i in self.repaired],
            "notes": list(self.notes),
        }

    def __str__(self) -> str:
        out = [f"{self.n_skipped:,} lines skipped, {self.n_repaired:,} repaired"]
        for title, issues, n in (
            ("skipped", self.skipped, self.n_skipped),
            ("repaired", self.repaired, self.n_repaired),
        ):
            if issues:
                more = f" (first {len(issues)} of {n:,})" if n > len(issues) else ""
                out.append(f"{title}{more}:")
                out += [f"  {i}" for i in issues]
        out += self.notes
        return "\n".join(out)

    def __repr__(self) -> str:
        return f"ParseReport(skipped={self.n_skipped}, repaired={self.n_repaired}, notes={len(self.notes)})"


# --------------------------------------------------------------------------------------------------------
# Origins: which file and line each row came from (for messages)
# --------------------------------------------------------------------------------------------------------


class Origin:
    """Where the rows of a table came from, so that a message can say ``ratings.csv line 17``.

    ``lines`` holds the 1-based line of each row; ``line_fn`` computes it lazily (readers that would need an
    extra pass over the file to know it only pay for that pass on the error path). Without either, rows are
    named by their 0-based index (``items.parquet row 3``).
    """

    def __init__(
        self,
        file: str,
        lines: np.ndarray | None = None,
        line_fn: Callable[[], np.ndarray] | None = None,
    ) -> None:
        self.file = file
        self._lines = lines
        self._line_fn = line_fn

    @property
    def lines(self) -> np.ndarray | None:
        if self._lines is None and self._line_fn is not None:
            self._lines = self._line_fn()
            self._line_fn = None
        return self._lines

    def where(self, row: int) -> str:
        lines = self.lines
        if lines is not None and 0 <= row < len(lines):
            return f"{self.file} line {int(lines[row])}"
        return f"{self.file} row {row}"

    def take(self, indices: np.ndarray) -> Origin:
        lines = self.lines
        return Origin(self.file, None if lines is None else lines[indices])


def _where(origin: Origin | None, row: int, what: str) -> str:
    return origin.where(row) if origin is not None else f"{what} row {row}"


# --------------------------------------------------------------------------------------------------------
# Catalogue
# --------------------------------------------------------------------------------------------------------


def _row_indices(indices: ArrayLike, n: int, what: str) -> np.ndarray:
    """Rows to take, as int64 in ``[0, n)``: integer row numbers or a boolean mask of length ``n``. A
    negative row is refused, not counted from the end: ``-1`` is :meth:`Catalogue.index_of`'s "missing"
    (``missing="ignore"``), and taking the last row for it would be a silent wrong answer."""
    try:
        idx = np.asarray(indices)
    except (TypeError, ValueError) as e:
        raise SemidError(
            f"{what}.take: indices should be a 1-D array of row numbers or a mask ({e})"
        ) from None
    if idx.ndim != 1:
        raise SemidError(f"{what}.take: indices should be 1-D (row numbers or a mask), got shape {idx.shape}")
    if idx.dtype == bool:
        if len(idx) != n:
            raise SemidError(
                f"{what}.take: a boolean mask should have one value per row ({n:,}), got {len(idx):,}"
            )
        return np.flatnonzero(idx)
    if len(idx) == 0:
        return np.zeros(0, np.int64)
    if not np.issubdtype(idx.dtype, np.integer):
        raise SemidError(f"{what}.take: indices should be integers or a boolean mask, got {idx.dtype} values")
    if idx.dtype == np.uint64 and idx.max() > np.iinfo(np.int64).max:
        raise SemidError(f"{what}.take: row {int(idx.max())} is out of range for {n:,} rows")
    idx = idx.astype(np.int64)  # (k,) whatever integer type came in (int8 cannot hold n)
    bad = (idx < 0) | (idx >= n)
    if bad.any():
        first = int(idx[np.argmax(bad)])
        hint = " (a negative row, such as index_of's -1 for a missing id, is not a row)" if first < 0 else ""
        raise SemidError(
            f"{what}.take: row {first} is out of range for {n:,} rows{hint} "
            f"({int(bad.sum()):,} of {len(idx):,} indices)"
        )
    return idx


def _as_string_array(values: ArrayLike) -> pa.Array:
    """Any id column (list, numpy, arrow; str or int) as an arrow string array."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not isinstance(values, pa.Array):
        arr = np.asarray(values)
        values = pa.array(arr.tolist() if arr.dtype.kind in "OUS" else arr)
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if not pa.types.is_string(values.type):  # one id type everywhere, so that joins never mix types
        values = pc.cast(values, pa.string())
    return values


def _is_text_type(t: pa.DataType) -> bool:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _is_text_type(t.value_type)
    return False


def _first_duplicate(codes: np.ndarray) -> tuple[int, int] | None:
    """(row of the first repeated value, row where that value first appeared), or None if all unique."""
    uniq, first_rows = np.unique(codes, return_index=True)
    if len(first_rows) == len(codes):
        return None
    seen = np.zeros(len(codes), dtype=bool)
    seen[first_rows] = True
    dup = int(np.flatnonzero(~seen)[0])
    return dup, int(first_rows[np.searchsorted(uniq, codes[dup])])


class Catalogue:
    """Items and their text fields, backed by a ``pyarrow.Table`` with a unique ``item_id`` string column.

    Other columns are the item's fields: text (``string``), lists of text (``list<string>``, e.g. a category
    path) or numbers (``price``). At least one text field is required, since items are embedded from text.

    Args:
        table: the items, one row each.
        origin: where the rows came from (for messages naming ``file line N``).
    """

    def __init__(self, table: pa.Table, *, origin: Origin | None = None) -> None:
        what = origin.file if origin is not None else "catalogue"
        if "item_id" not in table.column_names:
            raise SemidError(f"{what}: no item_id column (columns: {', '.join(table.column_names)})")
        ids = _as_string_array(table.column("item_id"))
        if ids.null_count:
            row = int(np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))[0])
            raise SemidError(f"{_where(origin, row, what)}: item_id is missing")
        dup = _first_duplicate(pc.dictionary_encode(ids).indices.to_numpy(zero_copy_only=False))
        if dup is not None:
            raise SemidError(
                f"{_where(origin, dup[0], what)}: item_id {ids[dup[0]].as_py()!r} is a duplicate "
                f"(first at {_where(origin, dup[1], what)})"
            )
        table = table.set_column(table.column_names.index("item_id"), "item_id", ids)
        table = _standard_list_types(
            table.select(["item_id", *(n for n in table.column_names if n != "item_id")])
        )
        text = [n for n in table.column_names if n != "item_id" and _is_text_type(table.schema.field(n).type)]
        if not text:
            raise SemidError(
                f"{what}: catalogue has no text fields (columns: {', '.join(table.column_names)}); "
                f"items need at least one text column such as a title"
            )
        self._table = table.combine_chunks()
        self.origin = origin
        self._ids_np: np.ndarray | None = None

    @classmethod
    def from_pydict(cls, columns: dict[str, ArrayLike], *, origin: Origin | None = None) -> Catalogue:
        """Build from ``{"item_id": [...], "title": [...], ...}`` (lists, numpy or arrow arrays)."""
        if not isinstance(columns, dict):
            raise SemidError(f"Catalogue.from_pydict takes a dict of columns, got {type(columns).__name__}")
        try:
            table = pa.table({k: v if isinstance(v, pa.Array) else pa.array(v) for k, v in columns.items()})
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:  # columns of different lengths, mixed types
            raise SemidError(f"Catalogue.from_pydict: {first_line(e)}") from None
        return cls(table, origin=origin)

    @property
    def table(self) -> pa.Table:
        """The underlying table (``item_id`` first, then the fields)."""
        return self._table

    def __len__(self) -> int:
        return self._table.num_rows

    def __repr__(self) -> str:
        return f"Catalogue({len(self):,} items, fields={self.fields})"

    @property
    def item_ids(self) -> np.ndarray:
        """(n_items,) object array of item id strings, in row order."""
        if self._ids_np is None:
            self._ids_np = self._table.column("item_id").to_numpy()
        return self._ids_np

    @property
    def fields(self) -> list[str]:
        """Names of the item fields (every column but ``item_id``)."""
        return [n for n in self._table.column_names if n != "item_id"]

    @property
    def text_fields(self) -> list[str]:
        """The fields holding text or lists of text."""
        return [n for n in self.fields if _is_text_type(self._table.schema.field(n).type)]

    def column(self, name: str) -> pa.Array:
        """One column as an arrow array (``item_id`` or a field)."""
        if name not in self._table.column_names:
            raise SemidError(f"catalogue has no field {name!r} (fields: {', '.join(self.fields)})")
        return self._table.column(name).combine_chunks()

    def text_column(self, name: str) -> pa.Array:
        """A field rendered as text: lists joined with ``", "``, numbers as written, missing values ``""``."""
        col = self.column(name)
        t = col.type
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            col = pc.binary_join(col, ", ")
        elif not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            col = pc.cast(col, pa.string())
        return pc.fill_null(col, "")

    def take(self, indices: ArrayLike) -> Catalogue:
        """The catalogue restricted to the given rows (row numbers in ``[0, len)`` or a boolean mask of one
        value per row), in that order."""
        idx = _row_indices(indices, len(self), "Catalogue")
        origin = self.origin.take(idx) if self.origin is not None else None
        return Catalogue(self._table.take(pa.array(idx, pa.int64())), origin=origin)

    def index_of(self, item_ids: ArrayLike, *, missing: Literal["raise", "ignore"] = "raise") -> np.ndarray:
        """Row of each item id, as an int64 array (a hash join in arrow, no Python loop).

        ``missing="raise"`` makes an unknown id an error; ``"ignore"`` maps it to ``-1``.
        """
        ids = _as_string_array(item_ids)
        idx = pc.index_in(ids, value_set=self._table.column("item_id"))
        out = pc.fill_null(idx, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        if missing == "raise" and idx.null_count:
            first = int(np.flatnonzero(out < 0)[0])
            raise SemidError(
                f"item_id {ids[first].as_py()!r} is not in the catalogue "
                f"({idx.null_count:,} of {len(ids):,} ids unknown)"
            )
        return out

    def coverage(self) -> dict[str, float]:
        """Share of items with a non-empty value, per field (empty text, ``"None"``, [] and NaN are empty)."""
        n = len(self)
        return {name: (_non_empty(self.column(name)) / n if n else 0.0) for name in self.fields}

    def to_parquet(self, path: str | os.PathLike) -> None:
        """Write the table to Parquet, atomically."""
        with atomic_path(path) as tmp:
            pq.write_table(self._table, tmp)

    @classmethod
    def from_parquet(cls, path: str | os.PathLike) -> Catalogue:
        """Read a catalogue written by :meth:`to_parquet` (or any Parquet file with an ``item_id`` column)."""
        if not Path(path).is_file():
            raise SemidError(f"{path}: no such file")
        return cls(pq.read_table(path), origin=Origin(Path(path).name))


def _standard_list_types(table: pa.Table) -> pa.Table:
    """Name list children ``item`` (Parquet writes ``element``), so that a round trip gives equal tables."""
    fields, renamed = [], False
    for f in table.schema:
        t = f.type
        if pa.types.is_list(t) and t.value_field.name != "item":
            t, renamed = pa.list_(t.value_type), True
        fields.append(pa.field(f.name, t, f.nullable, f.metadata))
    return table.cast(pa.schema(fields, table.schema.metadata)) if renamed else table


def _non_empty(col: pa.Array) -> int:
    t = col.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        trimmed = pc.utf8_trim_whitespace(col)
        ok = pc.and_(pc.greater(pc.utf8_length(trimmed), 0), pc.invert(pc.equal(trimmed, "None")))
    elif pa.types.is_list(t) or pa.types.is_large_list(t):
        ok = pc.greater(pc.list_value_length(col), 0)
    elif pa.types.is_floating(t):
        ok = pc.invert(pc.is_nan(col))
    else:
        ok = pc.is_valid(col)
    return int(pc.sum(pc.fill_null(ok, False)).as_py() or 0)


# --------------------------------------------------------------------------------------------------------
# Interactions
# --------------------------------------------------------------------------------------------------------


class Sequences(NamedTuple):
    """Per-user item sequences in CSR form: user ``u``'s items are ``items[offsets[u]:offsets[u + 1]]``.

    ``offsets``: (n_users + 1,) int64, starting at 0. ``items``: (n_interactions,) int64 item indices.
    Unpacks as a pair: ``offsets, items = interactions.sequences()``.
    """

    offsets: np.ndarray
    items: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        """(n_users,) int64 length of each sequence."""
        return np.diff(self.offsets)

    @property
    def n_users(self) -> int:
        return len(self.offsets) - 1

    def row(self, u: int) -> np.ndarray:
        """The item indices of user ``u`` (a view)."""
        return self.items[self.offsets[u] : self.offsets[u + 1]]


def _encode(values: ArrayLike, what: str, origin: Origin | None) -> tuple[pa.Array, np.ndarray]:
    """Dictionary-encode ids: (vocabulary in first-appearance order, int64 codes)."""
    arr = _as_string_array(values)
    if arr.null_count:
        row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise SemidError(f"{_where(origin, row, 'interactions')}: {what} is missing")
    enc = pc.dictionary_encode(arr)
    return enc.dictionary, enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)


def _optional_numbers(values: ArrayLike | None, n: int, what: str) -> np.ndarray | None:
    if values is None:
        return None
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = values.to_numpy(zero_copy_only=False)
    arr = np.asarray(values)
    if arr.dtype.kind not in "iuf":
        raise SemidError(f"{what} should be numbers, got dtype {arr.dtype}")
    if arr.shape != (n,):
        raise SemidError(
            f"{what} has {arr.shape[0] if arr.ndim else 0:,} values, expected {n:,} (one per interaction)"
        )
    return arr


class Interactions:
    """Who interacted with what, and when: parallel columns, one row per interaction.

    Ids are stored dictionary-encoded (int64 codes into vocabularies kept in first-appearance order), so
    memory stays at a few bytes per interaction. :meth:`sequences` groups them per user in time order.

    Args:
        user_ids, item_ids: (n,) ids (strings, or integers which become strings).
        timestamps: (n,) numbers (unix seconds) or None when the rows are already in time order per user.
        ratings: (n,) numbers or None.
        origin: where the rows came from (for messages naming ``file line N``).
    """

    def __init__(
        self,
        user_ids: ArrayLike,
        item_ids: ArrayLike,
        timestamps: ArrayLike | None = None,
        ratings: ArrayLike | None = None,
        *,
        origin: Origin | None = None,
    ) -> None:
        users, user_codes = _encode(user_ids, "user_id", origin)
        items, item_codes = _encode(item_ids, "item_id", origin)
        if len(user_codes) != len(item_codes):
            raise SemidError(
                f"{len(user_codes):,} user ids but {len(item_codes):,} item ids; expected one each per interaction"
            )
        self._init(users, user_codes, items, item_codes, timestamps, ratings, origin)

    def _init(
        self,
        users: pa.Array,
        user_codes: np.ndarray,
        items: pa.Array,
        item_codes: np.ndarray,
        timestamps: ArrayLike | None,
        ratings: ArrayLike | None,
        origin: Origin | None,
    ) -> None:
        n = len(user_codes)
        self._users, self._user_codes = users, user_codes
        self._items, self._item_codes = items, item_codes
        self.timestamps = _optional_numbers(timestamps, n, "timestamps")
        self.ratings = _optional_numbers(ratings, n, "ratings")
        self.origin = origin

    @classmethod
    def from_codes(
        cls,
        users: ArrayLike,
        user_codes: np.ndarray,
        items: ArrayLike,
        item_codes: np.ndarray,
        timestamps: ArrayLike | None = None,
        ratings: ArrayLike | None = None,
        *,
        origin: Origin | None = None,
    ) -> Interactions:
        """Build from vocabularies and integer codes (no re-encoding; unused vocabulary entries are dropped)."""
        user_codes, item_codes = np.asarray(user_codes, np.int64), np.asarray(item_codes, np.int64)
        users_arr, items_arr = _as_string_array(users), _as_string_array(items)
        for what, codes, vocab in (("user", user_codes, users_arr), ("item", item_codes, items_arr)):
            if len(codes) and (codes.min() < 0 or codes.max() >= len(vocab)):
                raise SemidError(
                    f"{what} codes should lie in [0, {len(vocab)}), got [{codes.min()}, {codes.max()}]"
                )
        if len(user_codes) != len(item_codes):
            raise SemidError(f"{len(user_codes):,} user codes but {len(item_codes):,} item codes")
        self = cls.__new__(cls)
        users_arr, user_codes = _compact(users_arr, user_codes)
        items_arr, item_codes = _compact(items_arr, item_codes)
        self._init(users_arr, user_codes, items_arr, item_codes, timestamps, ratings, origin)
        return self

    # -- sizes -------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._user_codes)

    def __repr__(self) -> str:
        return f"Interactions({self.n_interactions:,} interactions, {self.n_users:,} users, {self.n_items:,} items)"

    @property
    def n_users(self) -> int:
        return len(self._users)

    @property
    def n_items(self) -> int:
        return len(self._items)

    @property
    def n_interactions(self) -> int:
        return len(self._user_codes)

    # -- columns -----------------------------------------------------------------------------------------

    @property
    def users(self) -> np.ndarray:
        """(n_users,) distinct user ids in first-appearance order: row ``u`` of :meth:`sequences`."""
        return self._users.to_numpy(zero_copy_only=False)

    @property
    def items(self) -> np.ndarray:
        """(n_items,) distinct item ids in first-appearance order."""
        return self._items.to_numpy(zero_copy_only=False)

    @property
    def user_codes(self) -> np.ndarray:
        """(n,) int64 index of each interaction's user in :attr:`users`."""
        return self._user_codes

    @property
    def item_codes(self) -> np.ndarray:
        """(n,) int64 index of each interaction's item in :attr:`items`."""
        return self._item_codes

    @property
    def user_ids(self) -> np.ndarray:
        """(n,) user id of each interaction (object array of str)."""
        return self._users.take(pa.array(self._user_codes)).to_numpy(zero_copy_only=False)

    @property
    def item_ids(self) -> np.ndarray:
        """(n,) item id of each interaction (object array of str)."""
        return self._items.take(pa.array(self._item_codes)).to_numpy(zero_copy_only=False)

    # -- grouping ----------------------------------------------------------------------------------------

    def order(self) -> np.ndarray:
        """(n,) permutation sorting interactions by (user, timestamp, original row): a stable time order."""
        if self.timestamps is None:
            return np.argsort(self._user_codes, kind="stable")
        return np.lexsort((self.timestamps, self._user_codes))  # lexsort is stable: ties keep row order

    def sequence_lengths(self) -> np.ndarray:
        """(n_users,) int64 number of interactions of each user (in :attr:`users` order)."""
        return np.bincount(self._user_codes, minlength=self.n_users).astype(np.int64)

    def sequences(self, item_ids: ArrayLike | Catalogue | None = None) -> Sequences:
        """Each user's items in time order, as CSR ``(offsets, items)``; rows follow :attr:`users`.

        Item indices point into ``item_ids`` when given (e.g. a :class:`Catalogue`, so that index ``i`` is
        catalogue row ``i``), else into :attr:`items`. An item missing from ``item_ids`` is an error.
        """
        order = self.order()
        offsets = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(self.sequence_lengths(), out=offsets[1:])
        codes = self._item_codes[order]
        if item_ids is not None:
            mapping = self._item_mapping(item_ids)
            codes = mapping[codes]
        return Sequences(offsets, codes.astype(np.int64, copy=False))

    def _item_mapping(self, item_ids: ArrayLike | Catalogue) -> np.ndarray:
        """Index in ``item_ids`` of each vocabulary item; raises naming the first interaction of an unknown one."""
        catalogue = item_ids if isinstance(item_ids, Catalogue) else None
        if catalogue is None:
            ids = _as_string_array(item_ids)
            mapping = pc.fill_null(pc.index_in(self._items, value_set=ids), -1).to_numpy(zero_copy_only=False)
        else:
            mapping = catalogue.index_of(self._items, missing="ignore")
        mapping = np.asarray(mapping, dtype=np.int64)
        unknown = mapping < 0
        if unknown.any():
            bad_rows = unknown[self._item_codes]
            row = int(np.argmax(bad_rows))
            where = _where(self.origin, row, "interactions")
            into = f" ({catalogue.origin.file})" if catalogue is not None and catalogue.origin else ""
            raise SemidError(
                f"{where}: item {self._items[int(self._item_codes[row])].as_py()!r} is not in the catalogue{into} "
                f"({int(bad_rows.sum()):,} of {len(self):,} interactions name {int(unknown.sum()):,} unknown items)"
            )
        return mapping

    def take(self, indices: ArrayLike) -> Interactions:
        """The interactions at the given rows (int indices or boolean mask); vocabularies shrink to what is used."""
        idx = _row_indices(indices, len(self), "Interactions")
        return Interactions.from_codes(
            self._users,
            self._user_codes[idx],
            self._items,
            self._item_codes[idx],
            None if self.timestamps is None else self.timestamps[idx],
            None if self.ratings is None else self.ratings[idx],
            origin=self.origin.take(idx) if self.origin is not None else None,
        )

    # -- persistence -------------------------------------------------------------------------------------

    def to_table(self) -> pa.Table:
        """Columns ``user_id``, ``item_id`` (dictionary-encoded) and, when present, ``timestamp``, ``rating``."""
        cols: dict[str, pa.Array] = {
            "user_id": pa.DictionaryArray.from_arrays(pa.array(self._user_codes, pa.int32()), self._users),
            "item_id": pa.DictionaryArray.from_arrays(pa.array(self._item_codes, pa.int32()), self._items),
        }
        if self.timestamps is not None:
            cols["timestamp"] = pa.array(self.timestamps)
        if self.ratings is not None:
            cols["rating"] = pa.array(self.ratings)
        return pa.table(cols)

    def to_parquet(self, path: str | os.PathLike) -> None:
        """Write to Parquet, atomically."""
        with atomic_path(path) as tmp:
            pq.write_table(self.to_table(), tmp)

    @classmethod
    def from_parquet(cls, path: str | os.PathLike) -> Interactions:
        """Read interactions written by :meth:`to_parquet`."""
        if not Path(path).is_file():
            raise SemidError(f"{path}: no such file")
        t = pq.read_table(path)
        cols = t.column_names
        for c in ("user_id", "item_id"):
            if c not in cols:
                raise SemidError(f"{Path(path).name}: no {c} column (columns: {', '.join(cols)})")
        return cls(
            t.column("user_id"),
            t.column("item_id"),
            t.column("timestamp") if "timestamp" in cols else None,
            t.column("rating") if "rating" in cols else None,
            origin=Origin(Path(path).name),
        )


def _compact(vocab: pa.Array, codes: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Drop unused vocabulary entries, keeping first-appearance order of the used ones."""
    if len(codes) == 0:
        return vocab.slice(0, 0), codes
    used, first = np.unique(codes, return_index=True)
    keep = used[np.argsort(first, kind="stable")]  # vocab entries in order of first use
    if len(keep) == len(vocab) and np.array_equal(keep, np.arange(len(vocab))):
        return vocab, codes
    remap = np.full(len(vocab), -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    return vocab.take(pa.array(keep)), remap[codes]


# --------------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetStats:
    """The numbers ``semid data stats`` prints."""

    name: str
    n_users: int
    n_items: int
    n_interactions: int
    seq_len_min: int
    seq_len_median: float
    seq_len_mean: float
    seq_len_max: int
    coverage: dict[str, float]
    report: ParseReport

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "sequence_length": {
                "min": self.seq_len_min,
                "median": self.seq_len_median,
                "mean": self.seq_len_mean,
                "max": self.seq_len_max,
            },
            "coverage": dict(self.coverage),
            "parse_report": self.report.to_dict(),
        }


@dataclass
class Dataset:
    """A catalogue and the interactions over it, plus the report of what reading them skipped or repaired.

    Either part may be absent (a catalogue alone is enough to embed items). When both are present every
    interaction must name a catalogue item; an unknown item is an error naming its file and line.
    """

    catalogue: Catalogue | None = None
    interactions: Interactions | None = None
    report: ParseReport = field(default_factory=ParseReport)
    name: str = ""

    def __post_init__(self) -> None:
        if self.catalogue is None and self.interactions is None:
            raise SemidError("a dataset needs a catalogue, interactions or both; got neither")
        if self.catalogue is not None and self.interactions is not None:
            self.interactions._item_mapping(self.catalogue)  # raises on an unknown item

    def sequences(self) -> Sequences:
        """Per-user item sequences in time order; item indices are catalogue rows when there is a catalogue."""
        if self.interactions is None:
            raise SemidError(f"dataset {self.name!r} has no interactions")
        return self.interactions.sequences(self.catalogue)

    def stats(self) -> DatasetStats:
        """Users, items, interactions, sequence length spread, field coverage, parse report."""
        lengths = (
            self.interactions.sequence_lengths() if self.interactions is not None else np.zeros(0, np.int64)
        )
        has = len(lengths) > 0
        if self.catalogue is not None:
            n_items = len(self.catalogue)
        else:
            n_items = self.interactions.n_items if self.interactions is not None else 0
        return DatasetStats(
            name=self.name,
            n_users=self.interactions.n_users if self.interactions is not None else 0,
            n_items=n_items,
            n_interactions=self.interactions.n_interactions if self.interactions is not None else 0,
            seq_len_min=int(lengths.min()) if has else 0,
            seq_len_median=float(np.median(lengths)) if has else 0.0,
            seq_len_mean=float(lengths.mean()) if has else 0.0,
            seq_len_max=int(lengths.max()) if has else 0,
            coverage=self.catalogue.coverage() if self.catalogue is not None else {},
            report=self.report,
        )

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``items.parquet`` and ``interactions.parquet`` into ``directory`` (atomically, as a whole).

        :func:`semid.data.load_dataset` reads the directory back.
        """
        directory = Path(directory)
        with atomic_path(
            directory, is_dir=True, replaceable=_is_dataset_dir, what="a semid dataset directory"
        ) as tmp:
            if self.catalogue is not None:
                self.catalogue.to_parquet(tmp / "items.parquet")
            if self.interactions is not None:
                self.interactions.to_parquet(tmp / "interactions.parquet")
        return directory


def _is_dataset_dir(directory: Path) -> bool:
    """True for a directory :meth:`Dataset.save` wrote: only its Parquet files, at least one of them."""
    names = {p.name for p in directory.iterdir()}
    return bool(names) and names <= {"items.parquet", "interactions.parquet"}
