"""Generic tables: JSON lines, CSV/TSV and Parquet, with a column mapping.

A table with a user column is read as interactions (``user_id``, ``item_id``, optional ``timestamp`` and
``rating``); one without is a catalogue (``item_id`` plus text fields). Column names default to those words
and can be mapped: ``read_interactions("ratings.csv", user_id="userId", item_id="movieId")``.

CSV and JSON lines go through pyarrow's readers. A malformed row (wrong field count, invalid JSON, a rating
that is no number) is reported with its line and left out; more than ``max_bad_fraction`` of them is an error.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from semid.data._io import (
    as_timestamps,
    as_utf8_text,
    decode,
    display_name,
    excerpt,
    is_gzip,
    nonblank_line_numbers,
    null_mask,
    parse_floats,
    read_bytes,
    require_columns,
    skip_rows,
    truncated_gzip_error,
)
from semid.data.model import Catalogue, Interactions, Origin, ParseReport
from semid.errors import SemidError, first_line

TABULAR_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def tabular_format(path: str | os.PathLike) -> str | None:
    """``"jsonl"``, ``"csv"`` or ``"parquet"`` from the file name (``.gz`` allowed for text), else None."""
    name = Path(path).name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
        fmt = TABULAR_SUFFIXES.get(Path(name).suffix)
        return fmt if fmt != "parquet" else None
    return TABULAR_SUFFIXES.get(Path(name).suffix)


def read_table(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    report: ParseReport | None = None,
    max_bad_fraction: float = 0.01,
    encoding: str = "utf-8",
) -> tuple[pa.Table, Origin]:
    """Read a JSONL / CSV / Parquet file as an arrow table, with the :class:`Origin` of its rows."""
    path = Path(path)
    if not path.is_file():
        raise SemidError(f"{path}: no such file")
    fmt = format or tabular_format(path)
    report = report if report is not None else ParseReport()
    if fmt == "parquet":
        try:
            _unique_columns(pq.read_schema(path).names, path)
            return pq.read_table(path), Origin(display_name(path))
        except (pa.ArrowInvalid, OSError) as e:
            raise SemidError(f"{display_name(path)}: not a readable Parquet file ({first_line(e)})") from None
    if fmt == "csv":
        table, origin = _read_csv(path, report, max_bad_fraction, encoding)
    elif fmt == "jsonl":
        table, origin = _read_jsonl(path, report, max_bad_fraction, encoding)
    else:
        raise SemidError(
            f"{display_name(path)}: unknown table format {fmt!r} (expected jsonl, csv or parquet)"
        )
    _unique_columns(table.column_names, path)
    return table, origin


def _unique_columns(names: list[str], path: Path) -> None:
    """A header naming one column twice makes every lookup of that name ambiguous: one error now."""
    seen: set[str] = set()
    for name in names:
        if name in seen and name.strip():  # unnamed columns (trailing empty header cells) are never looked up
            raise SemidError(f"{display_name(path)}: column {name!r} appears twice; rename one")
        seen.add(name)


def _read_csv(
    path: Path, report: ParseReport, max_bad_fraction: float, encoding: str
) -> tuple[pa.Table, Origin]:
    file = display_name(path)
    plain = path.name[:-3] if is_gzip(path) else path.name
    delimiter = "\t" if plain.lower().endswith(".tsv") else ","
    invalid: list[tuple[int, str, int, int]] = []

    def on_invalid(row: Any) -> str:
        invalid.append((row.number, row.text, row.actual_columns, row.expected_columns))
        return "skip"

    try:
        table = pacsv.read_csv(
            pa.input_stream(str(path), compression="gzip" if is_gzip(path) else None),
            read_options=pacsv.ReadOptions(use_threads=False, encoding=encoding),
            parse_options=pacsv.ParseOptions(
                delimiter=delimiter, newlines_in_values=True, invalid_row_handler=on_invalid
            ),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
        )
    except pa.ArrowInvalid as e:
        if "Empty CSV file" in str(e):
            raise SemidError(f"{file}: the file is empty (expected a header line)") from None
        raise SemidError(f"{file}: not a readable CSV file ({e})") from None
    except OSError as e:
        if is_gzip(path):
            raise truncated_gzip_error(path, e) from None
        raise
    except UnicodeError as e:  # a wrong --encoding (pyarrow transcodes through Python's codecs)
        raise SemidError(f"{file}: not readable as {encoding} ({first_line(e)}); check --encoding") from None

    record_lines: np.ndarray | None = None

    def lines_of_records() -> np.ndarray:
        nonlocal record_lines
        if record_lines is None:
            record_lines = _csv_record_lines(path, delimiter, encoding)
        return record_lines

    invalid_numbers = np.array([n for n, *_ in invalid], dtype=np.int64)
    for number, text, actual, expected in invalid:
        rec = lines_of_records()
        line = int(rec[number - 1]) if 0 < number <= len(rec) else number
        report.skip(file, f"{file} line {line}", f"{actual} fields, expected {expected}: {excerpt(text)}")
    report.check(file, table.num_rows + len(invalid), max_bad_fraction)

    def valid_lines() -> np.ndarray:
        rec = lines_of_records()[1:]  # record 0 is the header
        keep = np.ones(len(rec), dtype=bool)
        keep[invalid_numbers[(invalid_numbers >= 2) & (invalid_numbers - 2 < len(rec))] - 2] = False
        return rec[keep]

    return table, Origin(file, line_fn=valid_lines)


def _csv_record_lines(path: Path, delimiter: str, encoding: str) -> np.ndarray:
    """Start line of each non-blank CSV record (header included), as the csv module splits them."""
    text = decode(read_bytes(path), path, encoding)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    starts, prev_end = [], 0
    for rec in reader:
        if rec:
            starts.append(prev_end + 1)
        prev_end = reader.line_num
    return np.asarray(starts, dtype=np.int64)


def _read_jsonl(
    path: Path, report: ParseReport, max_bad_fraction: float, encoding: str
) -> tuple[pa.Table, Origin]:
    file = display_name(path)
    if encoding.lower().replace("-", "") == "utf8":
        try:
            table = pajson.read_json(
                pa.input_stream(str(path), compression="gzip" if is_gzip(path) else None)
            )
            return table, Origin(file, line_fn=lambda: nonblank_line_numbers(path, encoding))
        except pa.ArrowInvalid:
            pass  # a malformed line or a column changing type: read line by line to say which
        except OSError as e:
            if is_gzip(path):
                raise truncated_gzip_error(path, e) from None
            raise
    text = decode(read_bytes(path), path, encoding)
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    n = 0
    for lineno, line in enumerate(text.split("\n"), 1):
        s = line.strip()
        if not s:
            continue
        n += 1
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as e:
            report.skip(file, f"{file} line {lineno}", f"not valid JSON ({e.msg}): {excerpt(s)}")
            continue
        if not isinstance(obj, dict):
            report.skip(file, f"{file} line {lineno}", f"expected a JSON object, got {type(obj).__name__}")
            continue
        rows.append(obj)
        lines.append(lineno)
    report.check(file, n, max_bad_fraction)
    if not rows:
        raise SemidError(f"{file}: no JSON objects found")
    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(r))
    columns = {k: _column([r.get(k) for r in rows]) for k in keys}
    return pa.table(columns), Origin(file, np.asarray(lines, dtype=np.int64))


def _column(values: list[Any]) -> pa.Array:
    """An arrow column from JSON values; a column mixing types becomes text (checked later by its role)."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array(
            [None if v is None else (v if isinstance(v, str) else json.dumps(v)) for v in values], pa.string()
        )


# --------------------------------------------------------------------------------------------------------
# Tables -> catalogue / interactions
# --------------------------------------------------------------------------------------------------------


def _skip_rows(report: ParseReport, origin: Origin, rows: np.ndarray, message: Any) -> None:
    skip_rows(report, origin.file, rows, origin.where, message if callable(message) else lambda i: message)


def _id_column(table: pa.Table, name: str, origin: Origin) -> pa.Array:
    col = table.column(name).combine_chunks()
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    t = col.type
    if pa.types.is_floating(t) or pa.types.is_nested(t) or pa.types.is_boolean(t):  # decimals, views: fine
        kind = "floats" if pa.types.is_floating(t) else "values"
        raise SemidError(f"{name} column holds {kind} ({col.type}); ids should be text or integers")
    # bytes that are not UTF-8 (a binary Parquet column, or a CSV cell pyarrow left as bytes) name their row
    hint = (
        ""
        if tabular_format(origin.file) == "parquet"
        else "; if the file is Latin-1, pass --encoding latin-1 (encoding='latin-1' in Python)"
    )
    return as_utf8_text(col, origin.where, name, hint)


def table_to_catalogue(
    table: pa.Table,
    origin: Origin,
    *,
    item_id: str = "item_id",
    fields: list[str] | None = None,
    report: ParseReport | None = None,
    max_bad_fraction: float = 0.01,
) -> Catalogue:
    """Pick the id and field columns of a table; rows without an id, or repeating one, are reported."""
    report = report if report is not None else ParseReport()
    names = table.column_names
    require_columns(origin.file, names, {"item_id": item_id})
    fields = fields if fields is not None else [n for n in names if n != item_id]
    require_columns(origin.file, names, {f"fields[{f!r}]": f for f in fields})
    if "item_id" in fields and item_id != "item_id":
        raise SemidError(f"{origin.file}: a field is named 'item_id' while item_id={item_id!r}; rename one")
    ids = _id_column(table, item_id, origin)
    missing = null_mask(ids)
    _skip_rows(report, origin, missing, "item_id is empty")
    codes = pc.dictionary_encode(ids).indices.to_numpy(zero_copy_only=False)
    first = np.zeros(len(ids), dtype=bool)
    ok_rows = np.flatnonzero(~missing)
    first[ok_rows[np.unique(codes[ok_rows], return_index=True)[1]]] = True
    dup = ~missing & ~first
    _skip_rows(report, origin, dup, lambda i: f"item_id {ids[i].as_py()!r} repeats an earlier row, left out")
    report.check(origin.file, len(ids), max_bad_fraction)
    keep = np.flatnonzero(~missing & ~dup)
    cols = {"item_id": ids}
    for f in fields:
        col = table.column(f).combine_chunks()
        cols[f] = col.dictionary_decode() if pa.types.is_dictionary(col.type) else col
    out = pa.table(cols).take(pa.array(keep))
    return Catalogue(out, origin=origin.take(keep))


def _timestamps(col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Any timestamp column -> (numbers, bad): unix seconds for dates and times, numbers as they are."""
    t = col.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        secs = pc.cast(pc.cast(col, pa.timestamp("s")), pa.int64())
        return np.asarray(secs.to_numpy(zero_copy_only=False), dtype=np.float64), np.zeros(
            len(col), dtype=bool
        )
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        try:
            return _timestamps(pc.cast(col, pa.timestamp("s")))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # not all ISO dates: dates with a few bad values, numbers as text, or bad values
        numbers, bad = parse_floats(col)
        dates = _iso_dates(col)
        n_dates = int(pc.sum(pc.is_valid(dates)).as_py() or 0)
        if n_dates > int(np.isfinite(numbers).sum()):  # mostly dates: a value that is none is one bad row
            secs = pc.cast(pc.cast(dates, pa.int64()), pa.float64())
            values = np.asarray(pc.fill_null(secs, np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)
            return values, np.isnan(values) & ~null_mask(col)
        return numbers, bad
    return parse_floats(col)


_ISO_FORMATS = ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%SZ")


def _iso_dates(col: pa.Array) -> pa.Array:
    """Each value parsed as an ISO date or date-time (seconds), null where it is none (vectorised)."""
    parsed = [pc.strptime(col, format=f, unit="s", error_is_null=True) for f in _ISO_FORMATS]
    return pc.coalesce(*parsed)


def table_to_interactions(
    table: pa.Table,
    origin: Origin,
    *,
    user_id: str = "user_id",
    item_id: str = "item_id",
    timestamp: str | None = None,
    rating: str | None = None,
    report: ParseReport | None = None,
    max_bad_fraction: float = 0.01,
) -> Interactions:
    """Pick the user, item, timestamp and rating columns; rows with a missing id or a bad number are reported.

    ``timestamp``/``rating`` default to columns of those names when present. Timestamps may be numbers, ISO
    dates or arrow timestamps (stored as unix seconds).
    """
    report = report if report is not None else ParseReport()
    names = table.column_names
    timestamp = timestamp if timestamp is not None else ("timestamp" if "timestamp" in names else None)
    rating = rating if rating is not None else ("rating" if "rating" in names else None)
    require_columns(
        origin.file, names, {"user_id": user_id, "item_id": item_id, "timestamp": timestamp, "rating": rating}
    )
    users, items = _id_column(table, user_id, origin), _id_column(table, item_id, origin)
    bad = np.zeros(table.num_rows, dtype=bool)
    for role, col in (("user_id", users), ("item_id", items)):
        miss = null_mask(col) & ~bad
        _skip_rows(report, origin, miss, f"{role} is empty")
        bad |= miss
    stamps = values = None
    if timestamp is not None:
        raw = table.column(timestamp).combine_chunks()
        stamps, b = _timestamps(raw)
        b |= np.isnan(stamps)
        _skip_rows(
            report, origin, b & ~bad, lambda i: f"{timestamp} {raw[i].as_py()!r} is not a time or a number"
        )
        bad |= b
    if rating is not None:
        raw_r = table.column(rating).combine_chunks()
        values, b = parse_floats(raw_r)
        _skip_rows(report, origin, b & ~bad, lambda i: f"{rating} {raw_r[i].as_py()!r} is not a number")
        bad |= b
    report.check(origin.file, table.num_rows, max_bad_fraction)
    keep = np.flatnonzero(~bad)
    k = pa.array(keep)
    return Interactions(
        users.take(k),
        items.take(k),
        as_timestamps(stamps[keep]) if stamps is not None else None,
        values[keep] if values is not None else None,
        origin=origin.take(keep),
    )


def read_catalogue(
    path: str | os.PathLike,
    *,
    item_id: str = "item_id",
    fields: list[str] | None = None,
    format: str | None = None,
    report: ParseReport | None = None,
    max_bad_fraction: float = 0.01,
    encoding: str = "utf-8",
) -> Catalogue:
    """A catalogue from a JSONL / CSV / Parquet file: ``item_id`` plus ``fields`` (default: all other columns)."""
    report = report if report is not None else ParseReport()
    table, origin = read_table(
        path, format=format, report=report, max_bad_fraction=max_bad_fraction, encoding=encoding
    )
    return table_to_catalogue(
        table, origin, item_id=item_id, fields=fields, report=report, max_bad_fraction=max_bad_fraction
    )


def read_interactions(
    path: str | os.PathLike,
    *,
    user_id: str = "user_id",
    item_id: str = "item_id",
    timestamp: str | None = None,
    rating: str | None = None,
    format: str | None = None,
    report: ParseReport | None = None,
    max_bad_fraction: float = 0.01,
    encoding: str = "utf-8",
) -> Interactions:
    """Interactions from a JSONL / CSV / Parquet file, with a column mapping."""
    report = report if report is not None else ParseReport()
    table, origin = read_table(
        path, format=format, report=report, max_bad_fraction=max_bad_fraction, encoding=encoding
    )
    return table_to_interactions(
        table,
        origin,
        user_id=user_id,
        item_id=item_id,
        timestamp=timestamp,
        rating=rating,
        report=report,
        max_bad_fraction=max_bad_fraction,
    )
