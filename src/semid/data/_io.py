"""Low-level text reading shared by the format readers: bytes, lines, delimited records, number parsing.

Every reader in this room goes through these helpers so that all of them report problems the same way:
a malformed line is counted in the :class:`~semid.data.model.ParseReport` (with ``file line N`` and an
excerpt) and left out, unless more than ``max_bad_fraction`` of a file is malformed, which is an error.
The heavy lifting (splitting lines and fields, regex checks, casts) is done by pyarrow compute kernels;
Python loops only touch the few lines that need attention (quoted values, broken lines, bad values).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from semid.data.model import ParseReport
from semid.errors import SemidError

# A number as text: optional sign, digits with an optional fraction, optional exponent, or nan/inf.
_FLOAT_RE = r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^[-+]?(nan|inf|infinity)$"
# Values that stand for "missing" in the files we read (pandas writes None/nan for missing text).
NULL_TOKENS = ("", "None", "none", "null", "NULL", "nan", "NaN")
# Longest run of physical lines one quoted value may span before we call the quote unclosed.
_MAX_LINES_PER_RECORD = 50


def display_name(path: str | os.PathLike) -> str:
    """The file name used in messages (``Amazon_Beauty.item``), short enough for one line."""
    return Path(path).name


def excerpt(text: str, width: int = 70) -> str:
    """A one-line excerpt of a raw line, tabs and newlines made visible, for parse reports."""
    shown = text.replace("\t", "\\t").replace("\r", "\\r").replace("\n", "\\n")
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def is_gzip(path: str | os.PathLike) -> bool:
    return str(path).endswith(".gz")


def read_bytes(path: str | os.PathLike) -> bytes:
    """The whole file as bytes, gunzipped if it ends in ``.gz``.

    A truncated gzip file (an interrupted download) is a :class:`SemidError` naming the last complete line.
    """
    path = Path(path)
    if not path.is_file():
        raise SemidError(f"{path}: no such file")
    raw = path.read_bytes()
    if not is_gzip(path):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as e:
        raise truncated_gzip_error(path, e) from None


def truncated_gzip_error(path: str | os.PathLike, cause: BaseException | None = None) -> SemidError:
    """Explain a gzip file that cannot be fully decompressed: how far it got, in lines."""
    raw = Path(path).read_bytes()
    d = zlib.decompressobj(wbits=31)  # 31: expect a gzip header
    try:
        partial = d.decompress(raw)
    except zlib.error:
        return SemidError(f"{display_name(path)}: not a valid gzip file ({cause or 'bad header'})")
    n_lines = partial.count(b"\n")
    return SemidError(
        f"{display_name(path)} line {n_lines + 1}: truncated gzip file, the compressed data ends inside "
        f"this line (is the download complete?)"
    )


def check_encoding(encoding: str) -> str:
    """``encoding`` if Python knows it as a text encoding, else a :class:`SemidError` saying so."""
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise SemidError(f"unknown text encoding {encoding!r} (e.g. utf-8, latin-1, cp1252)") from None
    return encoding


def decode(data: bytes, path: str | os.PathLike, encoding: str = "utf-8") -> str:
    """Decode ``data``; a byte that is not valid ``encoding`` is an error naming its line and the way to
    read another encoding (``--encoding`` on the command line, ``encoding=`` in Python)."""
    try:
        return data.decode(check_encoding(encoding))
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise SemidError(
            f"{display_name(path)} line {line}: byte 0x{data[e.start]:02x} is not valid {encoding} text; if the "
            f"file is Latin-1, pass --encoding latin-1 on the command line, or encoding='latin-1' in Python"
        ) from None


def split_lines(text: str) -> pa.Array:
    """Physical lines of ``text`` as one arrow string array (no per-line Python objects)."""
    lines = pc.split_pattern(pa.array([text], pa.large_string()), "\n").flatten()
    if "\r" in text:
        lines = pc.utf8_rtrim(lines, characters="\r")
    if len(lines) and text.endswith("\n"):
        lines = lines.slice(0, len(lines) - 1)  # the empty string after the final newline is no line
    return lines


def nonblank_line_numbers(path: str | os.PathLike, encoding: str = "utf-8") -> np.ndarray:
    """1-based numbers of the non-blank lines of a file: the line of each row of a JSON-lines table."""
    lines = split_lines(decode(read_bytes(path), path, encoding))
    nonblank = pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(lines)), 0).to_numpy(zero_copy_only=False)
    return np.flatnonzero(nonblank).astype(np.int64) + 1


@dataclass
class Records:
    """Records of a delimited text file: the fields of each record and the line where it starts."""

    file: str
    header: list[str] | None
    fields: pa.Array  # list<string>, one list per record
    lines: np.ndarray  # (n_records,) int64, 1-based line where each record starts

    def __len__(self) -> int:
        return len(self.fields)


def read_records(
    path: str | os.PathLike,
    *,
    sep: str | None,
    report: ParseReport,
    encoding: str = "utf-8",
    quoting: bool = False,
    header: bool = False,
) -> Records:
    """Split a delimited text file into records and fields.

    ``sep=None`` splits on runs of whitespace. With ``quoting=True`` a field may be wrapped in double quotes
    (CSV rules: ``""`` is a quote, a quoted value may hold the separator or a raw newline); a record whose
    quoted value spans several physical lines is read as one record and counted as *repaired* in ``report``.
    Blank lines are skipped. Line numbers are physical, 1-based, as an editor shows them.
    """
    name = display_name(path)
    text = decode(read_bytes(path), path, encoding)
    lines = split_lines(text)
    del text
    numbers = np.arange(1, len(lines) + 1, dtype=np.int64)

    if quoting:
        if sep is None or len(sep) != 1:
            raise ValueError("quoting needs a one-character separator")
        lines, numbers, quoted = _join_quoted_lines(lines, numbers, sep, name, report)
    else:
        quoted = np.zeros(len(lines), dtype=bool)

    nonblank = pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(lines)), 0).to_numpy(zero_copy_only=False)
    if not nonblank.all():
        lines, numbers, quoted = lines.filter(pa.array(nonblank)), numbers[nonblank], quoted[nonblank]

    if len(lines) == 0:  # nothing to read is a mistake (a truncated copy, the wrong file), not 0 users
        raise SemidError(f"{name}: the file is empty" + (" (expected a header line)" if header else ""))
    names: list[str] | None = None
    if header:
        first = lines[0].as_py()
        names = _split_one(first, sep, quoting)
        lines, numbers, quoted = lines.slice(1), numbers[1:], quoted[1:]

    fields = pc.utf8_split_whitespace(lines) if sep is None else pc.split_pattern(lines, sep)
    if quoted.any():
        # Records holding a quote: split them with the csv module (quote-aware), the rest stay as split.
        q_idx = np.flatnonzero(quoted)
        parsed = [_split_one(s, sep, True) for s in lines.take(pa.array(q_idx)).to_pylist()]
        extra = pa.array(parsed, fields.type)
        index = np.arange(len(fields))
        index[q_idx] = len(fields) + np.arange(len(q_idx))
        fields = pa.concat_arrays([fields, extra]).take(pa.array(index))
    return Records(file=name, header=names, fields=fields, lines=numbers)


def _split_one(line: str, sep: str | None, quoting: bool) -> list[str]:
    if sep is None:
        return line.split()
    if not quoting:
        return line.split(sep)
    return next(csv.reader(io.StringIO(line, newline=""), delimiter=sep, quotechar='"', doublequote=True))


def _join_quoted_lines(
    lines: pa.Array, numbers: np.ndarray, sep: str, name: str, report: ParseReport
) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Join physical lines whose quoted value holds a raw newline; mark records that contain a quote."""
    has_quote = pc.match_substring(lines, '"').to_numpy(zero_copy_only=False)
    quoted = has_quote.copy()
    q_idx = np.flatnonzero(has_quote)
    if len(q_idx) == 0:
        return lines, numbers, quoted
    q_text = dict(zip(q_idx.tolist(), lines.take(pa.array(q_idx)).to_pylist(), strict=True))
    joins: list[tuple[int, int, str]] = []  # (first line index, end index exclusive, joined text)
    consumed_until = -1
    for i in q_idx.tolist():
        if i < consumed_until or not _ends_inside_quotes(q_text[i], False, sep):
            continue
        parts, j, inside = [q_text[i]], i + 1, True
        while inside and j < len(lines) and j - i < _MAX_LINES_PER_RECORD:
            nxt = q_text[j] if j in q_text else lines[j].as_py()
            parts.append(nxt)
            inside = _ends_inside_quotes(nxt, True, sep)
            j += 1
        if inside:  # never closed: leave the lines alone, field counting will report them
            continue
        joins.append((i, j, "\n".join(parts)))
        consumed_until = j
    if not joins:
        return lines, numbers, quoted
    keep = np.ones(len(lines), dtype=bool)
    for i, j, joined in joins:
        keep[i + 1 : j] = False
        report.repair(
            f"{name} lines {numbers[i]}-{numbers[j - 1]}",
            f"a quoted value holds a raw newline, read as one row: {excerpt(joined, 100)}",
        )
    first = np.array([i for i, _, _ in joins])
    index = np.arange(len(lines))
    index[first] = len(lines) + np.arange(len(first))
    joined_arr = pa.array([t for _, _, t in joins], lines.type)
    lines = pa.concat_arrays([lines, joined_arr]).take(pa.array(index[keep]))
    return lines, numbers[keep], quoted[keep]


def _ends_inside_quotes(line: str, inside: bool, sep: str) -> bool:
    """Whether ``line`` ends inside a quoted value (CSV rules), given whether it starts inside one.

    A quote opens a value only at the start of a field; inside a value ``""`` is a literal quote.
    """
    at_field_start = not inside
    i, n = 0, len(line)
    while i < n:
        c = line[i]
        if inside:
            if c == '"':
                if i + 1 < n and line[i + 1] == '"':
                    i += 2
                    continue
                inside = False
        elif c == '"' and at_field_start:
            inside = True
        at_field_start = c == sep and not inside
        i += 1
    return inside


def to_columns(
    records: Records, n_fields: int, report: ParseReport, *, repair_broken: bool = False
) -> tuple[list[pa.Array], np.ndarray]:
    """Columns of the records that have exactly ``n_fields`` fields, and their line numbers.

    Records with another field count are skipped and reported. With ``repair_broken=True`` two neighbouring
    records whose field counts add up to ``n_fields + 1`` are taken for one record broken by a raw
    (unquoted) newline inside a value: they are rejoined and reported as repaired.
    """
    counts = pc.list_value_length(records.fields).to_numpy(zero_copy_only=False)
    ok = counts == n_fields
    repaired_rows: list[list[str]] = []
    repaired_lines: list[int] = []
    bad = np.flatnonzero(~ok).tolist()
    if bad:
        bad_fields = records.fields.take(pa.array(bad)).to_pylist()
        k = 0
        while k < len(bad):
            i, f = bad[k], bad_fields[k]
            nxt = k + 1 < len(bad) and bad[k + 1] == i + 1
            if repair_broken and nxt and len(f) + len(bad_fields[k + 1]) - 1 == n_fields:
                g = bad_fields[k + 1]
                row = f[:-1] + [f[-1] + "\n" + g[0]] + g[1:]
                repaired_rows.append(row)
                repaired_lines.append(int(records.lines[i]))
                report.repair(
                    f"{records.file} lines {records.lines[i]}-{records.lines[i + 1]}",
                    f"a value is broken by a raw newline, lines rejoined: {excerpt(chr(9).join(row), 100)}",
                )
                k += 2
                continue
            report.skip(
                records.file,
                f"{records.file} line {records.lines[i]}",
                f"{len(f)} fields, expected {n_fields}: {excerpt(chr(9).join(f))}",
            )
            k += 1
    good = records.fields.filter(pa.array(ok))
    lines = records.lines[ok]
    if repaired_rows:
        good = pa.concat_arrays([good, pa.array(repaired_rows, good.type)])
        lines = np.concatenate([lines, np.array(repaired_lines, dtype=np.int64)])
        order = np.argsort(lines, kind="stable")
        good, lines = good.take(pa.array(order)), lines[order]
    flat = good.flatten()
    columns = [flat.take(pa.array(np.arange(j, len(flat), n_fields))) for j in range(n_fields)]
    return columns, lines


def null_mask(col: pa.Array) -> np.ndarray:
    """True where a text value stands for "missing" (null, empty, ``None``, ``nan``)."""
    trimmed = pc.utf8_trim_whitespace(col)
    miss = pc.or_kleene(pc.is_null(trimmed), pc.is_in(trimmed, pa.array(NULL_TOKENS, trimmed.type)))
    return pc.fill_null(miss, True).to_numpy(zero_copy_only=False)


def parse_floats(col: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Text -> float64 (NaN where missing). Returns ``(values, bad)``: ``bad`` marks text that is no number."""
    if pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
        return np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64), (
            np.zeros(len(col), dtype=bool)
        )
    col = pc.utf8_trim_whitespace(pc.cast(col, pa.string()))
    missing = null_mask(col)
    looks = pc.fill_null(pc.match_substring_regex(col, _FLOAT_RE, ignore_case=True), False)
    looks = looks.to_numpy(zero_copy_only=False)
    bad = ~looks & ~missing
    good = pc.if_else(pa.array(looks & ~missing), col, pa.scalar(None, col.type))
    values = pc.cast(good, pa.float64()).to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float64), bad


def as_timestamps(values: np.ndarray) -> np.ndarray:
    """Timestamps as int64 when they are all whole numbers (unix seconds), else float64."""
    finite = np.isfinite(values)
    if finite.all() and np.all(values == np.round(values)) and np.abs(values).max(initial=0) < 2**62:
        return values.astype(np.int64)
    return values


def skip_rows(
    report: ParseReport,
    file: str,
    bad: np.ndarray,
    where: Callable[[int], str],
    message: Callable[[int], str],
) -> None:
    """Count the rows marked ``bad`` as skipped; only the first few get their ``where``/``message`` built."""
    idx = np.flatnonzero(bad)
    report.skip_many(
        file, len(idx), ((where(i), message(i)) for i in idx[: ParseReport.MAX_EXAMPLES].tolist())
    )


def report_bad_values(
    report: ParseReport,
    file: str,
    bad: np.ndarray,
    lines: np.ndarray,
    column: str,
    col: pa.Array,
    what: str = "is not a number",
) -> None:
    """Count the rows marked ``bad`` as skipped, with messages such as ``price 'abc' is not a number``."""
    skip_rows(
        report,
        file,
        bad,
        lambda i: f"{file} line {lines[i]}",
        lambda i: f"{column} {col[i].as_py()!r} {what}",
    )


def require_columns(file: str, available: list[str], wanted: dict[str, str | None]) -> None:
    """Raise if a mapped column is missing: ``items.csv: no column 'asin' for item_id (columns: ...)``."""
    for role, column in wanted.items():
        if column is not None and column not in available:
            flag = f" (CLI: --{role.replace('_', '-')})" if role in _CLI_ROLES else ""
            raise SemidError(
                f"{file}: no column {column!r} for {role} (columns: {', '.join(available)}); "
                f"name it with {role}=...{flag}"
            )


_CLI_ROLES = ("item_id", "user_id", "timestamp", "rating")  # the columns `semid data` maps by option


def as_utf8_text(col: pa.Array, where: Callable[[int], str], name: str, hint: str = "") -> pa.Array:
    """A binary column (or one that casts) as strings; the first value that is not UTF-8 is one error
    naming its row (``where(row)``), the value and ``name``, with ``hint`` appended."""
    try:
        return pc.cast(col, pa.string())
    except pa.ArrowInvalid:
        if not (pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)):
            raise
        for r, value in enumerate(col.to_pylist()):
            try:
                if value is not None:
                    value.decode("utf-8")
            except UnicodeDecodeError:
                raise SemidError(f"{where(r)}: {name} {value!r} is not UTF-8 text{hint}") from None
        raise
