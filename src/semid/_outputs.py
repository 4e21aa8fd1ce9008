"""Writing outputs without losing anything: checks before the work, atomic replacement, the user's modes.

The rules every command and every ``save``/``write`` of the library follows:

- **Checked before the work.** :func:`check_output` refuses, in one :class:`SemidError` line, an output that
  is one of the command's inputs (or a directory holding one, or an existing file of an input run, model or
  quantizer directory: one holding ``config.json``), a file where a directory is written or the
  other way round, a path under a regular file, and a folder the user cannot write in; so an hour-long fit
  does not fail at its last step.
- **Replaced only when it is ours.** A file output is replaced like ``cp`` would. A directory output is
  replaced only when it is empty or holds semid output of the same kind (the writer says what that is,
  e.g. "a quantizer directory"); a directory with anything else in it is refused, never emptied.
- **Atomic.** :func:`atomic_path` writes beside the output and renames into place only when the work
  succeeded: a crash, Ctrl-C or an error leaves the old output (or nothing) behind, never half of one.
- **Readable by others.** Temporary files and directories are created private (0600/0700) and get the
  modes ``open()``/``mkdir`` would give under the user's umask (0644/0755 under umask 022) before the
  rename; a replaced file keeps its own mode.
- **No leftovers.** Temporaries are named ``.NAME.HOST.PID.XXXX.tmp``; the next write to the same output
  removes those whose process is gone (a job killed with SIGKILL cannot clean up after itself).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from semid.errors import SemidError

# An existing non-empty directory may be replaced when this says it holds output of the same kind.
Replaceable = Callable[[Path], bool]
# A directory holding this file is one artifact (a run, a quantizer, a model): its files are its parts.
ARTIFACT_CONFIG = "config.json"

_umask_lock = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:  # elsewhere: set and restore (not atomic across threads, hence the lock)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _first_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (as anything, a file included)."""
    p = path
    while not (p.exists() or p.is_symlink()) and p != p.parent:
        p = p.parent
    return p


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_output(
    path: str | os.PathLike,
    *,
    is_dir: bool = False,
    inputs: Iterable[str | os.PathLike | None] = (),
    replaceable: Replaceable | None = None,
    what: str = "",
) -> Path:
    """Refuse, before any work, an output that cannot be written or whose writing would lose data.

    Args:
        path: the output, a file or (``is_dir``) a directory.
        inputs: the command's input paths (``None`` entries are skipped): the output may be none of them,
            a directory output may not hold one, and a file output may not replace a file inside an input
            directory that is one artifact (it holds ``config.json``: a run, a quantizer, a model); a new
            file beside its files, or an earlier output inside a plain input folder, is allowed.
        replaceable: for a directory output, says whether an existing non-empty directory holds output of
            the same kind (which is then replaced); without it only an empty directory is.
        what: the kind of output, for the messages (e.g. ``"a quantizer directory"``).

    Returns the path. Costs a few ``stat`` calls.
    """
    path = Path(path)
    what = what or ("a directory" if is_dir else "a file")
    target = path.resolve()
    for inp in inputs:
        if inp is None:
            continue
        source = Path(inp).resolve()
        if source == target:
            raise SemidError(f"{path}: the output is also an input of this command; write to another path")
        if _is_within(source, target):
            raise SemidError(
                f"{path}: the output would replace a directory that holds the input {inp}; "
                "write to another path"
            )
        # where the file lands: a link there is replaced (atomic_path), not followed
        placed = path.parent.resolve() / path.name
        if (
            not is_dir
            and (path.exists() or path.is_symlink())
            and (source / ARTIFACT_CONFIG).is_file()
            and _is_within(placed, source)
        ):
            # e.g. `semid export-embeddings run/ -o run/sequences.parquet`: the run would lose one of its parts
            raise SemidError(
                f"{path}: the output would replace {placed.relative_to(source)} inside the input directory "
                f"{inp}; write to another path"
            )
    if path.is_symlink() and not path.exists():
        raise SemidError(f"{path}: a broken symbolic link; remove it or write to another path")
    if path.exists():
        if is_dir and not path.is_dir():
            raise SemidError(f"{path} is a file; the output is {what}: give a new path (the file is kept)")
        if not is_dir and path.is_dir():
            raise SemidError(f"{path} is a directory; the output is {what}: give a file path")
        if is_dir:
            _check_replaceable_dir(path, replaceable, what)
    ancestor = _first_existing(path.parent if str(path.parent) else Path("."))
    if not ancestor.is_dir():
        raise SemidError(f"{path}: {ancestor} is a file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise SemidError(f"{path}: cannot write in {ancestor} (permission denied)")
    return path


def _check_replaceable_dir(path: Path, replaceable: Replaceable | None, what: str) -> None:
    try:
        entries = sorted(p.name for p in path.iterdir())
    except PermissionError:
        raise SemidError(f"{path}: cannot read the directory (permission denied)") from None
    if not entries or (replaceable is not None and replaceable(path)):
        return
    shown = ", ".join(entries[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
    raise SemidError(
        f"{path} holds files that are not {what} written by semid ({shown}); "
        "choose a new directory (nothing was changed)"
    )


def output_mode(is_dir: bool, existing: Path | None = None) -> int:
    """The mode a new file (0666) or directory (0777) gets under the umask; a replaced file keeps its own."""
    if existing is not None and not is_dir and existing.is_file():
        return stat.S_IMODE(existing.stat().st_mode)
    return (0o777 if is_dir else 0o666) & ~current_umask()


def _set_modes(tmp: Path, is_dir: bool, path: Path) -> None:
    """Give ``tmp`` (and, for a directory, everything in it) the modes of files the user creates normally.

    Some writers create private files (mkstemp, safetensors); each file gets 0666 and each directory 0777
    less the umask, with the executable bits of a file kept where its owner has them.
    """
    os.chmod(tmp, output_mode(is_dir, path if path.exists() else None))
    if not is_dir:
        return
    file_mode, dir_mode = output_mode(False), output_mode(True)
    for root, dirs, files in os.walk(tmp):
        for d in dirs:
            os.chmod(os.path.join(root, d), dir_mode)
        for f in files:
            p = os.path.join(root, f)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                executable = dir_mode & 0o111 if st.st_mode & stat.S_IXUSR else 0
                os.chmod(p, file_mode | executable)


_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:32] or "host"


def _own_prefix(path: Path) -> str:
    """``.NAME.HOST.PID.``: how this process's temporaries, asides and work folders beside ``path`` begin."""
    return f".{path.name}.{_HOST}.{os.getpid()}."


def sibling_dir(path: str | os.PathLike, suffix: str) -> Path:
    """A new folder of this process's own beside ``path``: ``.NAME.HOST.PID.XXXX<suffix>`` (made with
    ``mkdtemp``, so it never is a folder someone else made, and its name says which process made it)."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=_own_prefix(path), suffix=suffix, dir=parent))
    except OSError as e:
        raise SemidError(f"{path}: cannot write in {parent} ({e.strerror})") from None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_dead_leftovers(path: str | os.PathLike, suffix: str = ".tmp") -> list[Path]:
    """Remove the temporaries of earlier writes to ``path`` whose process on this host is gone; return them.

    Only names :func:`atomic_path` (or :func:`sibling_dir` with ``suffix``) makes, ``.NAME.HOST.PID.XXXX.tmp``,
    with this host and a dead PID are touched, so a live job's temporaries and other machines' (on a shared
    disk) are left alone.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    removed = []
    pattern = re.compile(re.escape(f".{path.name}.{_HOST}.") + r"(\d+)\.[^.]+" + re.escape(suffix))
    try:
        siblings = list(parent.iterdir())
    except OSError:
        return removed
    for p in siblings:
        m = pattern.fullmatch(p.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            _remove(p)
            removed.append(p)
    return removed


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike,
    *,
    is_dir: bool = False,
    replaceable: Replaceable | None = None,
    what: str = "",
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The output is checked first (:func:`check_output`, without inputs): a directory output that exists
    must be empty or ``replaceable``. A crash or an exception leaves no half-written output behind (and
    leaves an existing ``path`` as it was). The result gets the user's umask modes. Temporaries of earlier
    writes to ``path`` by processes that died are removed first.
    """
    path = Path(path)
    check_output(path, is_dir=is_dir, replaceable=replaceable, what=what)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SemidError(f"{path}: cannot create {parent} ({e.strerror})") from None
    remove_dead_leftovers(path)
    if is_dir:
        tmp = sibling_dir(path, ".tmp")
    else:
        try:
            fd, name = tempfile.mkstemp(prefix=_own_prefix(path), suffix=".tmp", dir=parent)
        except OSError as e:
            raise SemidError(f"{path}: cannot write in {parent} ({e.strerror})") from None
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        _set_modes(tmp, is_dir, path)
        if is_dir and path.exists():
            # Replace a directory: move the old one aside first so the swap is near-atomic. Copies an earlier
            # kill left aside go first, so finish_interrupted_swap never has two to choose from.
            if not (replaceable is not None and replaceable(path)) and any(path.iterdir()):
                # filled by someone else while we worked
                raise SemidError(
                    f"{path}: files appeared in the directory while writing; nothing was replaced"
                )
            for stale in _asides(path, dead_only=True):
                shutil.rmtree(stale, ignore_errors=True)
            old = sibling_dir(path, ".old")
            old.rmdir()
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.exists():
            _remove(tmp)
        raise


def swapped_aside(path: str | os.PathLike) -> Path:
    """``path``, or, where a killed :func:`atomic_path` swap left it moved aside, that hidden copy.

    Read-only, so safe on a run another process is writing: its swap may be between the two renames.
    """
    path = Path(path)
    if not path.exists() and path.parent.is_dir():
        olds = _asides(path)
        if len(olds) == 1:  # atomic_path leaves at most one aside
            return olds[0]
    return path


def _asides(path: Path, *, dead_only: bool = False) -> list[Path]:
    """The copies of ``path`` an :func:`atomic_path` swap moved aside: ``.NAME.HOST.PID.XXXX.old``, and
    nothing else a user may have named ``.NAME.*.old``. ``dead_only``: those of this host's dead processes
    (leftovers of a kill after the swap; a live job's own copy is never touched)."""
    pattern = re.compile(re.escape(f".{path.name}.") + r"([A-Za-z0-9_-]+)\.(\d+)\.[^.]+\.old")
    parent = path.parent if str(path.parent) else Path(".")
    found = []
    for p in parent.iterdir():
        m = pattern.fullmatch(p.name)
        if not m or p.is_symlink():
            continue
        host, pid = m.group(1), int(m.group(2))
        if dead_only and (host != _HOST or pid == os.getpid() or _pid_alive(pid)):
            continue
        found.append(p)
    return found


def finish_interrupted_swap(path: str | os.PathLike) -> Path:
    """Put back a directory that a killed :func:`atomic_path` swap left moved aside; return ``path``.

    Replacing a directory takes two renames (the old one aside, the new one in). A process killed between
    them leaves ``path`` missing and the old copy as a hidden ``.NAME.HOST.PID.XXXX.old`` sibling, which this renames
    back, so a checkpoint written before the kill is still found. Only the process that takes the run over
    (a resume) may call this; readers use :func:`swapped_aside`.
    """
    path = Path(path)
    aside = swapped_aside(path)
    if aside != path:
        try:
            aside.rename(path)
        except FileNotFoundError:  # another rank of the same data-parallel job put it back first
            if not path.exists():
                raise
    return path


def _accepting(test: Callable[[Path], bool], check: Callable[[Path], bool] | None) -> Replaceable:
    """A :data:`Replaceable` from a test of the directory's entries and an optional deeper ``check`` (an
    unreadable or malformed file makes the directory not ours)."""

    def replaceable(directory: Path) -> bool:
        try:
            return test(directory) and (check is None or bool(check(directory)))
        except (OSError, ValueError):
            return False

    return replaceable


def holds_only(names: Iterable[str], check: Callable[[Path], bool] | None = None) -> Replaceable:
    """A :data:`Replaceable` that accepts a directory whose entries are all among ``names`` (and that passes
    ``check``): e.g. a run killed before its first checkpoint, which left only files a run writes."""
    allowed = frozenset(names)
    return _accepting(lambda d: all(p.name in allowed for p in d.iterdir()), check)


def has_marker(*names: str, check: Callable[[Path], bool] | None = None) -> Replaceable:
    """A :data:`Replaceable` that accepts a directory holding every one of ``names`` (and passing ``check``)."""
    return _accepting(lambda d: all((d / n).is_file() for n in names), check)
