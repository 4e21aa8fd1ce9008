"""Stable, vectorised 64-bit hashes for partitioning rows by code prefix or by item id.

They must give the same bucket on every machine and in every process (Python's ``hash`` does not), and
run at memory speed over millions of rows (no per-row Python).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_PRIME = np.uint64(0x100000001B3)
_STRING_BASE = np.uint64(1_000_003)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: every input bit moves every output bit."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def hash_rows(codes: np.ndarray) -> np.ndarray:
    """``(n, L)`` integer codes -> ``(n,)`` uint64, equal for equal rows."""
    codes = np.asarray(codes)
    h = np.full(codes.shape[0], _GOLDEN, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for level in range(codes.shape[1]):
            h = (h ^ codes[:, level].astype(np.uint64)) * _PRIME
    return _mix(h)


def prefix_buckets(codes: np.ndarray, n_buckets: int) -> np.ndarray:
    """Bucket of each row by its code prefix (all levels but the last): ``(n,)`` int64 in ``[0, n_buckets)``.

    Items that can collide, under any dedup strategy, share a prefix, so each bucket can be deduplicated
    on its own and the union equals deduplicating everything at once.
    """
    codes = np.asarray(codes)
    if n_buckets == 1 or codes.shape[1] <= 1:
        return np.zeros(codes.shape[0], dtype=np.int64)
    return (hash_rows(codes[:, :-1]) % np.uint64(n_buckets)).astype(np.int64)


def hash_strings(values: pa.Array | pa.ChunkedArray | np.ndarray | list) -> np.ndarray:
    """UTF-8 strings (ids) -> ``(n,)`` uint64: a polynomial hash of the bytes, vectorised over the buffer."""
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(np.asarray(values).tolist())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = arr.cast(pa.string())
    arr = arr.cast(pa.large_string())
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset : arr.offset + n + 1]
    data = arr.buffers()[2]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
    start, stop = int(offsets[0]), int(offsets[-1])
    lengths = np.diff(offsets)
    h = lengths.astype(np.uint64) * _GOLDEN
    if stop > start:
        max_len = int(lengths.max())
        with np.errstate(over="ignore"):
            powers = np.cumprod(np.full(max_len, _STRING_BASE, dtype=np.uint64))  # base^(pos+1), wraps
            pos = np.arange(start, stop, dtype=np.int64) - np.repeat(offsets[:-1], lengths)
            terms = raw[start:stop].astype(np.uint64) * powers[pos]
            nonempty = lengths > 0
            sums = np.add.reduceat(terms, (offsets[:-1] - start)[nonempty])
            h[nonempty] ^= sums
    return _mix(h)
