"""One entry point for every format: :func:`load_dataset` finds the files, detects their format from their
names, reads them with the right reader and joins items and interactions into a :class:`Dataset`.

Recognised files (a directory is searched one level deep; several paths may be given):

==============  ==========================================================================
format          files
==============  ==========================================================================
recbole         ``*.item`` (catalogue), ``*.inter`` (interactions)
p5              ``sequential_data.txt`` (+ ``datamaps.json`` to map ids to ASINs)
amazon2014      ``reviews_<Cat>[_5].json.gz``, ``meta_<Cat>.json.gz`` (Python-literal lines)
amazon2018      ``<Cat>[_5].json.gz`` (reviews), ``meta_<Cat>.json.gz`` (JSON lines)
ml-100k         ``u.data``, ``u.item`` (+ ``u.genre``)
ml-1m           ``ratings.dat``, ``movies.dat``
jsonl/csv/      any ``.jsonl``/``.json``/``.csv``/``.tsv`` (optionally ``.gz``) or ``.parquet``: a table
parquet         with a user column is interactions, one without is a catalogue
==============  ==========================================================================

Formats can be mixed: the Amazon Beauty split of TIGER/P5 is a RecBole ``.item`` catalogue plus P5
sequences, ``load_dataset(["recbole_item/", "p5/"])``.
"""

from __future__ import annotations

import gzip
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pyarrow as pa

from semid.data._io import check_encoding, display_name
from semid.data.amazon import read_amazon_meta, read_amazon_reviews, sniff_meta_version
from semid.data.model import Catalogue, Dataset, Interactions, Origin, ParseReport
from semid.data.movielens import (
    read_ml1m_movies,
    read_ml1m_ratings,
    read_ml100k_genres,
    read_ml100k_items,
    read_ml100k_ratings,
)
from semid.data.p5 import read_p5
from semid.data.recbole import read_recbole
from semid.data.tabular import read_table, table_to_catalogue, table_to_interactions, tabular_format
from semid.errors import SemidError, shortlist

FORMATS = ("auto", "recbole", "p5", "amazon2014", "amazon2018", "ml-100k", "ml-1m", "jsonl", "csv", "parquet")
_TABULAR = ("jsonl", "csv", "parquet")
_LOOKED_FOR = (
    "*.item, *.inter, sequential_data.txt, reviews_*.json.gz, meta_*.json.gz, u.data, u.item, ratings.dat, "
    "movies.dat, *.jsonl, *.csv, *.tsv, *.parquet"
)


@dataclass(frozen=True)
class DataFile:
    """A file recognised as part of a dataset: its format and its role in it."""

    path: Path
    format: str  # one of FORMATS but "auto"
    role: str  # "items", "interactions", "maps" (P5 datamaps), "genres" (u.genre) or "table" (decided by columns)


def _first_line(path: Path) -> str:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.strip():
                    return line[:4096]
    except (OSError, EOFError):
        return ""
    return ""


def detect(path: str | os.PathLike) -> DataFile | None:
    """The format and role of a file from its name (and, for ``.json`` files, its first line); None if unknown."""
    path = Path(path)
    name = path.name
    lower = name.lower()
    # MovieLens names first: "u.item" would otherwise look like a RecBole .item file.
    if name in ("u.data", "u.item", "u.genre"):
        return DataFile(
            path, "ml-100k", {"u.data": "interactions", "u.item": "items", "u.genre": "genres"}[name]
        )
    if name in ("ratings.dat", "movies.dat"):
        return DataFile(path, "ml-1m", "interactions" if name == "ratings.dat" else "items")
    if lower.endswith(".item"):
        return DataFile(path, "recbole", "items")
    if lower.endswith(".inter"):
        return DataFile(path, "recbole", "interactions")
    if name == "sequential_data.txt":
        return DataFile(path, "p5", "interactions")
    if name == "datamaps.json":
        return DataFile(path, "p5", "maps")
    if re.fullmatch(r".+\.json(\.gz)?", name):
        if name.startswith("meta_"):
            return DataFile(path, sniff_meta_version(path), "items")
        if name.startswith("reviews_"):
            return DataFile(path, "amazon2014", "interactions")
        first = _first_line(path)
        if '"reviewerID"' in first and '"asin"' in first:
            return DataFile(path, "amazon2018", "interactions")
    fmt = tabular_format(path)
    return DataFile(path, fmt, "table") if fmt else None


def find_files(paths: Sequence[str | os.PathLike], format: str = "auto") -> tuple[list[DataFile], list[Path]]:
    """Recognised dataset files under ``paths`` (files, or directories one level deep), and those ignored.

    A file named explicitly must be recognised (or readable as the given tabular ``format``); files in a
    directory that are not dataset files (a LICENSE, a README) are ignored and listed.
    """
    if format not in FORMATS:
        raise SemidError(f"format={format!r} is not one of {', '.join(FORMATS)}")
    found: list[DataFile] = []
    ignored: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise SemidError(f"{p}: no such file or directory")
        if not p.is_file() and not p.is_dir():
            raise SemidError(f"{p}: not a regular file or a directory")
        explicit = p.is_file()
        for f in (
            [p] if explicit else sorted(x for x in p.iterdir() if x.is_file() and not x.name.startswith("."))
        ):
            df = detect(f)
            if format != "auto" and (df is None or df.format != format):
                if format in _TABULAR and explicit:
                    df = DataFile(f, format, "table")
                elif format == "amazon2014" and df is not None and df.format == "amazon2018":
                    df = DataFile(
                        f, "amazon2014", df.role
                    )  # a JSON-lines 2014 file: the name says which year
                elif explicit:
                    raise SemidError(f"{f}: not a {format} file (looked for {_LOOKED_FOR})")
                else:
                    df = None
            if df is None:
                if explicit:
                    raise SemidError(f"{f}: unknown format; pass format= one of {', '.join(FORMATS[1:])}")
                ignored.append(f)
            else:
                found.append(df)
    return found, ignored


def load_dataset(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    format: str = "auto",
    *,
    item_id: str | None = None,
    user_id: str | None = None,
    timestamp: str | None = None,
    rating: str | None = None,
    fields: list[str] | None = None,
    encoding: str = "utf-8",
    max_bad_fraction: float = 0.01,
) -> Dataset:
    """Read a dataset from a file, a directory, or several of them; see the module docs for what is recognised.

    Args:
        paths: a file or directory, or a list of them (their files are pooled: one item source and one
            interaction source at most).
        format: ``"auto"`` (from the file names) or one of :data:`FORMATS` to read only files of that format.
        item_id, user_id, timestamp, rating: column names in JSONL/CSV/Parquet tables (and RecBole files);
            default ``item_id``, ``user_id``, and ``timestamp``/``rating`` when such columns exist.
        fields: catalogue columns to keep (default: all).
        encoding: text encoding of JSONL/CSV/RecBole files (MovieLens files are always Latin-1, Amazon and
            P5 files UTF-8); a name Python does not know is an error.
        max_bad_fraction: share of malformed lines a file may have before reading it is an error; below it
            they are left out and counted in :attr:`Dataset.report`.

    Example::

        ds = load_dataset(["data/amazon-beauty/recbole_item", "data/amazon-beauty/p5"])
        print(ds.stats().n_users)  # 22363
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not paths:
        raise SemidError("no path given")
    if (
        isinstance(max_bad_fraction, bool)
        or not isinstance(max_bad_fraction, (int, float))
        or not 0 <= max_bad_fraction <= 1
    ):
        raise SemidError(f"max_bad_fraction={max_bad_fraction} should be between 0 and 1")
    check_encoding(encoding)
    files, ignored = find_files(paths, format)
    where = ", ".join(str(p) for p in paths)
    if not files:
        raise SemidError(f"{where}: no dataset files found (looked for {_LOOKED_FOR})")
    mapped = {
        k: v
        for k, v in dict(item_id=item_id, user_id=user_id, timestamp=timestamp, rating=rating).items()
        if v
    }
    if (mapped or fields) and not any(f.format in (*_TABULAR, "recbole") for f in files):
        names = ", ".join(sorted({*mapped, *(["fields"] if fields else [])}))
        raise SemidError(f"{names}= only apply to jsonl/csv/parquet/recbole files; {where} holds none")

    report = ParseReport()
    if ignored:
        report.note(f"ignored {len(ignored)} other file(s): {', '.join(p.name for p in ignored)}")
    common = dict(report=report, max_bad_fraction=max_bad_fraction)
    user_col, item_col = user_id or "user_id", item_id or "item_id"

    # Tables decide their role by their columns: with a user column they are interactions.
    tables: dict[Path, tuple[pa.Table, Origin]] = {}
    items: list[DataFile] = []
    inters: list[DataFile] = []
    for f in files:
        if f.role == "table":
            tables[f.path] = read_table(f.path, format=f.format, encoding=encoding, **common)
            names = tables[f.path][0].column_names
            if user_col not in names and item_col not in names:
                _suggest_columns(f.path, names)
            (inters if user_col in names else items).append(f)
        elif f.role == "items":
            items.append(f)
        elif f.role == "interactions":
            inters.append(f)
    for what, group in (("item", items), ("interaction", inters)):
        if len(group) > 1:
            raise SemidError(
                f"several {what} files: {shortlist(str(f.path) for f in group)}; pass one (or a directory holding one; "
                "sharded interactions stream with semid train --stream)"
            )

    interactions: Interactions | None = None
    if inters:
        f = inters[0]
        if f.format in _TABULAR:
            table, origin = tables[f.path]
            interactions = table_to_interactions(
                table,
                origin,
                user_id=user_col,
                item_id=item_col,
                timestamp=timestamp,
                rating=rating,
                **common,
            )
        elif f.format == "recbole":
            interactions = cast(  # an .inter file reads as interactions
                Interactions,
                read_recbole(
                    f.path, user_id=user_col, item_id=item_col, timestamp=timestamp or "timestamp",
                    rating=rating or "rating", encoding=encoding, **common,
                ),
            )  # fmt: skip
        elif f.format == "p5":
            maps = [m.path for m in files if m.role == "maps"]
            interactions = read_p5(f.path, maps[0] if maps else None, **common)
        elif f.format in ("amazon2014", "amazon2018"):
            interactions = read_amazon_reviews(f.path, **common)
        elif f.format == "ml-100k":
            interactions = read_ml100k_ratings(f.path, **common)
        else:
            interactions = read_ml1m_ratings(f.path, **common)

    catalogue: Catalogue | None = None
    if items:
        f = items[0]
        if f.format in _TABULAR:
            table, origin = tables[f.path]
            catalogue = table_to_catalogue(table, origin, item_id=item_col, fields=fields, **common)
        elif f.format == "recbole":
            catalogue = cast(  # an .item file reads as a catalogue
                Catalogue, read_recbole(f.path, item_id=item_col, fields=fields, encoding=encoding, **common)
            )
        elif f.format in ("amazon2014", "amazon2018"):
            # Only the reviewed items: a meta file covers the whole category, the 5-core a small part of it.
            keep = pa.array(interactions.items, pa.string()) if interactions is not None else None
            catalogue = read_amazon_meta(f.path, version=f.format, keep_items=keep, **common)
        elif f.format == "ml-100k":
            genres = [g.path for g in files if g.role == "genres"]
            catalogue = read_ml100k_items(f.path, read_ml100k_genres(genres[0]) if genres else None, **common)
        else:
            catalogue = read_ml1m_movies(f.path, **common)

    if catalogue is None and interactions is None:
        raise SemidError(
            f"{where}: found only {', '.join(f.path.name for f in files)}; no items or interactions"
        )
    name = " + ".join(Path(p).name or str(p) for p in paths)
    return Dataset(catalogue, interactions, report, name)


_USER_NAMES = ("userid", "user", "uid", "reviewerid", "customerid", "visitorid")
_ITEM_NAMES = ("itemid", "item", "iid", "movieid", "asin", "productid", "parentasin", "bookid", "trackid")


def _suggest_columns(path: Path, names: list[str]) -> None:
    """A table with neither ``user_id`` nor ``item_id`` whose columns look like them (MovieLens' userId,
    movieId; Amazon's reviewerID, asin): one error naming the options that map them."""

    def find(wanted: tuple[str, ...]) -> str | None:
        return next((c for c in names if c.lower().replace("_", "") in wanted), None)

    user, item = find(_USER_NAMES), find(_ITEM_NAMES)
    if item is None:
        return  # nothing to suggest: the usual "no column 'item_id'" error follows
    options = (f"--user-id {user} " if user else "") + f"--item-id {item}"
    kind = "interactions" if user else "a catalogue"
    raise SemidError(
        f"{display_name(path)}: no user_id or item_id column, but it looks like {kind} "
        f"(columns: {', '.join(names[:8])}); pass {options}"
    )
