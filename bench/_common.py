"""Shared bits of the benchmarks: medians over repeats, peak RSS, the Beauty data location, tables."""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

SHARED = Path(os.environ.get("SEMID_SHARED", Path(__file__).resolve().parents[2] / "shared"))
BEAUTY = SHARED / "data" / "amazon-beauty"


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Median wall seconds of ``repeats`` calls, and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a server or a torchrun rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_table(rows: list[dict[str, Any]], columns: list[str], title: str) -> None:
    """A plain-text table (fixed-width columns) on stdout."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in cells:
        print("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))
    sys.stdout.flush()


def emit_json(rows: list[dict[str, Any]]) -> None:
    for r in rows:
        print(json.dumps(r, sort_keys=True))


def _key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as JSON when it parses (numbers, true/false), else as a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} should be KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def add_set_option(parser: Any, flag: str, help: str) -> None:
    """A repeatable ``FLAG KEY=VALUE`` option collecting ``(key, value)`` pairs (``[]`` when not given)."""
    parser.add_argument(flag, type=_key_value, action="append", default=[], metavar="KEY=VALUE", help=help)
