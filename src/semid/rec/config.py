"""How to train: :class:`TrainConfig`, each model's defaults, and the run-config file that sets them.

    config = default_train_config("tiger", lr=2e-3)         # the TIGER defaults with one change
    sections = read_config_file("run.yaml")                # {"model": {...}, "train": {...}}

:data:`MODELS` names the model types and their config classes; :data:`RESUMABLE` the training options
that may change when a run is resumed.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields
from typing import Any

from torch import nn

from semid._utils import resolve_device
from semid.errors import SemidError
from semid.rec.rpg import RPG, RPGConfig
from semid.rec.sasrec import SASRec, SASRecConfig
from semid.rec.tiger import TIGER, TIGERConfig

MODELS: dict[str, tuple[type[nn.Module], type]] = {
    "sasrec": (SASRec, SASRecConfig),
    "tiger": (TIGER, TIGERConfig),
    "rpg": (RPG, RPGConfig),
}
CODED = ("tiger", "rpg")  # the models that read the items' Semantic IDs (built with ``data.codes``)
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
    # validations without a better NDCG@10 before stopping, counted once warmup is over; 0 = never stop early
    patience: int = 10
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
    # validate and save an exponential moving average of the weights (semid.rec.ema) with this decay, e.g.
    # 0.999 (about the last 1,000 steps); 0 = the trained weights themselves. On Beauty's 73-epoch recipe it
    # led mid-run but not at the end (best validation N@10 1.006x; bench/results/beauty_rec_tiger_fused_3seeds.txt)
    ema_decay: float = 0.0
    # with ema_decay: False keeps validating and saving the trained weights (the run as it would be without the
    # average) and validates the average beside them, logged as valid_ema/*: the average's ablation inside one
    # run (training is the same either way), for a second validation per evaluation (about 7% of a TIGER run)
    ema_select: bool = True
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
            ("ema_decay", 0.0, 1.0),
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not low <= v <= high:
                hint = (
                    "; YAML reads 1e-3 as text: write 1.0e-3" if isinstance(v, str) and _is_number(v) else ""
                )
                raise SemidError(f"{name}={v!r} should be a number in [{low:g}, {high:g}]{hint}")
        if self.lr <= 0:
            raise SemidError(f"lr={self.lr!r} should be > 0")
        if self.ema_decay >= 1:
            raise SemidError(f"ema_decay={self.ema_decay!r} should be below 1 (0 = no weight average)")
        for name in ("ema_select", "progress", "tensorboard"):  # a string such as "false" would count as true
            if not isinstance(getattr(self, name), bool):
                raise SemidError(f"{name}={getattr(self, name)!r} should be true or false")
        if not self.ema_select and not self.ema_decay:
            raise SemidError(
                "ema_select=false validates a weight average beside the trained weights: set ema_decay"
            )
        if self.schedule not in SCHEDULES:
            raise SemidError(f"schedule={self.schedule!r} is not one of {', '.join(map(repr, SCHEDULES))}")
        if self.autocast not in AUTOCAST:
            raise SemidError(f"autocast={self.autocast!r} is not one of {', '.join(map(repr, AUTOCAST))}")
        resolve_device(self.device)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def default_train_config(model_type: str, **changes: Any) -> TrainConfig:
    """Each model's training defaults (what the CLI uses), with ``changes`` applied."""
    if model_type == "sasrec":
        # configs/sasrec-beauty.json's schedule: 80 epochs, cosine, no early stop (3 seeds on Beauty: test
        # R@10 0.0844 ± 0.0017; bench/results/beauty_rec_sasrec.txt)
        base = TrainConfig(epochs=80, batch_size=128, lr=1e-3, warmup_steps=200, patience=0)
    elif model_type == "tiger":
        # configs/tiger-beauty.json's optimizer (lr 2e-3, decay 0.1); the paper's is in configs/tiger-paper.json
        base = TrainConfig(batch_size=256, lr=2e-3, weight_decay=0.1, warmup_steps=500, patience=5)
    elif model_type == "rpg":
        # the paper's optimizer (AdamW, batch 256, no decay, cosine, patience 20 of 150 epochs) with a shorter
        # warmup and a lower peak than its Beauty recipe (lr 0.01 after 10,000 warmup steps, ~110 epochs): an
        # hour on 2 CPU cores is only ~1,000-2,000 steps of the paper-sized model. Not tuned yet
        base = TrainConfig(epochs=150, batch_size=256, lr=3e-3, warmup_steps=200, patience=20)
    else:
        raise SemidError(f"model {model_type!r} is not one of {', '.join(map(repr, MODELS))}")
    return TrainConfig(**{**base.to_dict(), **changes})


# The options that make a TIGER's shape, and the shape its defaults give to small data (:func:`scaled_shape`).
TIGER_SHAPE = ("d_model", "n_heads", "d_head", "d_ff", "n_encoder_layers", "n_decoder_layers")
# Data of up to TIGER_SMALL_TARGETS training targets per epoch gets TIGER_SMALL_SHAPE; larger data gets
# TIGERConfig's own defaults, the paper's 4+4 layers of d_model 128 (our Beauty recipe, 131,413 targets).
# Chosen on validation N@10 of Beauty's users subsampled to 5% and 20% (7,036 and 26,494 targets;
# bench/results/scaled_defaults.txt): 2+2 layers of d_model 64 (0.28M parameters against 4.6M) matched or
# beat the paper's shape at each size in 1/4 to 1/8 of its training time. Between 26,494 and 131,413 targets
# nothing was measured, so the bound stays close to the largest size measured.
TIGER_SMALL_TARGETS = 30_000
TIGER_SMALL_SHAPE = {
    "d_model": 64,
    "n_heads": 4,
    "d_head": 16,
    "d_ff": 256,
    "n_encoder_layers": 2,
    "n_decoder_layers": 2,
}


def scaled_shape(model_type: str, n_targets: int | None) -> dict[str, int]:
    """The shape options a ``model_type``'s defaults give to data with ``n_targets`` training targets per
    epoch (:attr:`RecData.n_train_targets`); ``{}`` means the config class's own defaults.

    Only TIGER scales (:data:`TIGER_SMALL_SHAPE` up to :data:`TIGER_SMALL_TARGETS`). SASRec's defaults are
    already the small tuned Beauty shape (2 layers, d_model 64) and RPG's are the paper's; neither was
    measured at other sizes. A streamed log (``n_targets`` None) gets the full-size defaults. Options given
    explicitly override these one by one.
    """
    if model_type == "tiger" and n_targets is not None and n_targets <= TIGER_SMALL_TARGETS:
        return dict(TIGER_SMALL_SHAPE)
    return {}


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

    ``model`` holds :class:`~semid.rec.sasrec.SASRecConfig` / :class:`~semid.rec.tiger.TIGERConfig` /
    :class:`~semid.rec.rpg.RPGConfig` options,
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
