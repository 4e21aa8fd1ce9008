"""Amazon product data (J. McAuley, UCSD): the 2014 and 2018 crawls.

- Reviews, both years: ``reviews_<Cat>_5.json.gz`` (2014) or ``<Cat>_5.json.gz`` (2018), strict JSON lines
  with ``reviewerID``, ``asin``, ``overall`` (rating) and ``unixReviewTime``. Read with pyarrow's JSON reader,
  asking only for those four fields; a file with a malformed line is re-read line by line so that each bad
  line is reported with its number.
- Metadata 2014: ``meta_<Cat>.json.gz`` whose lines are *Python literals* (single quotes), read with
  :func:`ast.literal_eval` (never ``eval``); ``categories`` is a list of lists of category paths, ``price`` a
  number.
- Metadata 2018: ``meta_<Cat>.json.gz``, strict JSON; ``category`` is one list, ``price`` a string such as
  ``"$12.99"`` (or a range, or empty), ``description`` a list of paragraphs. Some asins appear twice: the
  first row is kept and the repeats are noted.

Catalogue fields: ``title``, ``brand``, ``categories`` (list; 2014 paths flattened, first occurrence kept),
``price`` (float), ``description``.
"""

from __future__ import annotations

import ast
import gzip
import json
import os
import re
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from semid.data._io import display_name, is_gzip, nonblank_line_numbers, truncated_gzip_error
from semid.data.model import Catalogue, Interactions, Origin, ParseReport
from semid.errors import SemidError

REVIEW_FIELDS = {"reviewerID": str, "asin": str, "overall": float, "unixReviewTime": int}
_REVIEW_SCHEMA = pa.schema(
    [
        ("reviewerID", pa.string()),
        ("asin", pa.string()),
        ("overall", pa.float64()),
        ("unixReviewTime", pa.int64()),
    ]
)
_META2018_SCHEMA = pa.schema(
    [
        ("asin", pa.string()),
        ("title", pa.string()),
        ("brand", pa.string()),
        ("category", pa.list_(pa.string())),
        ("price", pa.string()),
        ("description", pa.list_(pa.string())),
    ]
)
_ASIN_IN_LITERAL = re.compile(r"""['"]asin['"]\s*:\s*['"]([^'"]+)['"]""")
_PRICE_RE = r"^\s*\$?\s*(?P<p>\d[\d,]*(?:\.\d+)?|\.\d+)"


def _input_stream(path: Path) -> pa.NativeFile:
    return pa.input_stream(str(path), compression="gzip" if is_gzip(path) else None)


def _text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) pairs, streamed; a truncated gzip file is a SemidError."""
    opener = gzip.open if is_gzip(path) else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="strict", newline="\n") as f:
            for lineno, line in enumerate(f, 1):
                yield lineno, line.rstrip("\r\n")
    except (EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise truncated_gzip_error(path, e) from None
    except UnicodeDecodeError as e:
        raise SemidError(f"{display_name(path)}: not valid UTF-8 text ({e.reason})") from None


def _read_json_fast(path: Path, schema: pa.Schema) -> pa.Table | None:
    """pyarrow's JSON reader restricted to ``schema``; None when some line is malformed (take the slow path)."""
    try:
        return pajson.read_json(
            _input_stream(path),
            read_options=pajson.ReadOptions(block_size=1 << 24),
            parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )
    except pa.ArrowInvalid:
        return None
    except OSError as e:
        if is_gzip(path):
            raise truncated_gzip_error(path, e) from None
        raise


def read_amazon_reviews(
    path: str | os.PathLike, *, report: ParseReport | None = None, max_bad_fraction: float = 0.01
) -> Interactions:
    """Amazon reviews (2014 or 2018) as interactions: reviewer, asin, rating ``overall``, ``unixReviewTime``."""
    path = Path(path)
    if not path.is_file():
        raise SemidError(f"{path}: no such file")
    report = report if report is not None else ParseReport()
    file = display_name(path)
    table = _read_json_fast(path, _REVIEW_SCHEMA)
    if table is not None and not any(table.column(c).null_count for c in table.column_names):
        return Interactions(
            table.column("reviewerID"),
            table.column("asin"),
            table.column("unixReviewTime").to_numpy(),
            table.column("overall").to_numpy(),
            origin=Origin(file, line_fn=lambda: nonblank_line_numbers(path)),
        )

    # Slow path: some line is malformed; find and report each one.
    cols: dict[str, list[Any]] = {k: [] for k in REVIEW_FIELDS}
    lines: list[int] = []
    n = 0
    for lineno, line in _text_lines(path):
        if not line.strip():
            continue
        n += 1
        problem = None
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            obj, problem = None, f"not valid JSON ({e.msg})"
        if problem is None and not isinstance(obj, dict):
            problem = f"expected a JSON object, got {type(obj).__name__}"
        if problem is None:
            problem = _check_review(obj)
        if problem is not None:
            report.skip(file, f"{file} line {lineno}", problem)
            continue
        for k in REVIEW_FIELDS:
            cols[k].append(obj[k])
        lines.append(lineno)
    report.check(file, n, max_bad_fraction)
    return Interactions(
        cols["reviewerID"],
        cols["asin"],
        np.asarray(cols["unixReviewTime"], dtype=np.int64),
        np.asarray(cols["overall"], dtype=np.float64),
        origin=Origin(file, np.asarray(lines, dtype=np.int64)),
    )


def _check_review(obj: dict[str, Any]) -> str | None:
    for k, kind in REVIEW_FIELDS.items():
        if k not in obj or obj[k] is None:
            return f"no {k}"
        v = obj[k]
        if kind is str and not isinstance(v, str):
            return f"{k} {v!r} is not a string"
        if kind is float and (isinstance(v, bool) or not isinstance(v, (int, float))):
            return f"{k} {v!r} is not a number"
        if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            return f"{k} {v!r} is not an integer"
    return None


def sniff_meta_version(path: str | os.PathLike) -> str:
    """``"amazon2014"`` when the first record is a Python literal (single quotes), else ``"amazon2018"``."""
    for _, line in _text_lines(Path(path)):
        s = line.strip()
        if not s:
            continue
        if s.startswith("{'") or '"categories"' in s:
            return "amazon2014"
        return "amazon2018"
    raise SemidError(f"{display_name(path)}: the file is empty")


def read_amazon_meta(
    path: str | os.PathLike,
    *,
    version: str | None = None,
    keep_items: pa.Array | None = None,
    report: ParseReport | None = None,
    max_bad_fraction: float = 0.01,
) -> Catalogue:
    """Amazon metadata as a catalogue. ``version`` is ``"amazon2014"``/``"amazon2018"`` (sniffed when None).

    ``keep_items`` (e.g. the items of the reviews file) restricts the catalogue to those asins; the others are
    noted, not parsed (which is what makes a 2014 meta file of 250k Python literals quick to read).
    """
    path = Path(path)
    if not path.is_file():
        raise SemidError(f"{path}: no such file")
    report = report if report is not None else ParseReport()
    version = version or sniff_meta_version(path)
    if version not in ("amazon2014", "amazon2018"):
        raise SemidError(f"version={version!r} should be 'amazon2014' or 'amazon2018'")
    table = _read_json_fast(path, _META2018_SCHEMA) if version == "amazon2018" else None
    file = display_name(path)
    if table is not None and table.column("asin").null_count == 0:
        lines: np.ndarray | None = None
        n_total = table.num_rows
        price = _parse_prices(table.column("price").combine_chunks())
        table = pa.table(
            {
                "item_id": table.column("asin"),
                "title": table.column("title"),
                "brand": table.column("brand"),
                "categories": table.column("category"),
                "price": price,
                "description": pc.binary_join(table.column("description"), " "),
            }
        )
        line_fn = lambda: nonblank_line_numbers(path)  # noqa: E731
    else:
        table, lines, n_total = _read_meta_lines(path, keep_items, report, max_bad_fraction)
        line_fn = None
    table = _blank_to_null(table)
    keep = np.ones(table.num_rows, dtype=bool)
    if keep_items is not None:
        keep &= pc.is_in(table.column("item_id"), value_set=pc.cast(keep_items, pa.string())).to_numpy(
            zero_copy_only=False
        )
    n_other = n_total - int(keep.sum()) - report.skipped_in(file)
    # Repeated asins (the 2018 crawl has some): keep the first row.
    codes = pc.dictionary_encode(table.column("item_id").combine_chunks()).indices.to_numpy(
        zero_copy_only=False
    )
    first = np.zeros(len(codes), dtype=bool)
    first[np.unique(codes, return_index=True)[1]] = True
    n_repeat = int((keep & ~first).sum())
    keep &= first
    if n_repeat:
        report.note(f"{file}: {n_repeat:,} rows repeat an earlier asin; the first row of each asin is kept")
    if keep_items is not None and n_other > 0:
        report.note(f"{file}: {n_other:,} items without interactions left out")
    idx = np.flatnonzero(keep)
    if lines is None and line_fn is not None:
        all_fn = line_fn
        origin = Origin(file, line_fn=lambda: all_fn()[idx])
    else:
        origin = Origin(file, None if lines is None else lines[idx])
    return Catalogue(table.take(pa.array(idx)), origin=origin)


def _read_meta_lines(
    path: Path, keep_items: pa.Array | None, report: ParseReport, max_bad_fraction: float
) -> tuple[pa.Table, np.ndarray, int]:
    """Line-by-line metadata reader (2014 Python literals, or 2018 JSON that pyarrow could not read)."""
    file = display_name(path)
    wanted = set(pc.cast(keep_items, pa.string()).to_pylist()) if keep_items is not None else None
    cols: dict[str, list[Any]] = {
        k: [] for k in ("item_id", "title", "brand", "categories", "price", "description")
    }
    lines: list[int] = []
    n = 0
    for lineno, line in _text_lines(path):
        s = line.strip()
        if not s:
            continue
        n += 1
        if wanted is not None:
            m = _ASIN_IN_LITERAL.search(s)
            if m is not None and m.group(1) not in wanted:
                continue  # not needed: do not pay for parsing it
        try:
            obj = json.loads(s) if s.startswith('{"') else ast.literal_eval(s)
        except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
            report.skip(
                file,
                f"{file} line {lineno}",
                f"not a JSON object or Python literal ({type(e).__name__}): {s[:60]}",
            )
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("asin"), str):
            report.skip(file, f"{file} line {lineno}", "no asin")
            continue
        cols["item_id"].append(obj["asin"])
        cols["title"].append(_text(obj.get("title")))
        cols["brand"].append(_text(obj.get("brand")))
        cols["categories"].append(_categories(obj.get("categories", obj.get("category"))))
        cols["price"].append(_price(obj.get("price")))
        cols["description"].append(_text(obj.get("description")))
        lines.append(lineno)
    report.check(file, n, max_bad_fraction)
    table = pa.table(
        {
            "item_id": pa.array(cols["item_id"], pa.string()),
            "title": pa.array(cols["title"], pa.string()),
            "brand": pa.array(cols["brand"], pa.string()),
            "categories": pa.array(cols["categories"], pa.list_(pa.string())),
            "price": pa.array(cols["price"], pa.float64()),
            "description": pa.array(cols["description"], pa.string()),
        }
    )
    return table, np.asarray(lines, dtype=np.int64), n


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, list):
        return " ".join(str(x) for x in v if x) or None
    return str(v)


def _categories(v: Any) -> list[str] | None:
    """A flat category list: 2014 paths (list of lists) are flattened, first occurrence kept."""
    if v is None:
        return None
    flat: list[str] = []
    for x in v if isinstance(v, list) else [v]:
        for c in x if isinstance(x, list) else [x]:
            if isinstance(c, str) and c and c not in flat:
                flat.append(c)
    return flat


def _price(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    m = re.match(_PRICE_RE, str(v))
    return float(m.group("p").replace(",", "")) if m else None


def _parse_prices(col: pa.Array) -> pa.Array:
    """``"$1,299.99"`` -> 1299.99 (vectorised); a range takes its low end; anything else is null."""
    m = pc.extract_regex(col, _PRICE_RE)
    p = pc.struct_field(m, "p")
    return pc.cast(pc.replace_substring(p, ",", ""), pa.float64())


def _blank_to_null(table: pa.Table) -> pa.Table:
    """Empty strings and empty lists -> null, so coverage and text templates see them as missing."""
    out = {}
    for name in table.column_names:
        col = table.column(name).combine_chunks()
        if name != "item_id" and (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(col)), 0)
            col = pc.if_else(pc.fill_null(empty, False), pa.scalar(None, col.type), col)
        out[name] = col
    return pa.table(out)
