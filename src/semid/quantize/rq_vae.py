"""RQ-VAE (TIGER): an MLP autoencoder whose latent is residual-quantized; the codes are the Semantic ID.

    model = RQVAE(n_levels=3, codebook_size=256, random_state=0).fit(X)   # X: (n, 384)
    codes = model.encode(X)          # (n, 3) int32, greedy nearest code per level in latent space
    X_hat = model.decode(codes)      # (n, 384): the decoder applied to the sum of the chosen codewords

Architecture (TIGER): ``x -> MLP 512-256-128 -> z (32) -> residual VQ (3 x 256) -> z_q -> MLP -> x_hat``.
Loss: ``||x - x_hat||^2 + sum_l (||sg(r_l) - q_l||^2 + beta ||r_l - sg(q_l)||^2)`` (the codebook term is
replaced by EMA updates by default), plus an optional collaborative term that aligns ``z_q`` with given item
embeddings (LETTER: in-batch contrastive loss against a linear projection of, e.g., SASRec item vectors).

Why the defaults train reliably on a CPU: codebooks start at k-means centres of the encoded data (no code
starts unused), EMA updates keep codewords on the data, a code no item chose over a whole pass is moved onto
a batch residual, and the rotation trick gives the encoder a useful gradient through the quantizer
(Sinkhorn-balanced training of the last level, LC-Rec's remedy for collisions, is one option away). Every
operation is a batched matrix product, the MLPs run under bfloat16 autocast where the CPU has native bf16,
and the fused optimiser keeps the per-step overhead small, so an epoch over Amazon Beauty's 12k items takes
well under a second on one core (100 epochs: about a minute).

``encode`` runs in eval mode and in float64, and re-scores near-ties of the code search exactly, so the same
model gives the same codes in every process (and, practically, on every machine); ``save_pretrained`` /
``from_pretrained`` round-trip bit for bit. Training details (optimiser, schedule, checkpoints, metrics,
resume) live in ``train.py``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from semid._distributed import rank_device, setup
from semid._utils import check_positive_int, resolve_device
from semid.errors import SemidError
from semid.quantize.base import BaseQuantizer, as_float_matrix
from semid.quantize.metrics import codebook_usage, collision_stats
from semid.quantize.train import (
    TrainConfig,
    Trainer,
    _check_choice,
    _check_int,
    _check_number,
    _is_int,
    checkpoint_path,
    coerce_fields,
    read_checkpoint_meta,
    read_config_file,
)
from semid.quantize.vq import ESTIMATORS, UPDATES, ResidualVQ

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "leaky_relu": nn.LeakyReLU}
INPUT_NORMS = ("none", "l2", "standardize")


@dataclass
class RQVAEConfig:
    """Everything that defines an RQ-VAE run: architecture, quantizer, loss, seed, and ``train`` options.

    Load one with :meth:`from_file` (JSON or YAML; training options under a ``train:`` mapping or at the top
    level) or build it in code; :meth:`validate` rejects bad values with a message that quotes them.
    """

    n_levels: int = 3
    codebook_size: int | list[int] = 256  # one size for every level, or one per level
    latent_dim: int = 32
    hidden_dims: list[int] = field(default_factory=lambda: [512, 256, 128])  # encoder; decoder mirrors it
    input_dim: int | None = None  # None: taken from the data; set it to have a mismatch rejected
    activation: str = "relu"
    dropout: float = 0.0
    input_norm: str = "none"  # "none", "l2" (unit rows) or "standardize" (per-feature mean/std from fit data)
    normalize_codebooks: bool = False  # codewords on a sphere per level, chosen by cosine similarity
    estimator: str = "rotation"  # gradient through the quantizer: "rotation" (arXiv 2410.06424) or "ste"
    codebook_update: str = "ema"  # "ema" (moving averages, no codebook loss) or "loss" (gradient)
    ema_decay: float = 0.99
    kmeans_init: bool = True  # codebooks start at k-means centres of the encoded training data
    kmeans_iters: int = 20
    dead_code_threshold: float = 1.0  # re-seed a code chosen by fewer training rows than this over a pass
    # Sinkhorn assignment of the last level while training (LC-Rec); off by default: on Amazon Beauty it left the
    # unique-ID share unchanged (0.978 either way) and costs ~15% of an epoch
    balanced_last_level: bool = False
    sinkhorn_epsilon: float = 0.003  # entropy weight on distances rescaled to [-1, 1]; smaller = greedier
    sinkhorn_iters: int = 30
    beta: float = 0.25  # commitment weight
    codebook_weight: float = 1.0  # weight of the codebook loss (codebook_update="loss" only)
    collab_weight: float = 0.0  # weight of the collaborative alignment term (needs fit(..., collab=M))
    collab_temperature: float = 0.1
    collab_max_rows: int = 4096  # in-batch contrast uses at most this many rows (a B x B matrix)
    random_state: int | None = 0
    device: str = "auto"
    train: TrainConfig = field(default_factory=TrainConfig)

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> RQVAEConfig:
        """Build from a mapping; training options may be nested under ``train`` or given at the top level."""
        data = dict(data)
        train = data.pop("train", None) or {}
        if isinstance(train, TrainConfig):
            train = train.to_dict()
        if not isinstance(train, dict):
            raise SemidError(f"{source}: train should be a mapping of training options, got {train!r}")
        train = dict(train)
        train_names = {f.name for f in fields(TrainConfig)}
        for key in [k for k in data if k in train_names]:
            train[key] = data.pop(key)
        own = coerce_fields(cls, data, source=source)
        if isinstance(own.get("hidden_dims"), tuple):
            own["hidden_dims"] = list(own["hidden_dims"])
        return cls(**own, train=TrainConfig(**coerce_fields(TrainConfig, train, source=source)))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> RQVAEConfig:
        """Read a JSON (``.json``) or YAML (``.yaml``/``.yml``) config file."""
        return cls.from_dict(read_config_file(path), source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> RQVAEConfig:
        """A copy with some options changed (training options by name too: ``replace(epochs=5)``)."""
        return RQVAEConfig.from_dict({**self.to_dict(), **changes}, source="options")

    # -- checks -------------------------------------------------------------------------------------
    def sizes(self) -> list[int]:
        """Codebook size of every level (validated)."""
        _check_int("n_levels", self.n_levels, 1)
        if _is_int(self.codebook_size):
            sizes = [int(self.codebook_size)] * int(self.n_levels)
        elif isinstance(self.codebook_size, Sequence) and not isinstance(self.codebook_size, str):
            sizes = list(self.codebook_size)
            if len(sizes) != self.n_levels:
                raise SemidError(
                    f"codebook_size has {len(sizes)} entries ({sizes}), expected one per level (n_levels={self.n_levels})"
                )
        else:
            raise SemidError(
                f"codebook_size={self.codebook_size!r} should be an integer or a list of integers"
            )
        for k in sizes:
            if not _is_int(k) or k < 2:
                raise SemidError(f"codebook_size={k!r} should be an integer >= 2")
        return [int(k) for k in sizes]

    def validate(self, n_features: int | None = None) -> None:
        """Reject bad values before any training starts (one line that quotes the value)."""
        self.sizes()
        _check_int("latent_dim", self.latent_dim, 1)
        if not isinstance(self.hidden_dims, (list, tuple)):
            raise SemidError(
                f"hidden_dims={self.hidden_dims!r} should be a list of layer widths, e.g. [512, 256, 128]"
            )
        for h in self.hidden_dims:
            if not _is_int(h) or h < 1:
                raise SemidError(
                    f"hidden_dims={list(self.hidden_dims)!r}: width {h!r} should be an integer >= 1"
                )
        if self.input_dim is not None:
            _check_int("input_dim", self.input_dim, 1)
            if n_features is not None and n_features != self.input_dim:
                raise SemidError(f"X has {n_features} features, but input_dim={self.input_dim}")
        _check_choice("activation", self.activation, tuple(ACTIVATIONS))
        _check_number("dropout", self.dropout, lo=0.0, hi=0.99)
        _check_choice("input_norm", self.input_norm, INPUT_NORMS)
        _check_choice("estimator", self.estimator, ESTIMATORS)
        _check_choice("codebook_update", self.codebook_update, UPDATES)
        _check_number("ema_decay", self.ema_decay, lo=0.0, hi=0.9999)
        _check_int("kmeans_iters", self.kmeans_iters, 1)
        _check_number("dead_code_threshold", self.dead_code_threshold, lo=0.0)
        _check_number("sinkhorn_epsilon", self.sinkhorn_epsilon, lo=0.0, lo_open=True)
        _check_int("sinkhorn_iters", self.sinkhorn_iters, 1)
        _check_number("beta", self.beta, lo=0.0)
        _check_number("codebook_weight", self.codebook_weight, lo=0.0)
        _check_number("collab_weight", self.collab_weight, lo=0.0)
        _check_number("collab_temperature", self.collab_temperature, lo=0.0, lo_open=True)
        _check_int("collab_max_rows", self.collab_max_rows, 2)
        for name in ("normalize_codebooks", "kmeans_init", "balanced_last_level"):
            if not isinstance(getattr(self, name), bool):
                raise SemidError(f"{name}={getattr(self, name)!r} should be true or false")
        if self.random_state is not None and (not _is_int(self.random_state) or self.random_state < 0):
            raise SemidError(f"random_state={self.random_state!r} should be a non-negative integer or None")
        resolve_device(self.device)
        if not isinstance(self.train, TrainConfig):
            raise SemidError(f"train={self.train!r} should be a TrainConfig")
        self.train.validate()


def _mlp(dims: list[int], activation: str, dropout: float) -> nn.Sequential:
    """Linear layers ``dims[0] -> ... -> dims[-1]``; activation (+ dropout) between them, none at the end."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(ACTIVATIONS[activation]())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class RQVAENet(nn.Module):
    """The network: input normalisation, encoder, residual VQ, decoder, optional collaborative projection.

    Implements the :class:`~semid.quantize.train.Trainer` contract (``prepare``, ``training_loss``,
    ``evaluate``).
    """

    def __init__(self, config: RQVAEConfig, n_features: int, collab_dim: int | None = None) -> None:
        super().__init__()
        self.config = config
        c = config
        self.register_buffer("input_mean", torch.zeros(n_features))
        self.register_buffer("input_scale", torch.ones(n_features))
        # mean ||x - mean(x)||^2 of the (normalised) training data: turns the recon loss into a relative error
        self.register_buffer("data_var", torch.ones(()))
        self.encoder = _mlp([n_features, *c.hidden_dims, c.latent_dim], c.activation, c.dropout)
        self.rvq = ResidualVQ(
            c.n_levels,
            c.sizes(),
            c.latent_dim,
            estimator=c.estimator,
            balanced_last=c.balanced_last_level,
            update=c.codebook_update,
            ema_decay=c.ema_decay,
            normalize=c.normalize_codebooks,
            sinkhorn_epsilon=c.sinkhorn_epsilon,
            sinkhorn_iters=c.sinkhorn_iters,
            dead_code_threshold=c.dead_code_threshold,
        )
        self.decoder = _mlp([c.latent_dim, *reversed(c.hidden_dims), n_features], c.activation, c.dropout)
        self.collab_proj = nn.Linear(collab_dim, c.latent_dim, bias=False) if collab_dim else None

    # -- pieces -----------------------------------------------------------------------------------------
    def normalize_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.input_norm == "l2":
            return nn.functional.normalize(x, dim=1)
        if self.config.input_norm == "standardize":
            return (x - self.input_mean) / self.input_scale
        return x

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.config.input_norm == "standardize":
            return x * self.input_scale + self.input_mean
        return x

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, latent_dim): the continuous latent before quantization."""
        return self.encoder(self.normalize_input(x))

    # -- trainer contract ---------------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(
        self, X: torch.Tensor, extra: torch.Tensor | None, rng: np.random.Generator, rows_per_step: int
    ) -> None:
        """Input statistics, then k-means codebooks on the encoded data (the initial encoder's latent)."""
        if self.config.input_norm == "standardize":
            self.input_mean.copy_(X.mean(0))
            self.input_scale.copy_(X.std(0).clamp_min(1e-6))
        xn = torch.cat([self.normalize_input(X[s : s + 8192]) for s in range(0, X.shape[0], 8192)])
        self.data_var.copy_((xn - xn.mean(0)).double().square().sum(1).mean().clamp_min(1e-12))
        for lv in self.rvq.levels:
            lv.window.fill_(X.shape[0])  # a dead code is one no training row chose over a whole pass
        if self.config.kmeans_init:
            was = self.training
            self.eval()
            z = torch.cat([self.latent(X[s : s + 8192]) for s in range(0, X.shape[0], 8192)])  # (n, latent)
            self.train(was)
            self.rvq.init_kmeans(z, rng, n_iter=self.config.kmeans_iters, rows_per_step=rows_per_step)

    def training_loss(
        self, x: torch.Tensor, extra: torch.Tensor | None, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        c = self.config
        xn = self.normalize_input(x)  # (B, D)
        z = self.encoder(xn)  # (B, latent)
        out = self.rvq(z, generator=generator)
        x_hat = self.decoder(out.quantized)  # (B, D)
        # mean over rows of ||x_hat - x||^2; one fused kernel each way (an elementwise chain costs ~3x more)
        recon = nn.functional.mse_loss(x_hat.float(), xn, reduction="sum") / x.shape[0]
        loss = recon + c.codebook_weight * out.codebook_loss + c.beta * out.commit_loss
        scalars = {"recon_loss": recon, "codebook_loss": out.codebook_loss, "commit_loss": out.commit_loss}
        if c.collab_weight > 0 and extra is not None and self.collab_proj is not None:
            collab = self.collab_loss(out.quantized, extra, generator)
            loss = loss + c.collab_weight * collab
            scalars["collab_loss"] = collab
        scalars["loss"] = loss
        # one copy of all the scalars, not one each
        values = torch.stack([v.detach().float() for v in scalars.values()]).tolist()
        logs: dict[str, Any] = dict(zip(scalars, values, strict=True))
        logs["rel_error"] = logs["recon_loss"] / float(self.data_var)
        for i, v in enumerate(out.residual_norms):
            logs[f"residual_norm_l{i}"] = v
        logs["codes"] = out.codes  # the trainer's per-epoch health metrics between full evaluations
        return loss, logs

    def collab_loss(
        self, zq: torch.Tensor, extra: torch.Tensor, generator: torch.Generator | None
    ) -> torch.Tensor:
        """Symmetric in-batch InfoNCE between quantized latents and projected collaborative vectors (LETTER)."""
        c = self.config
        B = zq.shape[0]
        if c.collab_max_rows < B:
            rows = torch.randperm(B, generator=generator)[: c.collab_max_rows].to(zq.device)
            zq, extra = zq[rows], extra[rows]
        a = nn.functional.normalize(zq, dim=1)  # (b, latent)
        b = nn.functional.normalize(self.collab_proj(extra), dim=1)  # (b, latent)
        logits = a @ b.T / c.collab_temperature  # (b, b): row i should pick column i
        target = torch.arange(a.shape[0], device=a.device)
        return 0.5 * (
            nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.T, target)
        )

    @torch.no_grad()
    def evaluate(self, X: torch.Tensor, extra: torch.Tensor | None = None) -> dict[str, Any]:
        """Health of the codes of all rows (eval mode): usage/perplexity per level, unique share, residual
        norms, dead-code resets so far. The encoder runs in float32 whatever the training precision, so the
        codes are those ``encode`` gives; no decoder pass (a sixth of a training epoch in all): reconstruction
        is tracked by the training loss (``rel_error`` = recon loss / data variance)."""
        was = self.training
        self.eval()
        codes = []
        norms = np.zeros(len(self.rvq.levels) + 1)
        with torch.autocast(X.device.type, enabled=False):
            for s in range(0, X.shape[0], 2048):  # activations of 2048 rows stay in cache
                out = self.rvq(self.latent(X[s : s + 2048]))
                codes.append(out.codes)
                norms += np.array(out.residual_norms) * out.codes.shape[0]
        self.train(was)
        rec = self.code_metrics(torch.cat(codes).cpu().numpy())
        for i, v in enumerate(norms / X.shape[0]):
            rec[f"residual_norm_l{i}"] = float(v)
        return rec

    def code_metrics(self, codes: np.ndarray) -> dict[str, Any]:
        """Usage and perplexity per level, unique share of ``codes`` (n, L); dead-code resets so far."""
        rec: dict[str, Any] = {"unique_share": collision_stats(codes)["unique_share"]}
        for lv in codebook_usage(codes, self.rvq.codebook_sizes):
            rec[f"usage_l{lv['level']}"] = lv["usage"]
            rec[f"perplexity_l{lv['level']}"] = lv["perplexity"]
        for i, lv in enumerate(self.rvq.levels):
            rec[f"dead_code_resets_l{i}"] = int(lv.n_resets)
        return rec


class RQVAE(BaseQuantizer):
    """RQ-VAE quantizer with the surface of :class:`~semid.quantize.RQKMeans`.

    ``RQVAE(config=None, **options)``: options are :class:`RQVAEConfig` fields (training ones included,
    e.g. ``RQVAE(n_levels=3, codebook_size=256, epochs=50, random_state=0)``); ``config`` may be an
    ``RQVAEConfig``, a dict or a JSON/YAML path. ``verbose`` shows a progress bar.

    Fitted attributes
    -----------------
    net_ : the trained :class:`RQVAENet` (eval mode).
    latent_codebooks_ : list of (K_l, latent_dim) float32 arrays (codebooks live in latent space).
    history_ : one dict of metrics per epoch.
    n_features_in_ : D.
    n_epochs_, n_steps_ : epochs and optimiser steps trained.
    """

    model_type = "rq-vae"
    _fitted_attrs = ("net_", "latent_codebooks_")

    def __init__(
        self,
        config: RQVAEConfig | dict | str | os.PathLike | None = None,
        *,
        verbose: bool = False,
        **options: Any,
    ) -> None:
        if config is None:
            cfg = RQVAEConfig()
        elif isinstance(config, RQVAEConfig):
            cfg = config
        elif isinstance(config, dict):
            cfg = RQVAEConfig.from_dict(config)
        elif isinstance(config, (str, os.PathLike)):
            cfg = RQVAEConfig.from_file(config)
        else:
            raise SemidError(
                f"config={config!r} should be an RQVAEConfig, a dict or a path to a JSON/YAML file"
            )
        self.config = cfg.replace(**options) if options else cfg
        self.verbose = verbose

    # sklearn-style read access to the options RQKMeans also has
    @property
    def n_levels(self) -> int:
        return self.config.n_levels

    @property
    def codebook_size(self) -> int | list[int]:
        return self.config.codebook_size

    @property
    def random_state(self) -> int | None:
        return self.config.random_state

    @property
    def device(self) -> str:
        return self.config.device

    @property
    def codebook_sizes_(self) -> list[int]:
        self._check_fitted()
        return [int(c.shape[0]) for c in self.latent_codebooks_]

    def _validate_params(self, n_features: int | None = None) -> None:
        """Check every option (CLI: call before reading data so bad values fail first)."""
        self.config.validate(n_features)

    # -- fit ------------------------------------------------------------------------------------------
    def fit(
        self,
        X: Any,
        y: None = None,
        *,
        collab: Any = None,
        resume: str | os.PathLike | None = None,
        stop_after_epochs: int | None = None,
    ) -> RQVAE:
        """Train on X (n, D). Returns ``self``.

        collab : optional (n, d) item embeddings from a collaborative model, row-aligned with X (join them by
            item id with :func:`semid.quantize.collab.align_by_item_id`); used by the alignment term when
            ``collab_weight > 0``.
        resume : a run directory (or one of its checkpoints) of an earlier, interrupted ``fit``: training
            continues from there with the configuration stored in the checkpoint.
        stop_after_epochs : stop after that many epochs in total, leaving a resumable run (as a kill would).
        """
        if resume is not None:
            meta = read_checkpoint_meta(resume)  # checked before recover=True renames anything on disk
            if not isinstance(meta.get("config"), dict):
                raise SemidError(
                    f"{resume}: not an RQ-VAE run (its checkpoint {checkpoint_path(resume)} holds no RQ-VAE "
                    "configuration)"
                )
            ckpt = checkpoint_path(resume, recover=True)
            cfg = RQVAEConfig.from_dict(meta["config"], source=str(ckpt / "trainer.json"))
            cfg.train.run_dir = str(
                ckpt.parent.parent
            )  # log on where the run lives now, even if it was moved
            self.config = cfg
        cfg = self.config
        X = as_float_matrix(X)
        n, D = X.shape
        cfg.validate(D)
        sizes = cfg.sizes()
        if n < max(sizes):
            raise SemidError(f"n_samples={n} should be >= codebook_size={max(sizes)}")
        C = None
        if collab is not None:
            C = as_float_matrix(collab, name="collab")
            if C.shape[0] != n:
                raise SemidError(f"collab has {C.shape[0]} rows, X has {n} (one per row of X)")
        elif cfg.collab_weight > 0:
            raise SemidError(
                f"collab_weight={cfg.collab_weight} needs collaborative embeddings: fit(X, collab=M)"
            )
        device = resolve_device(cfg.device)
        group = setup(device)  # under torchrun: data-parallel ranks, each on its slice of every batch
        device = rank_device(device, group)
        if group.enabled and cfg.collab_weight > 0:
            raise SemidError(
                "collab_weight > 0 trains in one process: its in-batch negatives span the whole batch"
            )
        train_cfg = dataclasses.replace(cfg.train, progress=cfg.train.progress or self.verbose)
        with torch.random.fork_rng(devices=[]):  # seeding below must not change the caller's global RNG
            torch.manual_seed(_init_seed(cfg.random_state))
            net = RQVAENet(cfg, D, C.shape[1] if C is not None else None).to(device)
            trainer = Trainer(net, train_cfg, seed=cfg.random_state, device=device, run_config=cfg.to_dict())
            Xt = torch.from_numpy(X if X.flags.writeable else X.copy()).to(device)
            Ct = torch.from_numpy(C).to(device) if C is not None else None
            state = trainer.fit(Xt, Ct, resume=resume, stop_after_epochs=stop_after_epochs)
        self._set_fitted(net, D, device)
        self.history_ = state.history
        self.n_epochs_ = state.epoch
        self.n_steps_ = state.step
        return self

    def _set_fitted(
        self, net: RQVAENet, n_features: int, device: str, codebooks: list[np.ndarray] | None = None
    ) -> None:
        net.eval()
        self.net_ = net
        if codebooks is None:
            codebooks = [c.cpu().numpy().astype(np.float32) for c in net.rvq.codebooks()]
        self.latent_codebooks_ = codebooks
        self.n_features_in_ = int(n_features)
        self._device = device
        self._cache = None

    # -- encode / decode --------------------------------------------------------------------------------
    def _inference(self) -> tuple[RQVAENet, list[torch.Tensor]]:
        """A float64 copy of the network and codebooks: codes do not depend on float32 BLAS rounding."""
        if self._cache is None:
            import copy

            net = copy.deepcopy(self.net_).to(device=self._infer_device(), dtype=torch.float64).eval()
            cbs = [
                torch.from_numpy(c).to(self._infer_device(), torch.float64) for c in self.latent_codebooks_
            ]
            self._cache = (net, cbs)
        return self._cache

    def _infer_device(self) -> str:
        dev = resolve_device(getattr(self, "_device", None) or self.config.device)
        return "cpu" if dev == "mps" else dev  # MPS has no float64

    def latent(self, X: Any, *, batch_size: int = 16384) -> np.ndarray:
        """The continuous latent (n, latent_dim) of X, before quantization (float64 encoder, float32 out)."""
        self._check_fitted()
        batch_size = check_positive_int("batch_size", batch_size)
        X = as_float_matrix(X)
        self._check_dim(X)
        net, _ = self._inference()
        out = []
        with torch.no_grad():
            for s in range(0, X.shape[0], batch_size):
                x = torch.tensor(X[s : s + batch_size], dtype=torch.float64, device=self._infer_device())
                out.append(net.latent(x))
        z = torch.cat(out) if out else torch.zeros((0, self.config.latent_dim), dtype=torch.float64)
        return z.cpu().numpy()

    def encode(self, X: Any, *, balanced: bool | None = None, batch_size: int = 16384) -> np.ndarray:
        """Codes (n, n_levels) int32: the encoder's latent, then the nearest codeword per level.

        Deterministic and independent of the batch it comes in. ``balanced=True`` assigns the last level of
        the whole batch given with equal-size groups (like ``RQKMeans(balanced=True)``); default plain.
        """
        from semid.quantize.kmeans import balanced_assign

        z = torch.from_numpy(self.latent(X, batch_size=batch_size))  # (n, latent) float64
        _, cbs = self._inference()
        cbs = [c.cpu() for c in cbs]
        if not balanced:
            return self.net_.rvq.encode(z, cbs).numpy().astype(np.int32)
        prefix = (
            self.net_.rvq.encode(z, cbs[:-1])
            if len(cbs) > 1
            else torch.zeros((z.shape[0], 0), dtype=torch.long)
        )
        r = z - self.net_.rvq.decode(prefix, cbs[:-1]) if len(cbs) > 1 else z
        last = balanced_assign(r, cbs[-1]) if z.shape[0] else torch.zeros(0, dtype=torch.long)
        return torch.cat([prefix, last[:, None]], 1).numpy().astype(np.int32)

    def decode(self, codes: Any) -> np.ndarray:
        """Vectors (n, D) float32: the decoder applied to the sum of each level's chosen codeword."""
        self._check_fitted()
        codes = self._check_codes(codes)
        net, cbs = self._inference()
        if codes.shape[0] == 0:
            return np.zeros((0, self.n_features_in_), dtype=np.float32)
        with torch.no_grad():
            c = torch.from_numpy(codes.astype(np.int64)).to(self._infer_device())
            zq = net.rvq.decode(c, cbs)  # (n, latent)
            x = net.denormalize(net.decoder(zq))  # (n, D)
        return x.float().cpu().numpy()

    def rank_last_level(self, X: Any) -> np.ndarray:
        """For each row, the last level's codes ordered nearest first (drives ``dedup="remap"``): (n, K_last)."""
        z = torch.from_numpy(self.latent(X))
        _, cbs = self._inference()
        cbs = [c.cpu() for c in cbs]
        r = z - self.net_.rvq.decode(self.net_.rvq.encode(z, cbs[:-1]), cbs[:-1]) if len(cbs) > 1 else z
        d = torch.cdist(r, cbs[-1])  # (n, K_last)
        return torch.argsort(d, dim=1, stable=True).numpy().astype(np.int32)

    # -- persistence hooks ------------------------------------------------------------------------------
    _NET_PREFIXES = ("encoder.", "decoder.", "input_mean", "input_scale")

    def _get_config(self) -> dict[str, Any]:
        cfg = self.config.to_dict()
        cfg.pop("device", None)
        return {
            **cfg,
            "n_features_in": int(self.n_features_in_),
            "n_epochs": int(getattr(self, "n_epochs_", 0)),
            "n_steps": int(getattr(self, "n_steps_", 0)),
            "history": list(getattr(self, "history_", [])),
        }

    def _get_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"codebook_{i}": c for i, c in enumerate(self.latent_codebooks_)}
        for k, v in self.net_.state_dict().items():
            if k.startswith(self._NET_PREFIXES):
                arrays[f"net.{k}"] = v.detach().cpu().numpy()
        return arrays

    @classmethod
    def _from_config(cls, config: dict[str, Any], *, device: str) -> RQVAE:
        own = {f.name for f in fields(RQVAEConfig)}
        cfg = RQVAEConfig.from_dict({k: v for k, v in config.items() if k in own}, source="config.json")
        cfg.device = device
        return cls(cfg)

    def _set_state(self, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> None:
        try:
            D = int(config["n_features_in"])
        except (KeyError, TypeError, ValueError):
            raise SemidError("config.json lacks n_features_in (not an RQ-VAE model directory?)") from None
        net = RQVAENet(self.config, D)
        state = {
            k[len("net.") :]: torch.from_numpy(np.ascontiguousarray(v))
            for k, v in arrays.items()
            if k.startswith("net.")
        }
        expected = [k for k in net.state_dict() if k.startswith(self._NET_PREFIXES)]
        missing = [k for k in expected if k not in state]
        if missing:
            raise SemidError(
                f"model weights lack {'net.' + missing[0]!r} (config.json and model.safetensors disagree)"
            )
        try:
            net.load_state_dict(state, strict=False)
        except RuntimeError as e:
            raise SemidError(
                f"model weights do not fit config.json ({str(e).strip().splitlines()[-1].strip()})"
            ) from None
        n = len(self.config.sizes())
        try:
            cbs = [np.ascontiguousarray(arrays[f"codebook_{i}"], dtype=np.float32) for i in range(n)]
        except KeyError as e:
            raise SemidError(f"model weights lack {e.args[0]!r} (n_levels={n} in config.json)") from None
        with torch.no_grad():
            for lv, c in zip(net.rvq.levels, cbs, strict=True):
                lv.weight.data.copy_(torch.from_numpy(c))
        device = resolve_device(self.config.device)
        self._set_fitted(net.to(device), D, device, cbs)
        self.history_ = config.get("history", [])
        self.n_epochs_ = config.get("n_epochs", 0)
        self.n_steps_ = config.get("n_steps", 0)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"RQVAE(n_levels={c.n_levels}, codebook_size={c.codebook_size}, latent_dim={c.latent_dim}, "
            f"hidden_dims={c.hidden_dims}, epochs={c.train.epochs}, random_state={c.random_state})"
        )


def _init_seed(random_state: int | None) -> int:
    from semid.quantize.train import _seed64

    return _seed64(random_state, 3)


def load_config(path: str | os.PathLike) -> RQVAEConfig:
    """Read an RQ-VAE config file (JSON or YAML)."""
    return RQVAEConfig.from_file(Path(path))
