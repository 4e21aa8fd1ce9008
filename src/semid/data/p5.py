"""P5 / LLM-RecSys-ID style sequences: ``sequential_data.txt`` + ``datamaps.json``.

``sequential_data.txt`` holds one user a line, ``user_id item_id item_id ...``, items in time order, ids
1-based integers. ``datamaps.json`` maps them back to the raw ids (``id2item``: id -> ASIN, ``id2user``: id
-> reviewerID, and their inverses), which is what joins the sequences with an item file keyed by ASIN
(e.g. the RecBole ``.item`` file of the same Amazon category).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from semid.data._io import display_name, read_records, skip_rows
from semid.data.model import Interactions, Origin, ParseReport
from semid.errors import SemidError


def read_datamaps(path: str | os.PathLike) -> dict[str, dict[str, str]]:
    """``id2item`` and ``id2user`` (id string -> raw id) from a P5 ``datamaps.json``.

    A map given only in its inverse form (``item2id``) is inverted.
    """
    name = display_name(path)
    if not Path(path).is_file():
        raise SemidError(f"{path}: no such file")
    try:
        maps = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SemidError(f"{name} line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(maps, dict):
        raise SemidError(
            f"{name}: expected a JSON object with id2item/item2id maps, got {type(maps).__name__}"
        )
    out: dict[str, dict[str, str]] = {}
    for kind in ("item", "user"):
        forward, inverse = maps.get(f"id2{kind}"), maps.get(f"{kind}2id")
        if isinstance(forward, dict):
            out[f"id2{kind}"] = {str(k): str(v) for k, v in forward.items()}
        elif isinstance(inverse, dict):
            out[f"id2{kind}"] = {str(v): str(k) for k, v in inverse.items()}
    if "id2item" not in out:
        raise SemidError(f"{name}: no id2item (or item2id) map (keys: {', '.join(sorted(maps))})")
    return out


def _map_ids(
    tokens: pa.Array, mapping: dict[str, str], what: str, lines: np.ndarray, file: str, maps_name: str
) -> pa.Array:
    keys = pa.array(list(mapping.keys()), pa.string())
    vals = pa.array(list(mapping.values()), pa.string())
    idx = pc.index_in(pc.cast(tokens, pa.string()), value_set=keys)
    if idx.null_count:
        first = int(np.flatnonzero(idx.is_null().to_numpy(zero_copy_only=False))[0])
        raise SemidError(
            f"{file} line {lines[first]}: {what} id {tokens[first].as_py()!r} is not in {maps_name} id2{what} "
            f"({idx.null_count:,} ids unmapped)"
        )
    return vals.take(idx)


def read_p5(
    sequences: str | os.PathLike,
    datamaps: str | os.PathLike | None = None,
    *,
    report: ParseReport | None = None,
    max_bad_fraction: float = 0.01,
) -> Interactions:
    """Read ``sequential_data.txt`` (and map its ids through ``datamaps.json`` when given).

    Without datamaps the ids stay the P5 integers (as strings). There are no timestamps: the line order is
    the time order. A line with a non-integer id or without items is skipped and reported.
    """
    report = report if report is not None else ParseReport()
    records = read_records(sequences, sep=None, report=report)
    file = records.file
    fields = records.fields
    counts = pc.list_value_length(fields).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = fields.flatten()
    owner = pc.list_parent_indices(fields).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if len(counts) else np.zeros(0, np.int64)
    is_user = np.arange(len(flat)) == starts[owner]

    digits = pc.fill_null(pc.match_substring_regex(flat, r"^\d+$"), False).to_numpy(zero_copy_only=False)
    bad_line = np.zeros(len(counts), dtype=bool)
    np.logical_or.at(bad_line, owner[~digits], True)
    short = counts < 2

    def why(i: int) -> str:
        toks = fields[i].as_py()
        if short[i]:
            return f"user {toks[0]!r} has no items"
        return f"id {next(t for t in toks if not t.isdigit())!r} is not a positive integer"

    skip_rows(report, file, bad_line | short, lambda i: f"{file} line {records.lines[i]}", why)
    report.check(file, len(counts), max_bad_fraction)

    keep_line = ~(bad_line | short)
    keep_tok = keep_line[owner]
    users = flat.filter(pa.array(is_user & keep_tok))
    item_mask = ~is_user & keep_tok
    items = flat.filter(pa.array(item_mask))
    item_owner = owner[item_mask]
    line_of_item = records.lines[item_owner]
    user_lines = records.lines[keep_line]

    if datamaps is not None:
        maps = read_datamaps(datamaps)
        maps_name = display_name(datamaps)
        items = _map_ids(items, maps["id2item"], "item", line_of_item, file, maps_name)
        if "id2user" in maps:
            users = _map_ids(users, maps["id2user"], "user", user_lines, file, maps_name)
    # One user per line: repeat each line's user over its items.
    n_items_per_line = counts[keep_line] - 1
    user_of_item = pa.array(np.repeat(np.arange(len(users)), n_items_per_line))
    return Interactions(users.take(user_of_item), items, origin=Origin(file, line_of_item))
