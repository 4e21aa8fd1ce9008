"""MovieLens (GroupLens): ml-100k and ml-1m, in their distributed formats (Latin-1 text).

- ml-100k: ``u.data`` (``user \\t item \\t rating \\t timestamp``), ``u.item`` (``|``-separated: id, title,
  release date, video release date, IMDb URL, then 19 genre flags 0/1), ``u.genre`` (``name|index``,
  optional: the standard genre names are built in).
- ml-1m: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) and ``movies.dat``
  (``MovieID::Title::Genres`` with genres ``|``-separated).

Catalogue fields: ``title``, ``genres`` (list) and, for ml-100k, ``release_date``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from semid.data._io import (
    as_timestamps,
    null_mask,
    parse_floats,
    read_records,
    report_bad_values,
    skip_rows,
    to_columns,
)
from semid.data.model import Catalogue, Interactions, Origin, ParseReport
from semid.errors import SemidError

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
ENCODING = "latin-1"


def _read_ratings(path: Path, sep: str, report: ParseReport, max_bad_fraction: float) -> Interactions:
    records = read_records(path, sep=sep, report=report, encoding=ENCODING)
    file = records.file
    (user, item, rating, ts), lines = to_columns(records, 4, report)
    ratings, bad_r = parse_floats(rating)
    stamps, bad_t = parse_floats(ts)
    report_bad_values(report, file, bad_r, lines, "rating", rating)
    report_bad_values(report, file, bad_t & ~bad_r, lines, "timestamp", ts)
    missing = (null_mask(user) | null_mask(item)) & ~bad_r & ~bad_t
    skip_rows(
        report, file, missing, lambda i: f"{file} line {lines[i]}", lambda i: "user or item id is empty"
    )
    bad = bad_r | bad_t | missing | np.isnan(stamps)
    report.check(file, len(records), max_bad_fraction)
    keep, ok = pa.array(~bad), ~bad
    return Interactions(
        user.filter(keep),
        item.filter(keep),
        as_timestamps(stamps[ok]),
        ratings[ok],
        origin=Origin(file, lines[ok]),
    )


def read_ml100k_ratings(
    path: str | os.PathLike, *, report: ParseReport | None = None, max_bad_fraction: float = 0.01
) -> Interactions:
    """``u.data`` (tab-separated user, item, rating, unix timestamp) as interactions."""
    return _read_ratings(Path(path), "\t", report if report is not None else ParseReport(), max_bad_fraction)


def read_ml1m_ratings(
    path: str | os.PathLike, *, report: ParseReport | None = None, max_bad_fraction: float = 0.01
) -> Interactions:
    """``ratings.dat`` (``::``-separated user, movie, rating, unix timestamp) as interactions."""
    return _read_ratings(Path(path), "::", report if report is not None else ParseReport(), max_bad_fraction)


def read_ml100k_genres(path: str | os.PathLike) -> tuple[str, ...]:
    """Genre names in flag order from ``u.genre`` (``name|index`` lines)."""
    records = read_records(path, sep="|", report=ParseReport(), encoding=ENCODING)
    pairs = records.fields.to_pylist()
    names: dict[int, str] = {}
    for line, p in zip(records.lines.tolist(), pairs, strict=True):
        if len(p) != 2 or not p[1].strip().isdigit():
            raise SemidError(f"{records.file} line {line}: expected 'name|index', got {'|'.join(p)!r}")
        names[int(p[1])] = p[0]
    if sorted(names) != list(range(len(names))):
        raise SemidError(f"{records.file}: genre indices should be 0..{len(names) - 1}, got {sorted(names)}")
    return tuple(names[i] for i in range(len(names)))


def read_ml100k_items(
    path: str | os.PathLike,
    genres: tuple[str, ...] | str | os.PathLike | None = None,
    *,
    report: ParseReport | None = None,
    max_bad_fraction: float = 0.01,
) -> Catalogue:
    """``u.item`` as a catalogue: title, release date and the genre flags turned into a list of names.

    ``genres`` are the flag names in order (or the path of ``u.genre``); default: the 19 ml-100k genres.
    """
    report = report if report is not None else ParseReport()
    if genres is None:
        names = ML100K_GENRES
    elif isinstance(genres, tuple):
        names = genres
    else:
        names = read_ml100k_genres(genres)
    records = read_records(path, sep="|", report=report, encoding=ENCODING)
    file = records.file
    columns, lines = to_columns(records, 5 + len(names), report)
    flag_cols = columns[5:]
    flags = np.zeros((len(lines), len(names)), dtype=bool)
    bad = np.zeros(len(lines), dtype=bool)
    for j, col in enumerate(flag_cols):
        is_one = pc.equal(pc.utf8_trim_whitespace(col), "1").to_numpy(zero_copy_only=False)
        is_zero = pc.equal(pc.utf8_trim_whitespace(col), "0").to_numpy(zero_copy_only=False)
        b = ~(is_one | is_zero)
        report_bad_values(report, file, b & ~bad, lines, f"genre flag {names[j]!r}", col, "is not 0 or 1")
        bad |= b
        flags[:, j] = is_one
    report.check(file, len(records), max_bad_fraction)
    ok = ~bad
    genre_lists = _flags_to_lists(flags[ok], names)
    keep = pa.array(ok)
    table = pa.table(
        {
            "item_id": columns[0].filter(keep),
            "title": _nullify(columns[1].filter(keep)),
            "genres": genre_lists,
            "release_date": _nullify(columns[2].filter(keep)),
        }
    )
    return Catalogue(table, origin=Origin(file, lines[ok]))


def read_ml1m_movies(
    path: str | os.PathLike, *, report: ParseReport | None = None, max_bad_fraction: float = 0.01
) -> Catalogue:
    """``movies.dat`` (``MovieID::Title::Genres``) as a catalogue with ``title`` and ``genres`` (list)."""
    report = report if report is not None else ParseReport()
    records = read_records(path, sep="::", report=report, encoding=ENCODING)
    (item, title, genres), lines = to_columns(records, 3, report)
    report.check(records.file, len(records), max_bad_fraction)
    genre_lists = pc.split_pattern(pc.utf8_trim_whitespace(genres), "|")
    table = pa.table({"item_id": item, "title": _nullify(title), "genres": genre_lists})
    return Catalogue(table, origin=Origin(records.file, lines))


def _flags_to_lists(flags: np.ndarray, names: tuple[str, ...]) -> pa.Array:
    """(n, g) bool flags -> list<string> of the flagged names, without a Python loop over rows."""
    rows, cols = np.nonzero(flags)  # row-major: each row's genres in flag order
    offsets = np.zeros(len(flags) + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=len(flags)), out=offsets[1:])
    values = pa.array(list(names), pa.string()).take(pa.array(cols.astype(np.int64)))
    return pa.ListArray.from_arrays(pa.array(offsets), values)


def _nullify(col: pa.Array) -> pa.Array:
    col = pc.cast(col, pa.string())
    return pc.if_else(pa.array(null_mask(col)), pa.scalar(None, pa.string()), col)
