"""Checkpoints of a run: the full training state (weights, optimizer, RNG, weight average), saved and restored.

Checkpoints are written after every epoch and when a run stops early (time or step limit, mid-epoch
included). Batch order depends only on ``(seed, epoch)`` and the torch RNG state is saved, so a resumed run
continues exactly as the uninterrupted one would have (same machine, same threads).

Also the run directory's guards and records: :func:`check_new_run_dir` (never overwrite what is not a
run's) and :func:`read_metrics`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from semid._outputs import check_output, holds_only
from semid._utils import atomic_path, read_json_mapping, read_metrics_file, swapped_aside
from semid.errors import SemidError
from semid.rec.config import MODELS, RESUMABLE, TrainConfig
from semid.rec.data import ITEMS_NAME, LOG_NAME, SEQUENCES_NAME, run_model_type
from semid.rec.ema import WeightAverage
from semid.rec.io import (
    CONFIG_NAME,
    EMBEDDINGS_NAME,
    LAST,
    METRICS_NAME,
    STATE_NAME,
    TRAINER_NAME,
    WEIGHTS_NAME,
    read_config,
)


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
    world_size: int = 1  # data-parallel ranks of the session that wrote the checkpoint


# --------------------------------------------------------------------------------------------------------
# Run directories
# --------------------------------------------------------------------------------------------------------

# What a run directory holds; a directory with anything else in it is not a run's and is never written into.
RUN_FILES = frozenset(
    {CONFIG_NAME, WEIGHTS_NAME, METRICS_NAME, EMBEDDINGS_NAME, "checkpoints", "tensorboard"}
    | {ITEMS_NAME, SEQUENCES_NAME, LOG_NAME}
)


TRAINED_FILES = (WEIGHTS_NAME, EMBEDDINGS_NAME)  # what a run writes once it has trained


def check_new_run_dir(run_dir: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = ()) -> None:
    """Refuse to start a run where it would overwrite something: a run (resume it instead), a file, a
    directory holding files a run does not write, one of ``inputs``, or a folder the user cannot write in.
    A directory left by a run killed before its first checkpoint holds only run files and is reused (a run
    makes its ``checkpoints/`` folder first). One that holds trained weights but no ``checkpoints/`` folder
    is a model (shipped, or cleaned of its checkpoints), not a leftover: it is refused."""
    run_dir = Path(run_dir)
    if swapped_aside(run_dir / LAST).exists():
        raise SemidError(f"{run_dir} already holds a run; resume it (--resume) or choose another directory")
    killed = holds_only(RUN_FILES, check=_no_foreign_config)  # a run killed before its first checkpoint
    check_output(run_dir, is_dir=True, inputs=inputs, replaceable=killed, what="a run directory")
    trained = [name for name in TRAINED_FILES if (run_dir / name).exists()]
    if trained and not (run_dir / LAST.parent).is_dir():
        raise SemidError(
            f"{run_dir} holds a trained model ({', '.join(trained)}) and no checkpoint to resume from; "
            "choose another directory or remove it"
        )


def _no_foreign_config(directory: Path) -> bool:
    """No config, or one of our recommenders': a quantizer directory (config.json, model.safetensors,
    metrics.jsonl) holds only run-like names, yet is no run."""
    return not (directory / CONFIG_NAME).exists() or run_model_type(directory) in MODELS


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of ``run_dir/metrics.jsonl`` (empty if there are none; a torn last line is dropped)."""
    return read_metrics_file(Path(run_dir) / METRICS_NAME)


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
    ema: WeightAverage | None = None,
) -> None:
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update(ema.state_dict())
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
    meta = read_json_mapping(path)
    read_config(run_dir)  # resuming rewrites the run's config.json: a damaged one fails now, before any work
    return with_later_options(meta)


# Options added after runs were already being checkpointed, each with the value that trains exactly as runs
# did before it existed: a checkpoint without one resumes with that value. Any other missing option still
# makes the checkpoint "another model": its default may have changed since the checkpoint was written.
ADDED_MODEL_OPTIONS: dict[str, dict[str, Any]] = {"tiger": {"label_smoothing": 0.0}}
ADDED_TRAIN_OPTIONS: dict[str, Any] = {"ema_decay": 0.0, "ema_select": True}


def with_later_options(meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` (a checkpoint's ``trainer.json``) with the options of :data:`ADDED_MODEL_OPTIONS` and
    :data:`ADDED_TRAIN_OPTIONS` it predates filled in, so an older run resumes as it trained."""
    added = ADDED_MODEL_OPTIONS.get(meta.get("model_type"), {})
    if isinstance(meta.get("model"), dict):
        meta["model"] = {**added, **meta["model"]}
    if isinstance(meta.get("train"), dict):
        meta["train"] = {**ADDED_TRAIN_OPTIONS, **meta["train"]}
    return meta


def _load_checkpoint(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    data_fp: str,
    *,
    truncate_metrics: bool = True,
    ema: WeightAverage | None = None,
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
    if ema is not None:
        ema.load_state_dict(tensors, str(where))
    if truncate_metrics:  # a data-parallel run leaves this write to rank 0
        _truncate_metrics(run_dir, meta["state"]["step"])
    return TrainState(**meta["state"])


def _truncate_metrics(run_dir: Path, step: int) -> None:
    """Drop metrics records written after the checkpoint (a run killed between the two writes)."""
    records = [r for r in read_metrics(run_dir) if r.get("step", 0) <= step]
    with atomic_path(run_dir / METRICS_NAME) as tmp:
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def _checkpoint_weights(run_dir: str | os.PathLike) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    tensors = load_file(str(Path(run_dir) / LAST / STATE_NAME))
    return {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
