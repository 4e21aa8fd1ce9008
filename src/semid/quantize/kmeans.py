"""The k-means engine under RQ-KMeans: GEMM nearest-centroid search, k-means++, Lloyd, balanced assignment.

All heavy work is batched matrix multiplication in torch, chunked over rows so memory stays bounded
(``chunk_rows x K`` floats at a time), and runs on whatever device the tensors live on (CPU, CUDA, MPS).

Distances use ``||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2``; the row constant ``||x||^2`` does not change
the argmin, so the search computes ``||c||^2 - 2 x.c`` with one ``addmm`` per chunk.

Machine-independent codes: float32 GEMMs may round differently on another CPU/BLAS/thread count. A row
whose best and second-best centroid are closer than a small tolerance is re-scored exactly in float64
(ties go to the lowest index), so codes do not depend on the BLAS that computed them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from semid._utils import check_random_state, resolve_device
from semid.errors import SemidError

# Rows per GEMM chunk are chosen so that one chunk's score matrix holds about this many floats (64 MiB).
_CHUNK_FLOATS = 1 << 24
# Relative gap below which the float32 argmin is re-checked in float64 (a few float32 ulps times sqrt(D)).
_TIE_RTOL = 1e-5
# k-means++ seeds on a sample of this many rows per centre (the K sequential steps dominate otherwise).
_KPP_POINTS_PER_CENTROID = 64
# k-means++ over at most this many rows precomputes their Gram matrix (4096^2 floats = 64 MiB).
_GRAM_MAX_ROWS = 4096


def _chunk_rows(n_centroids: int, chunk_rows: int | None) -> int:
    if chunk_rows is not None:
        return max(1, int(chunk_rows))
    return max(256, _CHUNK_FLOATS // max(1, n_centroids))


def nearest_centroid(
    X: torch.Tensor,
    C: torch.Tensor,
    *,
    exact_ties: bool = True,
    chunk_rows: int | None = None,
    compute_dtype: torch.dtype | None = None,
    return_dist: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Index of the nearest row of ``C`` for every row of ``X``, and the squared distance to it.

    X: (n, D), C: (K, D), same device. Returns ``(codes (n,) int64, sq_dist (n,) float32 or None)``.
    ``exact_ties`` re-scores near-ties in float64 so the result is the same on every machine.
    ``compute_dtype`` (e.g. ``torch.bfloat16``) runs the GEMM in lower precision (training only).
    """
    n, K = X.shape[0], C.shape[0]
    c_sq = torch.linalg.vector_norm(C, dim=1).square_()  # (K,)
    codes = torch.empty(n, dtype=torch.long, device=X.device)
    dist = torch.empty(n, dtype=torch.float32, device=X.device) if return_dist else None
    step = _chunk_rows(K, chunk_rows)
    Cg = C.to(compute_dtype) if compute_dtype is not None else C
    c_sq_g = c_sq.to(compute_dtype) if compute_dtype is not None else c_sq
    for start in range(0, n, step):
        x = X[start : start + step]
        xg = x.to(compute_dtype) if compute_dtype is not None else x
        scores = torch.addmm(c_sq_g, xg, Cg.T, alpha=-2.0)  # (b, K): ||c||^2 - 2 x.c
        need_x_sq = return_dist or (exact_ties and K > 1)
        x_sq = torch.linalg.vector_norm(x, dim=1).square_() if need_x_sq else None  # (b,)
        if exact_ties and K > 1:
            top = torch.topk(scores, 2, dim=1, largest=False, sorted=True)
            best, idx = top.values[:, 0], top.indices[:, 0]
            gap = top.values[:, 1] - best
            unsure = torch.nonzero(gap <= _TIE_RTOL * (x_sq + c_sq[idx])).flatten()
            if unsure.numel():
                idx = idx.clone()
                idx[unsure] = _exact_argmin(x[unsure], C)
                if return_dist:
                    best = c_sq[idx] - 2.0 * (x * C[idx]).sum(1)
        else:
            best, idx = torch.min(scores, dim=1)
        codes[start : start + step] = idx
        if return_dist:
            dist[start : start + step] = (best.float() + x_sq).clamp_min_(0.0)
    return codes, dist


def _exact_argmin(x: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """float64 argmin of ||x - c||^2 on the CPU (MPS has no float64); ties go to the lowest index."""
    xd, Cd = x.detach().cpu().double(), C.detach().cpu().double()
    d = torch.cdist(xd, Cd, compute_mode="donot_use_mm_for_euclid_dist")  # (b, K), exact differences
    return torch.argmin(d, dim=1).to(x.device)


def kmeans_plusplus(
    X: torch.Tensor, n_clusters: int, rng: np.random.Generator, sample_weight: np.ndarray | None = None
) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007; ``2 + ln K`` local trials as scikit-learn).

    X: (n, D) -> centres (K, D). Deterministic for a given ``rng`` state. The K sequential steps are
    small (n x T) operations, so on the CPU they run in numpy (no thread-pool start-up per tiny op), and
    only the (n, D) x (D, T) products use torch. ``sample_weight`` (n,) counts each row that many times.
    """
    n = X.shape[0]
    n_trials = 2 + int(math.log(n_clusters))
    Xc_all = X.detach().cpu().float().contiguous()
    Xn = Xc_all.numpy()
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    x_sq = np.einsum("ij,ij->i", Xn, Xn)  # (n,)
    # Few rows (k-means|| candidates): one Gram matrix replaces K small GEMMs.
    gram = torch.mm(Xc_all, Xc_all.T).numpy() if n <= _GRAM_MAX_ROWS else None  # (n, n)
    chosen = np.empty(n_clusters, dtype=np.int64)
    if sample_weight is None:
        chosen[0] = int(rng.integers(n))
    else:
        cum_w = np.cumsum(w)
        chosen[0] = min(int(np.searchsorted(cum_w, rng.random() * cum_w[-1], side="right")), n - 1)
    closest = np.maximum(x_sq - 2.0 * (Xn @ Xn[chosen[0]]) + x_sq[chosen[0]], 0.0)  # (n,)
    for k in range(1, n_clusters):
        cum = np.cumsum(closest if sample_weight is None else closest * w, dtype=np.float64)
        if not cum[-1] > 0:  # every point sits on a centre: draw uniformly
            cand = rng.integers(n, size=n_trials)
        else:
            cand = np.minimum(np.searchsorted(cum, rng.random(n_trials) * cum[-1], side="right"), n - 1)
        if gram is not None:
            dots = gram[:, cand]  # (n, T)
        else:
            dots = torch.mm(Xc_all, Xc_all[torch.from_numpy(cand)].T).numpy()  # (n, T)
        d = x_sq[:, None] - 2.0 * dots
        d += x_sq[cand][None, :]
        np.maximum(d, 0.0, out=d)
        np.minimum(d, closest[:, None], out=d)
        best = int(np.argmin(w @ d if sample_weight is not None else d.sum(0, dtype=np.float64)))
        chosen[k] = cand[best]
        closest = np.ascontiguousarray(d[:, best])
    return X[torch.from_numpy(chosen).to(X.device)].clone()


def kmeans_parallel(
    X: torch.Tensor,
    n_clusters: int,
    rng: np.random.Generator,
    *,
    n_rounds: int = 5,
    oversampling: float = 1.0,
) -> torch.Tensor:
    """k-means|| seeding (Bahmani et al., VLDB 2012): k-means++ quality at a few GEMMs' cost.

    ``n_rounds`` rounds each keep every row independently with probability ``min(1, l * d^2(x) / sum d^2)``
    (``l = oversampling * K``), so about ``l`` candidates a round, and update ``d^2`` with one ``(n, D) x
    (D, ~l)`` product. The ~``n_rounds * l`` candidates are weighted by how many rows they are nearest to
    and reduced to K centres by weighted greedy k-means++. Versus greedy k-means++ this replaces K
    sequential passes over the rows with ``n_rounds`` batched ones. X: (n, D) -> centres (K, D).
    """
    n = X.shape[0]
    Xc = X.detach().cpu().float().contiguous()
    Xn = Xc.numpy()
    x_sq = np.einsum("ij,ij->i", Xn, Xn)  # (n,)
    first = int(rng.integers(n))
    picked = [np.array([first])]
    n_picked = 1
    closest = np.maximum(x_sq - 2.0 * (Xn @ Xn[first]) + x_sq[first], 0.0)  # (n,) d^2 to the candidates
    owner = np.zeros(n, dtype=np.int64)  # (n,) index of each row's nearest candidate so far
    ell = oversampling * n_clusters
    step = _chunk_rows(int(ell) + 1, None)
    for _ in range(n_rounds):
        psi = float(closest.sum(dtype=np.float64))
        if not psi > 0:
            break
        # A candidate has d^2 = 0, so it is never drawn again: candidates stay distinct.
        new = np.flatnonzero(rng.random(n) < np.minimum(1.0, ell * closest / psi))
        if new.size == 0:
            continue
        Cn = Xc[torch.from_numpy(new)]  # (m, D)
        c_sq = x_sq[new]
        for start in range(0, n, step):  # (b, m) distances, chunked over rows
            rows = slice(start, start + step)
            d = torch.mm(Xc[rows], Cn.T).numpy()
            d *= -2.0
            d += x_sq[rows, None]
            d += c_sq[None, :]
            j = d.argmin(1)
            dmin = np.maximum(d[np.arange(d.shape[0]), j], 0.0)
            nearer = dmin < closest[rows]
            closest[rows] = np.where(nearer, dmin, closest[rows])
            owner[rows] = np.where(nearer, n_picked + j, owner[rows])
        picked.append(new)
        n_picked += new.size
    cand = np.concatenate(picked)
    if cand.size < n_clusters:  # too few (tiny or degenerate data): top up with unpicked rows
        rest = np.setdiff1d(np.arange(n), cand)
        cand = np.concatenate([cand, rng.choice(rest, n_clusters - cand.size, replace=False)])
        owner, _ = nearest_centroid(Xc, Xc[torch.from_numpy(cand)], exact_ties=False, return_dist=False)
        owner = owner.numpy()
    weight = np.bincount(owner, minlength=cand.size).astype(np.float64)  # rows each candidate stands for
    C = kmeans_plusplus(Xc[torch.from_numpy(cand)], n_clusters, rng, sample_weight=weight)
    return C.to(X.device)


def balanced_assign(
    X: torch.Tensor,
    C: torch.Tensor,
    *,
    n_price_iter: int = 50,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Size-constrained assignment: every cluster gets ``n // K`` or ``n // K + 1`` rows.

    Algorithm (O(n_price_iter * n * K) time, O(n * K) memory for the cost matrix):
    1. *Dual prices.* Each cluster gets a price ``p_k``; rows go to ``argmin_k ||x - c_k||^2 + p_k``; prices of
       over-full clusters rise and of under-full ones fall (a Sinkhorn-like dual ascent of the
       transportation problem), which yields a nearly balanced, nearly optimal assignment.
    2. *Exact rounding.* Capacities are fixed (the ``n % K`` most demanded clusters take one extra row); in
       rounds, every unassigned row proposes its cheapest cluster with room left, and each cluster accepts
       its cheapest proposals up to its remaining capacity. Deterministic (stable sorts, index tie-breaks).

    X: (n, D), C: (K, D) -> codes (n,) int64 on X's device.
    """
    n, K = X.shape[0], C.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.long, device=X.device)
    floor, extra = divmod(n, K)
    # cost[i, k] = ||c_k||^2 - 2 x_i.c_k (row constant dropped), built chunk by chunk. (n, K)
    c_sq = (C * C).sum(1)
    step = _chunk_rows(K, chunk_rows)
    cost = torch.empty((n, K), dtype=torch.float32, device=X.device)
    for s in range(0, n, step):
        cost[s : s + step] = torch.addmm(c_sq, X[s : s + step], C.T, alpha=-2.0)
    cost = cost.cpu().numpy().astype(np.float64)
    cost -= cost.min(1, keepdims=True)  # per-row shift: same optimum, better conditioned prices

    target = n / K
    prices = np.zeros(K)
    # Step size in cost units: the typical gap between a row's best and second-best cluster.
    part = np.partition(cost, 1, axis=1)[:, :2] if K > 1 else np.zeros((n, 2))
    scale = float(np.median(part[:, 1] - part[:, 0])) or float(np.mean(cost)) or 1.0
    counts = np.bincount(np.argmin(cost, 1), minlength=K)
    for it in range(n_price_iter):
        if counts.max() <= floor + (extra > 0) and counts.min() >= floor:
            break
        lr = scale * (1.0 - it / n_price_iter)
        prices += lr * (counts - target) / max(target, 1.0)
        prices -= prices.min()
        counts = np.bincount(np.argmin(cost + prices, 1), minlength=K)

    # Capacities: the `extra` most demanded clusters (ties: lower index) hold floor + 1.
    capacity = np.full(K, floor, dtype=np.int64)
    if extra:
        order = np.lexsort((np.arange(K), -counts))
        capacity[order[:extra]] += 1

    priced = cost + prices
    codes = np.full(n, -1, dtype=np.int64)
    remaining = capacity.copy()
    todo = np.arange(n)
    while todo.size:
        sub = priced[todo]
        sub[:, remaining == 0] = np.inf
        choice = np.argmin(sub, 1)
        c = sub[np.arange(todo.size), choice]
        order = np.lexsort((todo, c, choice))  # by cluster, then cost, then row index
        ch_sorted = choice[order]
        starts = np.searchsorted(ch_sorted, np.arange(K))
        rank = np.arange(todo.size) - starts[ch_sorted]
        ok = rank < remaining[ch_sorted]
        accepted = todo[order[ok]]
        codes[accepted] = ch_sorted[ok]
        np.subtract.at(remaining, ch_sorted[ok], 1)
        todo = np.sort(todo[order[~ok]])
    return torch.as_tensor(codes, device=X.device)


def lloyd(
    X: torch.Tensor,
    n_clusters: int,
    *,
    n_iter: int,
    tol: float,
    rng: np.random.Generator,
    init: str = "k-means||",
    n_balanced_iter: int = 0,
    compute_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, int, float]:
    """Lloyd's k-means on X (n, D). Returns ``(centres (K, D), iterations run, inertia)``.

    ``n_balanced_iter`` final iterations use :func:`balanced_assign` instead of the nearest centre, so
    the centres settle where a size-constrained assignment puts the points.
    Empty clusters are re-seeded with the points farthest from their centres (as scikit-learn does).
    """
    n, D = X.shape
    if n < n_clusters:
        raise SemidError(f"n_samples={n} should be >= n_clusters={n_clusters}")
    if init in ("k-means++", "k-means||"):
        # Seeding on a sample keeps the K sequential passes cheap; 64 points per centre is plenty.
        m = min(n, max(_KPP_POINTS_PER_CENTROID * n_clusters, 4096))
        sample = X[torch.as_tensor(np.sort(rng.choice(n, m, replace=False)), device=X.device)] if m < n else X
        seed = kmeans_plusplus if init == "k-means++" else kmeans_parallel
        C = seed(sample, n_clusters, rng)
    elif init == "random":
        C = X[torch.as_tensor(np.sort(rng.choice(n, n_clusters, replace=False)), device=X.device)].clone()
    else:
        raise SemidError(f"init={init!r} is not one of 'k-means||', 'k-means++', 'random'")

    prev = math.inf
    inertia = math.inf
    it = n_balanced_done = 0
    balanced = False
    while True:
        it += 1
        if balanced:
            codes = balanced_assign(X, C)
            dist = ((X - C[codes]) ** 2).sum(1)
        else:
            codes, dist = nearest_centroid(X, C, exact_ties=False, compute_dtype=compute_dtype)
        inertia = float(dist.double().sum())
        sums = torch.zeros_like(C).index_add_(0, codes, X)  # (K, D)
        counts = torch.bincount(codes, minlength=n_clusters).to(X.dtype)  # (K,)
        empty = torch.nonzero(counts == 0).flatten()
        C = sums / counts.clamp_min(1.0)[:, None]
        if empty.numel():
            far = torch.topk(dist, empty.numel()).indices
            C[empty] = X[far]
        if balanced:
            n_balanced_done += 1
            if n_balanced_done >= n_balanced_iter:
                break
        elif it >= n_iter or (empty.numel() == 0 and math.isfinite(prev) and prev - inertia <= tol * prev):
            if n_balanced_iter == 0:
                break
            balanced = True
        prev = inertia
    return C, it, inertia


def check_kmeans_options(est: Any) -> None:
    """The k-means options the quantizers share (``tol``, ``init``, ``sample_size``, ``random_state``,
    ``device`` of ``est``), checked before any work: one clear error each."""
    if isinstance(est.tol, bool) or not isinstance(est.tol, (int, float, np.number)) or not est.tol >= 0:
        raise SemidError(f"tol={est.tol!r} should be a number >= 0")
    if not isinstance(getattr(est, "balanced", False), (bool, np.bool_)):  # "no" would count as True
        raise SemidError(f"balanced={est.balanced!r} should be True or False")
    if est.init not in ("k-means||", "k-means++", "random"):
        raise SemidError(f"init={est.init!r} is not one of 'k-means||', 'k-means++', 'random'")
    if est.sample_size is not None and (
        not isinstance(est.sample_size, (int, np.integer)) or est.sample_size < 0
    ):
        raise SemidError(
            f"sample_size={est.sample_size!r} should be None, 0 (all rows) or a positive integer"
        )
    if not isinstance(est.random_state, np.random.Generator):
        check_random_state(est.random_state)  # a negative seed fails here, before any work
    resolve_device(est.device)
