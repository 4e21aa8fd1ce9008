"""Training examples streamed from Parquet interaction logs sharded by user, with bounded memory per rank.

For logs larger than RAM; the in-memory :class:`~semid.rec.data.RecData` path stays the one for small data.

    write_user_shards(users, items, times, "log/", n_shards=64)     # or Spark / DuckDB, same layout
    log = StreamedLog.open("log/", data.item_ids)                    # checks every footer, reads no rows
    steps = log.count_batches("windows", 50, 256, rank=r, world_size=w)
    for batch in log.train_batches("windows", 50, 256, seed=0, epoch=e, rank=r, world_size=w):
        train_step(model, optimizer, batch)
    valid = log.eval_examples("valid", 50, max_users=10_000)        # in memory, like split_examples

Layout
    A directory of ``part-00000.parquet``, ``part-00001.parquet``, ... (any ``*.parquet``, read in name
    order; a single ``.parquet`` file is one shard) with columns ``user_id``, ``item_id`` and
    ``timestamp`` (names configurable; ``time_column=None``: rows are already in time order). Every user's
    rows lie in one shard, together, sorted by user then time: what :func:`write_user_shards` writes (users
    hashed to shards with :func:`semid.rec.data.user_keys`), and what Spark's
    ``repartition(n, "user_id").sortWithinPartitions("user_id", "timestamp")`` writes (any hash will do;
    a user found in two shards counts as two users, which is not detected). Data-parallel rank
    ``r`` of ``W`` reads shards ``r, r + W, r + 2W, ...`` (:meth:`StreamedLog.shards`), so a number of
    shards that is a multiple of ``W`` (and much larger than it) balances the ranks.

What is trained on
    Exactly what the in-memory path trains on: each user's sequence is split as
    :func:`semid.data.leave_one_out` splits it (last item test target, second last validation target, the
    rest training; fewer than 3 items is an error, or the user is dropped with ``drop_short_users=True``
    as :meth:`RecData.from_dataset` drops them), and the training part is cut into the examples of
    :func:`~semid.rec.data.window_examples` (SASRec) or :func:`~semid.rec.data.prefix_examples` (TIGER). Over
    one epoch the ranks together produce that multiset of examples, each once (``tests/test_stream.py``).

Memory (per rank, whatever the log's size)
    - the item-id -> index map: 12 bytes per catalogue item (sorted 64-bit hashes of the ids + an int32
      permutation; 10M items: 120 MB), built once by :meth:`StreamedLog.open`;
    - one Parquet row group of the three columns being decoded (keep row groups modest: Spark's 128 MB
      default is the largest term then), one record batch (``batch_rows``, default 65,536 rows) and the
      one user whose rows continue past it;
    - the shuffle buffer: ``buffer_examples`` examples (default 65,536) and their histories, at most
      ``buffer_examples x max_history`` item indices (8 bytes each: 26 MB at max_history 50);
    - :meth:`StreamedLog.eval_examples`: the held-out examples it returns (``max_users`` bounds them).
    Measured (``bench/results/stream_rss.txt``, 2 cores, TIGER prefixes, max_history 50): peak RSS 387 MiB
    at 1M interactions and 398 MiB at 5M (268 MiB of it is Python + torch), against 530 and 1,047 MiB
    for the in-memory path; examples/s 1.4-1.6x the in-memory path's (which loads and sorts first), and
    0.8-1.1x for SASRec windows (few examples per row read).

Costs
    :meth:`~StreamedLog.open` reads every footer (no rows) and hashes the catalogue ids once. An epoch
    reads its rank's shards once (only the three columns), with vectorised work per record batch and
    Python work per user (a CRC-32 of the user id); :meth:`~StreamedLog.count_train_examples` reads only
    the user column, once per log, and caches per-shard length histograms from which every count follows.
    Batches mix examples within one shuffle buffer (thousands of users; shard order is shuffled per epoch),
    not across the whole epoch as :func:`~semid.rec.data.length_batches` does in memory.

Errors (:class:`~semid.errors.SemidError`, one line each)
    A corrupt footer, a missing column or no shards fail in :meth:`~StreamedLog.open`, before any work,
    naming the file. Problems in the rows fail when the stream meets them, naming the file and row: an item
    id that is not in the catalogue (the first few named), a user whose rows are split or out of order, a
    user's timestamps out of order, a null id. Item ids are matched by 64-bit hash: an unknown id taken for
    a known one needs a hash collision (chance ~ n_items / 2^64 per unknown id).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from semid._outputs import atomic_path
from semid._utils import check_positive_int
from semid.data import LeaveOneOut, Sequences, leave_one_out
from semid.data._io import as_utf8_text
from semid.errors import SemidError, first_line
from semid.rec.data import (
    Batch,
    Examples,
    collate,
    history_examples,
    length_batches,
    prefix_examples,
    user_keys,
    window_examples,
)
from semid.scale.hashing import hash_strings
from semid.scale.parts import list_parts

__all__ = ["KINDS", "StreamedLog", "write_user_shards"]

KINDS = ("windows", "prefixes")  # SASRec's windows, TIGER's prefixes (a model's ``example_kind``)
SHARD_RE = re.compile(r"part-\d{5}\.parquet")
BATCH_ROWS = 65_536  # rows per record batch read from a shard
BUFFER_EXAMPLES = 65_536  # examples shuffled together


# --------------------------------------------------------------------------------------------------------
# Writing a log
# --------------------------------------------------------------------------------------------------------


def write_user_shards(
    user_ids: Any,
    item_ids: Any,
    timestamps: Any,
    out_dir: str | os.PathLike,
    n_shards: int,
    *,
    row_group_size: int = 65_536,
) -> list[Path]:
    """Write an interaction log as ``out_dir/part-00000.parquet ...``, the layout :class:`StreamedLog` reads.

    ``user_ids``, ``item_ids`` and ``timestamps`` are equal-length arrays (numpy, lists or pyarrow, e.g.
    the columns of a table: ``write_user_shards(t["user_id"], t["item_id"], t["timestamp"], ...)``);
    ``timestamps=None`` keeps the given row order as time order. Users go to shard
    ``user_keys(user) % n_shards`` (a stable CRC-32), rows sorted by (user, timestamp) within a shard
    (stable: equal timestamps keep their order), in row groups of ``row_group_size`` rows; a shard with no
    user is an empty file. Columns: ``user_id``, ``item_id``, ``timestamp``.

    The output directory is replaced as a whole and atomically (an existing one must be empty or hold only
    ``part-NNNNN.parquet`` files). Holds the whole log in memory (about 3x its Arrow size, for the sort):
    a tool for tests, benchmarks and logs that fit; shard larger ones with Spark or DuckDB (module docs).
    Returns the shard paths.
    """
    if (
        isinstance(n_shards, bool)
        or not isinstance(n_shards, (int, np.integer))
        or not 1 <= n_shards <= 99_999
    ):
        raise SemidError(f"n_shards={n_shards!r} should be an integer in [1, 99999]")
    check_positive_int("row_group_size", row_group_size)
    users, items = _as_arrow(user_ids), _as_arrow(item_ids)
    times = pa.array(np.arange(len(users), dtype=np.int64)) if timestamps is None else _as_arrow(timestamps)
    if not len(users) == len(items) == len(times):
        raise SemidError(
            "user_ids, item_ids and timestamps differ in length: "
            f"{len(users):,}, {len(items):,}, {len(times):,}"
        )
    for name, col in (("user_ids", users), ("item_ids", items), ("timestamps", times)):
        if col.null_count:
            row = int(np.argmax(col.is_null().to_numpy(zero_copy_only=False)))
            raise SemidError(f"{name}[{row}] is null; every interaction needs a user, an item and a time")
    # Hash each distinct user once: dictionary-encode, CRC-32 the dictionary, gather per row.
    encoded = users.dictionary_encode()
    shard_of_user = user_keys(encoded.dictionary.to_pylist()) % n_shards  # (n_distinct,)
    shard = shard_of_user[encoded.indices.to_numpy(zero_copy_only=False)]  # (n,)
    table = pa.table({"shard": shard, "user_id": users, "item_id": items, "timestamp": times})
    order = pc.sort_indices(
        table, [("shard", "ascending"), ("user_id", "ascending"), ("timestamp", "ascending")]
    )
    table = table.take(order)
    bounds = np.searchsorted(table["shard"].to_numpy(), np.arange(n_shards + 1))  # (n_shards + 1,) row ranges
    table = table.drop_columns(["shard"])
    out_dir = Path(out_dir)
    names = [f"part-{s:05d}.parquet" for s in range(n_shards)]
    with atomic_path(out_dir, is_dir=True, replaceable=_is_log_dir, what="a sharded interaction log") as tmp:
        for s, name in enumerate(names):
            part = table.slice(bounds[s], bounds[s + 1] - bounds[s])
            pq.write_table(part, tmp / name, row_group_size=int(row_group_size))
    return [out_dir / name for name in names]


def _as_arrow(values: Any) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    if isinstance(values, pa.Array):
        return values
    arr = np.asarray(values)
    return pa.array(arr.tolist() if arr.dtype.kind in "OUS" else arr)


def _is_log_dir(directory: Path) -> bool:
    """A directory that holds only shards written by :func:`write_user_shards`."""
    return all(SHARD_RE.fullmatch(p.name) for p in directory.iterdir())


# --------------------------------------------------------------------------------------------------------
# Reading a log
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    """Consecutive complete users of one shard: their sequences (all items, oldest first) and keys."""

    lengths: np.ndarray  # (n_users,) int64 interactions per user
    items: np.ndarray | None  # (sum(lengths),) int64 item indices (None when only counting)
    keys: np.ndarray  # (n_users,) int64 user keys (user_keys of the ids)
    ids: list[Any]  # (n_users,) user ids as read, for messages
    path: Path

    @property
    def sequences(self) -> Sequences:
        offsets = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=offsets[1:])
        return Sequences(offsets, self.items)


@dataclass
class StreamedLog:
    """A user-sharded Parquet interaction log, read in a bounded-memory stream; see the module docs.

    Open with :meth:`open`. Holds the shard list, their row counts (from the footers) and the compact
    item-id -> index map; every method reads the shards anew (no state between calls but cached counts).
    """

    paths: list[Path]  # shard files in name order
    rows: list[int]  # rows per shard (footer counts)
    n_items: int
    user_column: str = "user_id"
    item_column: str = "item_id"
    time_column: str | None = "timestamp"
    batch_rows: int = BATCH_ROWS
    drop_short_users: bool = False
    _hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64), repr=False)  # sorted
    _order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32), repr=False)  # item of each hash
    _train_hist: dict[Path, np.ndarray] = field(default_factory=dict, repr=False)  # cached counts

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        item_ids: Sequence[Any] | np.ndarray,
        *,
        user_column: str = "user_id",
        item_column: str = "item_id",
        time_column: str | None = "timestamp",
        batch_rows: int = BATCH_ROWS,
        drop_short_users: bool = False,
    ) -> StreamedLog:
        """Check the log at ``path`` (a directory of shards or one ``.parquet`` file) and map the catalogue.

        ``item_ids`` is the catalogue in model order (item index ``i`` is ``item_ids[i]``, e.g.
        :attr:`RecData.item_ids`); ids compare as text, so integer ids in the log match ``"123"``. Before any
        work, every shard's footer is read: a corrupt footer, a missing column, a column of the wrong type or
        no shards is one error naming the file. ``drop_short_users``: leave out users with fewer than 3
        interactions (as :meth:`RecData.from_dataset` does) instead of failing on the first. Costs one
        footer read per shard and one vectorised hash of the catalogue ids.
        """
        _check_int("batch_rows", batch_rows, 1)
        columns = (user_column, item_column) + ((time_column,) if time_column else ())
        parts = list_parts(path, columns)
        for f in parts.files:
            schema = pq.read_schema(f)
            for name, ok, want in (
                (user_column, _is_id_type, "text or integer ids"),
                (item_column, _is_id_type, "text or integer ids"),
                (time_column, _is_time_type, "numbers or timestamps"),
            ):
                if name and not ok(schema.field(name).type):
                    raise SemidError(f"{f.name}: column {name!r} holds {schema.field(name).type}, not {want}")
        ids = np.asarray(item_ids)
        if ids.ndim != 1 or len(ids) == 0:
            raise SemidError(f"item_ids should be a non-empty 1-d array of item ids, got shape {ids.shape}")
        hashes = hash_strings(ids)  # (n_items,) uint64
        order = np.argsort(hashes, kind="stable")
        hashes = hashes[order]
        same = np.flatnonzero(hashes[1:] == hashes[:-1])
        if len(same):
            a, b = sorted((int(order[same[0]]), int(order[same[0] + 1])))
            raise SemidError(
                f"item_ids[{a}] {str(ids[a])!r} and item_ids[{b}] {str(ids[b])!r} are the same id "
                "(or share a 64-bit hash); catalogue ids must be unique"
            )
        return cls(
            paths=list(parts.files),
            rows=list(parts.rows),
            n_items=len(ids),
            user_column=user_column,
            item_column=item_column,
            time_column=time_column,
            batch_rows=int(batch_rows),
            drop_short_users=drop_short_users,
            _hashes=hashes,
            _order=order.astype(np.int32 if len(ids) < 2**31 else np.int64),
        )

    @property
    def n_rows(self) -> int:
        """Interactions in the whole log (footer counts)."""
        return sum(self.rows)

    def shards(self, rank: int = 0, world_size: int = 1) -> list[Path]:
        """The shards data-parallel rank ``rank`` of ``world_size`` reads: ``paths[rank::world_size]``."""
        check_positive_int("world_size", world_size)
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < world_size:
            raise SemidError(f"rank={rank!r} should be an integer in [0, world_size={world_size})")
        if len(self.paths) < world_size:
            raise SemidError(
                f"the log has {len(self.paths)} shard{'s' * (len(self.paths) != 1)} for {world_size} ranks; "
                f"every rank needs one: write it with n_shards >= {world_size} "
                "(a multiple of it balances them)"
            )
        return self.paths[rank::world_size]

    # -- users ------------------------------------------------------------------------------------------

    def iter_users(
        self, paths: Sequence[str | os.PathLike] | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(user key, item indices oldest first)`` for each user of ``paths`` (default: every shard).

        Each user's rows must be together in one shard, sorted by user then time (module docs); a user met
        again after another is an error naming the file, row and user. Memory: one record batch and one
        user's sequence. A user's items are its whole sequence (no leave-one-out split).
        """
        for path in self.paths if paths is None else [Path(p) for p in paths]:
            for block in self._blocks(path):
                seqs = block.sequences
                for u, key in enumerate(block.keys):
                    yield int(key), seqs.items[seqs.offsets[u] : seqs.offsets[u + 1]]

    def _blocks(self, path: Path, *, items: bool = True) -> Iterator[_Block]:
        """The complete users of ``path``, one block per record batch (``items=False``: read only users).

        The last user of a batch may continue in the next one: its rows are held back (``pending``) and
        joined to the next batch's first run, or emitted as a user of their own when another user starts.
        """
        columns = [self.user_column]
        if items:
            columns += [self.item_column] + ([self.time_column] if self.time_column else [])
        try:
            batches = pq.ParquetFile(path).iter_batches(batch_size=self.batch_rows, columns=columns)
        except (pa.ArrowException, OSError) as e:
            raise SemidError(f"{path.name}: not a readable Parquet file ({first_line(e)})") from None
        row0 = 0  # shard row of the batch's first row
        pending: tuple[Any, int, np.ndarray | None, Any] | None = None  # (id, length, items, last time)
        while True:
            try:
                batch = next(batches, None)
            except (pa.ArrowException, OSError) as e:  # damaged pages behind a good footer
                raise SemidError(f"{path.name} near row {row0}: cannot read ({first_line(e)})") from None
            if batch is None:
                break
            n = batch.num_rows
            if n == 0:
                continue
            users = self._plain(batch.column(0), path, row0, self.user_column)
            same = pc.equal(users[1:], users[:-1]).to_numpy(zero_copy_only=False)  # (n - 1,) row r+1 == row r
            starts = np.concatenate([[0], np.flatnonzero(~same) + 1])  # (R,) first row of each run
            lengths = np.diff(np.append(starts, n)).astype(np.int64)  # (R,) rows per run
            ids = users.take(pa.array(starts)).to_pylist()
            self._check_user_order(users, ids, pending, path, row0)
            idx = times = None
            if items:
                idx = self._item_index(batch.column(1), path, row0)
                if self.time_column:
                    times = self._plain(batch.column(2), path, row0, self.time_column)
                    self._check_time_order(times, same, ids, pending, path, row0)
            keys = user_keys(ids)
            if pending is not None:
                p_id, p_len, p_items, _ = pending
                if ids[0] == p_id:  # the held-back user continues here
                    lengths[0] += p_len
                else:
                    ids, keys = [p_id, *ids], np.concatenate([user_keys([p_id]), keys])
                    lengths = np.concatenate([[p_len], lengths])
                if items:
                    idx = np.concatenate([p_items, idx])
            # All runs but the last are complete; the last may go on in the next batch.
            cut = int(lengths[:-1].sum())
            if len(ids) > 1:
                yield _Block(lengths[:-1], idx[:cut] if items else None, keys[:-1], ids[:-1], path)
            last_time = times[n - 1].as_py() if times is not None else None
            pending = (ids[-1], int(lengths[-1]), idx[cut:].copy() if items else None, last_time)
            row0 += n
        if pending is not None:
            p_id, p_len, p_items, _ = pending
            yield _Block(np.array([p_len], np.int64), p_items, user_keys([p_id]), [p_id], path)

    def _plain(self, col: pa.Array, path: Path, row0: int, name: str) -> pa.Array:
        """``col`` without dictionary encoding; a null is an error naming its row."""
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        if col.null_count:
            row = row0 + int(np.argmax(col.is_null().to_numpy(zero_copy_only=False)))
            raise SemidError(f"{path.name} row {row}: {name} is null")
        return col

    def _check_user_order(self, users: pa.Array, ids: list[Any], pending: Any, path: Path, row0: int) -> None:
        """Users must come in increasing order: the one check that finds a split user in O(1) memory."""
        back = pc.less(users[1:], users[:-1]).to_numpy(zero_copy_only=False)  # (n - 1,)
        if back.any():
            r = int(np.argmax(back))
            before, after = users[r].as_py(), users[r + 1].as_py()
        elif pending is not None and ids[0] < pending[0]:
            r, before, after = -1, pending[0], ids[0]
        else:
            return
        raise SemidError(
            f"{path.name} row {row0 + r + 1}: user {after!r} comes after user {before!r}; a shard must hold "
            "each user's rows together, sorted by user then time (as write_user_shards writes them)"
        )

    def _check_time_order(
        self, times: pa.Array, same: np.ndarray, ids: list[Any], pending: Any, path: Path, row0: int
    ) -> None:
        back = pc.less(times[1:], times[:-1]).to_numpy(zero_copy_only=False) & same  # (n - 1,)
        r = int(np.argmax(back)) + 1 if back.any() else None
        if r is None and pending is not None and ids[0] == pending[0] and times[0].as_py() < pending[3]:
            r = 0
        if r is None:
            return
        user = ids[np.searchsorted(np.flatnonzero(np.concatenate([[True], ~same])), r, side="right") - 1]
        raise SemidError(
            f"{path.name} row {row0 + r}: {self.time_column} of user {user!r} goes back in time; "
            "rows must be sorted by user then time (as write_user_shards writes them)"
        )

    def _item_index(self, col: pa.Array, path: Path, row0: int) -> np.ndarray:
        """(n,) int64 catalogue index of each item id; unknown ids are one error naming the first few."""
        col = self._plain(col, path, row0, self.item_column)
        if pa.types.is_integer(col.type):
            text = pc.cast(col, pa.string())
        else:
            text = as_utf8_text(col, lambda r: f"{path.name} row {row0 + r}", self.item_column)
        h = hash_strings(text)  # (n,) uint64
        pos = np.minimum(np.searchsorted(self._hashes, h), len(self._hashes) - 1)
        known = self._hashes[pos] == h
        if not known.all():
            bad = np.flatnonzero(~known)
            names = list(dict.fromkeys(text.take(pa.array(bad[:100])).to_pylist()))[:3]
            raise SemidError(
                f"{path.name} row {row0 + int(bad[0])}: item {names[0]!r} is not in the catalogue of "
                f"{self.n_items:,} items ({len(bad):,} unknown in rows {row0:,}-{row0 + len(col) - 1:,}, "
                f"e.g. {', '.join(repr(x) for x in names)}); the catalogue's item_ids must cover the log"
            )
        return self._order[pos].astype(np.int64)

    def _kept(self, block: _Block) -> np.ndarray:
        """(n_users,) bool: users with the 3 items leave-one-out needs; a shorter one fails unless dropped."""
        keep = block.lengths >= 3
        if not keep.all() and not self.drop_short_users:
            u = int(np.argmin(keep))
            raise SemidError(
                f"{block.path.name}: user {block.ids[u]!r} has {int(block.lengths[u])} interactions; "
                "leave-one-out needs at least 3 (filter with k_core(interactions, k=3) first, "
                "or open the log with drop_short_users=True)"
            )
        return keep

    def _split(self, block: _Block) -> tuple[LeaveOneOut, np.ndarray]:
        """Leave-one-out of the block's users (short ones dropped or an error), and their keys."""
        keep = self._kept(block)
        if keep.all():
            return leave_one_out(block.sequences), block.keys
        kept = _Block(
            block.lengths[keep], block.items[np.repeat(keep, block.lengths)], block.keys[keep], [], block.path
        )
        return leave_one_out(kept.sequences), kept.keys

    # -- counts -----------------------------------------------------------------------------------------

    def _train_lengths(self, path: Path) -> np.ndarray:
        """Histogram of training-sequence lengths in ``path``: ``h[L]`` users have ``L`` training items.

        One pass over the user column only, cached: every count of examples and batches follows from it.
        """
        if path not in self._train_hist:
            hist = np.zeros(1, dtype=np.int64)
            for block in self._blocks(path, items=False):
                lengths = block.lengths[self._kept(block)] - 2  # (n_users,) leave-one-out keeps n - 2
                h = np.bincount(lengths)
                hist = np.pad(hist, (0, max(0, len(h) - len(hist))))
                hist[: len(h)] += h
            self._train_hist[path] = hist
        return self._train_hist[path]

    def count_train_examples(self, kind: str, max_history: int, *, rank: int = 0, world_size: int = 1) -> int:
        """Training examples of one epoch on rank ``rank`` of ``world_size`` (defaults: the whole log).

        Equals ``len(window_examples(...))`` or ``len(prefix_examples(...))`` of the split log. The first
        call reads the user column of the rank's shards once; later calls, any kind, are free.
        """
        _check_kind(kind, max_history)
        total = 0
        for path in self.shards(rank, world_size):
            hist = self._train_lengths(path)
            L = np.arange(len(hist))  # (max_len + 1,) training length of each bin
            if kind == "windows":
                per_user = np.where(L > 1, -(-(L - 1) // max_history), 0)  # ceil((L - 1) / max_history)
            else:
                per_user = np.maximum(L - 1, 0)  # every position but the first
            total += int((hist * per_user).sum())
        return total

    def count_batches(
        self,
        kind: str,
        max_history: int,
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        buffer_examples: int = BUFFER_EXAMPLES,
    ) -> int:
        """Batches :meth:`train_batches` yields per epoch on ``rank`` with these settings (cheap after the
        first count). Ranks differ: data-parallel training runs ``min`` over ranks steps per epoch."""
        _check_sizes(batch_size, buffer_examples)
        n = self.count_train_examples(kind, max_history, rank=rank, world_size=world_size)
        full, rest = divmod(n, buffer_examples)
        return full * math.ceil(buffer_examples / batch_size) + math.ceil(rest / batch_size)

    # -- training ---------------------------------------------------------------------------------------

    def train_batches(
        self,
        kind: str,
        max_history: int,
        batch_size: int,
        *,
        seed: int,
        epoch: int,
        rank: int = 0,
        world_size: int = 1,
        buffer_examples: int = BUFFER_EXAMPLES,
        device: str = "cpu",
        skip_batches: int = 0,
    ) -> Iterator[Batch]:
        """One epoch of training batches for rank ``rank`` of ``world_size``, in bounded memory.

        ``kind``: ``"windows"`` (SASRec) or ``"prefixes"`` (TIGER), the examples of
        :func:`~semid.rec.data.window_examples` / :func:`~semid.rec.data.prefix_examples` with
        ``max_history``. The rank's shards are read in an order shuffled per epoch; their examples fill a
        buffer of ``buffer_examples``, which, when full (and once more at the end), is cut into batches of
        ``batch_size`` of nearly equal history length, emitted in random order
        (:func:`~semid.rec.data.length_batches`). One rng seeded ``[seed, epoch, rank]`` drives it all, so
        the same arguments give the same batches. ``skip_batches``: leave out the first batches without
        collating them (to resume mid-epoch). :meth:`count_batches` says how many there are.

        Arguments and the rank's shards are checked here; problems in the rows fail when met.
        """
        _check_kind(kind, max_history)
        _check_sizes(batch_size, buffer_examples)
        _check_int("seed", seed, 0)
        _check_int("epoch", epoch, 0)
        _check_int("skip_batches", skip_batches, 0)
        paths = self.shards(rank, world_size)
        rng = np.random.default_rng([seed, epoch, rank])
        return self._train_batches(
            kind, max_history, batch_size, paths, rng, buffer_examples, device, skip_batches
        )

    def _train_batches(
        self,
        kind: str,
        max_history: int,
        batch_size: int,
        paths: list[Path],
        rng: np.random.Generator,
        buffer_examples: int,
        device: str,
        skip: int,
    ) -> Iterator[Batch]:
        paths = [paths[i] for i in rng.permutation(len(paths))]
        n = 0
        for buffer in self._buffers(kind, max_history, paths, buffer_examples):
            for idx in length_batches(buffer.lengths, batch_size, rng):
                if n >= skip:
                    yield collate(buffer, idx, device)
                n += 1

    def _buffers(self, kind: str, max_history: int, paths: list[Path], size: int) -> Iterator[Examples]:
        """The rank's examples in stream order, ``size`` at a time (the last buffer may hold fewer)."""
        make = window_examples if kind == "windows" else prefix_examples
        held: list[Examples] = []
        n_held = 0
        for path in paths:
            for block in self._blocks(path):
                split, keys = self._split(block)
                ex = make(split.train, keys, max_history)
                if not len(ex):
                    continue
                held.append(ex)
                n_held += len(ex)
                while n_held >= size:
                    merged = _concat(held)
                    yield merged.take(np.arange(size))
                    rest = _compact(merged.take(np.arange(size, len(merged))))
                    held, n_held = ([rest] if len(rest) else []), len(rest)
        if n_held:
            yield _concat(held)

    # -- evaluation -------------------------------------------------------------------------------------

    def eval_examples(
        self,
        split: str = "valid",
        max_history: int = 50,
        *,
        max_users: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> Examples:
        """The held-out example of each user, in memory: what :func:`~semid.rec.runs.split_examples` gives.

        ``split="valid"``: the training items predict the second-last item; ``"test"``: all but the last
        predict the last. Histories keep their last ``max_history`` items. ``max_users > 0``: a uniform
        sample of that many users (the ``max_users`` smallest of seeded random priorities, a reservoir kept
        while streaming), in log order; memory is then ``O(max_users x max_history)``, else it is that of
        every user. ``rank``/``world_size`` restrict it to that rank's shards. One pass over the shards.
        """
        if split not in ("valid", "test"):
            raise SemidError(f"split={split!r} is not one of 'valid', 'test'")
        _check_int("max_history", max_history, 1)
        _check_int("max_users", max_users, 0)
        _check_int("seed", seed, 0)
        rng = np.random.default_rng(seed)
        held: list[Examples] = []  # compact examples; with max_users, the reservoir's
        prio: list[np.ndarray] = []  # (n,) random priority of each held example (the smallest are kept)
        n_held, seen = 0, 0
        for path in self.shards(rank, world_size):
            for block in self._blocks(path):
                s, keys = self._split(block)
                if split == "valid":
                    ex = history_examples(s.train, s.valid_target, keys, max_history)
                else:
                    ex = history_examples(s.test_history, s.test_target, keys, max_history)
                seen += len(ex)
                if max_users:
                    p = rng.random(len(ex))  # (n,) drawn for every user, kept or not: seeded, order-stable
                    if n_held >= max_users:  # only users that beat the reservoir's worst can enter
                        enter = p < max(q.max() for q in prio)
                        ex, p = ex.take(np.flatnonzero(enter)), p[enter]
                    if not len(ex):
                        continue
                    prio.append(p)
                held.append(_gather(ex))
                n_held += len(ex)
                if max_users and n_held > 2 * max_users:  # shrink to max_users, amortised
                    held, prio = _smallest(held, prio, max_users)
                    n_held = max_users
        if max_users and n_held > max_users:
            held, prio = _smallest(held, prio, max_users)
        if not held:
            return _gather(Examples(*(np.zeros(0, np.int64) for _ in range(5))))
        return _concat(held)


# --------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SemidError(f"{name}={value!r} should be an integer >= {minimum}")


def _check_kind(kind: str, max_history: int) -> None:
    if kind not in KINDS:
        raise SemidError(f"kind={kind!r} is not one of {', '.join(map(repr, KINDS))}")
    _check_int("max_history", max_history, 1)


def _check_sizes(batch_size: int, buffer_examples: int) -> None:
    _check_int("batch_size", batch_size, 1)
    _check_int("buffer_examples", buffer_examples, 1)


def _is_id_type(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return any(f(t) for f in (pa.types.is_integer, pa.types.is_string, pa.types.is_large_string,
                              pa.types.is_binary, pa.types.is_large_binary))  # fmt: skip


def _is_time_type(t: pa.DataType) -> bool:
    return any(f(t) for f in (pa.types.is_integer, pa.types.is_floating, pa.types.is_temporal))


def _concat(parts: list[Examples]) -> Examples:
    """One :class:`Examples` over the concatenated item arrays of ``parts``."""
    if len(parts) == 1:
        return parts[0]
    shift = np.cumsum([0] + [len(p.items) for p in parts[:-1]])  # (n_parts,) where each item array starts
    return Examples(
        np.concatenate([p.items for p in parts]),
        np.concatenate([p.start + s for p, s in zip(parts, shift, strict=True)]),
        np.concatenate([p.end + s for p, s in zip(parts, shift, strict=True)]),
        np.concatenate([p.target for p in parts]),
        np.concatenate([p.user for p in parts]),
    )


def _compact(ex: Examples) -> Examples:
    """``ex`` over a copy of just the span of items it reads, so the rest can be freed."""
    if not len(ex):
        return ex
    lo, hi = int(ex.start.min()), int(ex.end.max())
    return Examples(ex.items[lo:hi].copy(), ex.start - lo, ex.end - lo, ex.target, ex.user)


def _gather(ex: Examples) -> Examples:
    """``ex`` over a new item array holding only its histories, back to back."""
    lengths = ex.end - ex.start
    offsets = np.zeros(len(ex) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    # (total,) source position of each gathered item: its rank in its history + that history's start
    pos = np.arange(offsets[-1]) - np.repeat(offsets[:-1] - ex.start, lengths)
    return Examples(ex.items[pos], offsets[:-1], offsets[1:], ex.target, ex.user)


def _smallest(
    held: list[Examples], prio: list[np.ndarray], k: int
) -> tuple[list[Examples], list[np.ndarray]]:
    """The ``k`` held examples of smallest priority, in their stream order, gathered into one part."""
    p = np.concatenate(prio)
    keep = np.sort(np.argpartition(p, k - 1)[:k])  # (k,) stream positions, in order
    return [_gather(_concat(held).take(keep))], [p[keep]]
