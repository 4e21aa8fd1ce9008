"""What each training epoch reads, batch by batch, and one data-parallel optimizer step.

Two sources of batches, one interface (:class:`EpochPlan`):

- :class:`MemoryPlan`: the examples of an in-memory :class:`~semid.rec.data.RecData` (every prefix for
  TIGER, windows for SASRec), cut into *global* batches by ``length_batches`` with the run's
  ``(seed, epoch)``; with N ranks each takes its contiguous slice of every global batch, so N ranks make
  the updates of one process (:mod:`semid.rec.distributed`).
- :class:`StreamPlan`: a Parquet interaction log sharded by user (:mod:`semid.rec.stream`), read with
  bounded memory. Each rank reads its own shards and makes local batches of ``ceil(batch_size / N)``
  examples; an epoch lasts as many steps as the rank with the most batches needs, and a rank that has run
  out joins the remaining steps with weight 0 (its gradient counts for nothing, but it still takes part in
  the all-reduce). Every example is trained on once per epoch, in shuffled buffers of 65,536 examples.

Both yield ``(batch, weight)``: the rank's collated :class:`~semid.rec.data.Batch` and 1, or a stand-in
batch and 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from semid._distributed import Dist, all_gather, all_sum, shard
from semid.data import Sequences
from semid.errors import SemidError
from semid.rec.data import Batch, Examples, RecData, collate, length_batches, prefix_examples, window_examples


class LossTerms(nn.Module):
    """``model.loss_terms`` as ``forward``, the call DistributedDataParallel hooks its gradient sync into."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: Batch) -> tuple[torch.Tensor, int]:
        return self.model.loss_terms(batch)


@dataclass
class StepResult:
    loss: float  # the global batch's mean loss
    clock: float  # rank 0's training clock, the same on every rank
    examples: int  # examples in the global batch


def data_parallel_step(
    loss_module: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Any,
    weight: float,
    group: Dist,
    device: str,
    autocast: Any = nullcontext,
    clip_grad_norm: float = 0.0,
    clock: float = 0.0,
    examples: int | None = None,
) -> StepResult:
    """One optimizer step on this rank's ``batch`` of a global batch (``weight`` 0: a stand-in).

    ``batch`` is whatever ``loss_module`` takes (a :class:`~semid.rec.data.Batch`, or the query LM's tensor
    dict); ``examples`` counts its rows when ``len(batch)`` does not.

    ``loss_module`` (a :class:`LossTerms`, DDP-wrapped when ``group`` has several ranks) gives the batch's
    loss sum and count; one all-reduce adds them up over ranks (with rank 0's ``clock``), and the backward
    pass of ``sum * world_size / global_count`` makes DDP's averaged gradient the gradient of the global
    batch's mean loss. Cost over a plain step: one all-reduce of four numbers.
    """
    with autocast():
        total, count = loss_module(batch)
    g_count, g_sum, g_clock, g_examples = all_sum(
        [
            count * weight,
            float(total.detach()) * weight,
            clock if group.is_main else 0.0,
            (len(batch) if examples is None else examples) * weight,
        ],
        group,
        device,
    )
    if g_count == 0:
        raise SemidError("a training batch has no target to learn (every rank's batch is empty)")
    optimizer.zero_grad(set_to_none=True)
    (total * (weight * group.world_size / g_count)).backward()
    if clip_grad_norm > 0:
        nn.utils.clip_grad_norm_(loss_module.parameters(), clip_grad_norm)
    optimizer.step()
    return StepResult(g_sum / g_count, g_clock, int(g_examples))


# --------------------------------------------------------------------------------------------------------
# In memory
# --------------------------------------------------------------------------------------------------------


def training_examples(model: nn.Module, data: RecData) -> Examples:
    """The training examples ``model`` learns from: windows (SASRec) or every prefix (TIGER)."""
    make = window_examples if model.example_kind == "windows" else prefix_examples
    return make(data.split.train, data.user_keys, model.max_history)


def target_keep_probability(examples: Examples, seqs: Sequences, target_bias: float) -> np.ndarray:
    """(n,) chance that each prefix example of ``seqs`` is trained on in an epoch (see ``target_bias``).

    The example predicting item ``t`` (0-based position in its row, ``t >= 1``) of a row of ``n`` items
    is kept with probability ``(t / (n - 1)) ** target_bias``: 1 for the row's last item.
    """
    if target_bias == 0:
        return np.ones(len(examples))
    rows = np.searchsorted(seqs.offsets, examples.end, side="right") - 1
    t = examples.end - seqs.offsets[rows]
    return (t / (seqs.lengths[rows] - 1)) ** target_bias


class EpochPlan:
    """The batches of each epoch: :meth:`epoch` gives their number and this rank's ``(batch, weight)``."""

    expected_batches: int  # steps per epoch (on average), for the learning-rate schedule

    def epoch(self, epoch: int, skip: int) -> tuple[int, Iterator[tuple[Batch, float]]]:
        raise NotImplementedError


class MemoryPlan(EpochPlan):
    """Global batches of in-memory examples; each rank trains on its slice of every one."""

    def __init__(
        self, model: nn.Module, data: RecData, batch_size: int, seed: int, target_bias: float, group: Dist,
        device: str,
    ) -> None:  # fmt: skip
        self.examples = training_examples(model, data)
        if len(self.examples) == 0:
            raise SemidError("no training examples: every training sequence has a single item")
        self.keep = np.ones(len(self.examples))
        if target_bias:
            if model.example_kind != "prefixes":
                raise SemidError(
                    f"target_bias applies to TIGER's prefix examples, not to {type(model).__name__}"
                )
            self.keep = target_keep_probability(self.examples, data.split.train, target_bias)
        self.batch_size, self.seed, self.target_bias = batch_size, seed, target_bias
        self.group, self.device = group, device
        self.expected_batches = math.ceil(self.keep.sum() / batch_size)

    def global_batches(self, epoch: int) -> list[np.ndarray]:
        """Example indices of each global batch of ``epoch``: the same on every rank."""
        rng = np.random.default_rng([self.seed, epoch])
        lengths = self.examples.lengths
        if self.target_bias:
            kept = np.flatnonzero(rng.random(len(self.examples)) < self.keep)  # this epoch's examples
            return [kept[b] for b in length_batches(lengths[kept], self.batch_size, rng)]
        return length_batches(lengths, self.batch_size, rng)

    def epoch(self, epoch: int, skip: int) -> tuple[int, Iterator[tuple[Batch, float]]]:
        batches = self.global_batches(epoch)

        def local() -> Iterator[tuple[Batch, float]]:
            for idx in batches[skip:]:
                mine, weight = shard(idx, self.group), 1.0
                if len(mine) == 0:  # a global batch smaller than the world: join with weight 0
                    mine, weight = idx[:1], 0.0
                yield collate(self.examples, mine, self.device), weight

        return len(batches), local()


# --------------------------------------------------------------------------------------------------------
# Streamed
# --------------------------------------------------------------------------------------------------------


class StreamPlan(EpochPlan):
    """Local batches from this rank's shards of a streamed log (:mod:`semid.rec.stream`)."""

    def __init__(
        self, stream: Any, model: nn.Module, batch_size: int, seed: int, group: Dist, device: str
    ) -> None:
        self.stream, self.kind, self.max_history = stream, model.example_kind, model.max_history
        self.local_size = math.ceil(batch_size / group.world_size)
        self.seed, self.group, self.device = seed, group, device
        counts = all_gather(
            stream.count_batches(
                self.kind, self.max_history, self.local_size, rank=group.rank, world_size=group.world_size
            ),
            group,
        )
        self.n_batches = max(counts)  # every rank takes part in every step
        if self.n_batches == 0:
            raise SemidError(f"{stream.paths[0].parent}: no training examples in the log")
        self.expected_batches = self.n_batches
        self._stand_in: Batch | None = None

    def epoch(self, epoch: int, skip: int) -> tuple[int, Iterator[tuple[Batch, float]]]:
        def local() -> Iterator[tuple[Batch, float]]:
            batches = self.stream.train_batches(
                self.kind, self.max_history, self.local_size, seed=self.seed, epoch=epoch,
                rank=self.group.rank, world_size=self.group.world_size, device=self.device, skip_batches=skip,
            )  # fmt: skip
            for _ in range(skip, self.n_batches):
                batch = next(batches, None)
                if batch is not None:
                    self._stand_in = batch
                    yield batch, 1.0
                else:  # this rank's shards are done: take part with weight 0
                    yield self.stand_in(), 0.0

        return self.n_batches, local()

    def stand_in(self) -> Batch:
        """A batch to run with weight 0 (the rank's last one, or the first example of its first shard)."""
        if self._stand_in is None:
            for batch in self.stream.train_batches(
                self.kind, self.max_history, 1, seed=self.seed, epoch=0, world_size=1, device=self.device
            ):
                self._stand_in = batch
                break
        return self._stand_in
