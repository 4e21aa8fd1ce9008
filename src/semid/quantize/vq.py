"""Residual vector quantization as a trainable layer: the quantizer inside RQ-VAE.

    rvq = ResidualVQ(n_levels=3, codebook_size=256, dim=32)
    rvq.init_kmeans(z, rng)                  # each level's codebook = k-means of that level's residuals
    out = rvq(z, generator=g)                # training: z_q with gradients, codes, losses
    codes = rvq.encode(z)                    # (n, 3) greedy nearest code per level
    z_q = rvq.decode(codes)                  # sum of the chosen codewords

Level ``l`` quantizes what levels ``0..l-1`` left over: ``r_0 = z``, ``q_l = C_l[argmin ||r_l - c||]``,
``r_{l+1} = r_l - q_l``. Options, each one a well-known remedy for a failure of VQ training:

* **Gradient estimator** (``estimator``), applied once to the total ``z_q = sum_l q_l``: ``"ste"``
  copies the gradient of ``z_q`` onto ``z`` (straight-through, van den Oord 2017); ``"rotation"`` (Fifty et
  al. 2024, arXiv 2410.06424) passes it through the rotation + rescaling that maps ``z`` onto ``z_q``, so
  the encoder learns how its output sits *within* a code's Voronoi cell.
* **Codebook update** (``update``): ``"loss"`` learns codewords by gradient on ``||sg(r) - q||^2``;
  ``"ema"`` sets each codeword to an exponential moving average of the vectors assigned to it (the
  k-means step done online), which is faster and does not let codewords drift away from data.
* **k-means initialisation** (:meth:`ResidualVQ.init_kmeans`): codebooks start at the k-means centres of
  the encoded data, level by level, so every code starts in use.
* **Dead-code reset** (``dead_code_threshold``): a code chosen by fewer than this many training rows over a
  full pass of the data (``window`` rows) is moved onto a random residual of the current batch.
* **Balanced last level** (``balanced=True`` on a level, LC-Rec): at training time the level assigns the
  batch by entropic optimal transport (Sinkhorn, log domain) with equal mass per code, which spreads items
  over the codes and cuts Semantic-ID collisions. Encoding is always the plain nearest code.
* **Normalised codebooks** (``normalize=True``): codewords live on a sphere whose radius is the level's
  mean residual norm at initialisation; the code is the one of largest cosine similarity.

Codebook state (the initialised flag, EMA cluster sizes and sums, hit counts) lives in registered buffers,
so ``state_dict()`` carries all of it and a checkpoint resumes exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from semid._distributed import SINGLE, Dist, current, gather_rows, reduce_
from semid.errors import SemidError
from semid.quantize.kmeans import lloyd, nearest_centroid

ESTIMATORS = ("ste", "rotation")
UPDATES = ("ema", "loss")


def rotate_to(src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Rotation trick: returns ``tgt`` in value, with gradients w.r.t. ``src`` through a fixed rotation.

    ``out = (||t|| / ||s||) * R s`` with ``R`` the rotation taking ``s/||s||`` to ``t/||t||`` (Householder
    form of section 4.2 of arXiv 2410.06424), every factor but ``s`` itself detached. src, tgt: (B, D).
    """
    eps = torch.finfo(src.dtype).tiny
    s_norm = src.norm(dim=1, keepdim=True).clamp_min(eps)  # (B, 1)
    t_norm = tgt.norm(dim=1, keepdim=True).clamp_min(eps)  # (B, 1)
    u = (src / s_norm).detach()  # (B, D) unit source direction
    q = (tgt / t_norm).detach()  # (B, D) unit target direction
    w = nn.functional.normalize(u + q, dim=1, eps=1e-12).detach()  # (B, D) bisector
    # R s = s - 2 (s.w) w + 2 (s.u) q
    rotated = src - 2.0 * (src * w).sum(1, keepdim=True) * w + 2.0 * (src * u).sum(1, keepdim=True) * q
    return rotated * (t_norm / s_norm).detach()


def sinkhorn_assign(sq_dist: torch.Tensor, *, epsilon: float, n_iter: int) -> torch.Tensor:
    """Balanced assignment of B rows to K codes by entropic optimal transport (LC-Rec).

    ``sq_dist`` (B, K) is rescaled to [-1, 1] (as LC-Rec does, so ``epsilon`` does not depend on the
    latent scale). The plan ``Q = diag(u) exp(-d / epsilon) diag(v)`` with row sums ``1/B`` and column sums
    ``1/K`` is found by at most ``n_iter`` Sinkhorn scalings (two matrix-vector products each, float64;
    stops once every column holds its share to 1%); each row takes its heaviest code. Falls back to the nearest code if the scalings leave float64's range.
    Returns codes (B,) int64.
    """
    d = sq_dist.detach().double()
    lo, hi = d.min(), d.max()
    mid = (hi + lo) / 2
    d = (d - mid) / ((hi - mid) + 1e-5)  # (B, K) in [-1, 1]
    d = d - d.min(dim=1, keepdim=True).values  # a per-row shift is absorbed by u: best code of a row -> 1
    kernel = torch.exp(-d / epsilon).clamp_min_(1e-300)  # (B, K); the floor keeps every column reachable
    B, K = kernel.shape
    u = torch.full((B,), 1.0 / B, dtype=kernel.dtype, device=kernel.device)
    v = torch.ones(K, dtype=kernel.dtype, device=kernel.device)
    for it in range(n_iter):
        col = kernel.T @ u  # (K,) column mass before rescaling
        if it % 5 == 4 and bool(((v * col) * K - 1).abs().max() < 1e-2):
            break  # column sums within 1% of 1/K: more iterations would not change the argmax
        v = (1.0 / K) / col  # (K,) columns carry 1/K
        u = (1.0 / B) / (kernel @ v)  # (B,) rows carry 1/B
    if not bool(torch.isfinite(v).all() and torch.isfinite(u).all()):
        return torch.argmin(sq_dist, dim=1)
    return torch.argmax(kernel * v, dim=1)  # u scales a whole row: it cannot change the row's argmax


@dataclass
class RVQOutput:
    """What one training forward pass of :class:`ResidualVQ` returns (every field always present)."""

    quantized: torch.Tensor  # (B, D) sum of the codewords, carrying the estimator's gradient to the input
    codes: torch.Tensor  # (B, L) int64
    codebook_loss: torch.Tensor  # scalar: sum over levels of mean ||sg(r_l) - q_l||^2 (0 with EMA updates)
    commit_loss: torch.Tensor  # scalar: sum over levels of mean ||r_l - sg(q_l)||^2
    residual_norms: list[float]  # mean ||r_l|| for l = 0..L (input first, final residual last)


class VectorQuantizer(nn.Module):
    """One codebook level: nearest-code lookup, codebook update, dead-code reset, balanced assignment."""

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        *,
        update: str = "ema",
        ema_decay: float = 0.99,
        normalize: bool = False,
        balanced: bool = False,
        sinkhorn_epsilon: float = 0.003,
        sinkhorn_iters: int = 30,
        dead_code_threshold: float = 1.0,
        window: int = 0,
        eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if update not in UPDATES:
            raise SemidError(f"update={update!r} is not one of {', '.join(map(repr, UPDATES))}")
        self.codebook_size, self.dim = int(codebook_size), int(dim)
        self.update, self.ema_decay = update, float(ema_decay)
        self.normalize, self.balanced = bool(normalize), bool(balanced)
        self.sinkhorn_epsilon, self.sinkhorn_iters = float(sinkhorn_epsilon), int(sinkhorn_iters)
        self.dead_code_threshold, self.eps = float(dead_code_threshold), float(eps)
        weight = torch.randn(codebook_size, dim) / math.sqrt(dim)  # replaced by k-means init when used
        if update == "loss":
            self.weight = nn.Parameter(weight)
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("cluster_size", torch.ones(codebook_size))
            self.register_buffer("embed_avg", weight.clone())
        self.register_buffer("radius", torch.ones(()))  # sphere radius of normalised codebooks
        self.register_buffer("initted", torch.zeros((), dtype=torch.bool))
        self.register_buffer("hits", torch.zeros(codebook_size))  # training rows per code in this window
        self.register_buffer("rows_seen", torch.zeros((), dtype=torch.long))
        # rows per dead-code check: a pass of the training data
        self.register_buffer("window", torch.tensor(int(window)))
        self.register_buffer("n_resets", torch.zeros((), dtype=torch.long))  # dead codes re-seeded so far

    def codebook(self) -> torch.Tensor:
        """The codewords in use, (K, D): the raw weights, or their projection on the sphere."""
        if self.normalize:
            return nn.functional.normalize(self.weight, dim=1) * self.radius
        return self.weight

    @torch.no_grad()
    def set_codebook(
        self, C: torch.Tensor, counts: torch.Tensor | None = None, rows_per_step: int = 1
    ) -> None:
        """Start from codewords ``C`` (K, D), e.g. k-means centres; ``counts`` (K,) seed the EMA sizes."""
        if self.normalize:
            self.radius.fill_(float(C.norm(dim=1).mean()))
        self.weight.data.copy_(C)
        if self.update == "ema":
            share = counts.float() / counts.sum().clamp_min(1) if counts is not None else None
            size = share * rows_per_step if share is not None else torch.full_like(self.cluster_size, 1.0)
            self.cluster_size.copy_(size.clamp_min(self.eps))
            self.embed_avg.copy_(self.codebook() * self.cluster_size[:, None])
        self.initted.fill_(True)

    def scores(self, r: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
        """``||c||^2 - 2 r.c`` (B, K): squared distance up to the row constant ``||r||^2``."""
        return torch.addmm((C * C).sum(1), r, C.T, alpha=-2.0)

    def forward(
        self, r: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize residuals r (B, D). Returns ``(q, codes, codebook_loss, commit_loss)``.

        ``q`` (B, D) are the chosen codewords (differentiable w.r.t. a learned codebook only); the commitment
        loss carries the gradient to ``r``. In training mode the EMA codebook, hit counts and dead-code reset
        are updated as side effects.
        """
        C = self.codebook()  # (K, D)
        s = self.scores(r.detach(), C.detach())  # (B, K)
        group = current() if self.training else SINGLE  # data-parallel training: ranks share their batch
        if self.training and self.balanced and group.enabled:
            # balance over the global batch, as one process would, and keep this rank's rows
            all_s, start = gather_rows(s, group)  # (B_global, K)
            if all_s.shape[0] > 1:
                codes = sinkhorn_assign(all_s, epsilon=self.sinkhorn_epsilon, n_iter=self.sinkhorn_iters)
                codes = codes[start : start + r.shape[0]]
            else:
                codes = torch.argmin(s, dim=1)
        elif self.training and self.balanced and r.shape[0] > 1:
            codes = sinkhorn_assign(s, epsilon=self.sinkhorn_epsilon, n_iter=self.sinkhorn_iters)
        else:
            codes = torch.argmin(s, dim=1)
        q = C[codes]  # (B, D), differentiable w.r.t. a learned codebook
        commit = (r - q.detach()).square().sum(1).mean()
        # EMA codebooks learn from the moving averages, not from a loss
        codebook_loss = (r.detach() - q).square().sum(1).mean() if self.update == "loss" else r.new_zeros(())
        if self.training:
            self._track(r.detach(), codes, generator, group)
        return q, codes, codebook_loss, commit

    @torch.no_grad()
    def _track(
        self, r: torch.Tensor, codes: torch.Tensor, generator: torch.Generator | None, group: Dist = SINGLE
    ) -> None:
        """EMA codebook, hit counts and dead-code resets from this batch; with data-parallel ranks from the
        global batch (counts and sums summed over ranks, resets drawn from every rank's rows), so every
        rank keeps the codebooks one process would."""
        counts = reduce_(torch.bincount(codes, minlength=self.codebook_size).to(r.dtype), group)  # (K,)
        if self.update == "ema":
            sums = reduce_(torch.zeros_like(self.embed_avg).index_add_(0, codes, r), group)  # (K, D)
            self.cluster_size.mul_(self.ema_decay).add_(counts, alpha=1 - self.ema_decay)
            self.embed_avg.mul_(self.ema_decay).add_(sums, alpha=1 - self.ema_decay)
            n = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n  # Laplace
            self.weight.copy_(self.embed_avg / smoothed[:, None])
        self.hits.add_(counts)
        self.rows_seen.add_(int(counts.sum()) if group.enabled else r.shape[0])
        if self.dead_code_threshold > 0 and self.rows_seen >= self.window.clamp_min(1):
            dead = torch.nonzero(self.hits < self.dead_code_threshold).flatten()
            if dead.numel():  # the same on every rank: the hits are global
                self._reset(dead, gather_rows(r, group)[0], generator)
            self.hits.zero_()
            self.rows_seen.zero_()

    @torch.no_grad()
    def _reset(self, dead: torch.Tensor, r: torch.Tensor, generator: torch.Generator | None) -> None:
        """Move dead codes onto random residuals of the batch (without replacement while rows last)."""
        B = r.shape[0]
        if dead.numel() <= B:
            rows = torch.randperm(B, generator=generator, device="cpu")[: dead.numel()]
        else:
            rows = torch.randint(B, (dead.numel(),), generator=generator, device="cpu")
        new = r[rows.to(r.device)]  # (n_dead, D)
        if self.normalize:
            new = nn.functional.normalize(new, dim=1) * self.radius
        self.weight.data[dead] = new
        if self.update == "ema":
            self.cluster_size[dead] = 1.0
            self.embed_avg[dead] = new
        self.n_resets.add_(dead.numel())


class ResidualVQ(nn.Module):
    """``n_levels`` :class:`VectorQuantizer` levels, each quantizing the residual of the ones before."""

    def __init__(
        self,
        n_levels: int,
        codebook_size: int | list[int],
        dim: int,
        *,
        estimator: str = "rotation",
        balanced_last: bool = False,
        **level_kwargs: object,
    ) -> None:
        super().__init__()
        if estimator not in ESTIMATORS:
            raise SemidError(f"estimator={estimator!r} is not one of {', '.join(map(repr, ESTIMATORS))}")
        self.estimator = estimator
        sizes = (
            [int(codebook_size)] * n_levels
            if isinstance(codebook_size, int)
            else [int(k) for k in codebook_size]
        )
        self.levels = nn.ModuleList(
            VectorQuantizer(K, dim, balanced=balanced_last and i == n_levels - 1, **level_kwargs)  # type: ignore[arg-type]
            for i, K in enumerate(sizes)
        )

    @property
    def codebook_sizes(self) -> list[int]:
        return [lv.codebook_size for lv in self.levels]

    def codebooks(self) -> list[torch.Tensor]:
        """Codewords of every level, detached: a list of (K_l, D)."""
        return [lv.codebook().detach() for lv in self.levels]

    @torch.no_grad()
    def init_kmeans(
        self, z: torch.Tensor, rng: np.random.Generator, *, n_iter: int = 20, rows_per_step: int = 1
    ) -> None:
        """Set each level's codebook to the k-means centres of that level's residuals of ``z`` (n, D)."""
        r = z.detach().float().clone()  # (n, D) running residual
        for lv in self.levels:
            C, _, _ = lloyd(r, lv.codebook_size, n_iter=n_iter, tol=1e-4, rng=rng)
            if lv.normalize:  # spherical codebook: centres projected on the sphere of the mean residual norm
                C = nn.functional.normalize(C, dim=1) * r.norm(dim=1).mean()
            codes = nearest_centroid(r, C, exact_ties=False, return_dist=False)[0]
            lv.set_codebook(C, torch.bincount(codes, minlength=lv.codebook_size), rows_per_step)
            r -= lv.codebook()[codes]

    def forward(self, z: torch.Tensor, *, generator: torch.Generator | None = None) -> RVQOutput:
        """Quantize z (B, D) through every level (training or eval mode), in float32 even under autocast."""
        with torch.autocast(z.device.type, enabled=False):
            return self._forward(z.float(), generator)

    def _forward(self, z: torch.Tensor, generator: torch.Generator | None) -> RVQOutput:
        r = z  # (B, D) residual: r_l = z - sum_{j<l} sg(q_j), so each commitment loss reaches z
        total = torch.zeros_like(z).detach()  # (B, D) sum of the codewords so far (value only)
        codes, cb_loss, commit, residuals = [], z.new_zeros(()), z.new_zeros(()), [z.detach()]
        for lv in self.levels:
            q, c, cb, cm = lv(r, generator=generator)
            total = total + q.detach()
            r = r - q.detach()
            codes.append(c)
            residuals.append(r.detach())
            cb_loss, commit = cb_loss + cb, commit + cm
        norms = torch.stack(residuals).norm(dim=2).mean(1).tolist()  # (L + 1,) mean ||r_l||, in one pass
        # value z_q; gradient: a rotation + rescaling of the output's, or (straight-through) the output's itself
        quantized = rotate_to(z, total) if self.estimator == "rotation" else z + (total - z).detach()
        return RVQOutput(quantized, torch.stack(codes, 1), cb_loss, commit, norms)

    @torch.no_grad()
    def encode(self, z: torch.Tensor, codebooks: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Greedy nearest code per level (B, L) int64; near-ties re-scored in float64 (machine independent)."""
        cbs = codebooks if codebooks is not None else self.codebooks()
        r = z.detach().clone()
        out = torch.empty((z.shape[0], len(cbs)), dtype=torch.long, device=z.device)
        for level, C in enumerate(cbs):
            C = C.to(r.dtype)
            out[:, level] = nearest_centroid(r, C, exact_ties=True, return_dist=False)[0]
            r -= C[out[:, level]]
        return out

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, codebooks: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Sum of the chosen codewords: (B, L) -> (B, D)."""
        cbs = codebooks if codebooks is not None else self.codebooks()
        z = cbs[0][codes[:, 0]].clone()
        for level in range(1, len(cbs)):
            z += cbs[level][codes[:, level]]
        return z
