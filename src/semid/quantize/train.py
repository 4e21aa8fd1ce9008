"""A small, deterministic trainer for models such as RQ-VAE: config, loop, checkpoints, metrics.

    trainer = Trainer(net, TrainConfig(epochs=100, batch_size=1024), seed=0, run_dir="runs/beauty")
    state = trainer.fit(X)                       # X: (n, D) float32 tensor
    state = Trainer(net2, ...).fit(X, resume="runs/beauty")   # continue a killed run where it stopped

The trainer knows nothing about quantizers; it drives any ``nn.Module`` that offers three methods:

* ``prepare(X, extra, rng, rows_per_step)`` - data-dependent initialisation before the first step
  (input statistics, k-means codebooks);
* ``training_loss(x, extra, generator) -> (loss, logs)`` - the loss of a mini-batch and floats to log;
  ``logs`` may also hold ``"codes"``, a ``(B, L)`` tensor of what the batch's rows were assigned;
* ``evaluate(X, extra) -> dict`` - metrics on all rows in eval mode (usage, unique share, ...);
* optionally ``code_metrics(codes) -> dict`` - the same health metrics from an ``(n, L)`` array of codes.

Every epoch is logged with health metrics. A full ``evaluate`` pass runs every ``eval_every`` epochs and
after the last; the epochs between take them, at no cost, from the codes the training pass assigned (each
row is seen once an epoch), through ``code_metrics``.

What a run directory holds (all writes atomic, so a kill never leaves a torn file)::

    run_dir/metrics.jsonl              one JSON object per epoch (losses, grad norms, lr, eval metrics)
    run_dir/tensorboard/               the same scalars, when tensorboard is installed
    run_dir/checkpoints/last/          after every epoch (and the final state once training ends)
    run_dir/checkpoints/best/          the epoch with the best ``best_metric``
    run_dir/checkpoints/step-000120/   every ``save_every_steps`` optimiser steps

A checkpoint is ``state.safetensors`` (model, optimiser tensors, RNG states) + ``trainer.json`` (run
config, epoch, step, position in the epoch, best score, history, data fingerprint). Every source of
randomness (batch order, dropout, dead-code sampling) has its state saved, so on the same machine a resumed
run continues exactly as the uninterrupted one would have.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from semid._distributed import all_sum, barrier, broadcast_module, gather_rows, setup, shard
from semid._outputs import check_output, holds_only
from semid._utils import (
    atomic_path,
    decay_progress,
    fingerprint_arrays,
    finish_interrupted_swap,
    read_config_file,  # noqa: F401  (re-exported: JSON/YAML config mapping)
    read_metrics_file,
    swapped_aside,
)
from semid.errors import SemidError

OPTIMIZERS = ("adamw", "adagrad")
PRECISIONS = ("auto", "fp32", "bf16")
SCHEDULES = ("cosine", "constant")
STATE_NAME = "state.safetensors"
TRAINER_NAME = "trainer.json"
METRICS_NAME = "metrics.jsonl"
RUN_FILES = frozenset({METRICS_NAME, "checkpoints", "tensorboard"})  # all a Trainer writes in its run_dir


@dataclass
class TrainConfig:
    """How to train: optimiser, schedule, batches, checkpoints, logging. Loadable from JSON/YAML."""

    epochs: int = 100
    # rows per micro-batch; 0 = the full data set in one batch (one step per epoch). On Amazon Beauty, 512 gave a
    # lower reconstruction error than 1024 for the same epochs (0.58 vs 0.62) at about the same cost per epoch
    batch_size: int = 512
    optimizer: str = "adamw"  # "adamw" or "adagrad"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"  # "cosine" (after warmup, decays to lr * min_lr_ratio) or "constant"
    warmup_steps: int = 0  # linear warmup, in optimiser steps
    min_lr_ratio: float = 0.1
    grad_accum: int = 1  # micro-batches per optimiser step
    clip_grad_norm: float = 1.0  # max global grad norm; 0 disables clipping (norms are logged either way)
    # "bf16" autocasts the model's matmuls (its quantizer stays fp32); "auto": bf16 where the hardware computes it
    # natively (AVX512-BF16/AMX CPUs, recent GPUs), else "fp32"
    precision: str = "auto"
    # epochs between full-data evaluations (the last epoch is always evaluated); the epochs between take their
    # health metrics from the codes of the training pass, which costs nothing (a full pass costs a third of
    # an epoch)
    eval_every: int = 10
    # any logged metric; names ending in "loss"/"error" are minimised, others maximised
    best_metric: str = "unique_share"
    restore_best: bool = False  # end with the best epoch's weights instead of the last epoch's
    save_every_steps: int = 0  # extra checkpoints every N optimiser steps (0 = none)
    run_dir: str | None = None  # where metrics and checkpoints go; None = nowhere (nothing is written)
    tensorboard: bool = True  # also log to run_dir/tensorboard when tensorboard is installed
    progress: bool = False  # tqdm bar over epochs

    def validate(self) -> None:
        """Reject bad values with one line quoting them (before any work starts)."""
        _check_int("epochs", self.epochs, 1)
        _check_int("batch_size", self.batch_size, 0, "(0 = full batch)")
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_number("lr", self.lr, lo=0.0, lo_open=True)
        _check_number("weight_decay", self.weight_decay, lo=0.0)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_int("warmup_steps", self.warmup_steps, 0)
        _check_number("min_lr_ratio", self.min_lr_ratio, lo=0.0, hi=1.0)
        _check_int("grad_accum", self.grad_accum, 1)
        _check_number("clip_grad_norm", self.clip_grad_norm, lo=0.0)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_int("eval_every", self.eval_every, 1)
        _check_int("save_every_steps", self.save_every_steps, 0)
        if not isinstance(self.best_metric, str) or not self.best_metric:
            raise SemidError(f"best_metric={self.best_metric!r} should be the name of a logged metric")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- value checks shared with model configs -------------------------------------------------------------
def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_int(name: str, v: Any, lo: int, hint: str = "") -> None:
    if not _is_int(v) or v < lo:
        raise SemidError(f"{name}={v!r} should be an integer >= {lo}" + (f" {hint}" if hint else ""))


def _check_number(
    name: str, v: Any, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False
) -> None:
    ok = isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(float(v))
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v <= hi
    if not ok:
        rng = []
        if lo is not None:
            rng.append(f"{'>' if lo_open else '>='} {lo:g}")
        if hi is not None:
            rng.append(f"<= {hi:g}")
        raise SemidError(f"{name}={v!r} should be a number" + (f" {' and '.join(rng)}" if rng else ""))


def _check_choice(name: str, v: Any, choices: tuple[str, ...]) -> None:
    if v not in choices:
        raise SemidError(f"{name}={v!r} is not one of {', '.join(map(repr, choices))}")


def coerce_fields(cls: type, data: dict[str, Any], *, source: str) -> dict[str, Any]:
    """Check a dict's keys against dataclass ``cls`` and coerce YAML-isms (``"1e-3"`` -> 1e-3).

    Unknown keys raise one line naming the file and listing the known ones; values are checked later by
    ``validate()``.
    """
    known = {f.name: f for f in fields(cls)}
    out = {}
    for key, value in data.items():
        if key not in known:
            raise SemidError(f"{source}: unknown option {key!r} (known: {', '.join(sorted(known))})")
        kind = str(known[key].type)
        if isinstance(value, str) and ("float" in kind or "int" in kind) and "str" not in kind:
            try:
                value = float(value) if "float" in kind else int(value)
            except ValueError:
                raise SemidError(f"{source}: {key}={value!r} should be a number") from None
        out[key] = value
    return out


# -- run state --------------------------------------------------------------------------------------------
@dataclass
class TrainState:
    """Where a run stands: what a checkpoint restores and what ``fit`` returns."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimiser steps taken
    batch_in_epoch: int = 0  # micro-batches of the current epoch already done (mid-epoch checkpoints)
    best_value: float | None = None
    best_epoch: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    epoch_sums: dict[str, float] = field(default_factory=dict)  # running sums of the current epoch's logs
    done: bool = False


@dataclass
class _Run:
    """What one ``fit`` call threads through its pieces (the optimiser and every random stream)."""

    optimizer: torch.optim.Optimizer
    params: list[nn.Parameter]
    batch_gen: torch.Generator  # batch order
    aux_gen: torch.Generator  # handed to the model (dead-code sampling, contrastive subsets)
    data_fp: str
    total_steps: int
    epoch_gen_state: torch.Tensor | None = None  # batch_gen's state at the start of the current epoch
    # codes the training pass assigned to each row this epoch (-1: not seen, e.g. before a mid-epoch resume)
    epoch_codes: torch.Tensor | None = None


class _TrainingLoss(nn.Module):
    """``model.training_loss`` as ``forward``, the call DistributedDataParallel hooks its gradient sync into."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, x: torch.Tensor, extra: torch.Tensor | None, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.model.training_loss(x, extra, generator)


def _better(metric: str, new: float, old: float | None) -> bool:
    if old is None or not math.isfinite(old):
        return math.isfinite(new)
    minimise = metric.endswith("loss") or metric.endswith("error") or metric.startswith("grad_norm")
    return new < old if minimise else new > old


class Trainer:
    """Runs the optimisation loop of one model; see the module docstring for the contract.

    ``run_config`` is stored in every checkpoint (it rebuilds the model on resume); ``seed`` seeds the
    batch order, the auxiliary generator handed to the model, and ``prepare``'s numpy generator.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        *,
        seed: int | None = 0,
        device: str = "cpu",
        run_config: dict[str, Any] | None = None,
    ) -> None:
        config.validate()
        self.model = model
        self.config = config
        self.seed = seed
        self.device = device
        self.run_config = run_config or {"train": config.to_dict()}
        self.run_dir = Path(config.run_dir) if config.run_dir else None
        # data-parallel ranks (torchrun): each trains on its slice of every global batch; rank 0 writes
        self.group = setup(str(device))
        self._writes = self.group.is_main
        self._loss_module: nn.Module = _TrainingLoss(model)
        if self.group.enabled:
            from torch.nn.parallel import DistributedDataParallel

            dev = torch.device(device)
            self._loss_module = DistributedDataParallel(
                self._loss_module,
                device_ids=[dev.index] if dev.type == "cuda" else None,
                broadcast_buffers=False,  # codebooks stay equal by construction (vq: summed statistics)
            )

    # -- the loop -------------------------------------------------------------------------------------
    def fit(
        self,
        X: torch.Tensor,
        extra: torch.Tensor | None = None,
        *,
        resume: str | os.PathLike | None = None,
        stop_after_epochs: int | None = None,
    ) -> TrainState:
        """Train on X (n, D) (and ``extra`` (n, d) row-aligned side data). Returns the final state.

        ``resume`` is a run directory or one of its checkpoints: training continues from there.
        ``stop_after_epochs`` ends the loop early (as a kill would) after that many epochs in total:
        used to test that resuming reproduces an uninterrupted run.
        """
        cfg = self.config
        if resume is None and self.run_dir is not None and self._writes:  # before any work
            check_output(
                self.run_dir, is_dir=True, replaceable=holds_only(RUN_FILES), what="an RQ-VAE run directory"
            )
        n = X.shape[0]
        B = n if cfg.batch_size == 0 else min(cfg.batch_size, n)
        n_batches = math.ceil(n / B)
        if self.group.enabled and self.group.world_size > B:
            raise SemidError(
                f"batch_size={B} is smaller than the {self.group.world_size} data-parallel ranks: every rank "
                "needs rows of each batch"
            )
        if self.group.enabled and 0 < n - (n_batches - 1) * B < self.group.world_size and n_batches > 1:
            n_batches -= 1  # a last batch smaller than the world joins the one before (every rank gets rows)
        params = [p for p in self.model.parameters() if p.requires_grad]
        run = _Run(
            optimizer=self._optimizer(params),
            params=params,
            batch_gen=torch.Generator().manual_seed(_seed64(self.seed, 1)),
            aux_gen=torch.Generator().manual_seed(_seed64(self.seed, 2)),
            data_fp=self._data_fingerprint(X, extra),
            total_steps=cfg.epochs * math.ceil(n_batches / cfg.grad_accum),
        )
        if resume is not None:
            state = self._load(resume, run)
            if self.run_dir is not None and self._writes:
                self._truncate_metrics(state.epoch)
        else:
            seed = _seed64(self.seed, 0)
            torch.manual_seed(seed)
            self.model.prepare(X, extra, np.random.default_rng(seed), B)
            # every rank starts from rank 0's codebooks (k-means on CUDA need not be bit-identical)
            broadcast_module(self.model, self.group)
            state = TrainState()
            if self.run_dir is not None and self._writes:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                with atomic_path(self.run_dir / METRICS_NAME) as tmp:
                    tmp.write_text("")
        writer = self._tensorboard()
        bar = tqdm(
            total=cfg.epochs,
            initial=state.epoch,
            desc="RQ-VAE",
            unit="epoch",
            disable=not (cfg.progress and self._writes),
        )
        last_epoch = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, stop_after_epochs)
        try:
            while state.epoch < last_epoch:
                t0 = time.perf_counter()
                self._train_epoch(state, run, X, extra, B, n_batches)
                state.epoch += 1
                record = self._epoch_record(state, run, X, extra, n_batches, time.perf_counter() - t0)
                state.history.append(record)
                state.batch_in_epoch, state.epoch_sums, run.epoch_gen_state = 0, {}, None
                run.epoch_codes = None
                value = record.get(cfg.best_metric)
                improved = value is not None and _better(cfg.best_metric, float(value), state.best_value)
                if improved:
                    state.best_value, state.best_epoch = float(value), state.epoch
                state.done = state.epoch >= cfg.epochs
                self._log(record, writer)
                if improved:
                    self._save("best", state, run)
                if cfg.save_every_steps and state.step % cfg.save_every_steps == 0:
                    self._save(f"step-{state.step:06d}", state, run)
                self._save("last", state, run)
                bar.update(1)
                bar.set_postfix(_postfix(record, cfg.best_metric))
        finally:
            bar.close()
            if writer is not None:
                writer.close()
        barrier(self.group)  # rank 0's last checkpoint is written before anyone reads one
        if cfg.restore_best and state.done and state.best_epoch not in (None, state.epoch):
            self._restore_weights("best")
        self.model.eval()
        return state

    def _train_epoch(
        self,
        state: TrainState,
        run: _Run,
        X: torch.Tensor,
        extra: torch.Tensor | None,
        B: int,
        n_batches: int,
    ) -> None:
        """One pass over the rows in a seeded order, from micro-batch ``state.batch_in_epoch`` on."""
        cfg = self.config
        if run.epoch_gen_state is None:  # a fresh epoch; a mid-epoch resume replays the stored order
            run.epoch_gen_state = run.batch_gen.get_state()
        else:
            run.batch_gen.set_state(run.epoch_gen_state)
        perm = torch.randperm(X.shape[0], generator=run.batch_gen)
        self.model.train()
        run.optimizer.zero_grad(set_to_none=True)
        group = self.group
        for b in range(state.batch_in_epoch, n_batches):
            idx = perm[b * B : (b + 1) * B if b + 1 < n_batches else X.shape[0]]  # the global batch
            mine = torch.from_numpy(shard(idx.numpy(), group))  # this rank's contiguous slice of it
            share = len(mine) / len(idx)  # the rank's part of the global mean
            window_start = (b // cfg.grad_accum) * cfg.grad_accum
            window = min(cfg.grad_accum, n_batches - window_start)  # micro-batches in this optimiser step
            with self._autocast():
                loss, logs = self._loss_module(
                    X[mine], extra[mine] if extra is not None else None, run.aux_gen
                )
            # DDP averages gradients over ranks: weighting each rank's mean by its share of the rows makes
            # the result the gradient of the global batch's mean loss
            if group.enabled:
                (loss * (share * group.world_size / window)).backward()
            else:
                (loss / window).backward()
            codes = logs.pop("codes", None)
            if group.enabled:  # the logged means of the global batch, and its codes
                keys = sorted(logs)
                logs = dict(
                    zip(keys, all_sum([logs[k] * share for k in keys], group, self.device), strict=True)
                )
                codes = gather_rows(codes, group)[0] if codes is not None else None
            if codes is not None:
                if run.epoch_codes is None:
                    run.epoch_codes = torch.full((X.shape[0], codes.shape[1]), -1, dtype=torch.long)
                run.epoch_codes[idx] = codes.detach().to("cpu", torch.long)
            _accumulate(state.epoch_sums, logs)
            if b + 1 == window_start + window:
                self._optimizer_step(state, run)
                state.batch_in_epoch = b + 1
                if cfg.save_every_steps and state.step % cfg.save_every_steps == 0 and b + 1 < n_batches:
                    self._save(f"step-{state.step:06d}", state, run)

    def _optimizer_step(self, state: TrainState, run: _Run) -> None:
        """Set the scheduled lr, clip the global grad norm (logging it before and after), step."""
        cfg = self.config
        lr = self._lr(state.step, run.total_steps)
        for g in run.optimizer.param_groups:
            g["lr"] = lr
        before = float(torch.nn.utils.get_total_norm([p.grad for p in run.params if p.grad is not None]))
        after = before
        if cfg.clip_grad_norm > 0:
            torch.nn.utils.clip_grads_with_norm_(run.params, cfg.clip_grad_norm, torch.tensor(before))
            after = before * min(
                1.0, cfg.clip_grad_norm / (before + 1e-6)
            )  # the factor clip_grad_norm_ applies
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        _accumulate(
            state.epoch_sums, {"grad_norm_before": before, "grad_norm_after": after, "lr": lr, "n_steps": 1}
        )
        state.epoch_sums["grad_norm_max"] = max(state.epoch_sums.get("grad_norm_max", 0.0), before)

    # -- pieces ---------------------------------------------------------------------------------------
    def _autocast(self) -> torch.autocast:
        device_type = torch.device(self.device).type
        return torch.autocast(
            device_type,
            dtype=torch.bfloat16,
            enabled=resolve_precision(self.config.precision, self.device) == "bf16",
        )

    def _optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        cfg = self.config
        klass = torch.optim.Adagrad if cfg.optimizer == "adagrad" else torch.optim.AdamW
        try:  # the fused kernels are several times faster for many small tensors (CPU and CUDA)
            return klass(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True)
        except (RuntimeError, TypeError):  # an older torch or a device without them
            return klass(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def _lr(self, step: int, total: int) -> float:
        """Learning rate of optimiser step ``step`` (0-based): linear warmup, then cosine or constant."""
        cfg = self.config
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return cfg.lr
        progress = decay_progress(step, cfg.warmup_steps, total)
        cos = 0.5 * (1.0 + math.cos(math.pi * progress))
        return cfg.lr * (cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cos)

    def _epoch_record(
        self,
        state: TrainState,
        run: _Run,
        X: torch.Tensor,
        extra: torch.Tensor | None,
        n_batches: int,
        seconds: float,
    ) -> dict[str, Any]:
        sums = state.epoch_sums
        n_steps = max(sums.get("n_steps", 1.0), 1.0)
        record: dict[str, Any] = {"epoch": state.epoch, "step": state.step}
        for k, v in sums.items():
            if k in ("n_steps", "grad_norm_max"):
                continue
            per_step = k.startswith("grad_norm") or k == "lr"
            record[k] = v / (n_steps if per_step else n_batches)
        record["grad_norm_max"] = sums.get("grad_norm_max", 0.0)
        record["train_s"] = seconds
        if state.epoch % self.config.eval_every == 0 or state.epoch >= self.config.epochs:
            t = time.perf_counter()
            with self._autocast():
                record.update(self.model.evaluate(X, extra))
            record["eval_s"] = time.perf_counter() - t
        elif run.epoch_codes is not None and hasattr(self.model, "code_metrics"):
            codes = run.epoch_codes.numpy()
            record.update(self.model.code_metrics(codes[(codes >= 0).all(1)]))
        return record

    def _log(self, record: dict[str, Any], writer: Any) -> None:
        if self.run_dir is not None and self._writes:
            with open(self.run_dir / METRICS_NAME, "a") as f:
                f.write(json.dumps(record, sort_keys=True) + "\n")
        if writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("epoch", "step"):
                    writer.add_scalar(k, v, record["epoch"])
            writer.flush()

    def _tensorboard(self) -> Any:
        if self.run_dir is None or not self.config.tensorboard or not self._writes:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional (the `rec` extra)
            return None
        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))

    def _truncate_metrics(self, epoch: int) -> None:
        """Drop metric lines a killed run wrote after its last checkpoint (they will be written again)."""
        path = self.run_dir / METRICS_NAME  # type: ignore[operator]
        keep = [r for r in read_metrics_file(path) if r.get("epoch", 0) <= epoch]
        with atomic_path(path) as tmp:
            tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))

    @staticmethod
    def _data_fingerprint(X: torch.Tensor, extra: torch.Tensor | None) -> str:
        arrays = {"X": X.detach().cpu().numpy()}
        if extra is not None:
            arrays["extra"] = extra.detach().cpu().numpy()
        return fingerprint_arrays(arrays)

    # -- checkpoints ----------------------------------------------------------------------------------
    def _save(self, name: str, state: TrainState, run: _Run) -> None:
        if self.run_dir is None or not self._writes:
            return
        from safetensors.torch import save_file

        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        opt = run.optimizer.state_dict()
        opt_meta: dict[str, Any] = {"param_groups": opt["param_groups"], "scalars": {}}
        for pid, pstate in opt["state"].items():
            for key, val in pstate.items():
                if isinstance(val, torch.Tensor):
                    tensors[f"optim.{pid}.{key}"] = val.detach().cpu().contiguous()
                else:
                    opt_meta["scalars"][f"{pid}.{key}"] = val
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.batch"] = run.batch_gen.get_state()
        tensors["rng.aux"] = run.aux_gen.get_state()
        if state.batch_in_epoch and run.epoch_gen_state is not None:  # mid-epoch: the order of this epoch
            tensors["rng.epoch"] = run.epoch_gen_state
            if run.epoch_codes is not None:  # and the codes assigned so far, for the epoch's health metrics
                tensors["epoch_codes"] = run.epoch_codes
        meta = {
            "config": self.run_config,
            "state": asdict(state),
            "optimizer": opt_meta,
            "data_fingerprint": run.data_fp,
            "seed": self.seed,
        }
        with atomic_path(self.run_dir / "checkpoints" / name, is_dir=True, replaceable=lambda _: True) as tmp:
            save_file(tensors, str(tmp / STATE_NAME))
            (tmp / TRAINER_NAME).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")

    def _load(self, resume: str | os.PathLike, run: _Run) -> TrainState:
        from safetensors.torch import load_file

        path = checkpoint_path(resume)
        meta = read_checkpoint_meta(path)
        if meta.get("data_fingerprint") != run.data_fp:
            raise SemidError(
                f"{path}: this run was trained on other data (fingerprint {meta.get('data_fingerprint')}, "
                f"given data {run.data_fp}); resume with the same embeddings"
            )
        tensors = load_file(str(path / STATE_NAME))
        model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            self.model.load_state_dict(model_state, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise SemidError(f"{path}: checkpoint does not fit this model ({first})") from None
        opt_meta = meta["optimizer"]
        opt_state: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, key = k.split(".", 2)
                opt_state.setdefault(int(pid), {})[key] = v
        for k, v in opt_meta["scalars"].items():
            pid, key = k.split(".", 1)
            opt_state.setdefault(int(pid), {})[key] = v
        run.optimizer.load_state_dict({"state": opt_state, "param_groups": opt_meta["param_groups"]})
        torch.set_rng_state(tensors["rng.torch"])
        run.batch_gen.set_state(tensors["rng.batch"])
        run.aux_gen.set_state(tensors["rng.aux"])
        run.epoch_gen_state = tensors.get("rng.epoch")
        run.epoch_codes = tensors.get("epoch_codes")
        if self.run_dir is None:
            self.run_dir = path.parent.parent
        return TrainState(**meta["state"])

    def _restore_weights(self, name: str) -> None:
        from safetensors.torch import load_file

        tensors = load_file(str(self.run_dir / "checkpoints" / name / STATE_NAME))  # type: ignore[operator]
        self.model.load_state_dict(
            {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
        )


def resolve_precision(precision: str, device: str) -> str:
    """``"auto"`` -> ``"bf16"`` where bfloat16 matmuls are native and fast on ``device``, else ``"fp32"``."""
    if precision != "auto":
        return precision
    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if kind == "cpu":
        try:  # private but stable probes; an older torch without them gets fp32
            native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        except AttributeError:
            native = False
        return "bf16" if native else "fp32"
    return "fp32"


def checkpoint_path(resume: str | os.PathLike, *, recover: bool = False) -> Path:
    """A checkpoint directory from a run directory (its ``checkpoints/last``) or a checkpoint itself.

    A ``last`` that a killed checkpoint swap left moved aside is found there; ``recover=True`` (the resuming
    process only) also renames it back, otherwise nothing on disk changes.
    """
    path = Path(resume)
    if (path / TRAINER_NAME).is_file():
        return path
    last = path / "checkpoints" / "last"
    last = finish_interrupted_swap(last) if recover else swapped_aside(last)
    if (last / TRAINER_NAME).is_file():
        return last
    if not path.exists():
        raise SemidError(f"{path}: no such run directory to resume")
    raise SemidError(
        f"{path}: no checkpoint to resume (expected {TRAINER_NAME} or checkpoints/last/{TRAINER_NAME})"
    )


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The ``trainer.json`` of a checkpoint (run config, state, data fingerprint)."""
    path = checkpoint_path(path)
    try:
        return json.loads((path / TRAINER_NAME).read_text())
    except json.JSONDecodeError as e:
        raise SemidError(f"{path / TRAINER_NAME} line {e.lineno}: invalid JSON ({e.msg})") from None


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-epoch records of ``run_dir/metrics.jsonl``."""
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        raise SemidError(f"{path}: no such metrics file")
    return read_metrics_file(path)


def _accumulate(sums: dict[str, float], logs: dict[str, float]) -> None:
    for k, v in logs.items():
        sums[k] = sums.get(k, 0.0) + float(v)


def _postfix(record: dict[str, Any], best_metric: str) -> dict[str, str]:
    keys = ["loss", "recon_loss", "unique_share", best_metric]
    return {k: f"{record[k]:.4g}" for k in dict.fromkeys(keys) if isinstance(record.get(k), (int, float))}


def _seed64(seed: int | None, stream: int) -> int:
    """Independent 63-bit seeds for separate random streams derived from one user seed."""
    ss = np.random.SeedSequence(None if seed is None else int(seed), spawn_key=(stream,))
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))
