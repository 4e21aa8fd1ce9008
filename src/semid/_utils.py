"""Small helpers shared by every room: devices, seeding, fingerprints, config files.

Atomic, checked output lives in :mod:`semid._outputs` (re-exported here).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from semid._outputs import atomic_path, finish_interrupted_swap, swapped_aside  # noqa: F401  (re-exported)
from semid.errors import SemidError


def bf16_is_fast(device: str) -> bool:
    """True where bfloat16 matrix products beat float32: CUDA with bf16, CPUs with AVX512-BF16 or AMX."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.is_bf16_supported()
    if device == "cpu":
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def decay_progress(step: int, warmup: int, total: int, time_share: float | None = None) -> float:
    """How far (0..1) a learning-rate decay that starts after ``warmup`` of ``total`` steps is at ``step``.

    With ``time_share`` (the share of a time budget spent) it is whichever is further along, steps or
    time, so a run stopped by the clock still ends at the low rate instead of near its peak.
    """
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    if time_share is not None:
        progress = max(progress, min(1.0, time_share))
    return progress


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` picks CUDA, then MPS, then CPU; anything else is validated and returned."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = device.split(":")[0] if isinstance(device, str) else None
    if kind not in {"cpu", "cuda", "mps"}:
        raise SemidError(f"device={device!r} is not one of 'auto', 'cpu', 'cuda', 'mps'")
    if kind == "cuda" and not torch.cuda.is_available():
        raise SemidError(
            f"device={device!r}: this machine has no CUDA GPU that torch can use; use cpu or auto"
        )
    if kind == "cuda" and ":" in device:
        index = device.split(":", 1)[1]
        if not index.isdigit() or int(index) >= torch.cuda.device_count():
            raise SemidError(
                f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise SemidError(f"device={device!r}: MPS (Apple GPU) is not available here; use cpu or auto")
    return device


def check_positive_int(name: str, value: Any, *, numpy_ok: bool = True) -> int:
    """``value`` as an int when it is an integer >= 1 (a bool is not), else ``SemidError("NAME=V should be a
    positive integer")``. ``numpy_ok=False`` refuses numpy integers too: a config field saved as JSON must
    be a Python int."""
    kinds = (int, np.integer) if numpy_ok else int
    if isinstance(value, bool) or not isinstance(value, kinds) or value < 1:
        raise SemidError(f"{name}={value!r} should be a positive integer")
    return int(value)


def check_random_state(random_state: int | np.random.Generator | None) -> np.random.Generator:
    """One seed -> one generator, passed down (sklearn style)."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if (
        isinstance(random_state, (int, np.integer))
        and not isinstance(random_state, bool)
        and random_state < 0
    ):
        raise SemidError(f"random_state={random_state!r} should be a non-negative integer (a seed)")
    if random_state is None or isinstance(random_state, (int, np.integer)):
        return np.random.default_rng(random_state)
    raise SemidError(f"random_state={random_state!r} should be an int, a numpy Generator or None")


def fingerprint_arrays(arrays: dict[str, np.ndarray]) -> str:
    """A stable content hash of named arrays (shape, dtype and bytes): what a registry is bound to."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def read_json_file(path: str | os.PathLike, what: str = "the file") -> Any:
    """The JSON value in ``path``; bytes that are not UTF-8 or invalid JSON are one error naming the file."""
    path = Path(path)
    text = read_utf8(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SemidError(f"{path} line {e.lineno}: invalid JSON ({e.msg})") from None


def read_utf8(path: Path, what: str) -> str:
    """The text of ``path``; a byte that is not UTF-8 is an error naming the file, line and byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise SemidError(
            f"{path} line {line}: byte 0x{data[e.start]:02x} is not UTF-8 text; save {what} as UTF-8"
        ) from None


def read_json_mapping(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON file holding one object (a metadata file semid wrote); a damaged one is one error naming it."""
    path = Path(path)
    data = read_json_file(path)
    if not isinstance(data, dict):
        raise SemidError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def read_json_lines(
    path: str | os.PathLike, *, torn_tail: bool = False
) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSONL file; a missing file, a line that is
    not JSON or not a JSON object is one error naming the file and line. ``torn_tail``: a last line cut
    short without its newline (a run killed while appending it) ends the file instead."""
    path = Path(path)
    if not path.is_file():
        raise SemidError(f"{path}: no such file")
    with open(path, encoding="utf-8") as fh:
        n = 0
        try:
            for n, line in enumerate(fh, start=1):  # noqa: B007 - n names the line a decoding error stops at
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    if torn_tail and not line.endswith("\n"):  # the last line, never finished
                        return
                    raise SemidError(f"{path} line {n}: not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise SemidError(f"{path} line {n}: expected a JSON object")
                yield n, row
        except UnicodeDecodeError as e:
            raise SemidError(f"{path} line {n + 1}: not UTF-8 ({e.reason})") from None


def read_metrics_file(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a training log (``metrics.jsonl``; ``[]`` if the file is missing), a torn last line
    (a run killed while appending it) dropped."""
    if not Path(path).is_file():
        return []
    return [row for _, row in read_json_lines(path, torn_tail=True)]


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON (``.json``) or YAML (``.yaml``/``.yml``) file holding one mapping."""
    path = Path(path)
    if not path.is_file():
        raise SemidError(f"{path}: no such config file")
    text = read_utf8(path, "the config")
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise SemidError(
                f"{path}: reading YAML needs PyYAML (pip install pyyaml), or use a .json config"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" line {mark.line + 1}" if mark is not None else ""
            raise SemidError(f"{path}{where}: invalid YAML ({getattr(e, 'problem', e)})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SemidError(f"{path} line {e.lineno}: invalid JSON ({e.msg})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise SemidError(f"{path}: expected a mapping of option names to values, got {type(data).__name__}")
    return data


def sqlite_tables(conn: Any) -> list[str]:
    """The tables and views of an open SQLite database, in creation order, SQLite's own left out. Reads the
    schema only: a foreign file is not changed."""
    sql = (
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
    )
    return [r[0] for r in conn.execute(sql)]


def sqlite_has_columns(conn: Any, columns: dict[str, set[str]]) -> bool:
    """Whether each table named in ``columns`` has (at least) those columns: how a semid database tells
    itself from a look-alike before it writes anything."""
    return all(cols <= {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} for t, cols in columns.items())
