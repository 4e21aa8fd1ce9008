"""Training shared by SASRec and TIGER: AdamW, warmup then decay, validation each epoch, checkpoints.

    data = RecData.from_dataset(load_dataset("data/beauty"), read_ids("ids.parquet"))
    model, result = fit("tiger", data, "runs/tiger")                 # paper config, until early stopping
    model, result = fit("tiger", data, "runs/tiger", resume=True)    # continue a stopped run

Every prefix of every training sequence is a target (TIGER: one example per prefix; SASRec: windows that
predict at every position). Batches group examples of equal history length, so almost nothing is padded.
After each epoch the model is evaluated on the validation targets (Recall/NDCG@5/10, full ranking); the
best NDCG@10 so far is saved, and ``patience`` epochs without improvement stop the run.

What a run directory holds (each file written atomically)::

    run_dir/config.json             model type, model config, training config, data summary
    run_dir/model.safetensors       the best weights so far (by validation NDCG@10)
    run_dir/items.parquet           the item universe (ids, titles, Semantic IDs) ...
    run_dir/sequences.parquet       ... and the users' sequences: evaluation needs nothing else
    run_dir/metrics.jsonl           one JSON object per epoch (loss, lr, validation metrics, speed)
    run_dir/tensorboard/            the same scalars, when tensorboard is installed
    run_dir/checkpoints/last/       state.safetensors (weights, optimizer tensors, RNG) + trainer.json

Checkpoints are written after every epoch and when a run stops early (time or step limit, mid-epoch
included). Batch order depends only on ``(seed, epoch)`` and the torch RNG state is saved, so a resumed run
continues exactly as the uninterrupted one would have (same machine, same threads).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from semid._outputs import check_output
from semid._utils import (
    atomic_path,
    bf16_is_fast,
    decay_progress,
    fingerprint_arrays,
    finish_interrupted_swap,
    resolve_device,
    swapped_aside,
)
from semid.data import Sequences
from semid.errors import SemidError
from semid.rec.data import (
    ITEMS_NAME,
    SEQUENCES_NAME,
    Examples,
    RecData,
    collate,
    history_examples,
    length_batches,
    prefix_examples,
    window_examples,
)
from semid.rec.evaluate import KS, EvalResult, evaluate, evaluate_most_popular
from semid.rec.sasrec import SASRec, SASRecConfig
from semid.rec.tiger import TIGER, TIGERConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
METRICS_NAME = "metrics.jsonl"
STATE_NAME = "state.safetensors"
TRAINER_NAME = "trainer.json"
EMBEDDINGS_NAME = "item_embeddings.parquet"
LAST = Path("checkpoints") / "last"
MODELS: dict[str, tuple[type[nn.Module], type]] = {
    "sasrec": (SASRec, SASRecConfig),
    "tiger": (TIGER, TIGERConfig),
}
SCHEDULES = ("cosine", "linear", "constant")
AUTOCAST = ("auto", "bf16", "off")
SELECT_BY = "ndcg@10"  # the validation metric that picks the best epoch and drives early stopping
# Options that may change when a run is resumed: they say how long and where to run, not what to learn.
RESUMABLE = {
    "epochs",
    "max_minutes",
    "max_steps",
    "device",
    "num_threads",
    "progress",
    "tensorboard",
    "eval_batch_size",
}


@dataclass
class TrainConfig:
    """How to train. :func:`default_train_config` gives each model's defaults."""

    epochs: int = 200  # an upper bound: early stopping usually ends the run sooner
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0  # AdamW decay of weight matrices and embeddings (never of biases and norms)
    warmup_steps: int = 200  # linear warmup from 0, in optimizer steps
    # after warmup: "cosine" or "linear" decay to lr * min_lr_ratio at the last epoch, or "constant"
    schedule: str = "cosine"
    min_lr_ratio: float = 0.05
    clip_grad_norm: float = 1.0  # 0 disables clipping
    patience: int = 10  # validations without a better NDCG@10 before stopping; 0 = never stop early
    eval_every: int = 1  # epochs between validations
    valid_users: int = 0  # validate on a fixed random subset of this many users (0 = all) to save time
    eval_batch_size: int = 256
    # stop (validated and saved) after this much training time in all, over every session of a resumed run
    # (raise it when resuming to train longer); the learning-rate decay then follows the time budget too,
    # so a run cut by the clock still ends at the low rate. 0 = no limit
    max_minutes: float = 0.0
    max_steps: int = 0  # stop after this many optimizer steps in all; 0 = no limit
    # TIGER only: each epoch keeps the example whose target is item t (0-based, so t >= 1) of a training
    # sequence of n items with probability (t / (n - 1)) ** target_bias, so the last target is always kept
    # and early ones are seen less often (target sampling biased to recent items, as GenPAS, arXiv
    # 2509.13648). 0 = every prefix every epoch (the paper's recipe). Epochs get shorter, and patience
    # counts validations, so under max_minutes give patience=0 (bench/results/beauty_rec_tiger_tb1.txt). On
    # Beauty, 1 matched 0 on validation but lost 13% test NDCG@10 (beauty_rec_tiger_tb1_p0.txt)
    target_bias: float = 0.0
    # "bf16" autocast of the forward pass, "off", or "auto": bf16 where it is fast (CUDA, AVX512-BF16/AMX CPUs)
    autocast: str = "auto"
    device: str = "auto"  # "auto", "cpu", "cuda" or "mps"
    num_threads: int = 2  # torch CPU threads (this machine's cores are shared)
    seed: int = 0
    progress: bool = True  # tqdm bars
    tensorboard: bool = True  # also log to run_dir/tensorboard when tensorboard is installed

    def validate(self) -> None:
        """Reject bad values with one line quoting them."""
        for name, low in (
            ("epochs", 1),
            ("batch_size", 1),
            ("warmup_steps", 0),
            ("patience", 0),
            ("eval_every", 1),
            ("valid_users", 0),
            ("eval_batch_size", 1),
            ("max_steps", 0),
            ("num_threads", 1),
            ("seed", 0),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise SemidError(f"{name}={v!r} should be an integer >= {low}")
        for name, low, high in (
            ("lr", 0.0, math.inf),
            ("weight_decay", 0.0, math.inf),
            ("min_lr_ratio", 0.0, 1.0),
            ("clip_grad_norm", 0.0, math.inf),
            ("max_minutes", 0.0, math.inf),
            ("target_bias", 0.0, math.inf),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v <= high:
                raise SemidError(f"{name}={v!r} should be a number in [{low:g}, {high:g}]")
        if self.lr <= 0:
            raise SemidError(f"lr={self.lr!r} should be > 0")
        if self.schedule not in SCHEDULES:
            raise SemidError(f"schedule={self.schedule!r} is not one of {', '.join(map(repr, SCHEDULES))}")
        if self.autocast not in AUTOCAST:
            raise SemidError(f"autocast={self.autocast!r} is not one of {', '.join(map(repr, AUTOCAST))}")
        resolve_device(self.device)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_train_config(model_type: str, **changes: Any) -> TrainConfig:
    """Each model's training defaults (what the CLI uses), with ``changes`` applied."""
    if model_type == "sasrec":
        base = TrainConfig(batch_size=128, lr=1e-3, warmup_steps=100, patience=10)
    elif model_type == "tiger":
        base = TrainConfig(batch_size=256, lr=1e-3, weight_decay=0.035, warmup_steps=500, patience=5)
    else:
        raise SemidError(f"model {model_type!r} is not one of {', '.join(map(repr, MODELS))}")
    return TrainConfig(**{**base.to_dict(), **changes})


def config_from_dict(cls: type, data: dict[str, Any], *, source: str) -> Any:
    """``cls(**data)`` after checking the keys: an unknown key is an error listing the known ones."""
    if not isinstance(data, dict):
        raise SemidError(f"{source}: expected a mapping of option names to values, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SemidError(f"{source}: unknown option {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return cls(**data)


def read_config_file(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """A JSON (or, with PyYAML, YAML) run config: ``{"model": {...}, "train": {...}}``, both sections optional.

    ``model`` holds :class:`~semid.rec.sasrec.SASRecConfig` / :class:`~semid.rec.tiger.TIGERConfig` options,
    ``train`` :class:`TrainConfig` options; anything else is an error naming it.
    """
    from semid._utils import read_config_file as read_mapping

    data = read_mapping(path)
    if not isinstance(data, dict):
        raise SemidError(f"{path}: expected a mapping with 'model' and/or 'train' sections")
    unknown = sorted(set(data) - {"model", "train"})
    if unknown:
        raise SemidError(f"{path}: unknown section {unknown[0]!r} (expected 'model' and/or 'train')")
    for section in ("model", "train"):
        if not isinstance(data.get(section, {}), dict):
            raise SemidError(f"{path}: section {section!r} should be a mapping of options to values")
    return {"model": dict(data.get("model") or {}), "train": dict(data.get("train") or {})}


# --------------------------------------------------------------------------------------------------------
# Models: build, save, load
# --------------------------------------------------------------------------------------------------------


def build_model(model_type: str, data: RecData, **overrides: Any) -> nn.Module:
    """A fresh model for ``data``: the paper defaults, the data's sizes, then ``overrides``."""
    if model_type not in MODELS:
        raise SemidError(f"model {model_type!r} is not one of {', '.join(map(repr, MODELS))}")
    klass, config_cls = MODELS[model_type]
    fixed = {"n_items": data.n_items}
    if model_type == "tiger":
        if data.codes is None:
            raise SemidError("TIGER needs the items' Semantic IDs: give --ids ids.parquet")
        fixed["codebook_sizes"] = [int(c) + 1 for c in data.codes.max(axis=0)]
        given = overrides.get("codebook_sizes")
        if given is not None:  # wider vocabularies are fine (e.g. the quantizer's K), narrower ones are not
            if len(given) != len(fixed["codebook_sizes"]) or any(
                g < f for g, f in zip(given, fixed["codebook_sizes"], strict=True)
            ):
                raise SemidError(
                    f"codebook_sizes={given} do not fit the IDs (levels need at least {fixed['codebook_sizes']})"
                )
            fixed["codebook_sizes"] = list(given)
    for key in ("n_items",):
        if key in overrides and overrides[key] != fixed[key]:
            raise SemidError(f"{key}={overrides[key]} does not match the data ({fixed[key]})")
    config = config_from_dict(config_cls, {**overrides, **fixed}, source=f"{model_type} config")
    return klass(config, data.codes) if model_type == "tiger" else klass(config)


def save_model(model: nn.Module, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (``model_type``, ``model`` config, plus ``extra``)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp))
    _write_config(directory, model, extra or {})
    return directory


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a run (or model) directory."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise SemidError(f"{path}: no such file (is {directory} a semid run directory?)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SemidError(f"{path} line {e.lineno}: invalid JSON ({e.msg})") from None
    if config.get("model_type") not in MODELS:
        raise SemidError(f"{path}: unknown model_type {config.get('model_type')!r}")
    return config


def _model_from(
    model_type: str, model_config: dict[str, Any], tensors: dict[str, torch.Tensor], where: Path
) -> nn.Module:
    klass = MODELS[model_type][0]
    try:
        return klass.from_state(model_config, tensors)  # type: ignore[attr-defined]
    except (RuntimeError, TypeError) as e:
        first = str(e).strip().splitlines()[0]
        raise SemidError(f"{where}: weights do not fit the config ({first})") from None


def load_model(directory: str | os.PathLike, device: str = "cpu") -> nn.Module:
    """The model saved in ``directory`` (the best weights of a run), in eval mode on ``device``."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config = read_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise SemidError(f"{weights}: no such file (the run has not finished an epoch yet)")
    try:
        tensors = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise SemidError(f"{weights}: cannot read weights ({e})") from None
    model = _model_from(config["model_type"], config["model"], tensors, weights)
    return model.to(resolve_device(device)).eval()


# --------------------------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------------------------


@dataclass
class TrainState:
    """Where a run stands; what a checkpoint restores."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    batch_in_epoch: int = 0  # batches of the current epoch already done (mid-epoch checkpoints)
    loss_sum: float = 0.0  # running sum of the current epoch's batch losses
    best_value: float | None = None  # best validation NDCG@10
    best_epoch: int | None = None
    best_metrics: dict[str, float] = field(default_factory=dict)
    bad_evals: int = 0  # validations since the last improvement
    early_stopped: bool = False
    seconds: float = 0.0  # training wall time over all sessions


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


def training_examples(model: nn.Module, data: RecData) -> Examples:
    """The training examples ``model`` learns from: windows (SASRec) or every prefix (TIGER)."""
    make = window_examples if model.example_kind == "windows" else prefix_examples
    return make(data.split.train, data.user_keys, model.max_history)


def split_examples(model: nn.Module, data: RecData, split: str = "test") -> Examples:
    """One example per user: the validation (``"valid"``) or test (``"test"``) target after its history."""
    s = data.split
    if split == "valid":
        return history_examples(s.train, s.valid_target, data.user_keys, model.max_history)
    if split == "test":
        return history_examples(s.test_history, s.test_target, data.user_keys, model.max_history)
    raise SemidError(f"split={split!r} is not one of 'valid', 'test'")


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


def _data_fingerprint(data: RecData) -> str:
    arrays = {"offsets": data.sequences.offsets, "items": data.sequences.items}
    if data.codes is not None:
        arrays["codes"] = data.codes
    return fingerprint_arrays(arrays)


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
    device = resolve_device(config.device)
    if device == "cpu":
        torch.set_num_threads(config.num_threads)
    use_bf16 = config.autocast == "bf16" or (config.autocast == "auto" and bf16_is_fast(device))
    autocast = (
        (lambda: torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16))
        if use_bf16
        else nullcontext
    )
    data_fp = _data_fingerprint(data)
    examples = training_examples(model, data)
    if len(examples) == 0:
        raise SemidError("no training examples: every training sequence has a single item")
    valid = split_examples(model, data, "valid")
    if config.valid_users and config.valid_users < len(valid):
        pick = np.sort(
            np.random.default_rng([config.seed, 7]).choice(len(valid), config.valid_users, replace=False)
        )
        valid = valid.take(pick)
    keep = np.ones(len(examples))
    if config.target_bias:
        if model.example_kind != "prefixes":
            raise SemidError(f"target_bias applies to TIGER's prefix examples, not to {type(model).__name__}")
        keep = target_keep_probability(examples, data.split.train, config.target_bias)
    n_batches = math.ceil(keep.sum() / config.batch_size)  # expected batches per epoch
    total_steps = config.epochs * n_batches

    model.to(device)
    optimizer = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.98))
    state = TrainState()
    if resume:
        state = _load_checkpoint(run_dir, model, optimizer, config, data_fp)
    else:
        check_new_run_dir(run_dir)
        torch.manual_seed(config.seed)
        data.save(run_dir)
        (run_dir / METRICS_NAME).unlink(missing_ok=True)
    extra = {"train": config.to_dict(), "data_fingerprint": data_fp}
    if notes:
        extra["data"] = notes
    _write_config(run_dir, model, extra)  # the latest session's training config (notes are kept)

    writer = _tensorboard(run_dir) if config.tensorboard else None
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    seconds_before = state.seconds

    def seconds_so_far() -> float:  # training time of the run, over all its sessions
        return seconds_before + time.perf_counter() - start

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
        rng = np.random.default_rng([config.seed, state.epoch])
        if config.target_bias:
            kept = np.flatnonzero(rng.random(len(examples)) < keep)  # this epoch's examples
            batches = [kept[b] for b in length_batches(examples.lengths[kept], config.batch_size, rng)]
        else:
            batches = length_batches(examples.lengths, config.batch_size, rng)
        bar = tqdm(
            batches[state.batch_in_epoch :],
            desc=f"epoch {state.epoch + 1}/{config.epochs}",
            total=len(batches),
            initial=state.batch_in_epoch,
            disable=not config.progress,
            leave=False,
            unit="batch",
        )
        epoch_start, n_seen = time.perf_counter(), 0
        for idx in bar:
            lr = _lr_at(state.step, total_steps, config, seconds_so_far())
            for group in optimizer.param_groups:
                group["lr"] = lr
            loss = train_step(
                model, optimizer, collate(examples, idx, device), autocast, config.clip_grad_norm
            )
            state.step += 1
            state.batch_in_epoch += 1
            state.loss_sum += loss.item()
            n_seen += len(idx)
            bar.set_postfix(
                loss=f"{state.loss_sum / state.batch_in_epoch:.4f}", lr=f"{lr:.2e}", refresh=False
            )
            if config.max_steps and state.step >= config.max_steps:
                stopped = "max_steps"
            elif config.max_minutes and seconds_so_far() >= 60 * config.max_minutes:
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
        complete = state.batch_in_epoch == len(batches)
        if complete:
            state.epoch += 1
            state.batch_in_epoch, state.loss_sum = 0, 0.0
        else:
            record["partial"] = True  # stopped mid-epoch; a resumed run finishes this epoch
        if stopped or (complete and (state.epoch % config.eval_every == 0 or state.epoch == config.epochs)):
            res = evaluate(
                model,
                valid,
                batch_size=config.eval_batch_size,
                device=device,
                progress=config.progress,
                desc="validate",
            )
            record.update({f"valid/{k}": v for k, v in res.metrics.items()})
            record["valid/users_per_s"] = round(res.users_per_s, 1)
            value = res.metrics[SELECT_BY]
            if state.best_value is None or value > state.best_value:
                state.best_value, state.best_epoch, state.best_metrics = value, record["epoch"], res.metrics
                state.bad_evals = 0
                save_model(model, run_dir, extra)
            elif complete:
                state.bad_evals += 1
                if config.patience and state.bad_evals >= config.patience:
                    state.early_stopped = True
        state.seconds = seconds_so_far()
        record["seconds"] = round(state.seconds, 1)
        _log(run_dir, record, writer)
        history.append(record)
        _save_checkpoint(run_dir, model, optimizer, state, config, data_fp)
        if config.progress:
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


def _write_config(run_dir: Path, model: nn.Module, extra: dict[str, Any]) -> None:
    path = run_dir / CONFIG_NAME
    old = json.loads(path.read_text()) if path.is_file() else {}
    config = {**old, **extra, "model_type": model.model_type, "model": model.config.to_dict()}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


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


# What a run directory holds; a directory with anything else in it is not a run's and is never written into.
RUN_FILES = frozenset(
    {CONFIG_NAME, WEIGHTS_NAME, METRICS_NAME, EMBEDDINGS_NAME, "checkpoints", "tensorboard"}
    | {ITEMS_NAME, SEQUENCES_NAME}
)


def check_new_run_dir(run_dir: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Refuse to start a run where it would overwrite something: a run (resume it instead), a file, a
    directory holding files a run does not write, one of ``inputs``, or a folder the user cannot write in.
    A directory left by a run killed before its first checkpoint holds only run files and is reused."""
    run_dir = Path(run_dir)
    if swapped_aside(run_dir / LAST).exists():
        raise SemidError(f"{run_dir} already holds a run; resume it (--resume) or choose another directory")
    check_output(
        run_dir,
        is_dir=True,
        inputs=inputs,
        replaceable=lambda d: all(p.name in RUN_FILES for p in d.iterdir()),
        what="a run directory",
    )


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl`` (empty if there are none)."""
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------------


def _save_checkpoint(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    config: TrainConfig,
    data_fp: str,
) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for pid, pstate in opt["state"].items():
        for key, val in pstate.items():
            if isinstance(val, torch.Tensor):
                tensors[f"optim.{pid}.{key}"] = val.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{key}"] = val
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {
        "model_type": model.model_type,
        "model": model.config.to_dict(),
        "train": config.to_dict(),
        "state": asdict(state),
        "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars},
        "data_fingerprint": data_fp,
    }
    with atomic_path(run_dir / LAST, is_dir=True, replaceable=lambda _: True) as tmp:
        save_file(tensors, str(tmp / STATE_NAME))
        (tmp / TRAINER_NAME).write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def read_checkpoint(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The ``trainer.json`` of ``run_dir``'s last checkpoint (model type and config, train config, state)."""
    path = swapped_aside(Path(run_dir) / LAST) / TRAINER_NAME
    if not path.is_file():
        raise SemidError(f"{Path(run_dir)}: no checkpoint to resume ({path} is missing)")
    return json.loads(path.read_text())


def _load_checkpoint(
    run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, config: TrainConfig, data_fp: str
) -> TrainState:
    from safetensors.torch import load_file

    meta = read_checkpoint(run_dir)
    where = run_dir / LAST
    if meta["model_type"] != model.model_type or meta["model"] != model.config.to_dict():
        raise SemidError(
            f"{where}: the checkpoint holds another model ({meta['model_type']}, {meta['model']})"
        )
    if meta["data_fingerprint"] != data_fp:
        raise SemidError(f"{where}: the run was trained on other data; resume with the same data and IDs")
    for key, old in meta["train"].items():
        new = getattr(config, key, None)
        if key not in RESUMABLE and new != old:
            raise SemidError(
                f"{where}: the run was trained with {key}={old!r}, not {new!r}; resume with the same config"
            )
    tensors = load_file(str(where / STATE_NAME))
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    opt_state: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, key = k.split(".", 2)
            opt_state.setdefault(int(pid), {})[key] = v
    for k, v in meta["optimizer"]["scalars"].items():
        pid, key = k.split(".", 1)
        opt_state.setdefault(int(pid), {})[key] = v
    optimizer.load_state_dict({"state": opt_state, "param_groups": meta["optimizer"]["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    _truncate_metrics(run_dir, meta["state"]["step"])
    return TrainState(**meta["state"])


def _truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop metrics records written after the checkpoint (a run killed between the two writes)."""
    records = [r for r in read_metrics(run_dir) if r.get("step", 0) <= step]
    with atomic_path(run_dir / METRICS_NAME) as tmp:
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


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
        export_item_embeddings(model, data, Path(run_dir) / EMBEDDINGS_NAME)
    return model, result


def export_item_embeddings(model: SASRec, data: RecData, path: str | os.PathLike) -> Path:
    """Write SASRec's item vectors as an embeddings file (``item_id`` + ``embedding``), e.g. for an RQ-VAE."""
    from semid.embed.store import write_embeddings

    return write_embeddings(path, data.item_ids.astype(str), model.item_embeddings())


def _checkpoint_weights(run_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors = load_file(str(Path(run_dir) / LAST / STATE_NAME))
    return {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}


def evaluate_run(
    run_dir: str | os.PathLike,
    split: str = "test",
    *,
    device: str = "cpu",
    batch_size: int = 256,
    beam_size: int | None = None,
    constrained: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Test (or validation) metrics of a run's best model next to the most-popular baseline."""
    device = resolve_device(device)
    model = load_model(run_dir, device=device)
    data = RecData.load(run_dir)
    examples = split_examples(model, data, split)
    options: dict[str, Any] = {}
    if isinstance(model, TIGER):
        options = {"beam_size": beam_size, "constrained": constrained}
    elif beam_size is not None or not constrained:
        raise SemidError("beam size and unconstrained decoding apply to TIGER runs only")
    res: EvalResult = evaluate(
        model, examples, batch_size=batch_size, device=device, progress=progress, **options
    )
    s = data.split
    history = s.train if split == "valid" else s.test_history
    popular = evaluate_most_popular(history, examples.target, data.n_items, KS)
    return {
        "model_type": model.model_type,
        "split": split,
        "model": res.to_dict(),
        "most_popular": popular,
    }


# --------------------------------------------------------------------------------------------------------
# The demo
# --------------------------------------------------------------------------------------------------------

# A TIGER small enough to learn the demo data in a minute or two on two CPU cores.
DEMO_TIGER = {
    "d_model": 64,
    "n_heads": 4,
    "d_head": 16,
    "d_ff": 256,
    "n_encoder_layers": 2,
    "n_decoder_layers": 2,
    "n_user_tokens": 200,
}


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
