"""RecBole atomic files: ``.item`` (a catalogue) and ``.inter`` (interactions).

Tab-separated, one header line of typed fields (``item_id:token  title:token  categories:token_seq
price:float``). Real files carry the quirks of the tools that wrote them (pandas ``to_csv``):

- a value holding a tab, a quote or a newline is wrapped in double quotes, with ``""`` for a quote; the
  Amazon Beauty ``.item`` file has a title with a raw newline inside quotes (12,102 data lines for 12,101
  items), read here as one row and reported as repaired;
- a raw newline *without* quotes splits a row in two lines whose field counts add up to one too many:
  the two are rejoined and reported as repaired;
- ``token_seq`` values are either space-separated tokens (RecBole's default ``seq_separator``) or the body
  of a Python list literal, ``'Beauty', 'Fragrance', "Women's"`` (the Amazon files);
- a ``token_seq`` field is either a list (categories, genres, tags) or free text cut into words (a title,
  a description): see :func:`is_list_field` for how they are told apart. A list is read as
  ``list<string>`` (item texts join it with ``", "``), free text as one string, its tokens joined with
  single spaces (``title:token_seq`` ``Hair Dryer`` stays ``"Hair Dryer"``, not ``"Hair, Dryer"``);
- missing values are empty or ``None``.
"""

from __future__ import annotations

import ast
import os
import re
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
    require_columns,
    skip_rows,
    to_columns,
)
from semid.data.model import Catalogue, Interactions, Origin, ParseReport
from semid.errors import SemidError

RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")


def parse_header(header: list[str], file: str) -> list[tuple[str, str]]:
    """``["item_id:token", ...]`` -> ``[("item_id", "token"), ...]``; an untyped or unknown type is an error."""
    out = []
    for h in header:
        name, colon, kind = h.strip().rpartition(":")
        if not colon or not name:
            raise SemidError(
                f"{file} line 1: header field {h!r} has no type; RecBole headers read name:type with type "
                f"one of {', '.join(RECBOLE_TYPES)}"
            )
        if kind not in RECBOLE_TYPES:
            raise SemidError(
                f"{file} line 1: header field {h!r} has type {kind!r}, expected one of {', '.join(RECBOLE_TYPES)}"
            )
        out.append((name, kind))
    return out


def split_token_seq(col: pa.Array, sep: str = " ") -> pa.Array:
    """Text -> ``list<string>``: a Python list body (``'a', "b's"``) is read as such, else split on ``sep``.

    Vectorised: the list bodies are split with a regex on ``', '``-style boundaries; only values holding a
    backslash escape go through :func:`ast.literal_eval`. Missing values become null.
    """
    s = pc.utf8_trim_whitespace(pc.cast(col, pa.string()))
    missing = null_mask(s)
    first = pc.utf8_slice_codeunits(s, 0, 1)
    literal = (
        pc.fill_null(pc.is_in(first, pa.array(["'", '"'])), False).to_numpy(zero_copy_only=False) & ~missing
    )
    escaped = pc.fill_null(pc.match_substring(s, "\\"), False).to_numpy(zero_copy_only=False) & literal
    plain = ~literal & ~missing

    out_type = pa.list_(pa.string())
    parts: list[pa.Array] = []
    index = np.full(len(s), -1, dtype=np.int64)
    offset = 0

    def add(mask: np.ndarray, values: pa.Array) -> None:
        nonlocal offset
        index[np.flatnonzero(mask)] = offset + np.arange(len(values))
        parts.append(values.cast(out_type))
        offset += len(values)

    simple_lit = literal & ~escaped
    if simple_lit.any():
        body = pc.utf8_slice_codeunits(s.filter(pa.array(simple_lit)), 1, -1)
        add(simple_lit, pc.split_pattern_regex(body, "['\"], ['\"]"))
    if escaped.any():
        vals = []
        for v in s.filter(pa.array(escaped)).to_pylist():
            try:
                parsed = ast.literal_eval(f"[{v}]")
                vals.append([str(x) for x in parsed])
            except (ValueError, SyntaxError):
                vals.append(v.split(sep) if sep != " " else v.split())
        add(escaped, pa.array(vals, out_type))
    if plain.any():
        body = s.filter(pa.array(plain))
        split = pc.utf8_split_whitespace(body) if sep == " " else pc.split_pattern(body, sep)
        add(plain, split)
    parts.append(pa.nulls(1, out_type))
    index[index < 0] = offset  # missing -> the trailing null
    return pa.concat_arrays(parts).take(pa.array(index))


# Names of token_seq fields that hold lists, case-insensitive, also as the end of a name (sub_categories)
# and with a _list or _path suffix (tag_list).
LIST_FIELD_NAMES = re.compile(
    r"(^|_)(categories|category|genres?|tags?|keywords?|labels?|topics?)(_list|_path)?$", re.IGNORECASE
)


def is_list_field(name: str, col: pa.Array) -> bool:
    """Whether a ``token_seq`` field holds a list of values rather than free text cut into words.

    A list when its name says so (:data:`LIST_FIELD_NAMES`: ``categories``, ``genre``, ``tags``, ...) or when
    every non-empty value is written as a Python list body (``'Beauty', 'Skin Care'``); else free text
    (``title``, ``name``, ``description`` and any other field).
    """
    if LIST_FIELD_NAMES.search(name):
        return True
    s = pc.utf8_trim_whitespace(pc.cast(col, pa.string())).filter(pa.array(~null_mask(col)))
    if len(s) == 0:
        return False
    quoted = pc.is_in(pc.utf8_slice_codeunits(s, 0, 1), pa.array(["'", '"']))
    return bool(pc.all(quoted).as_py())


def _float_seq(col: pa.Array, sep: str) -> tuple[pa.Array, np.ndarray]:
    """Text -> ``list<double>``; ``bad`` marks rows holding a token that is no number."""
    lists = split_token_seq(col, sep)
    offsets = lists.offsets.to_numpy().astype(np.int64)
    values, bad_flat = parse_floats(lists.values.slice(offsets[0], offsets[-1] - offsets[0]))
    owner = np.repeat(np.arange(len(lists)), np.diff(offsets))
    bad = np.zeros(len(lists), dtype=bool)
    bad[owner[bad_flat]] = True
    seq = pa.ListArray.from_arrays(
        pa.array(offsets - offsets[0], pa.int32()), pa.array(values), mask=lists.is_null()
    )
    return seq, bad


def read_recbole(
    path: str | os.PathLike,
    *,
    report: ParseReport | None = None,
    max_bad_fraction: float = 0.01,
    item_id: str = "item_id",
    user_id: str = "user_id",
    timestamp: str | None = "timestamp",
    rating: str | None = "rating",
    fields: list[str] | None = None,
    seq_separator: str = " ",
    encoding: str = "utf-8",
) -> Catalogue | Interactions:
    """Read a RecBole ``.item`` file as a :class:`Catalogue` or an ``.inter`` file as :class:`Interactions`.

    Column names are the header names without their ``:type``. ``fields`` restricts the catalogue to those
    columns (default: all). In an ``.inter`` file ``timestamp``/``rating`` are used when present. A
    ``token_seq`` field becomes ``list<string>`` when it is a list (:func:`is_list_field`), else one string
    of its tokens joined with single spaces.
    """
    path = Path(path)
    suffix = path.suffix
    if suffix not in (".item", ".inter"):
        raise SemidError(f"{path.name}: not a RecBole atomic file (expected a .item or .inter file)")
    report = report if report is not None else ParseReport()
    records = read_records(path, sep="\t", report=report, encoding=encoding, quoting=True, header=True)
    file = records.file
    typed = parse_header(records.header or [], file)
    names = [n for n, _ in typed]
    n_records = len(records)
    columns, lines = to_columns(records, len(typed), report, repair_broken=True)

    values: dict[str, pa.Array] = {}
    bad = np.zeros(len(lines), dtype=bool)
    wanted = set(names)
    if suffix == ".item" and fields is not None:
        require_columns(file, names, {f"fields[{f!r}]": f for f in fields})
        wanted = {item_id, *fields}
    for (name, kind), col in zip(typed, columns, strict=True):
        if name not in wanted:
            continue
        if kind == "token":
            col = pc.cast(col, pa.string())
            values[name] = pc.if_else(pa.array(null_mask(col)), pa.scalar(None, pa.string()), col)
        elif kind == "token_seq":
            tokens = split_token_seq(col, seq_separator)
            values[name] = tokens if is_list_field(name, col) else pc.binary_join(tokens, " ")
        elif kind == "float":
            nums, b = parse_floats(col)
            report_bad_values(report, file, b & ~bad, lines, name, col)
            bad |= b
            values[name] = pa.array(nums, from_pandas=True)  # NaN -> null
        else:  # float_seq
            seq, b = _float_seq(col, seq_separator)
            report_bad_values(report, file, b & ~bad, lines, name, col, "holds a value that is no number")
            bad |= b
            values[name] = seq

    if suffix == ".item":
        require_columns(file, names, {"item_id": item_id})
        ids = values[item_id]
        bad |= _check_ids(ids, lines, file, "item_id", report, bad)
        keep = ~bad
        dup = _duplicate_rows(ids, keep)
        skip_rows(
            report,
            file,
            dup,
            lambda i: f"{file} line {lines[i]}",
            lambda i: f"item_id {ids[i].as_py()!r} repeats an earlier row, left out",
        )
        keep &= ~dup
        report.check(file, n_records, max_bad_fraction)
        table = pa.table(
            {("item_id" if k == item_id else k): v.filter(pa.array(keep)) for k, v in values.items()}
        )
        order = ["item_id"] + [n for n in table.column_names if n != "item_id"]
        return Catalogue(table.select(order), origin=Origin(file, lines[keep]))

    timestamp = timestamp if timestamp in names else None
    rating = rating if rating in names else None
    require_columns(file, names, {"user_id": user_id, "item_id": item_id})
    for role, name in (("user_id", user_id), ("item_id", item_id)):
        bad |= _check_ids(values[name], lines, file, role, report, bad)
    ts = None
    if timestamp is not None:
        ts_values = values[timestamp].to_numpy(zero_copy_only=False)
        missing = np.isnan(ts_values) & ~bad
        skip_rows(
            report, file, missing, lambda i: f"{file} line {lines[i]}", lambda i: f"{timestamp} is missing"
        )
        bad |= np.isnan(ts_values)
        ts = as_timestamps(ts_values[~bad])
    report.check(file, n_records, max_bad_fraction)
    keep = pa.array(~bad)
    return Interactions(
        values[user_id].filter(keep),
        values[item_id].filter(keep),
        ts,
        values[rating].to_numpy(zero_copy_only=False)[~bad] if rating is not None else None,
        origin=Origin(file, lines[~bad]),
    )


def _check_ids(
    ids: pa.Array, lines: np.ndarray, file: str, role: str, report: ParseReport, already: np.ndarray
) -> np.ndarray:
    """Mark (and report) rows whose id is missing or holds whitespace: such a row is broken, not an item."""
    missing = pc.is_null(ids).to_numpy(zero_copy_only=False)
    spaced = pc.fill_null(pc.match_substring_regex(ids, r"\s"), False).to_numpy(zero_copy_only=False)
    bad = (missing | spaced) & ~already

    def why(i: int) -> str:
        value = ids[i].as_py()
        return f"{role} {value!r} is not a valid id" if value else f"{role} is empty"

    skip_rows(report, file, bad, lambda i: f"{file} line {lines[i]}", why)
    return missing | spaced


def _duplicate_rows(ids: pa.Array, keep: np.ndarray) -> np.ndarray:
    """True for kept rows whose id already appeared in an earlier kept row."""
    codes = pc.dictionary_encode(ids).indices.to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(keep)
    first = np.unique(codes[rows], return_index=True)[1]
    dup = np.zeros(len(ids), dtype=bool)
    dup[rows] = True
    dup[rows[first]] = False
    return dup
