"""Training shared by SASRec and TIGER: AdamW, warmup then decay, validation each epoch, checkpoints.

    data = RecData.from_dataset(load_dataset("data/beauty"), read_ids("ids.parquet"))
    model, result = fit("tiger", data, "runs/tiger")                 # the defaults, until early stopping
    model, result = fit("tiger", data, "runs/tiger", resume=True)    # continue a stopped run

Every prefix of every training sequence is a target (TIGER: one example per prefix; SASRec: windows that
predict at every position). Batches group examples of equal history length, so almost nothing is padded.
After each epoch the model is evaluated on the validation targets (Recall/NDCG@5/10, full ranking); the
best NDCG@10 so far is saved, and ``patience`` epochs without improvement stop the run, counted once
warmup is over: on small data warmup spans many epochs, and a noisy validation set would stop a run that
has not reached its peak rate (a 2+2-layer TIGER on 5% of Beauty's users, 7,036 targets: stopped at epoch
17 of an 18-epoch warmup at validation N@10 0.0101; counted after warmup it went on to 0.0241 at epoch 37,
``bench/scaled_defaults.py``). With
``ema_decay`` a moving average of the weights (:mod:`~semid.rec.ema`) is what is validated and saved,
while training goes on from the trained weights (``ema_select=False``: the trained weights are, and the
average is validated beside them, ``valid_ema/*`` in the log).

Data-parallel: launched with ``torchrun`` (or by Ray Train, :mod:`~semid.rec.ray_train`), the same call
trains on N ranks (:mod:`~semid.rec.distributed`): global batches split over ranks, so N ranks make the
updates of one process; rank 0 writes the run. ``RecData.for_log`` streams the sequences from a
user-sharded Parquet log instead of holding them (:mod:`~semid.rec.stream`).

The parts live in their own modules (all re-exported here): :mod:`~semid.rec.config` (:class:`TrainConfig`,
defaults, run-config files), :mod:`~semid.rec.epochs` (what each epoch reads, in memory or streamed, and
the data-parallel step), :mod:`~semid.rec.io` (build, save and load models; what a run directory holds),
:mod:`~semid.rec.checkpoints` (the checkpointed state, resume) and :mod:`~semid.rec.runs`
(:func:`evaluate_run`). This module holds the training loop, :func:`fit` and the demo.
"""

from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from semid._distributed import all_sum, on_main, rank_device, setup
from semid._distributed import current as current_group
from semid._utils import (
    bf16_is_fast,
    decay_progress,
    finish_interrupted_swap,
    resolve_device,
)
from semid.errors import SemidError
from semid.rec.checkpoints import (  # noqa: F401  (re-exported)
    RUN_FILES,
    TRAINED_FILES,
    TrainState,
    _checkpoint_weights,
    _load_checkpoint,
    _save_checkpoint,
    _truncate_metrics,
    check_new_run_dir,
    read_checkpoint,
    read_metrics,
)
from semid.rec.config import (  # noqa: F401  (re-exported)
    AUTOCAST,
    MODELS,
    RESUMABLE,
    SCHEDULES,
    SELECT_BY,
    TIGER_SMALL_SHAPE,
    TrainConfig,
    config_from_dict,
    default_train_config,
    read_config_file,
)
from semid.rec.data import ITEMS_NAME, LOG_NAME, SEQUENCES_NAME, RecData, data_fingerprint
from semid.rec.ema import WeightAverage
from semid.rec.epochs import (  # noqa: F401  (re-exported)
    EpochPlan,
    LossTerms,
    MemoryPlan,
    StreamPlan,
    data_parallel_step,
    target_keep_probability,
    training_examples,
)
from semid.rec.evaluate import EvalResult, evaluate, evaluate_most_popular
from semid.rec.io import (  # noqa: F401  (re-exported)
    CONFIG_NAME,
    EMBEDDINGS_NAME,
    LAST,
    METRICS_NAME,
    STATE_NAME,
    TRAINER_NAME,
    WEIGHTS_NAME,
    _model_from,
    _write_config,
    build_model,
    export_item_embeddings,
    load_model,
    read_config,
    save_model,
)
from semid.rec.runs import evaluate_run, split_examples  # noqa: F401  (re-exported)
from semid.rec.sasrec import SASRec

# --------------------------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What :func:`train` did."""

    best_epoch: int | None
    best_valid: dict[str, float]  # validation metrics of the best epoch
    epochs: int  # completed epochs
    steps: int
    seconds: float  # wall time of training (all sessions of the run)
    stopped: str  # "epochs", "early_stop", "time" or "max_steps"
    history: list[dict[str, Any]]  # this session's metrics records


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices and embeddings; leave biases, norms and single vectors alone (as nanoGPT does)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Any,
    autocast: Any = nullcontext,
    clip_grad_norm: float = 0.0,
) -> torch.Tensor:
    """One optimizer step on ``batch``: the loss under ``autocast()``, backward, gradient-norm clipping
    (when ``clip_grad_norm > 0``) and ``optimizer.step()``; returns the loss."""
    with autocast():
        loss = model.loss(batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip_grad_norm > 0:
        nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    optimizer.step()
    return loss


def _lr_at(step: int, total: int, config: TrainConfig, seconds: float = 0.0) -> float:
    """The learning rate at ``step`` of ``total``, after ``seconds`` of training.

    With ``max_minutes`` the decay follows whichever is further along, steps or the time budget.
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    time_share = seconds / (60 * config.max_minutes) if config.max_minutes else None
    progress = decay_progress(step, config.warmup_steps, total, time_share)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if config.schedule == "cosine" else 1 - progress
    return config.lr * (config.min_lr_ratio + (1 - config.min_lr_ratio) * shape)


def train(
    model: nn.Module,
    data: RecData,
    config: TrainConfig,
    run_dir: str | os.PathLike,
    *,
    resume: bool = False,
    notes: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` on ``data.split.train`` with validation each epoch; see the module docs.

    On return ``model`` holds the best weights (also in ``run_dir/model.safetensors``). ``resume=True``
    continues from ``run_dir/checkpoints/last`` (same model config and data; only the options in
    :data:`RESUMABLE` may differ). ``notes`` are stored in ``config.json`` under ``"data"``.
    """
    config.validate()
    threads = torch.get_num_threads()
    try:
        return _train(model, data, config, Path(run_dir), resume=resume, notes=notes)
    finally:
        torch.set_num_threads(threads)  # leave the caller's setting as it was


def _train(
    model: nn.Module,
    data: RecData,
    config: TrainConfig,
    run_dir: Path,
    *,
    resume: bool,
    notes: dict[str, Any] | None,
) -> TrainResult:
    group = setup(resolve_device(config.device))
    device = rank_device(resolve_device(config.device), group)
    main = group.is_main
    show = config.progress and main  # bars and per-epoch lines on rank 0 only
    if device == "cpu":
        torch.set_num_threads(config.num_threads)
    use_bf16 = config.autocast == "bf16" or (config.autocast == "auto" and bf16_is_fast(device))
    autocast = (
        (lambda: torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16))
        if use_bf16
        else nullcontext
    )
    stream = data.stream
    data_fp = data_fingerprint(data, stream)
    plan: EpochPlan
    if stream is None:
        plan = MemoryPlan(model, data, config.batch_size, config.seed, config.target_bias, group, device)
        valid = split_examples(model, data, "valid")
        if config.valid_users and config.valid_users < len(valid):
            pick = np.sort(
                np.random.default_rng([config.seed, 7]).choice(len(valid), config.valid_users, replace=False)
            )
            valid = valid.take(pick)
    else:
        if config.target_bias:
            raise SemidError("target_bias needs the sequences in memory; it does not apply to a streamed log")
        plan = StreamPlan(stream, model, config.batch_size, config.seed, group, device)
        valid = stream.eval_examples(
            "valid", model.max_history, max_users=config.valid_users, seed=config.seed
        )
    total_steps = config.epochs * plan.expected_batches

    model.to(device)
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.98))
    ema = WeightAverage(model, config.ema_decay) if config.ema_decay else None
    state = TrainState()
    if resume:
        state = _load_checkpoint(run_dir, model, optimizer, config, data_fp, truncate_metrics=False, ema=ema)
        if stream is not None and state.batch_in_epoch and state.world_size != group.world_size:
            raise SemidError(
                f"{run_dir} stopped mid-epoch on {state.world_size} rank(s) of a streamed log, whose shards "
                f"are dealt per rank: resume it on {state.world_size} rank(s) (now {group.world_size})"
            )
    else:
        torch.manual_seed(config.seed)
    extra = {"train": config.to_dict(), "data_fingerprint": data_fp, "distributed": group.to_dict()}
    if notes:
        extra["data"] = notes

    def prepare_run_dir() -> None:
        if resume:
            _truncate_metrics(run_dir, state.step)
        else:
            check_new_run_dir(run_dir)
            (run_dir / LAST.parent).mkdir(parents=True, exist_ok=True)  # "a run started here"
            # a killed run's files, if any (the folder passed check_new_run_dir): never mixed with this one's
            for name in (METRICS_NAME, *TRAINED_FILES, ITEMS_NAME, SEQUENCES_NAME, LOG_NAME):
                (run_dir / name).unlink(missing_ok=True)
            data.save(run_dir)
        _write_config(run_dir, model, extra)  # the latest session's training config (notes are kept)

    on_main(prepare_run_dir, group)
    state.world_size = group.world_size
    # the step: one process on in-memory data takes train_step's plain mean loss, as it always has; a
    # data-parallel job (or a streamed log, whose batches are per rank) adds sums and counts over ranks
    loss_module: nn.Module | None = None
    if group.enabled:
        from torch.nn.parallel import DistributedDataParallel

        # a different dropout stream per rank; rank 0 keeps the run's own (saved in checkpoints)
        if not main:
            torch.manual_seed(config.seed * 1_000_003 + group.rank * 7_919 + state.step)
        loss_module = DistributedDataParallel(
            LossTerms(model), device_ids=[torch.device(device).index] if device.startswith("cuda") else None
        )
    elif stream is not None:
        loss_module = LossTerms(model)

    writer = _tensorboard(run_dir) if config.tensorboard and main else None
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    seconds_before = state.seconds

    def seconds_so_far() -> float:  # training time of the run, over all its sessions
        return seconds_before + time.perf_counter() - start

    def shared_clock() -> float:  # rank 0's clock on every rank (a collective: every rank calls it)
        return all_sum([seconds_so_far() if main else 0.0], group, device)[0]

    clock = seconds_before  # rank 0's clock at the last step (data-parallel jobs decide by it)

    def validate(desc: str) -> EvalResult:  # the model as it is now, on the validation users (every rank)
        return evaluate(
            model,
            valid,
            batch_size=config.eval_batch_size,
            device=device,
            progress=show,
            desc=desc,
            group=group,
        )

    stopped = ""
    while not stopped:
        if state.early_stopped:
            stopped = "early_stop"
            break
        if state.epoch >= config.epochs:
            stopped = "epochs"
            break
        if config.max_steps and state.step >= config.max_steps:  # e.g. resumed with the same limit
            stopped = "max_steps"
            break
        if config.max_minutes and state.seconds >= 60 * config.max_minutes:  # resumed with the same budget
            stopped = "time"
            break
        model.train()
        n_batches, batches = plan.epoch(state.epoch, state.batch_in_epoch)
        bar = tqdm(
            batches,
            desc=f"epoch {state.epoch + 1}/{config.epochs}",
            total=n_batches,
            initial=state.batch_in_epoch,
            disable=not show,
            leave=False,
            unit="batch",
        )
        epoch_start, n_seen = time.perf_counter(), 0
        for batch, weight in bar:
            lr = _lr_at(
                state.step, total_steps, config, clock if loss_module is not None else seconds_so_far()
            )
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
            if loss_module is None:
                loss = train_step(model, optimizer, batch, autocast, config.clip_grad_norm).item()
                clock, n = seconds_so_far(), len(batch)
            else:
                step = data_parallel_step(
                    loss_module, optimizer, batch, weight, group, device, autocast, config.clip_grad_norm,
                    seconds_so_far(),
                )  # fmt: skip
                loss, clock, n = step.loss, step.clock, step.examples
            if ema is not None:
                ema.update(model, state.step)
            state.step += 1
            state.batch_in_epoch += 1
            state.loss_sum += loss
            n_seen += n
            bar.set_postfix(
                loss=f"{state.loss_sum / state.batch_in_epoch:.4f}", lr=f"{lr:.2e}", refresh=False
            )
            if config.max_steps and state.step >= config.max_steps:
                stopped = "max_steps"
            elif config.max_minutes and clock >= 60 * config.max_minutes:
                stopped = "time"
            if stopped:
                break
        bar.close()
        record: dict[str, Any] = {
            "epoch": state.epoch + 1,
            "step": state.step,
            "lr": lr,
            "loss": state.loss_sum / max(state.batch_in_epoch, 1),
            "examples_per_s": round(n_seen / max(time.perf_counter() - epoch_start, 1e-9), 1),
        }
        complete = state.batch_in_epoch == n_batches
        if complete:
            state.epoch += 1
            state.batch_in_epoch, state.loss_sum = 0, 0.0
        else:
            record["partial"] = True  # stopped mid-epoch; a resumed run finishes this epoch
        if stopped or (complete and (state.epoch % config.eval_every == 0 or state.epoch == config.epochs)):
            selected = ema.applied(model) if ema is not None and config.ema_select else nullcontext()
            with selected:  # validate and save the average (ema_select) or the trained weights
                res = validate("validate")
                value = res.metrics[SELECT_BY]
                better = state.best_value is None or value > state.best_value
                if better:
                    on_main(lambda: save_model(model, run_dir, extra), group)
            record.update({f"valid/{k}": v for k, v in res.metrics.items()})
            record["valid/users_per_s"] = round(res.users_per_s, 1)
            if ema is not None and not config.ema_select:  # the average beside them, only logged
                with ema.applied(model):
                    record.update(
                        {f"valid_ema/{k}": v for k, v in validate("validate (average)").metrics.items()}
                    )
            if better:
                state.best_value, state.best_epoch, state.best_metrics = value, record["epoch"], res.metrics
                state.bad_evals = 0
            elif complete and state.step > config.warmup_steps:  # not while the rate still rises
                state.bad_evals += 1
                if config.patience and state.bad_evals >= config.patience:
                    state.early_stopped = True
        state.seconds = seconds_so_far() if loss_module is None else shared_clock()
        record["seconds"] = round(state.seconds, 1)
        if group.enabled:
            record["world_size"] = group.world_size
        history.append(record)

        def write_epoch(record: dict[str, Any] = record) -> None:
            _log(run_dir, record, writer)
            _save_checkpoint(run_dir, model, optimizer, state, config, data_fp, ema)

        on_main(write_epoch, group)  # also the barrier: no rank runs ahead of a checkpoint being written
        if show:
            shown = {k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in record.items()}
            tqdm.write(" ".join(f"{k}={v}" for k, v in shown.items()))
    if writer is not None:
        writer.close()
    if (run_dir / WEIGHTS_NAME).exists():
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(run_dir / WEIGHTS_NAME), device=device))
    model.eval()
    return TrainResult(
        best_epoch=state.best_epoch,
        best_valid=dict(state.best_metrics),
        epochs=state.epoch,
        steps=state.step,
        seconds=state.seconds,
        stopped=stopped,
        history=history,
    )


def _log(run_dir: Path, record: dict[str, Any], writer: Any) -> None:
    with open(run_dir / METRICS_NAME, "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    if writer is not None:
        for key, value in record.items():
            if (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and key not in ("epoch", "step")
            ):
                writer.add_scalar(key, value, record["step"])
        writer.flush()


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra (semid[rec])
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


# --------------------------------------------------------------------------------------------------------
# One call: build (or restore), train, report
# --------------------------------------------------------------------------------------------------------


def fit(
    model_type: str,
    data: RecData | None,
    run_dir: str | os.PathLike,
    *,
    model_config: dict[str, Any] | None = None,
    train_config: TrainConfig | dict[str, Any] | None = None,
    resume: bool = False,
    notes: dict[str, Any] | None = None,
) -> tuple[nn.Module, TrainResult]:
    """Build a ``model_type`` model for ``data`` and train it into ``run_dir``; or resume that run.

    On resume the model, training config and data come from the run directory (``data`` may be None);
    ``train_config`` may then only change the options in :data:`RESUMABLE`.
    """
    if resume:
        finish_interrupted_swap(Path(run_dir) / LAST)  # a kill mid-swap left the last checkpoint aside
        meta = read_checkpoint(run_dir)
        if meta["model_type"] != model_type:
            raise SemidError(f"{run_dir} holds a {meta['model_type']} run, not {model_type}")
        data = RecData.load(run_dir)
        model = _model_from(model_type, meta["model"], _checkpoint_weights(run_dir), Path(run_dir) / LAST)
        changes = (
            train_config.to_dict() if isinstance(train_config, TrainConfig) else dict(train_config or {})
        )
        bad = sorted(k for k, v in changes.items() if k not in RESUMABLE and v != meta["train"].get(k))
        if bad:
            raise SemidError(
                f"{bad[0]} cannot change when resuming (only {', '.join(sorted(RESUMABLE))} can)"
            )
        config = config_from_dict(TrainConfig, {**meta["train"], **changes}, source="train config")
    else:
        if data is None:
            raise SemidError("no data to train on")
        if isinstance(train_config, TrainConfig):
            config = train_config
        else:
            config = default_train_config(model_type)
            config = config_from_dict(
                TrainConfig, {**config.to_dict(), **(train_config or {})}, source="train config"
            )
        config.validate()
        torch.manual_seed(config.seed)  # the same seed gives the same initial weights
        model = build_model(model_type, data, **(model_config or {}))
    result = train(model, data, config, run_dir, resume=resume, notes=notes)
    if isinstance(model, SASRec):
        on_main(lambda: export_item_embeddings(model, data, Path(run_dir) / EMBEDDINGS_NAME), current_group())
    return model, result


# --------------------------------------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------------------------------------

# A TIGER small enough to learn the demo data in a minute or two on two CPU cores: the small data's shape
# (TIGER_SMALL_SHAPE) with hashed user tokens.
DEMO_TIGER = {**TIGER_SMALL_SHAPE, "n_user_tokens": 200}


def train_demo_tiger(
    dataset: Any,
    ids_table: Any,
    out_dir: str | os.PathLike,
    max_minutes: float = 2.0,
    *,
    seed: int = 0,
    progress: bool = False,
    num_threads: int = 1,
) -> dict[str, Any]:
    """A short TIGER training on ``dataset`` (a :class:`semid.data.Dataset`) with ``ids_table`` (an IdTable).

    Trains a small TIGER (:data:`DEMO_TIGER`) into ``out_dir`` for at most about ``max_minutes`` in all
    (training stops early enough to leave time for the test evaluation), then evaluates it on the test
    targets next to the most-popular baseline. Returns ``{"tiger": test metrics, "most_popular": test
    metrics, "beats_most_popular": bool, "epochs", "train_seconds", "eval_seconds", "users_per_s",
    "run_dir"}``.

    One thread by default: the model is small, and on a machine whose cores are busy with other work two
    OpenMP threads can be ten times slower than one (measured on a shared 2-core VM).
    """
    start = time.perf_counter()
    out_dir = Path(out_dir)
    if (out_dir / CONFIG_NAME).is_file():  # a previous demo run: start over
        import shutil

        shutil.rmtree(out_dir / LAST.parent, ignore_errors=True)
        for name in TRAINED_FILES:
            (out_dir / name).unlink(missing_ok=True)
    data = RecData.from_dataset(dataset, ids_table)
    config = default_train_config(
        "tiger",
        epochs=20,
        batch_size=128,
        lr=2e-3,
        warmup_steps=100,
        patience=3,
        valid_users=min(1000, data.n_users),
        max_minutes=max(0.05, 0.8 * max_minutes - (time.perf_counter() - start) / 60),
        seed=seed,
        progress=progress,
        tensorboard=False,
        num_threads=num_threads,
    )
    model, result = fit("tiger", data, out_dir, model_config=DEMO_TIGER, train_config=config)
    threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        test = evaluate(model, split_examples(model, data, "test"), device=next(model.parameters()).device)
    finally:
        torch.set_num_threads(threads)
    s = data.split
    popular = evaluate_most_popular(s.test_history, s.test_target, data.n_items)
    return {
        "tiger": test.metrics,
        "most_popular": popular,
        "beats_most_popular": test.metrics["ndcg@10"] > popular["ndcg@10"]
        and test.metrics["recall@10"] > popular["recall@10"],
        "epochs": result.epochs,
        "train_seconds": round(result.seconds, 1),
        "eval_seconds": round(test.seconds, 1),
        "users_per_s": round(test.users_per_s, 1),
        "run_dir": str(out_dir),
    }
