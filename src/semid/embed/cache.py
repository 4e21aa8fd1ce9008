"""An incremental embedding cache: one vector per (model identity, sha256 of the text).

Re-embedding a catalogue after editing 10 items runs the model on those 10 texts only. The store is one
SQLite file (``embeddings.sqlite``) in the cache directory: ``$SEMID_CACHE_DIR``, else
``~/.cache/semid/embeddings``. SQLite in WAL mode lets several processes read while one writes, and a busy
timeout makes concurrent writers wait their turn rather than fail.

Example::

    cache = EmbeddingCache()
    keys = text_keys(texts)
    found, X = cache.get(embedder.name, keys, embedder.dim)  # found: (n,) bool
"""

from __future__ import annotations

import functools
import hashlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from semid._utils import sqlite_has_columns, sqlite_tables
from semid.errors import SemidError, shortlist

T = TypeVar("T")

__all__ = ["EmbeddingCache", "default_cache_dir", "text_keys"]

_CHUNK = 900  # keys per SELECT ... IN (...): under SQLite's bound-parameter limit on old builds
_KEY_BYTES = 32


def default_cache_dir() -> Path:
    """``$SEMID_CACHE_DIR`` if set, else ``~/.cache/semid/embeddings``."""
    env = os.environ.get("SEMID_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "semid" / "embeddings"


def text_keys(texts: Iterable[str]) -> list[bytes]:
    """The 32-byte sha256 digest of each UTF-8 text: the cache keys."""
    sha = hashlib.sha256
    return [sha(t.encode("utf-8")).digest() for t in texts]


def _guarded(method: Callable[..., T]) -> Callable[..., T]:
    """A damaged cache file (SQLite finds a malformed page only where it reads) is one error naming the
    file and what to do, not an sqlite3 traceback in the middle of an embedding job."""

    @functools.wraps(method)
    def wrapper(self: EmbeddingCache, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as e:
            if "locked" in str(e) or "busy" in str(e):
                raise SemidError(f"{self.path} is locked by another process ({e})") from None
            raise SemidError(
                f"{self.path}: damaged embedding cache ({e}); delete it, or embed with --no-cache or "
                "another --cache-dir"
            ) from None

    return wrapper


class EmbeddingCache:
    """Vectors keyed by ``(model name, text key)`` in a SQLite file.

    Args:
        directory: where ``embeddings.sqlite`` lives (created if needed); default :func:`default_cache_dir`.
        timeout: seconds a writer waits for another process's write to finish.
    """

    FILENAME = "embeddings.sqlite"

    def __init__(self, directory: str | os.PathLike | None = None, *, timeout: float = 60.0) -> None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout >= 0:
            raise SemidError(f"timeout={timeout!r} should be a number of seconds >= 0")
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SemidError(f"{self.directory}: cannot create the embedding cache directory ({e})") from None
        self.path = self.directory / self.FILENAME
        try:
            self._db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
            self._check_not_foreign()
            self._set_up(timeout)
        except sqlite3.Error as e:
            raise SemidError(f"{self.path}: not a usable embedding cache ({e})") from None

    _COLUMNS = {"models": {"id", "name", "dim"}, "vectors": {"model", "key", "vec"}}

    def _check_not_foreign(self) -> None:
        """Refuse, before WAL mode or a table touches it, an existing database that is not an embedding
        cache: its tables must be ours, with our columns (an empty file becomes a cache)."""
        tables = set(sqlite_tables(self._db))
        ours = tables <= set(self._COLUMNS) and sqlite_has_columns(
            self._db, {t: self._COLUMNS[t] for t in tables}
        )
        if not ours:
            self._db.close()
            shown = shortlist(sorted(tables), 10)
            raise SemidError(
                f"{self.path} is an SQLite database of another application (tables: {shown}); "
                "give the embedding cache another --cache-dir"
            )

    def _set_up(self, timeout: float) -> None:
        """WAL mode and the tables. Switching a new file to WAL needs an exclusive lock, and SQLite may
        answer "database is locked" at once, without waiting out the busy timeout, while another process
        sets up the same new file: so that is retried, with backoff, until ``timeout`` has passed."""
        deadline, pause = time.monotonic() + timeout, 0.01
        while True:
            try:
                if self._db.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                    self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints, fast
                self._db.executescript(
                    """
                    CREATE TABLE IF NOT EXISTS models (
                        id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, dim INTEGER NOT NULL);
                    CREATE TABLE IF NOT EXISTS vectors (
                        model INTEGER NOT NULL, key BLOB NOT NULL, vec BLOB NOT NULL,
                        PRIMARY KEY (model, key)) WITHOUT ROWID;
                    """
                )
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.5)

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.directory)!r})"

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    @_guarded
    def get(self, model: str, keys: Sequence[bytes], dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Look up ``keys`` -> ``(found (n,) bool, X (n, dim) float32)``; rows not found are zero.

        ``dim`` defaults to the one stored for ``model`` (0 columns if the cache has never seen it).
        """
        keys = _as_keys(keys)
        model_id, stored_dim = self._model(model)
        if dim is not None and stored_dim is not None and dim != stored_dim:
            raise SemidError(f"embedding cache {self.path}: model {model!r} has dim {stored_dim}, not {dim}")
        dim = dim if dim is not None else stored_dim or 0
        found = np.zeros(len(keys), dtype=bool)
        X = np.zeros((len(keys), dim), dtype=np.float32)
        if model_id is None or not keys:
            return found, X
        position = {k: i for i, k in enumerate(keys)}
        hits: list[bytes] = []
        blobs: list[bytes] = []
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            rows = self._db.execute(
                f"SELECT key, vec FROM vectors WHERE model = ? AND key IN ({','.join('?' * len(chunk))})",
                (model_id, *chunk),
            ).fetchall()
            for k, v in rows:
                if len(v) == 4 * dim:  # a damaged row cannot be this model's vector: a miss
                    hits.append(k)
                    blobs.append(v)
        if hits:
            idx = np.fromiter((position[k] for k in hits), dtype=np.int64, count=len(hits))
            X[idx] = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(hits), dim)
            found[idx] = True
        return found, X

    @_guarded
    def put(self, model: str, keys: Sequence[bytes], X: np.ndarray) -> None:
        """Store ``X[i]`` under ``keys[i]`` (replacing what was there), in one transaction."""
        keys = _as_keys(keys)
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[0] != len(keys):
            raise SemidError(f"cache put: {len(keys)} keys for vectors of shape {X.shape}")
        if not np.isfinite(X).all():  # stored, they would come back as hits in every later job
            raise SemidError("cache put: the vectors hold NaN or infinite values; nothing was stored")
        if not len(keys):
            return
        model_id = self._model_id(model, X.shape[1])
        rows = zip([model_id] * len(keys), keys, map(bytes, X), strict=True)
        with self._transaction():
            self._db.executemany("INSERT OR REPLACE INTO vectors (model, key, vec) VALUES (?, ?, ?)", rows)

    @_guarded
    def count(self, model: str | None = None) -> int:
        """Vectors stored (for one model, or all)."""
        if model is None:
            return self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0]
        row = self._db.execute(
            "SELECT COUNT(*) FROM vectors JOIN models ON models.id = vectors.model WHERE models.name = ?",
            (model,),
        ).fetchone()
        return row[0]

    @_guarded
    def models(self) -> dict[str, int]:
        """Model name -> vectors stored."""
        rows = self._db.execute(
            "SELECT name, (SELECT COUNT(*) FROM vectors WHERE model = models.id) FROM models ORDER BY name"
        )
        return dict(rows.fetchall())

    @_guarded
    def clear(self, model: str | None = None) -> None:
        """Forget one model's vectors, or everything."""
        with self._transaction():
            if model is None:
                self._db.execute("DELETE FROM vectors")
                self._db.execute("DELETE FROM models")
            else:
                self._db.execute(
                    "DELETE FROM vectors WHERE model IN (SELECT id FROM models WHERE name = ?)", (model,)
                )
                self._db.execute("DELETE FROM models WHERE name = ?", (model,))

    def _model(self, model: str) -> tuple[int | None, int | None]:
        row = self._db.execute("SELECT id, dim FROM models WHERE name = ?", (model,)).fetchone()
        return (row[0], row[1]) if row is not None else (None, None)

    def _model_id(self, model: str, dim: int) -> int:
        """The id of ``model`` (registered with ``dim`` if new)."""
        model_id, stored_dim = self._model(model)
        if model_id is None:
            with self._transaction():
                self._db.execute("INSERT OR IGNORE INTO models (name, dim) VALUES (?, ?)", (model, dim))
            model_id, stored_dim = self._model(model)
        if stored_dim != dim:
            raise SemidError(f"embedding cache {self.path}: model {model!r} has dim {stored_dim}, not {dim}")
        assert model_id is not None
        return model_id

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error): takes the write lock up front, so two
    writers queue on the busy timeout instead of deadlocking on a lock upgrade."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.db.execute("ROLLBACK" if exc_type is not None else "COMMIT")


def _as_keys(keys: Sequence[bytes]) -> list[bytes]:
    keys = list(keys)
    if any(not isinstance(k, bytes) or len(k) != _KEY_BYTES for k in keys):
        raise SemidError(f"cache keys should be {_KEY_BYTES}-byte digests (see text_keys)")
    return keys
