"""What the sequence models read: a self-contained :class:`RecData`, next-item :class:`Examples`, batches.

- :class:`RecData`: the item universe (catalogue rows, titles, Semantic IDs) and each user's full sequence;
  its leave-one-out :attr:`~RecData.split` is what models train and are evaluated on. A run directory holds
  one (``items.parquet`` + ``sequences.parquet``) so that evaluation and recommendation need nothing else.
- :class:`Examples`: "history ``items[start:end]`` predicts ``target``", as index arrays into one flat item
  array (no copy per example). :func:`prefix_examples` makes one per position of each training sequence
  (every prefix is a target, as TIGER trains); :func:`window_examples` cuts sequences into windows for a
  causal model that predicts at every position at once (SASRec); :func:`history_examples` makes one per user
  for evaluation.
- :func:`length_batches` groups examples of equal length, so a batch pads almost nothing;
  :func:`collate` gathers a batch into a left-padded ``(B, T)`` tensor in one vectorised step.

Example::

    >>> seqs = Sequences(np.array([0, 4]), np.array([7, 8, 9, 5]))
    >>> ex = prefix_examples(seqs, user_keys=np.array([0]), max_history=2)
    >>> [ex.items[s:e].tolist() for s, e in zip(ex.start, ex.end)], ex.target.tolist()
    ([[7], [7, 8], [8, 9]], [8, 9, 5])
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from semid._outputs import holds_only
from semid._utils import atomic_path, check_positive_int, fingerprint_arrays, read_json_mapping
from semid.data import Dataset, LeaveOneOut, Sequences, leave_one_out
from semid.errors import SemidError, first_line
from semid.ids.table import IdTable

ITEMS_NAME = "items.parquet"
SEQUENCES_NAME = "sequences.parquet"
LOG_NAME = "log.json"  # a run trained on a streamed log (semid.rec.stream) records where the log is


def check_run_files(directory: Path, names: tuple[str, ...]) -> None:
    """Refuse to write ``names`` into ``directory`` where that would replace a file that is not a run's:
    a file of one of those names is replaced only beside a recommender's ``config.json``, or in a folder
    that holds nothing but such files (an earlier save's)."""
    if directory.exists() and not directory.is_dir():
        raise SemidError(f"{directory} is a file; give a directory")
    existing = [n for n in names if (directory / n).exists()]
    own = holds_only(names)  # a folder an earlier save wrote
    if existing and not own(directory) and run_model_type(directory) is None:
        raise SemidError(
            f"{directory / existing[0]}: would replace a file that is not a semid run's (no recommender "
            "config.json beside it); give a new directory"
        )


def run_model_type(directory: Path) -> str | None:
    """The ``model_type`` of a recommender's ``config.json`` in ``directory`` (one with a ``model``
    section), else None: no config, a damaged one, or another artifact's (a quantizer's)."""
    try:
        config = read_json_mapping(directory / "config.json")
    except (SemidError, OSError):
        return None
    model_type = config.get("model_type")
    return model_type if isinstance(model_type, str) and isinstance(config.get("model"), dict) else None


def data_fingerprint(data: RecData, stream: Any = None) -> str:
    """A hash of what a run trains on: the sequences (or the streamed log's files) and the IDs. Stored in the
    run's config.json; a resume and an evaluation check the run's data against it."""
    if stream is None:
        arrays = {"offsets": data.sequences.offsets, "items": data.sequences.items}
    else:  # file names, row counts and sizes: a changed or replaced shard changes the fingerprint
        names = "\n".join(p.name for p in stream.paths).encode()
        arrays = {
            "names": np.frombuffer(names, dtype=np.uint8),
            "rows": np.asarray(stream.rows, dtype=np.int64),
            "sizes": np.array([p.stat().st_size for p in stream.paths], dtype=np.int64),
        }
    if data.codes is not None:
        arrays["codes"] = data.codes
    return fingerprint_arrays(arrays)


PAD = -1  # item index of an empty history slot


# --------------------------------------------------------------------------------------------------------
# The data of a run
# --------------------------------------------------------------------------------------------------------


def user_keys(user_ids: np.ndarray | list[str]) -> np.ndarray:
    """(n,) int64 stable hash (CRC-32) of each user id: TIGER hashes users into its user tokens with it."""
    return np.fromiter((zlib.crc32(str(u).encode()) for u in user_ids), dtype=np.int64, count=len(user_ids))


@dataclass
class RecData:
    """Items and per-user sequences over them: everything a model needs to train, evaluate and recommend.

    Item ``i`` (an index everywhere in :mod:`semid.rec`) is row ``i`` of :attr:`item_ids`; sequences hold
    those indices in time order. ``codes`` are the items' Semantic IDs (``(n_items, L)``), when known.
    """

    item_ids: np.ndarray  # (n_items,) object array of item id strings
    sequences: Sequences  # each user's items in time order (indices into item_ids)
    user_ids: np.ndarray  # (n_users,) object array of user id strings
    titles: np.ndarray | None = None  # (n_items,) object array of titles (or None)
    codes: np.ndarray | None = None  # (n_items, L) int64 Semantic ID codes, unique per item
    semantic_ids: np.ndarray | None = None  # (n_items,) object array of Semantic ID strings
    n_dropped_users: int = field(default=0, compare=False)  # users left out for having < 3 items
    # items of a cold-start split (sorted indices): in no training sequence, only as test targets; None = no split
    cold_items: np.ndarray | None = None
    # a streamed interaction log (directory of user-sharded Parquet files, :mod:`semid.rec.stream`) that
    # holds the sequences instead: ``sequences`` and ``user_ids`` are then empty
    log: str | None = None

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @cached_property
    def split(self) -> LeaveOneOut:
        """Leave-one-out: last item test target, second last validation target, the rest training."""
        return leave_one_out(self.sequences)

    @property
    def n_train_targets(self) -> int | None:
        """Training targets per epoch: each training item after its user's first (TIGER's examples per epoch,
        the targets SASRec's windows predict); None for a streamed log, whose size is not read up front."""
        if self.log is not None:
            return None
        lengths = np.diff(self.split.train.offsets)
        return int(np.maximum(lengths - 1, 0).sum())

    @cached_property
    def stream(self) -> Any:
        """The streamed interaction log (:class:`semid.rec.stream.StreamedLog`), None without one. Read once:
        every shard's footer and columns checked, the item ids hashed (:meth:`for_log` does it up front)."""
        if self.log is None:
            return None
        from semid.rec.stream import StreamedLog

        return StreamedLog.open(self.log, self.item_ids, drop_short_users=True)

    @cached_property
    def user_keys(self) -> np.ndarray:
        """(n_users,) int64 hashed user ids (see :func:`user_keys`)."""
        return user_keys(self.user_ids)

    @cached_property
    def index(self) -> dict[str, int]:
        """Item id -> item index (for parsing user input such as ``--history``)."""
        return {str(item): i for i, item in enumerate(self.item_ids)}

    @classmethod
    def from_dataset(cls, dataset: Dataset, ids: IdTable | None = None, *, ids_name: str = "ids") -> RecData:
        """Items (catalogue rows, else the interacted items) and sequences of ``dataset``.

        Users with fewer than 3 interactions cannot be split leave-one-out and are left out (counted in
        :attr:`n_dropped_users`). With ``ids``, every item needs a unique Semantic ID: a missing or shared
        one is an error naming the item (``ids_name`` names the IDs file in messages); IDs of items that
        are not in the dataset are ignored.
        """
        if dataset.interactions is None:
            raise SemidError(f"dataset {dataset.name!r} has no interactions to train on")
        seqs = dataset.sequences()
        inter = dataset.interactions
        if dataset.catalogue is not None:
            cat = dataset.catalogue
            item_ids = cat.item_ids
            title_field = "title" if "title" in cat.fields else (cat.text_fields or [None])[0]
            titles = cat.text_column(title_field).to_numpy(zero_copy_only=False) if title_field else None
        else:
            item_ids, titles = inter.items, None
        keep = seqs.lengths >= 3
        if not keep.any():
            raise SemidError(f"dataset {dataset.name!r}: no user has the 3 interactions leave-one-out needs")
        lengths = seqs.lengths[keep]
        items = seqs.items[np.repeat(keep, seqs.lengths)]
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        data = cls(
            item_ids=np.asarray(item_ids, dtype=object),
            sequences=Sequences(offsets, items),
            user_ids=np.asarray(inter.users, dtype=object)[keep],
            titles=None if titles is None else np.asarray(titles, dtype=object),
            n_dropped_users=int((~keep).sum()),
        )
        if ids is not None:
            data.codes, data.semantic_ids = align_ids(ids, data.item_ids, name=ids_name)
        return data

    @classmethod
    def for_log(
        cls,
        log: str | os.PathLike,
        item_ids: np.ndarray,
        *,
        titles: np.ndarray | None = None,
        ids: IdTable | None = None,
        ids_name: str = "ids",
    ) -> RecData:
        """The items of a catalogue (``item_ids``, optional ``titles`` and Semantic IDs) with a streamed
        interaction log for the sequences; training reads the log shard by shard (:mod:`semid.rec.stream`).
        The log's shards are checked here (:attr:`stream`)."""
        log = Path(log).expanduser().resolve()
        if not log.exists():
            raise SemidError(f"{log}: no such interaction log (a directory of user-sharded Parquet files)")
        data = cls(
            item_ids=np.asarray(item_ids, dtype=object),
            sequences=Sequences(np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64)),
            user_ids=np.zeros(0, dtype=object),
            titles=None if titles is None else np.asarray(titles, dtype=object),
            log=str(log),
        )
        if ids is not None:
            data.codes, data.semantic_ids = align_ids(ids, data.item_ids, name=ids_name)
        data.stream  # noqa: B018 - the log checked now: a bad shard is one error before a run starts
        return data

    def with_cold_start(self, share: float = 0.05, seed: int = 0) -> RecData:
        """This data with a seeded ``share`` of the items made cold (:func:`semid.rec.cold.cold_start_split`):
        they keep their titles and Semantic IDs but appear only as test targets; users left with fewer than
        3 items are dropped (added to :attr:`n_dropped_users`)."""
        from semid.rec.cold import cold_start_split

        if self.cold_items is not None:
            raise SemidError("this data already has a cold-start split")
        if self.log is not None:
            raise SemidError("a cold-start split needs the sequences in memory, not a streamed log")
        split = cold_start_split(self.sequences, self.n_items, share, seed)
        return RecData(
            item_ids=self.item_ids,
            sequences=split.sequences,
            user_ids=self.user_ids[split.kept_users],
            titles=self.titles,
            codes=self.codes,
            semantic_ids=self.semantic_ids,
            n_dropped_users=self.n_dropped_users + self.n_users - len(split.kept_users),
            cold_items=split.cold_items,
        )

    # -- persistence -------------------------------------------------------------------------------------

    def save(self, directory: str | os.PathLike) -> None:
        """Write ``items.parquet`` (id, title, Semantic ID, codes) and ``sequences.parquet`` into ``directory``.

        Both tables are built before either is written; files of those names are replaced only in a run
        directory (a recommender's ``config.json`` beside them), never a user's own."""
        directory = Path(directory)
        check_run_files(directory, (ITEMS_NAME, SEQUENCES_NAME, LOG_NAME))
        cols: dict[str, pa.Array] = {"item_id": pa.array(self.item_ids.tolist(), pa.string())}
        if self.titles is not None:
            cols["title"] = pa.array(self.titles.tolist(), pa.string())
        if self.semantic_ids is not None:
            cols["semantic_id"] = pa.array(self.semantic_ids.tolist(), pa.string())
        if self.codes is not None:
            cols["codes"] = _list_array(self.codes, np.arange(0, self.codes.size + 1, self.codes.shape[1]))
        if self.cold_items is not None:
            cold = np.zeros(self.n_items, dtype=bool)
            cold[self.cold_items] = True
            cols["cold"] = pa.array(cold)
        try:
            items = pa.table(cols)
            seq = pa.table(
                {
                    "user_id": pa.array(self.user_ids.tolist(), pa.string()),
                    "items": _list_array(self.sequences.items, self.sequences.offsets),
                }
            )
        except pa.ArrowInvalid as e:  # e.g. user_ids and sequences of different lengths
            raise SemidError(f"RecData.save: inconsistent data ({first_line(e)})") from None
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / ITEMS_NAME) as tmp:
            pq.write_table(items, tmp)
        with atomic_path(directory / SEQUENCES_NAME) as tmp:
            pq.write_table(seq, tmp)
        if self.log is not None:
            import json

            with atomic_path(directory / LOG_NAME) as tmp:
                tmp.write_text(json.dumps({"log": self.log}, indent=1) + "\n")

    @classmethod
    def load(cls, directory: str | os.PathLike) -> RecData:
        """Read what :meth:`save` wrote."""
        directory = Path(directory)
        for name in (ITEMS_NAME, SEQUENCES_NAME):
            if not (directory / name).is_file():
                raise SemidError(f"{directory / name}: no such file (is {directory} a semid run directory?)")
        items = _read_run_table(directory, ITEMS_NAME, ("item_id",))
        seq = _read_run_table(directory, SEQUENCES_NAME, ("user_id", "items"))
        lists = seq["items"].combine_chunks()
        codes = None
        if "codes" in items.column_names:
            col = items["codes"].combine_chunks()
            codes = col.flatten().to_numpy().astype(np.int64).reshape(len(col), -1)

        def objects(name: str) -> np.ndarray | None:
            if name not in items.column_names:
                return None
            return np.asarray(items[name].to_numpy(zero_copy_only=False), dtype=object)

        return cls(
            item_ids=objects("item_id"),  # type: ignore[arg-type]
            sequences=Sequences(
                lists.offsets.to_numpy().astype(np.int64), lists.flatten().to_numpy().astype(np.int64)
            ),
            user_ids=np.asarray(seq["user_id"].to_numpy(zero_copy_only=False), dtype=object),
            titles=objects("title"),
            codes=codes,
            semantic_ids=objects("semantic_id"),
            cold_items=(
                np.flatnonzero(items["cold"].to_numpy(zero_copy_only=False))
                if "cold" in items.column_names
                else None
            ),
            log=_read_log_path(directory),
        )

    def parse_history(self, history: list[str]) -> np.ndarray:
        """Item ids -> (n,) item indices; an empty history or an unknown item is an error naming it."""
        if not history:
            raise SemidError("the history is empty; give at least one item id")
        unknown = [h for h in history if h not in self.index]
        if unknown:
            raise SemidError(
                f"history item {unknown[0]!r} is not in this run's catalogue ({self.n_items:,} items)"
                + (f"; {len(unknown)} unknown items in all" if len(unknown) > 1 else "")
            )
        return np.array([self.index[h] for h in history], dtype=np.int64)


def _read_log_path(directory: Path) -> str | None:
    """The streamed log a run was trained on (``log.json``), or None for a run whose sequences it holds."""
    if not (directory / LOG_NAME).is_file():
        return None
    from semid._utils import read_json_mapping

    log = read_json_mapping(directory / LOG_NAME).get("log")
    if not isinstance(log, str):
        raise SemidError(f'{directory / LOG_NAME}: expected {{"log": "path of the interaction log"}}')
    return log


def _read_run_table(directory: Path, name: str, columns: tuple[str, ...]) -> pa.Table:
    """``directory/name`` as a table; an unreadable file or a missing column is one error naming the file."""
    path = directory / name
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:  # damaged or not Parquet: pyarrow's first line says how
        text = str(e).split("': ", 1)[-1] if str(e).startswith("Could not open Parquet input") else str(e)
        reason = " ".join(text.split()).split(". ")[0].rstrip(".") or type(e).__name__  # one line, one clause
        raise SemidError(f"{directory}: not a readable run ({path}: {reason})") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise SemidError(
            f"{directory}: not a readable run ({path}: no column {missing[0]!r}; "
            f"columns: {', '.join(table.column_names)})"
        )
    return table


def _list_array(values: np.ndarray, offsets: np.ndarray) -> pa.Array:
    return pa.ListArray.from_arrays(
        pa.array(np.asarray(offsets, dtype=np.int32)),
        pa.array(np.ascontiguousarray(values, dtype=np.int32).ravel()),
    )


def align_ids(ids: IdTable, item_ids: np.ndarray, *, name: str = "ids") -> tuple[np.ndarray, np.ndarray]:
    """The Semantic IDs of ``item_ids`` in that order: ``(codes (n, L) int64, ID strings (n,))``.

    Every item needs an ID, and IDs must be unique (a decoder could not tell two items with the same ID
    apart): either problem is an error naming the first item concerned.
    """
    table_ids = pa.array([str(i) for i in ids.item_ids], pa.string())
    wanted = pa.array([str(i) for i in item_ids], pa.string())
    rows = pc.fill_null(pc.index_in(wanted, value_set=table_ids), -1).to_numpy(zero_copy_only=False)
    rows = np.asarray(rows, dtype=np.int64)
    missing = np.flatnonzero(rows < 0)
    if len(missing):
        raise SemidError(
            f"{name} has no Semantic ID for item {str(item_ids[missing[0]])!r} "
            f"({len(missing):,} of {len(item_ids):,} items have none; assign IDs to the whole catalogue)"
        )
    codes = np.asarray(ids.codes, dtype=np.int64)[rows]
    if codes.ndim != 2 or codes.shape[1] == 0:
        raise SemidError(f"{name}: codes should be (n_items, levels), got shape {codes.shape}")
    _, first, inverse = np.unique(codes, axis=0, return_index=True, return_inverse=True)
    dup = np.flatnonzero(first[inverse.ravel()] != np.arange(len(codes)))
    if len(dup):
        a, b = int(first[inverse.ravel()[dup[0]]]), int(dup[0])
        raise SemidError(
            f"{name}: items {str(item_ids[a])!r} and {str(item_ids[b])!r} share the Semantic ID "
            f"{ids.semantic_ids[rows[b]]}; generative retrieval needs unique IDs (semid assign --dedup suffix)"
        )
    return codes, np.asarray([ids.semantic_ids[r] for r in rows], dtype=object)


# --------------------------------------------------------------------------------------------------------
# Examples
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Examples:
    """Next-item examples: example ``j`` reads ``items[start[j]:end[j]]`` (oldest first), predicts ``target[j]``."""

    items: np.ndarray  # (N,) int64 flat item array the examples point into
    start: np.ndarray  # (n,) int64 first history position
    end: np.ndarray  # (n,) int64 one past the last history position
    target: np.ndarray  # (n,) int64 item to predict
    user: np.ndarray  # (n,) int64 user key (hashed id)

    def __len__(self) -> int:
        return len(self.target)

    @property
    def lengths(self) -> np.ndarray:
        """(n,) history length of each example."""
        return self.end - self.start

    def take(self, idx: np.ndarray) -> Examples:
        """The examples at ``idx`` (same flat item array)."""
        return Examples(self.items, self.start[idx], self.end[idx], self.target[idx], self.user[idx])


def _row_positions(seqs: Sequences) -> tuple[np.ndarray, np.ndarray]:
    """(N,) row of every flat position and (N,) first flat position of that row."""
    rows = np.repeat(np.arange(len(seqs.offsets) - 1), seqs.lengths)
    return rows, seqs.offsets[:-1][rows]


def prefix_examples(seqs: Sequences, user_keys: np.ndarray, max_history: int) -> Examples:
    """One example per position ``t >= 1`` of each row: the ``<= max_history`` items before ``t`` predict item ``t``."""
    rows, row_start = _row_positions(seqs)
    end = np.flatnonzero(np.arange(len(seqs.items)) > row_start)  # every position but a row's first
    start = np.maximum(row_start[end], end - max_history)
    return Examples(seqs.items, start, end, seqs.items[end], np.asarray(user_keys)[rows[end]])


def window_examples(seqs: Sequences, user_keys: np.ndarray, max_len: int) -> Examples:
    """Windows for a causal model that predicts at every position: each item after a row's first is a target once.

    A row of ``n`` items is cut from its end into windows ``items[start:end]`` of ``<= max_len`` inputs, whose
    in-window targets are ``items[start + 1 : end + 1]`` (the last one is :attr:`Examples.target`); consecutive
    windows share no target. A row of ``n <= max_len + 1`` items is one window.
    """
    lengths = seqs.lengths
    n_windows = np.where(lengths > 1, -(-(lengths - 1) // max_len), 0)  # ceil((n - 1) / max_len)
    rows = np.repeat(np.arange(len(lengths)), n_windows)
    first = np.cumsum(n_windows) - n_windows
    k = np.arange(len(rows)) - np.repeat(first, n_windows)  # window number, counted from the row's end
    row_start = seqs.offsets[:-1][rows]
    end = row_start + lengths[rows] - 1 - k * max_len
    start = np.maximum(row_start, end - max_len)
    return Examples(seqs.items, start, end, seqs.items[end], np.asarray(user_keys)[rows])


def history_examples(
    history: Sequences, targets: np.ndarray, user_keys: np.ndarray, max_history: int
) -> Examples:
    """One example per row: its last ``<= max_history`` items predict ``targets[row]`` (evaluation)."""
    end = history.offsets[1:]
    start = np.maximum(history.offsets[:-1], end - max_history)
    return Examples(history.items, start, end, np.asarray(targets, dtype=np.int64), np.asarray(user_keys))


# --------------------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """Model input: left-padded histories, targets and user keys, as tensors on one device."""

    history: torch.Tensor  # (B, T) int64 item indices, oldest first, left-padded with PAD (-1)
    target: torch.Tensor  # (B,) int64 next item (PAD when unknown, e.g. when recommending)
    user: torch.Tensor  # (B,) int64 user key (-1: no user)

    def __len__(self) -> int:
        return self.history.shape[0]

    def check(self, n_items: int, k: int) -> None:
        """Refuse what a model would misread: ``k`` that is no positive integer, or a history item index
        outside the model's catalogue (an index past the end failed deep in an embedding; a negative one
        wrapped around to another item). Cost: two reductions over the histories."""
        check_positive_int("k", k)
        if self.history.numel():
            low, high = int(self.history.min()), int(self.history.max())
            if low < PAD or high >= n_items:
                bad = low if low < PAD else high
                raise SemidError(f"history item index {bad} is outside 0..{n_items - 1} (the model's items)")

    def to(self, device: str | torch.device) -> Batch:
        return Batch(self.history.to(device), self.target.to(device), self.user.to(device))

    def seen(self, n_items: int) -> torch.Tensor:
        """(B, n_items) bool: True at the items of each row's history (what "filter seen items" removes)."""
        mask = torch.zeros(len(self), n_items + 1, dtype=torch.bool, device=self.history.device)
        mask.scatter_(1, self.history + 1, True)  # column 0 collects the padding (PAD + 1)
        return mask[:, 1:]


def length_batches(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None = None
) -> list[np.ndarray]:
    """Example indices grouped into batches of (nearly) equal length, so padding wastes almost nothing.

    Examples are sorted by length (in random order within a length when ``rng`` is given) and cut into
    batches of ``batch_size``; with ``rng`` the batches are then shuffled.
    """
    n = len(lengths)
    order = np.argsort(lengths, kind="stable") if rng is None else np.lexsort((rng.random(n), lengths))
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def collate(ex: Examples, idx: np.ndarray, device: str | torch.device = "cpu") -> Batch:
    """Gather examples ``idx`` into a :class:`Batch` padded on the left to the batch's longest history."""
    start, end = ex.start[idx], ex.end[idx]
    width = max(int((end - start).max(initial=0)), 1)
    pos = end[:, None] - width + np.arange(width)  # (B, T) flat positions, the last column the most recent
    valid = pos >= start[:, None]
    history = np.where(valid, ex.items[np.where(valid, pos, 0)], PAD)  # (B, T)
    return Batch(
        torch.from_numpy(history).to(device),
        torch.from_numpy(np.ascontiguousarray(ex.target[idx])).to(device),
        torch.from_numpy(np.ascontiguousarray(ex.user[idx])).to(device),
    )


def histories_batch(
    histories: list[np.ndarray], users: np.ndarray | None = None, device: str | torch.device = "cpu"
) -> Batch:
    """A :class:`Batch` of given histories (item index arrays, oldest first); targets unknown (PAD)."""
    if not len(histories):
        raise SemidError("no histories: give at least one (an array of item indices, oldest first)")
    histories = [np.asarray(h) for h in histories]
    for i, h in enumerate(histories):
        if h.ndim != 1 or h.size == 0 or h.dtype.kind not in "iu":
            raise SemidError(
                f"history {i} should be a non-empty 1-D array of item indices (got {h.dtype}{h.shape})"
            )
        if int(h.min()) < 0:
            raise SemidError(f"history {i}: item index {int(h.min())} is negative")
    lengths = np.array([len(h) for h in histories], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.concatenate(histories).astype(np.int64) if len(histories) else np.zeros(0, np.int64)
    n = len(histories)
    ex = Examples(
        items,
        offsets[:-1],
        offsets[1:],
        np.full(n, PAD, dtype=np.int64),
        np.full(n, -1, dtype=np.int64) if users is None else np.asarray(users, dtype=np.int64),
    )
    return collate(ex, np.arange(n), device)
