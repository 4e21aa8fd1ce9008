"""Data-parallel training on torch.distributed: who this process is, and the few collectives training needs
(SASRec, TIGER, the query LM and the RQ-VAE all use it; :mod:`semid.rec.distributed` re-exports it).

One training run can span N processes (ranks), on one machine or several, launched by ``torchrun`` or by
Ray Train (``semid train ... --engine ray``). Every rank holds a full copy of the model (DDP). The rules
that keep a run of N ranks equal to a run of one process:

* **Batches are global.** Every rank builds the same epoch plan (``length_batches`` with the run's
  ``(seed, epoch)``) and takes its own contiguous slice of each global batch (:func:`shard`). The checkpoint
  counts global batches, so a run may be resumed on another number of ranks.
* **The loss is a global mean.** Each rank computes the *sum* of its slice's losses and the number of
  terms (``model.loss_terms``); one ``all_reduce`` gives the global count, and each rank backpropagates
  ``sum * world_size / global_count``. DDP averages gradients over ranks, so the update is the gradient of
  the whole batch's mean loss, as in one process (up to float summation order: tests check 1e-5).
* **Rank 0 writes.** Run files, checkpoints, metrics and the best model are written by rank 0 alone;
  the others wait at a barrier. An error on rank 0 during set-up is sent to every rank (:func:`on_main`), so
  no rank waits forever for a peer that has failed.
* **One clock.** Time budgets (``max_minutes``) and the learning-rate schedule follow rank 0's clock,
  shared with each step's ``all_reduce``, so every rank takes the same decisions.

Backends: NCCL when training on CUDA, gloo on CPU. ``torchrun`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
and the rendezvous address; :func:`setup` starts the process group from them. Ray Train starts it itself.

Cost per optimizer step: DDP's gradient all-reduce (the model's size) plus one all-reduce of three numbers.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import numpy as np
import torch
import torch.distributed as dist

from semid.errors import SemidError

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel job (``world_size == 1``: a plain single-process run)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def to_dict(self) -> dict[str, Any]:
        return {"world_size": self.world_size, "backend": self.backend or "none"}


SINGLE = Dist()
_started_here = False  # setup() started the process group (a torchrun launch), so this process ends it


def current() -> Dist:
    """The process group this process is in (:data:`SINGLE` when torch.distributed is not initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return SINGLE
    return Dist(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        backend=str(dist.get_backend()),
    )


def launched_world_size() -> int:
    """``WORLD_SIZE`` as set by a launcher such as torchrun (1 when not launched)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        size = int(value)
    except ValueError:
        raise SemidError(f"WORLD_SIZE={value!r} should be a positive integer") from None
    if size < 1:
        raise SemidError(f"WORLD_SIZE={value!r} should be a positive integer")
    return size


def backend_for(device: str) -> str:
    """NCCL for CUDA training, gloo for CPU (and MPS, which has no collective backend of its own)."""
    return "nccl" if device.startswith("cuda") else "gloo"


def setup(device: str) -> Dist:
    """Join the job a launcher started (torchrun's environment), or return the one already joined.

    ``device`` is the resolved training device ("cpu", "cuda", "mps"); on CUDA each rank takes the GPU of
    its ``LOCAL_RANK``. A process not started by a launcher gets :data:`SINGLE` and no process group.
    """
    if not (dist.is_available() and dist.is_initialized()):
        if launched_world_size() == 1:
            return SINGLE
        if not dist.is_available():
            raise SemidError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        missing = [k for k in ("MASTER_ADDR", "MASTER_PORT", "RANK") if k not in os.environ]
        if missing:
            raise SemidError(
                f"WORLD_SIZE > 1 but {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set: "
                "launch with torchrun --nproc-per-node N -m semid train ..."
            )
        backend = backend_for(device)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend)
        global _started_here
        _started_here = True
        atexit.register(teardown)
    return current()


def teardown() -> None:
    """Destroy the process group :func:`setup` started (a no-op when none is up); runs at exit.

    Hygiene for library callers under a launcher: the group's connections close while the interpreter is
    whole. It does not remove the gloo race at exit when DDP holds the group (see :func:`exit_rank`, which
    the command line uses). No barrier: a rank that failed must not wait for peers that may never arrive.
    """
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def started_here() -> bool:
    """True in a rank of a job :func:`setup` joined (torchrun's environment) while its group is up."""
    return _started_here and dist.is_available() and dist.is_initialized()


def exit_rank(code: int) -> NoReturn:
    """End this rank with exit status ``code`` now: destroy the group, flush stdio and logging, ``os._exit``.

    The command line ends a torchrun rank this way once the command is done (its outputs closed), skipping
    the interpreter's finalization. The reason is a race in torch: a gloo worker thread that drops the last
    reference to a finished collective's tensor takes the GIL to free its Python object, and when it asks in
    the few milliseconds in which the interpreter begins to finalize, Python stops the thread inside a C++
    destructor and the process aborts (SIGABRT, "terminate called without an active exception") after all
    its work is done. :func:`teardown` cannot prevent it: DDP keeps a reference to the group, so
    ``destroy_process_group`` leaves its worker threads running to the end of the process (seen on torch
    2.13: two ``pt_gloo_runloop`` threads alive after it, none without DDP). Measured with
    ``python bench/exit_race.py --jobs 40`` (2-rank DDP jobs on a 2-core machine with two trainings beside
    them; ``bench/results/exit_race.txt``): 10 of 40 jobs aborted at exit with ``teardown`` alone, 0 of 40
    with this exit; in earlier batches of the same job, 17 of 100 against 0 of 60, and 3 of 40 with a barrier
    and ``destroy_process_group`` at the end. Library callers who launch ranks themselves keep
    :func:`teardown` at exit.
    """
    teardown()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # closed or broken pipe: nothing more to write
            stream.flush()
    os._exit(code)


def rank_device(device: str, d: Dist) -> str:
    """The device of this rank: ``cuda:LOCAL_RANK`` for a multi-rank CUDA job, else ``device`` itself."""
    if d.enabled and device == "cuda":
        return f"cuda:{d.local_rank}"
    return device


def shard(idx: np.ndarray, d: Dist) -> np.ndarray:
    """This rank's contiguous slice of the global batch ``idx`` (sizes differ by at most one)."""
    if not d.enabled:
        return idx
    return np.array_split(idx, d.world_size)[d.rank]


def all_sum(values: list[float], d: Dist, device: str | torch.device = "cpu") -> list[float]:
    """Element-wise sum of ``values`` over ranks, in float64 (NCCL needs the tensor on the GPU)."""
    if not d.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device if d.backend == "nccl" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def all_gather(obj: T, d: Dist) -> list[T]:
    """Every rank's ``obj``, in rank order, on every rank (picklable Python objects: small results only)."""
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def on_main(fn: Callable[[], T], d: Dist) -> T | None:
    """Run ``fn`` on rank 0 only; every rank then raises rank 0's :class:`SemidError` if it raised one.

    Other exceptions on rank 0 are re-raised there and reported to the other ranks as a SemidError, so a
    failed set-up never leaves ranks waiting for each other.
    """
    if not d.enabled:
        return fn()
    result: T | None = None
    error: BaseException | None = None
    message = None
    if d.is_main:
        try:
            result = fn()
        except BaseException as exc:  # noqa: BLE001  (sent to the other ranks, then re-raised)
            error = exc
            message = (
                str(exc) if isinstance(exc, SemidError) else f"rank 0 failed: {type(exc).__name__}: {exc}"
            )
    box = [message]
    dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    if box[0] is not None:
        raise SemidError(box[0])
    return result


def reduce_(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum ``t`` over ranks, in place (a no-op for one process); returns ``t``."""
    if d.enabled:
        dist.all_reduce(t)
    return t


def broadcast_module(module: torch.nn.Module, d: Dist) -> None:
    """Copy rank 0's parameters and buffers to every rank, in place (a no-op for one process)."""
    if not d.enabled:
        return
    for t in module.state_dict().values():
        if d.backend == "nccl" and t.device.type != "cuda":
            moved = t.cuda()
            dist.broadcast(moved, src=0)
            t.copy_(moved)
        else:
            dist.broadcast(t, src=0)


def gather_rows(t: torch.Tensor, d: Dist) -> tuple[torch.Tensor, int]:
    """Every rank's ``t`` (rows may differ in number) stacked in rank order, and where this rank's start.

    With :func:`shard`'s contiguous slices, this is the global batch in its own order. Cost: one small
    all-gather of the row counts and one all-gather of the rows (padded to the largest slice).
    """
    if not d.enabled:
        return t, 0
    n = torch.tensor([t.shape[0]], device=t.device)
    counts = [torch.zeros_like(n) for _ in range(d.world_size)]
    dist.all_gather(counts, n)
    sizes = [int(c) for c in counts]
    padded = t.new_zeros((max(sizes), *t.shape[1:]))
    padded[: t.shape[0]] = t
    parts = [torch.zeros_like(padded) for _ in range(d.world_size)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes, strict=True)]), sum(sizes[: d.rank])
