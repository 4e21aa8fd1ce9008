"""Persistent Semantic IDs: a SQLite registry mapping item ids <-> final codes.

A quantizer gives each item *base codes*, an ``(n, L)`` int array; several items can share them. The registry
turns base codes into unique *final codes* with a dedup strategy and remembers them, so an item keeps its ID
across runs, processes and machines that share the file:

- ``"suffix"``: one more level counts the items of a base-code group: ``12-4-9`` -> ``12-4-9-0``,
  ``12-4-9-1``, ... (final codes have ``L + 1`` levels);
- ``"none"``: final = base (``L`` levels, not unique);
- ``"remap"``: a colliding item moves to the nearest *unused* last-level code under the same prefix
  (``L`` levels); nearness comes from the caller's ``rank_last_level(rows) -> (len(rows), K_last)``.

Rules that make IDs stable:

- a known item always gets its stored final codes back, even if its base codes changed since
  (:attr:`AssignResult.n_changed` counts those); IDs never change silently;
- within one batch, new items are numbered in ``item_id`` string order (not row order), so the same set of
  items gives the same IDs however the rows are shuffled; a later batch continues a group after its largest
  suffix;
- under ``"remap"``, the first new item (in ``item_id`` order) of each base code keeps it if the registry
  does not already hold it; every other new item takes the first code of its ranking that is neither in
  the registry nor taken earlier in the batch, in rounds: the first mover of every base code, then the
  second, ... (``item_id`` order within a round).

On an empty registry version, ``assign`` gives the same codes as :func:`semid.ids.dedup.deduplicate` with
the same item ids (the in-memory version of these rules).

Item ids are stored as TEXT: callers pass ``str`` or ``int`` (``7`` and ``"7"`` are the same item) and get
``str`` back. A registry is bound to a quantizer fingerprint; a different model needs ``new_version=True``,
which starts a new ID version while the old ones stay readable (``version=`` on every lookup).

Storage (SQLite, WAL mode). Codes are kept as a dash-string *group key* plus an integer *slot*, so one
UNIQUE index both enforces unique final codes and answers every group query::

    meta(key, value)                        -- schema_version, current_version
    versions(version, fingerprint, n_levels, dedup, created_at)
    ids(version, item_id, grp, slot, base_last)  PRIMARY KEY (version, item_id), UNIQUE (version, grp, slot)

    dedup    grp (TEXT)               slot (INT)                final codes    base codes
    suffix   base codes "12-4-9"      suffix                    grp-slot       grp
    none     base codes               duplicate rank (0 first)  grp            grp
    remap    base codes[:-1] "12-4"   final last-level code     grp-slot       grp-base_last

Under ``"suffix"`` and ``"remap"`` ``(grp, slot)`` *is* the final code, so the UNIQUE index is the UNIQUE
constraint on final codes; under ``"none"`` the slot is a hidden duplicate counter and final codes may repeat.

Speed: a batch goes to SQLite as one JSON array parameter (``json_each``) and its results come back as
``json_group_array``, so a lookup or the read side of ``assign`` is one statement per batch, joined on the
primary key or the code index (never one query per item); new rows go in with one ``executemany``, sorted by
item_id. About 0.5 s for 100,000 new assignments on a 2-core machine (``bench/registry.py``).

Concurrency: :meth:`Registry.assign` runs as one ``BEGIN IMMEDIATE`` transaction (read what exists, choose
codes, insert), so processes that assign into the same file at once are serialised by SQLite: no duplicate
final ID, no lost assignment, and an item assigned by two processes gets one ID (the second one reads it).

Example::

    with Registry("ids.db", fingerprint=model_fp) as reg:
        res = reg.assign(["a", "b"], np.array([[12, 4, 9], [12, 4, 9]]))
        res.codes                # [[12, 4, 9, 0], [12, 4, 9, 1]]
        reg.find("12-4-9-1")     # 'b'
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from semid._utils import atomic_path, sqlite_has_columns, sqlite_tables
from semid.errors import SemidError, shortlist
from semid.ids.dedup import DEDUP_STRATEGIES, MAX_CODE, check_ranking

__all__ = ["SCHEMA_VERSION", "AssignResult", "VersionInfo", "Registry", "open_registry"]

SCHEMA_VERSION = 1
Dedup = Literal["suffix", "none", "remap"]

_KEY_BASE = np.int64(MAX_CODE) + 1  # (group index, code) -> one int64 key

# One statement each: executescript() would COMMIT the surrounding BEGIN IMMEDIATE.
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS versions (
        version     INTEGER PRIMARY KEY,
        fingerprint TEXT,     -- quantizer fingerprint; NULL until an open that passes one binds it
        n_levels    INTEGER,  -- base levels L, fixed by the first assign of the version
        dedup       TEXT,     -- dedup strategy, fixed by the first assign of the version
        created_at  TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS ids (
        version   INTEGER NOT NULL,
        item_id   TEXT NOT NULL,
        grp       TEXT NOT NULL,  -- group key (see the module docstring)
        slot      INTEGER NOT NULL,
        base_last INTEGER,        -- remap only: last base code (differs from slot when the item moved)
        PRIMARY KEY (version, item_id)
    ) WITHOUT ROWID""",
    "CREATE UNIQUE INDEX IF NOT EXISTS ids_by_code ON ids (version, grp, slot)",
)

# The columns each table of _SCHEMA has (what a database must hold to be taken for a registry).
_COLUMNS = {
    "meta": {"key", "value"},
    "versions": {"version", "fingerprint", "n_levels", "dedup", "created_at"},
    "ids": {"version", "item_id", "grp", "slot", "base_last"},
}

# Batches travel as one JSON array parameter read by json_each() and come back through json_group_array():
# one statement per batch, no per-row binding or fetching. Big batches go in chunks of this many values.
_CHUNK = 1_000_000


@dataclass(frozen=True)
class AssignResult:
    """What :meth:`Registry.assign` did.

    ``codes`` is ``(n, L + 1)`` under ``"suffix"`` and ``(n, L)`` otherwise, int64, in input row order.
    ``n_new + n_existing == n``; ``n_moved`` counts new items that ``"remap"`` moved off their base code;
    ``n_changed`` counts known items whose base codes differ from the ones stored (their IDs did not change).
    """

    codes: np.ndarray
    n_new: int
    n_existing: int
    n_moved: int
    n_changed: int
    version: int


@dataclass(frozen=True)
class VersionInfo:
    """One ID version of a registry (``n_levels`` and ``dedup`` are None until its first assignment)."""

    version: int
    fingerprint: str | None
    n_levels: int | None
    dedup: str | None
    n_items: int
    created_at: str


class Registry:
    """A persistent item_id <-> Semantic ID map in one SQLite file (see the module docstring).

    Parameters
    ----------
    path:
        The database file (conventionally ``ids.db``); created with its parent folders unless ``create=False``.
    fingerprint:
        The quantizer fingerprint this registry is bound to. Opening a version bound to another fingerprint
        raises :class:`SemidError` unless ``new_version=True``. ``None`` skips the check (read-only use).
    new_version:
        Start a new ID version (bound to ``fingerprint``) on an existing file; old versions stay readable.
    timeout:
        Seconds to wait for another process's write lock before failing (SQLite busy timeout).
    create:
        With ``False``, a missing file is an error instead of a new empty registry.

    ``version`` is the ID version this handle assigns into and reads by default: the current one at open.
    A version created without a fingerprint is bound by the first open that passes one.

    A file that is an SQLite database of another application (it has tables, but not a registry's) is
    refused and left untouched. ``created`` says whether this handle created the file. Used as a context
    manager, a block that raises (any exception, ``KeyboardInterrupt`` included) removes a registry this
    handle created that still holds no committed IDs, with its ``-wal``/``-shm``/``-journal`` side files
    and the parent folders the open created: a failed first job leaves no empty registry bound to its model.
    Likewise a version this handle started (``new_version=True``) that still holds no IDs is taken back and
    the previous version is current again: a failed ``--new-version`` job leaves the file as it found it.
    An unbound version this handle bound to its fingerprint, still without IDs, is unbound again.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        fingerprint: str | None = None,
        new_version: bool = False,
        timeout: float = 60.0,
        create: bool = True,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise SemidError(f"path={path!r} should be a file path")
        self.path = Path(path)
        self.timeout = timeout
        self.created = False  # whether this handle created the database file
        self._made_dirs: list[Path] = []  # parent folders it created, deepest first
        self._started: tuple[int, int] | None = None  # (version, the one current before) this open started
        self._bound: int | None = None  # an unbound version this open bound to its fingerprint
        self._conn: sqlite3.Connection | None = None
        if fingerprint is not None and (not isinstance(fingerprint, str) or not fingerprint.strip()):
            raise SemidError(f"fingerprint={fingerprint!r} should be a non-empty string or None")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
            raise SemidError(f"timeout={timeout!r} should be >= 0 seconds")
        exists = self.path.exists()
        if not exists and not create:
            raise SemidError(f"{self.path}: no such registry file")
        if not exists:
            self._create_file()
        # SQLite answers "locked" at once, without waiting out its busy timeout, where waiting could deadlock
        # (e.g. two processes switching a fresh file to WAL together): setup is retried until the deadline.
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            except sqlite3.Error as e:
                raise SemidError(f"{self.path}: cannot open registry ({e})") from None
            self._conn = conn
            try:
                self.version = self._setup(fingerprint, new_version)
                break
            except sqlite3.DatabaseError as e:
                self.close()
                locked = isinstance(e, sqlite3.OperationalError) and "locked" in str(e)
                if locked and time.monotonic() < deadline:
                    time.sleep(0.02 + 0.08 * random.random())
                    continue
                if locked:  # another process works on the file: never remove it under that process
                    raise SemidError(
                        f"{self.path} is locked by another process; gave up after timeout={timeout} s"
                    ) from None
                self._remove_if_unused()
                raise SemidError(f"{self.path}: not a readable semid registry ({e})") from None
            except BaseException:
                self.close()
                self._remove_if_unused()
                raise

    def _create_file(self) -> None:
        """Create the (empty) database file and its parent folders, remembering what this handle made.

        ``O_EXCL`` tells exactly one of several processes opening a new path at once that it created it.
        """
        missing = []
        parent = self.path.parent
        while not parent.exists() and parent != parent.parent:
            missing.append(parent)
            parent = parent.parent
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:  # another process created it first: it is theirs
            return
        except OSError as e:
            raise SemidError(f"{self.path}: cannot create registry ({e.strerror or e})") from None
        os.close(fd)
        self.created = True
        self._made_dirs = missing

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        fingerprint: str | None = None,
        new_version: bool = False,
        timeout: float = 60.0,
        create: bool = True,
    ) -> Registry:
        """Same as ``Registry(path, ...)``; reads well at call sites: ``with Registry.open("ids.db") as reg``."""
        return cls(path, fingerprint=fingerprint, new_version=new_version, timeout=timeout, create=create)

    # ------------------------------------------------------------------ lifecycle

    def _setup(self, fingerprint: str | None, new_version: bool) -> int:
        """Create the schema if needed, check the fingerprint, maybe start a version; return the version."""
        conn = self._db
        try:
            conn.execute("SELECT json_group_array(value) FROM json_each('[1]')").fetchone()
        except sqlite3.OperationalError:
            raise SemidError(
                f"SQLite {sqlite3.sqlite_version} in this Python lacks the JSON functions the registry needs "
                "(SQLite >= 3.38, or an older build with JSON1)"
            ) from None
        self._check_not_foreign()  # before anything writes to the file (WAL mode changes its header)
        conn.execute("PRAGMA journal_mode=WAL")  # readers never block the writer and vice versa
        conn.execute("PRAGMA synchronous=NORMAL")  # durable at checkpoints; safe against corruption in WAL
        conn.execute("PRAGMA cache_size=-65536")  # up to 64 MiB of page cache: big batches stay in memory
        with self._transaction("IMMEDIATE"):
            for statement in _SCHEMA:
                conn.execute(statement)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:  # a fresh file
                conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                return self._start_version(1, fingerprint)
            if int(row[0]) > SCHEMA_VERSION:
                raise SemidError(
                    f"{self.path.name} has registry schema {row[0]}, this semid reads up to {SCHEMA_VERSION}; "
                    "upgrade semid"
                )
            current = int(conn.execute("SELECT value FROM meta WHERE key = 'current_version'").fetchone()[0])
            if new_version:
                version = self._next_version(current)
                self._started = (version, current)
                return self._start_version(version, fingerprint)
            sql = "SELECT fingerprint FROM versions WHERE version = ?"
            bound = conn.execute(sql, (current,)).fetchone()[0]
            if fingerprint is not None and bound is None:
                conn.execute("UPDATE versions SET fingerprint = ? WHERE version = ?", (fingerprint, current))
                self._bound = current
            elif fingerprint is not None and bound != fingerprint:
                raise SemidError(
                    f"{self.path.name} is bound to quantizer {bound}, this model is {fingerprint}; "
                    f"pass new_version=True (CLI: --new-version) to start ID version {self._next_version(current)}"
                )
            return current

    def _check_not_foreign(self) -> None:
        """Refuse an SQLite database that has tables but is not a semid registry (it is left as it was)."""
        tables = sqlite_tables(self._db)
        if not tables or self._is_registry(tables):
            return
        shown = shortlist(tables, 10)
        raise SemidError(
            f"{self.path} is an SQLite database of another application (tables: {shown}); "
            "give a new path or a semid registry"
        )

    def _is_registry(self, tables: list[str]) -> bool:
        """The three tables, each with the columns this schema gives it, and a schema version: a database
        that only looks like a registry is refused before WAL mode or the schema touch the file."""
        if not set(_COLUMNS) <= set(tables) or not sqlite_has_columns(self._db, _COLUMNS):
            return False
        try:
            row = self._db.execute("SELECT 1 FROM meta WHERE key = 'schema_version'").fetchone()
        except sqlite3.OperationalError as e:
            if "locked" in str(e):
                raise
            return False
        return row is not None

    def _next_version(self, current: int) -> int:
        """A version number never given before, even to a version taken back since."""
        last = self._db.execute("SELECT value FROM meta WHERE key = 'last_version'").fetchone()
        highest = self._db.execute("SELECT MAX(version) FROM versions").fetchone()[0] or 0
        return max(current, highest, int(last[0]) if last else 0) + 1

    def _start_version(self, version: int, fingerprint: str | None) -> int:
        now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self._db.execute(
            "INSERT INTO versions (version, fingerprint, created_at) VALUES (?, ?, ?)",
            (version, fingerprint, now),
        )
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('current_version', ?)", (str(version),))
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('last_version', ?)", (str(version),))
        return version

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        try:
            if exc_type is not None:
                self._drop_unused_version()
        finally:  # a second Ctrl-C during the take-back still closes
            self.close()
            if exc_type is not None:
                self._remove_if_unused()

    def _drop_unused_version(self) -> None:
        """Take back what this handle did to a version that still holds no IDs: the version it started, if
        still current (the one before is current again), or the fingerprint it bound to an unbound version.
        Best effort: it never hides the error being raised."""
        if (self._started is None and self._bound is None) or self._conn is None:
            return
        version = self._started[0] if self._started is not None else self._bound
        try:
            self._db.execute("PRAGMA busy_timeout = 1000")  # a failing job does not wait out another's lock
            with self._transaction("IMMEDIATE"):
                row = self._db.execute("SELECT value FROM meta WHERE key = 'current_version'").fetchone()
                used = self._db.execute("SELECT 1 FROM ids WHERE version = ? LIMIT 1", (version,)).fetchone()
                if row is None or int(row[0]) != version or used is not None:
                    return  # IDs were committed into it, or another process started a later version
                if self._started is not None:
                    self._db.execute("DELETE FROM versions WHERE version = ?", (version,))
                    self._db.execute(
                        "UPDATE meta SET value = ? WHERE key = 'current_version'", (str(self._started[1]),)
                    )
                else:
                    self._db.execute("UPDATE versions SET fingerprint = NULL WHERE version = ?", (version,))
        except (sqlite3.Error, SemidError):
            return
        self._started = self._bound = None

    def _remove_if_unused(self) -> None:
        """Remove the file (and side files, and the folders the open made) if this handle created it and
        it holds no committed IDs. Best effort and closed first: it never hides the error being raised."""
        if not self.created or not self.path.exists():
            return
        self.close()
        try:
            # a short wait: a file another process holds locked is in use, so it is kept
            conn = sqlite3.connect(self.path, timeout=min(self.timeout, 0.5), isolation_level=None)
        except sqlite3.Error:
            return
        try:
            has_ids = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'ids'"
            ).fetchone()
            if has_ids and conn.execute("SELECT 1 FROM ids LIMIT 1").fetchone() is not None:
                return
        except sqlite3.Error:  # unreadable: keep it rather than guess
            return
        finally:
            conn.close()  # the last connection: SQLite checkpoints and removes -wal and -shm
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(OSError):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        for folder in self._made_dirs:
            try:
                folder.rmdir()  # only if empty
            except OSError:
                break
        self.created = False

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else f"version={self.version}"
        return f"Registry({str(self.path)!r}, {state})"

    @property
    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise SemidError(f"registry {self.path} is closed")
        return self._conn

    def _transaction(self, mode: Literal["DEFERRED", "IMMEDIATE"] = "DEFERRED") -> _Transaction:
        return _Transaction(self._db, mode, self)

    # ------------------------------------------------------------------ versions

    def versions(self) -> list[VersionInfo]:
        """Every ID version in the file, oldest first."""
        rows = self._db.execute(
            "SELECT v.version, v.fingerprint, v.n_levels, v.dedup, "
            "(SELECT COUNT(*) FROM ids WHERE ids.version = v.version), v.created_at "
            "FROM versions v ORDER BY v.version"
        ).fetchall()
        return [VersionInfo(*r) for r in rows]

    @property
    def fingerprint(self) -> str | None:
        """The quantizer fingerprint of this handle's version."""
        return self._version_row(self.version)[0]

    @property
    def dedup(self) -> str | None:
        """The dedup strategy of this handle's version (None before its first assignment)."""
        return self._version_row(self.version)[2]

    @property
    def n_levels(self) -> int | None:
        """Base levels L of this handle's version (None before its first assignment)."""
        return self._version_row(self.version)[1]

    def _version_row(self, version: int) -> tuple[str | None, int | None, str | None]:
        row = self._db.execute(
            "SELECT fingerprint, n_levels, dedup FROM versions WHERE version = ?", (version,)
        ).fetchone()
        if row is None:
            have = ", ".join(str(r[0]) for r in self._db.execute("SELECT version FROM versions ORDER BY 1"))
            raise SemidError(f"{self.path.name} has no ID version {version!r} (versions: {have})")
        return row

    def _resolve(self, version: int | None) -> tuple[int, int | None, str | None]:
        """``version`` (default: this handle's) -> (version, n_levels, dedup)."""
        v = self.version if version is None else version
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise SemidError(f"version={version!r} should be an int ID version or None")
        _, n_levels, dedup = self._version_row(int(v))
        return int(v), n_levels, dedup

    # ------------------------------------------------------------------ assign

    def assign(
        self,
        item_ids: Sequence[str | int] | np.ndarray,
        base_codes: np.ndarray,
        *,
        dedup: Dedup = "suffix",
        rank_last_level: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> AssignResult:
        """Give each item a unique final code, reusing stored ones; one transaction for the whole batch.

        ``base_codes`` is ``(n, L)`` non-negative ints, row ``i`` for ``item_ids[i]``. Known items get their
        stored codes back; new items are numbered in ``item_id`` string order (see the module docstring).
        ``rank_last_level(rows)`` (``dedup="remap"`` only) gets the batch row indices of colliding items and
        returns ``(len(rows), K_last)`` last-level codes per row, nearest first.

        Example: ``reg.assign(["b", "a"], np.array([[3, 1], [3, 1]])).codes`` -> ``[[3, 1, 1], [3, 1, 0]]``.
        """
        if dedup not in DEDUP_STRATEGIES:
            raise SemidError(f"dedup={dedup!r} is not one of {', '.join(map(repr, DEDUP_STRATEGIES))}")
        if dedup == "remap" and rank_last_level is None:
            raise SemidError(
                "dedup='remap' needs rank_last_level=(rows -> (len(rows), K_last) nearest codes)"
            )
        if dedup != "remap" and rank_last_level is not None:
            raise SemidError(f"rank_last_level is only used with dedup='remap', not dedup={dedup!r}")
        ids = _id_strings(item_ids)
        base = _check_codes(base_codes, "base_codes")
        n, L = base.shape
        if n != len(ids):
            raise SemidError(f"{len(ids)} item_ids but {n} rows of base_codes")
        ids_arr = pa.array(ids, pa.string())
        _check_unique(ids, ids_arr)
        width = L + 1 if dedup == "suffix" else L

        conn = self._db
        with self._transaction("IMMEDIATE"):
            current = int(conn.execute("SELECT value FROM meta WHERE key = 'current_version'").fetchone()[0])
            sql = "SELECT 1 FROM versions WHERE version = ?"
            if conn.execute(sql, (self.version,)).fetchone() is None:
                raise SemidError(
                    f"{self.path.name}: ID version {self.version} was taken back since this registry was "
                    "opened (the job that started it failed); reopen it to assign"
                )
            if current != self.version:
                raise SemidError(
                    f"{self.path.name}: ID version {current} was started since this registry was opened "
                    f"(version {self.version}); reopen it to assign"
                )
            _, stored_levels, stored_dedup = self._version_row(self.version)
            if stored_dedup is not None and stored_dedup != dedup:
                raise SemidError(
                    f"ID version {self.version} of {self.path.name} uses dedup={stored_dedup!r}, this call asks "
                    f"for dedup={dedup!r}; a version keeps one strategy (new_version=True starts another)"
                )
            if stored_levels is not None and stored_levels != L:
                raise SemidError(
                    f"base_codes have {L} levels, but ID version {self.version} of {self.path.name} "
                    f"holds {stored_levels}-level base codes"
                )
            out = np.empty((n, width), dtype=np.int64)
            if n == 0:
                return AssignResult(out, 0, 0, 0, 0, self.version)
            if stored_dedup is None:
                conn.execute(
                    "UPDATE versions SET dedup = ?, n_levels = ? WHERE version = ?", (dedup, L, self.version)
                )

            # 1. Known items: stored codes back, unchanged.
            final_sql, base_sql = _code_sql(dedup)
            known_pos, (known_final, known_base) = self._select(
                f"SELECT json_group_array(j.key), json_group_array({final_sql}), json_group_array({base_sql}) "
                "FROM json_each(?1) j CROSS JOIN ids i ON i.version = ?2 AND i.item_id = j.value",
                ids,
                self.version,
            )
            base_str = _join(base)
            n_changed = 0
            if len(known_pos):
                out[known_pos] = _parse(known_final, width)
                stored_base = pa.array(known_base, pa.string())
                n_changed = pc.sum(pc.not_equal(stored_base, base_str.take(known_pos))).as_py() or 0
            is_new = np.ones(n, dtype=bool)
            is_new[known_pos] = False
            new = np.flatnonzero(is_new)
            if len(new) == 0:
                return AssignResult(out, 0, n, 0, n_changed, self.version)

            # 2. New items, in item_id order (row order must not matter).
            order = pc.sort_indices(ids_arr.take(new)).to_numpy()
            new = new[order]
            if dedup == "remap":
                grp = _join(base[new, :-1]).to_pylist()
                slot = self._remap(new, grp, base, rank_last_level)  # type: ignore[arg-type]
                out[new, :-1] = base[new, :-1]
                out[new, -1] = slot
                base_last: list[int] | list[None] = base[new, -1].tolist()
                n_moved = int(np.count_nonzero(slot != base[new, -1]))
            else:
                grp = base_str.take(new).to_pylist()
                slot = self._next_slots(grp)
                out[new, :L] = base[new]
                if dedup == "suffix":
                    out[new, L] = slot
                base_last = [None] * len(new)
                n_moved = 0
            v = self.version
            conn.executemany(
                "INSERT INTO ids (version, item_id, grp, slot, base_last) VALUES (?, ?, ?, ?, ?)",
                zip(
                    [v] * len(new),
                    [ids[i] for i in new.tolist()],
                    grp,
                    slot.tolist(),
                    base_last,
                    strict=True,
                ),
            )
        return AssignResult(out, len(new), n - len(new), n_moved, n_changed, self.version)

    def _select(self, sql: str, values: list, *params: object) -> tuple[np.ndarray, list[list]]:
        """Run an aggregate query over ``values`` (bound as a JSON array to ``?1``), in chunks.

        ``sql`` returns one row of ``json_group_array`` columns, the first holding ``json_each`` keys (the
        positions in ``values``); returns those positions and the other columns' lists.
        """
        keys: list[np.ndarray] = []
        cols: list[list] = []
        for lo in range(0, max(len(values), 1), _CHUNK):  # an empty batch still runs once: empty lists
            row = self._db.execute(sql, (_json(values[lo : lo + _CHUNK]), *params)).fetchone()
            key, *rest = (json.loads(x) for x in row)
            keys.append(np.asarray(key, dtype=np.int64) + lo)
            cols = rest if not cols else [a + b for a, b in zip(cols, rest, strict=True)]
        return np.concatenate(keys), cols

    def _next_slots(self, grp: list[str]) -> np.ndarray:
        """Suffix / duplicate rank for new items sorted by item_id: 1 + the group's max slot, counting up."""
        uniq, inverse = _groups(grp)
        start = np.zeros(len(uniq), dtype=np.int64)
        idx, (top,) = self._select(
            "SELECT json_group_array(k), json_group_array(m) FROM ("
            "SELECT g.key AS k, MAX(i.slot) AS m FROM json_each(?1) g "
            "CROSS JOIN ids i ON i.version = ?2 AND i.grp = g.value GROUP BY g.key)",
            uniq,
            self.version,
        )
        start[idx] = np.asarray(top, dtype=np.int64) + 1
        return start[inverse] + _rank_within(inverse)

    def _remap(
        self,
        rows: np.ndarray,
        grp: list[str],
        base: np.ndarray,
        rank_last_level: Callable[[np.ndarray], np.ndarray],
    ) -> np.ndarray:
        """Final last-level codes for new rows (sorted by item_id) under ``"remap"``."""
        want = base[rows, -1].astype(np.int64)
        uniq, gidx = _groups(grp)
        idx, (taken,) = self._select(
            "SELECT json_group_array(g.key), json_group_array(i.slot) FROM json_each(?1) g "
            "CROSS JOIN ids i ON i.version = ?2 AND i.grp = g.value",
            uniq,
            self.version,
        )
        reg_keys = idx * _KEY_BASE + np.asarray(taken, dtype=np.int64)
        keys = gidx * _KEY_BASE + want
        # Pass 1: the first item (item_id order) of each base code keeps it if the registry does not hold it.
        rank = _rank_within(np.unique(keys, return_inverse=True)[1].reshape(-1))
        keeps = (rank == 0) & ~np.isin(keys, reg_keys)
        slot = want.copy()
        movers = np.flatnonzero(~keeps)
        if len(movers) == 0:
            return slot
        # Pass 2: the others take the nearest code nobody holds yet: every group's first mover, then every
        # group's second, ... (item_id order within a round), as semid.ids.dedup.deduplicate does.
        movers = movers[np.argsort(rank[movers], kind="stable")]
        ranking = check_ranking(rank_last_level(rows[movers]), len(movers))
        taken: dict[int, set[int]] = {}
        mover_groups = set(gidx[movers].tolist())
        for k in np.concatenate([reg_keys, keys[keeps]]).tolist():
            g = k // int(_KEY_BASE)
            if g in mover_groups:
                taken.setdefault(g, set()).add(k % int(_KEY_BASE))
        for j, (m, g) in enumerate(zip(movers.tolist(), gidx[movers].tolist(), strict=True)):
            used = taken.setdefault(g, set())
            code = _first_free(ranking[j], used)
            if code is None:
                prefix = uniq[g] or "(top level)"
                raise SemidError(
                    f"prefix {prefix} is full: all {ranking.shape[1]} last-level codes are taken; "
                    "use dedup='suffix' (CLI: --dedup suffix) or a larger last-level codebook"
                )
            used.add(code)
            slot[m] = code
        return slot

    # ------------------------------------------------------------------ lookups

    def lookup_items(
        self, item_ids: Sequence[str | int] | np.ndarray, *, version: int | None = None
    ) -> np.ndarray:
        """Final codes of many items: ``(n, width)`` int64 in input order, a row of ``-1`` for unknown items.

        ``width`` is ``L + 1`` under ``"suffix"``, ``L`` otherwise (0 for a version with no items yet).
        """
        v, n_levels, dedup = self._resolve(version)
        ids = _id_strings(item_ids)
        width = 0 if dedup is None else n_levels + (dedup == "suffix")
        out = np.full((len(ids), width), -1, dtype=np.int64)
        if dedup is None or not ids:
            return out
        final_sql, _ = _code_sql(dedup)
        with self._transaction():  # one snapshot across chunks
            pos, (final,) = self._select(
                f"SELECT json_group_array(j.key), json_group_array({final_sql}) FROM json_each(?1) j "
                "CROSS JOIN ids i ON i.version = ?2 AND i.item_id = j.value",
                ids,
                v,
            )
        out[pos] = _parse(final, width)
        return out

    def lookup_codes(self, codes: np.ndarray, *, version: int | None = None) -> list[str | None]:
        """The item of each final code row (``(m, width)`` ints); None where no item has it.

        Under ``"none"``, where several items can share a code, the first one assigned is returned.
        """
        v, n_levels, dedup = self._resolve(version)
        arr = _check_codes(codes, "codes", negative_ok=True)
        if dedup is None:
            return [None] * len(arr)
        width = n_levels + (dedup == "suffix")
        if arr.shape[1] != width:
            raise SemidError(
                f"codes have {arr.shape[1]} levels, but ID version {v} of {self.path.name} holds "
                f"{width}-level final codes"
            )
        if dedup == "none":  # slot 0: the first item assigned these codes
            grp, slot = _join(arr).to_pylist(), [0] * len(arr)
        else:
            grp, slot = _join(arr[:, :-1]).to_pylist(), arr[:, -1].tolist()
        out = np.full(len(arr), None, dtype=object)
        with self._transaction():
            pos, (items,) = self._select(
                "SELECT json_group_array(q.key), json_group_array(i.item_id) FROM json_each(?1) q CROSS JOIN ids i "
                "ON i.version = ?2 AND i.grp = json_extract(q.value, '$[0]') AND i.slot = json_extract(q.value, '$[1]')",
                list(zip(grp, slot, strict=True)),
                v,
            )
        out[pos] = items
        return out.tolist()

    def get(self, item_id: str | int, *, version: int | None = None) -> np.ndarray | None:
        """Final codes of one item (1-D int64), or None if it has none in that version."""
        row = self.lookup_items([item_id], version=version)[0]
        return None if (row.size == 0 or row[0] < 0) else row

    def find(self, codes: Sequence[int] | np.ndarray | str, *, version: int | None = None) -> str | None:
        """The item holding one final code, given as ints or a dash string (``"12-4-9-0"``); else None."""
        if isinstance(codes, str):
            try:
                row = [int(c) for c in codes.split("-")]
            except ValueError:
                raise SemidError(
                    f"code {codes!r} is not a dash-separated list of ints like '12-4-9-0'"
                ) from None
        else:
            row = np.asarray(codes).reshape(-1)
        return self.lookup_codes(np.asarray([row]), version=version)[0]

    def __len__(self) -> int:
        """Items in this handle's version."""
        return self._db.execute("SELECT COUNT(*) FROM ids WHERE version = ?", (self.version,)).fetchone()[0]

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, (str, int, np.integer)) or isinstance(item_id, bool):
            return False
        key = _id_strings([item_id])[0]
        sql = "SELECT 1 FROM ids WHERE version = ? AND item_id = ?"
        return self._db.execute(sql, (self.version, key)).fetchone() is not None

    # ------------------------------------------------------------------ export

    def to_arrow(self, *, version: int | Literal["all"] | None = None) -> pa.Table:
        """The registry as a table: item_id (string), codes and base_codes (list<int32>), version (int32).

        One version (default this handle's) or ``"all"``; rows sorted by version, then item_id.
        """
        return self._table(version, as_lists=True)

    def export(self, path: str | os.PathLike, *, version: int | Literal["all"] | None = None) -> Path:
        """Write :meth:`to_arrow` to ``.parquet`` or ``.csv`` (codes as dash strings), atomically."""
        path = Path(path)
        fmt = path.suffix.lower()
        if fmt not in (".parquet", ".csv"):
            raise SemidError(f"{path}: unknown export format {path.suffix!r}; use .parquet or .csv")
        table = self._table(version, as_lists=fmt == ".parquet")
        with atomic_path(path) as tmp:
            if fmt == ".parquet":
                import pyarrow.parquet as pq

                pq.write_table(table, tmp)
            else:
                import pyarrow.csv as pacsv

                pacsv.write_csv(table, tmp)
        return path

    def _table(self, version: int | Literal["all"] | None, *, as_lists: bool) -> pa.Table:
        if version == "all":
            versions = [info.version for info in self.versions()]
        else:
            versions = [self._resolve(version)[0]]
        parts = []
        with self._transaction():
            for v in versions:
                _, _, dedup = self._version_row(v)
                if dedup is None:
                    continue
                final_sql, base_sql = _code_sql(dedup)
                rows = self._db.execute(
                    f"SELECT i.item_id, {final_sql}, {base_sql} FROM ids i WHERE i.version = ? ORDER BY i.item_id",
                    (v,),
                ).fetchall()
                if rows:
                    cols = [pa.array(c, pa.string()) for c in zip(*rows, strict=True)]
                    parts.append((v, *cols))
        schema = pa.schema(
            [
                ("item_id", pa.string()),
                ("codes", pa.list_(pa.int32()) if as_lists else pa.string()),
                ("base_codes", pa.list_(pa.int32()) if as_lists else pa.string()),
                ("version", pa.int32()),
            ]
        )
        tables = []
        for v, item, final, base in parts:
            if as_lists:
                final = pc.split_pattern(final, "-").cast(pa.list_(pa.int32()))
                base = pc.split_pattern(base, "-").cast(pa.list_(pa.int32()))
            version_col = pa.array(np.full(len(item), v, dtype=np.int32))
            tables.append(pa.Table.from_arrays([item, final, base, version_col], schema=schema))
        return pa.concat_tables(tables) if tables else schema.empty_table()


def open_registry(
    path: str | os.PathLike | None, *, fingerprint: str, new_version: bool = False
) -> contextlib.AbstractContextManager[Registry | None]:
    """The registry at ``path`` opened for a model (checked against ``fingerprint``, maybe a version
    started), as a context manager; ``nullcontext(None)`` when ``path`` is None. Jobs open it before they
    encode, so a registry of another model fails in a second, and a failed job leaves it as it found it."""
    if path is None:
        return contextlib.nullcontext(None)
    return Registry(path, fingerprint=fingerprint, new_version=new_version)


class _Transaction:
    """``BEGIN <mode>`` ... ``COMMIT``, or ``ROLLBACK`` on any exception (connection in autocommit mode)."""

    def __init__(self, conn: sqlite3.Connection, mode: str, registry: Registry) -> None:
        self.conn, self.mode, self.registry = conn, mode, registry

    def __enter__(self) -> None:
        try:
            self.conn.execute(f"BEGIN {self.mode}")
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e):
                raise
            reg = self.registry
            raise SemidError(
                f"{reg.path} is locked by another process; gave up after timeout={reg.timeout} s"
            ) from None

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:  # SQLite may already have rolled back (e.g. on SQLITE_FULL)
            self.conn.execute("ROLLBACK")


# ---------------------------------------------------------------------- helpers


def _code_sql(dedup: str) -> tuple[str, str]:
    """SQL expressions (over alias ``i``) that rebuild the final and base code dash strings."""
    join_slot = "CASE WHEN i.grp = '' THEN CAST(i.{0} AS TEXT) ELSE i.grp || '-' || i.{0} END"
    if dedup == "suffix":
        return "i.grp || '-' || i.slot", "i.grp"
    if dedup == "none":
        return "i.grp", "i.grp"
    return join_slot.format("slot"), join_slot.format("base_last")


def _id_strings(item_ids: Sequence[str | int] | np.ndarray) -> list[str]:
    """Item ids as the strings stored in the registry (ints -> decimal strings)."""
    if isinstance(item_ids, (str, bytes)):
        raise SemidError(f"item_ids should be a sequence of ids, not the single value {item_ids!r}")
    if isinstance(item_ids, np.ndarray) and item_ids.dtype.kind in "iuU":
        ids = item_ids.reshape(-1).astype(str).tolist()
    else:
        ids = [x if x.__class__ is str else _id_string(x, i) for i, x in enumerate(item_ids)]
    if "" in ids:
        raise SemidError(f"item_ids[{ids.index('')}] is an empty string")
    return ids


def _id_string(x: object, i: int) -> str:
    if isinstance(x, (bool, np.bool_)):
        raise SemidError(f"item_ids[{i}]: {x!r} is a bool; item ids are str or int")
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, str):
        return str(x)
    raise SemidError(f"item_ids[{i}]: {x!r} is a {type(x).__name__}; item ids are str or int")


def _check_unique(ids: list[str], ids_arr: pa.Array) -> None:
    if pc.count_distinct(ids_arr).as_py() == len(ids):
        return
    seen: dict[str, int] = {}
    for i, x in enumerate(ids):
        if x in seen:
            raise SemidError(f"item_ids: {x!r} appears twice, at rows {seen[x]} and {i}")
        seen[x] = i


def _check_codes(codes: np.ndarray, name: str, *, negative_ok: bool = False) -> np.ndarray:
    """A 2-D int64 array of codes in [0, int32 max]; one-line errors naming the row and value."""
    arr = np.asarray(codes)
    if arr.ndim != 2:
        raise SemidError(f"{name} should be a 2-D (n_items, n_levels) int array, got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise SemidError(f"{name} has 0 levels, shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise SemidError(f"{name} should be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False) if arr.size else np.empty(arr.shape, dtype=np.int64)
    bad = (arr > MAX_CODE) if negative_ok else ((arr < 0) | (arr > MAX_CODE))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise SemidError(f"{name} row {r}: code {arr[r, c]} at level {c} is outside 0..{MAX_CODE}")
    return arr


def _json(values: list) -> str:
    return json.dumps(values, separators=(",", ":"))


def _join(codes: np.ndarray) -> pa.StringArray:
    """``(n, k)`` ints -> ``(n,)`` dash strings ``"12-4-9"`` (empty strings when k == 0), vectorised."""
    n, k = codes.shape
    if k == 0:
        return pa.array([""] * n, pa.string())
    cols = [pa.array(codes[:, j]).cast(pa.string()) for j in range(k)]
    return pc.binary_join_element_wise(*cols, "-")


def _parse(strings: list[str], width: int) -> np.ndarray:
    """Dash strings -> ``(m, width)`` int64, vectorised."""
    if not strings:
        return np.empty((0, width), dtype=np.int64)
    flat = pc.split_pattern(pa.array(strings, pa.string()), "-").flatten()
    return flat.cast(pa.int64()).to_numpy().reshape(len(strings), width)


def _first_free(ranking: np.ndarray, used: set[int]) -> int | None:
    """The first code of a ranking row that is not in ``used`` (None if all are)."""
    # With distinct codes, one of the first len(used) + 1 is free: avoid converting a whole row of K codes.
    for code in ranking[: len(used) + 1].tolist():
        if code not in used:
            return code
    for code in ranking.tolist():
        if code not in used:
            return code
    return None


def _groups(keys: list[str]) -> tuple[list[str], np.ndarray]:
    """Distinct group keys (first-seen order) and each row's index into them; hashing, no string sort."""
    encoded = pc.dictionary_encode(pa.array(keys, pa.string()))
    return encoded.dictionary.to_pylist(), encoded.indices.to_numpy().astype(np.int64)


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... within each group, keeping the input order inside a group (input is pre-sorted)."""
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    idx = np.arange(len(g))
    starts = np.maximum.accumulate(np.where(np.r_[True, g[1:] != g[:-1]], idx, 0))
    rank = np.empty(len(g), dtype=np.int64)
    rank[order] = idx - starts
    return rank
