"""Small helpers shared by every room: atomic output, devices, seeding, fingerprints."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from semid.errors import SemidError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, is_dir: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A crash or an exception leaves no half-written output behind (and leaves an existing ``path`` as it was).
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if is_dir and path.exists():
            # Replace a directory: move the old one aside first so the swap is near-atomic. Copies an earlier
            # kill left aside go first, so finish_interrupted_swap never has two to choose from.
            for stale in parent.glob(f".{path.name}.*.old"):
                _rmtree(stale)
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=parent))
            old.rmdir()
            path.rename(old)
            tmp.rename(path)
            _rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            _rmtree(tmp) if tmp.is_dir() else tmp.unlink()
        raise


def swapped_aside(path: str | os.PathLike) -> Path:
    """``path``, or, where a killed :func:`atomic_path` swap left it moved aside, that hidden copy.

    Read-only, so safe on a run another process is writing: its swap may be between the two renames.
    """
    path = Path(path)
    if not path.exists() and path.parent.is_dir():
        olds = list(path.parent.glob(f".{path.name}.*.old"))
        if len(olds) == 1:  # atomic_path leaves at most one aside
            return olds[0]
    return path


def finish_interrupted_swap(path: str | os.PathLike) -> Path:
    """Put back a directory that a killed :func:`atomic_path` swap left moved aside; return ``path``.

    Replacing a directory takes two renames (the old one aside, the new one in). A process killed between
    them leaves ``path`` missing and the old copy as a hidden ``.NAME.*.old`` sibling, which this renames
    back, so a checkpoint written before the kill is still found. Only the process that takes the run over
    (a resume) may call this; readers use :func:`swapped_aside`.
    """
    path = Path(path)
    aside = swapped_aside(path)
    if aside != path:
        aside.rename(path)
    return path


def _rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)


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
    if device.split(":")[0] not in {"cpu", "cuda", "mps"}:
        raise SemidError(f"device={device!r} is not one of 'auto', 'cpu', 'cuda', 'mps'")
    return device


def check_random_state(random_state: int | np.random.Generator | None) -> np.random.Generator:
    """One seed -> one generator, passed down (sklearn style)."""
    if isinstance(random_state, np.random.Generator):
        return random_state
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


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON (``.json``) or YAML (``.yaml``/``.yml``) file holding one mapping."""
    path = Path(path)
    if not path.is_file():
        raise SemidError(f"{path}: no such config file")
    text = path.read_text()
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
