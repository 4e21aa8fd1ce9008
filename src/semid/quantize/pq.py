"""Product quantization (PQ, Jégou et al. 2011), optionally after an OPQ rotation (Ge et al. 2013).

    ProductQuantizer(n_subvectors=32, codebook_size=256, opq=True, random_state=0).fit(X)
    codes = model.encode(X)        # (n, 32) int32: the nearest centroid of each sub-vector
    X_hat = model.decode(codes)    # (n, D): the chosen centroids side by side, rotated back

The input (rotated by ``R`` when ``opq=True``) is cut into ``M`` sub-vectors of ``D / M`` features, and
each has its own k-means codebook (``semid.quantize.kmeans``: the engine under RQ-KMeans). A code is the
``M`` nearest centroids. Unlike RQ-KMeans the digits are *unordered*: no digit refines another, so an ID
is a set of ``M`` parallel facts about the item, which is what RPG (``semid.rec.rpg``) predicts at once.
With ``K`` codes per digit there are ``K ** M`` IDs, so long PQ IDs (32 x 256) almost never collide.

With ``pca_dim=d`` the input is first reduced to its ``d`` leading principal components (centred, no
whitening), and everything below happens in those ``d`` dimensions: RPG's recipe quantizes sentence-T5
vectors reduced to 128 by PCA, 4 features per sub-vector at 32 x 256. PCA is an SVD of at most 65,536
seeded rows (``m x D^2``; Beauty's 12,101 x 384: well under a second); each component's sign is fixed
(its largest entry positive), so a seed gives one model.

OPQ learns an orthonormal rotation ``R`` (``D x D``) that balances the variance between sub-vectors and
decorrelates them, so the same ``M x K`` codes reconstruct better. It is faiss's ``OPQMatrix`` (the
optional ``faiss`` extra), started from a seeded random rotation, its inner PQ seeded too; the codebooks
are then our own k-means in the rotated space (faiss's inner PQ only serves the rotation). ``x`` is coded
as ``y = R x`` (``y = R P (x - mu)`` with PCA); decoding maps back with ``R^T`` (and ``P^T``, ``+ mu``).

Costs. ``fit``: the M k-means together cost about one k-means of ``K`` centroids over all ``D`` features
(``n_iter`` passes of ``n x K x D``); OPQ adds ``opq_iter`` rounds of a small PQ training and a ``D x D``
SVD on at most 65,536 rows. ``encode``: one ``D x D`` product (OPQ) and ``n x K x D`` for the nearest
centroids, in row chunks. A saved model's codes are machine-independent like RQ-KMeans' (float64 rotation,
float64 re-check of near-ties); ``fit`` with one seed gives the same model on the same device (the
rotation is learnt single-threaded; the k-means steps, as RQ-KMeans', may differ in the last float bits
across devices and thread counts).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from semid._utils import check_positive_int, check_random_state, resolve_device
from semid.errors import SemidError
from semid.quantize.base import BaseQuantizer, as_float_matrix, per_level_sizes
from semid.quantize.kmeans import check_kmeans_options, lloyd, nearest_centroid

_ROTATE_ROWS = 65536  # rows rotated at a time (a float64 block of 65,536 x D)
_OPQ_MAX_NBITS = 12  # the rotation is learnt with at most 4,096 centroids per sub-vector
_PCA_MAX_ROWS = 65536  # PCA is fitted on at most this many (seeded) rows


def require_faiss() -> Any:
    """The ``faiss`` module, or one error saying how to install it (OPQ needs it; plain PQ does not)."""
    try:
        import faiss
    except ImportError:
        raise SemidError("opq=True needs faiss: pip install 'semid[faiss]'") from None
    return faiss


def fit_pca(X: np.ndarray, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, float]:
    """``(mean (D,), components (dim, D), explained)`` float32 of ``X`` (n, D), in float64 by an SVD of at
    most 65,536 seeded rows; ``explained`` is the share of the variance the ``dim`` components keep. Each
    component's sign makes its largest-magnitude entry positive (the SVD's signs are arbitrary)."""
    n = X.shape[0]
    rows = np.sort(rng.choice(n, _PCA_MAX_ROWS, replace=False)) if n > _PCA_MAX_ROWS else slice(None)
    S = X[rows].astype(np.float64)
    mean = S.mean(axis=0)
    _, sv, Vt = np.linalg.svd(S - mean, full_matrices=False)  # Vt: (min(m, D), D)
    P = Vt[:dim]
    P *= np.sign(P[np.arange(dim), np.abs(P).argmax(axis=1)])[:, None]
    var = sv**2
    explained = float(var[:dim].sum() / var.sum()) if var.sum() > 0 else 1.0
    return mean.astype(np.float32), P.astype(np.float32), explained


def fit_opq_rotation(
    X: np.ndarray, n_subvectors: int, nbits: int, rng: np.random.Generator, *, n_iter: int, verbose: bool
) -> np.ndarray:
    """The OPQ rotation ``R`` (D, D) float32 of ``X`` (n, D) by faiss: codes are taken of ``X @ R.T``.

    faiss alternates a PQ of ``M x 2**nbits`` centroids with the orthogonal Procrustes update of ``R`` for
    ``n_iter`` rounds, on a sample of at most 65,536 rows. Both the starting rotation and the PQ's
    k-means seed come from ``rng``. faiss runs on one OpenMP thread (bit-exact results on any machine).
    """
    faiss = require_faiss()
    D = X.shape[1]
    opq = faiss.OPQMatrix(D, n_subvectors)
    opq.niter = int(n_iter)
    opq.verbose = bool(verbose)
    pq = faiss.ProductQuantizer(D, n_subvectors, nbits)
    pq.cp.seed = int(rng.integers(2**31 - 1))
    pq.cp.min_points_per_centroid = 1  # no warning per round for small catalogues (n < 39 K)
    opq.pq = pq  # `pq` stays referenced here while faiss trains with it
    start = np.linalg.qr(rng.standard_normal((D, D)))[0]  # a seeded random rotation to start from
    faiss.copy_array_to_vector(np.ascontiguousarray(start, dtype=np.float32).ravel(), opq.A)
    threads = faiss.omp_get_max_threads()
    # One thread: faiss's SVD and matrix products are bit-exact only single-threaded, and the rotation
    # fixes every code, so the same seed must learn the same rotation on any machine (44 s for Beauty's
    # 12,101 x 384 at 32 x 256).
    faiss.omp_set_num_threads(1)
    try:
        opq.train(np.ascontiguousarray(X, dtype=np.float32))
    finally:
        faiss.omp_set_num_threads(threads)
    return faiss.vector_to_array(opq.A).reshape(D, D).astype(np.float32)  # y = A x


class ProductQuantizer(BaseQuantizer):
    """Product quantizer (optionally OPQ-rotated) with the sklearn estimator surface of the quantizers.

    Parameters
    ----------
    n_subvectors : M, the number of sub-vectors (digits of an ID); it must divide the input dimension
        (``pca_dim`` when given).
    codebook_size : centroids per sub-vector; an int, or a list with one size per sub-vector.
    pca_dim : reduce the input to this many principal components first (``None``: keep all ``D``); at most
        ``D`` and the number of rows.
    opq : learn an OPQ rotation first (needs faiss: ``pip install 'semid[faiss]'``). The rotation is learnt
        with ``2 ** round(log2 K)`` centroids per sub-vector (faiss's PQ needs a power of two; at most
        4,096 and at most the number of rows), then the codebooks are fitted with ``K``.
    opq_iter : rounds of the OPQ alternation (faiss's default is 50).
    n_iter, tol, init, sample_size : each sub-vector's k-means, as in :class:`~semid.quantize.RQKMeans`
        (``sample_size=None`` trains on ``min(n, 256 * K)`` rows, ``0`` on all; every row is coded).
    random_state : seed; the same seed gives identical codes.
    device : ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"mps"``.
    verbose : show a progress bar over sub-vectors.

    Fitted attributes
    -----------------
    centroids_ : list of M (K_m, d / M) float32 arrays, in the rotated space (``d``: ``pca_dim`` or ``D``).
    rotation_ : (d, d) float32 orthonormal matrix (``y = rotation_ @ x``), or None without OPQ.
    pca_mean_, pca_components_ : (D,) and (d, D) float32, or None without ``pca_dim``.
    pca_explained_ : share of the input's variance the ``pca_dim`` components keep (None without).
    inertia_ : sum of squared distances of the rows to their reconstruction.
    n_iter_ : Lloyd iterations run, per sub-vector.
    n_features_in_ : D.
    """

    model_type = "pq"
    _fitted_attrs = ("centroids_",)

    def __init__(
        self,
        n_subvectors: int = 32,
        codebook_size: int | Sequence[int] = 256,
        *,
        pca_dim: int | None = None,
        opq: bool = False,
        opq_iter: int = 50,
        n_iter: int = 20,
        tol: float = 1e-4,
        init: str = "k-means||",
        sample_size: int | None = None,
        random_state: int | None = 0,
        device: str = "auto",
        verbose: bool = False,
    ) -> None:
        self.n_subvectors = n_subvectors
        self.codebook_size = codebook_size
        self.pca_dim = pca_dim
        self.opq = opq
        self.opq_iter = opq_iter
        self.n_iter = n_iter
        self.tol = tol
        self.init = init
        self.sample_size = sample_size
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # -- parameters -----------------------------------------------------------------------------
    def _sizes(self) -> list[int]:
        return per_level_sizes(self.codebook_size, self.n_subvectors, "n_subvectors", "sub-vector")

    def _validate_params(self, n_features: int | None = None) -> list[int]:
        """Check every parameter (and, given ``n_features``, that M divides the dimension the sub-vectors are
        cut from); one clear error each."""
        sizes = self._sizes()
        d = self.pca_dim
        if d is not None and (isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1):
            raise SemidError(f"pca_dim={d!r} should be None or an integer >= 1")
        if d is not None and n_features is not None and d > n_features:
            raise SemidError(f"pca_dim={d} is more than the {n_features} features of X")
        if not isinstance(self.opq, (bool, np.bool_)):
            raise SemidError(f"opq={self.opq!r} should be True or False")
        for name in ("opq_iter", "n_iter"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise SemidError(f"{name}={v!r} should be an integer >= 1")
        check_kmeans_options(self)
        if n_features is not None and d is not None and d % len(sizes):
            raise SemidError(
                f"pca_dim={d}, which n_subvectors={len(sizes)} does not divide "
                "(every sub-vector needs the same number of features)"
            )
        if n_features is not None and d is None and n_features % len(sizes):
            raise SemidError(
                f"X has {n_features} features, which n_subvectors={len(sizes)} does not divide "
                "(every sub-vector needs the same number of features)"
            )
        return sizes

    @property
    def codebook_sizes_(self) -> list[int]:
        self._check_fitted()
        return [int(c.shape[0]) for c in self.centroids_]

    # -- fit ------------------------------------------------------------------------------------
    def fit(self, X: Any, y: None = None) -> ProductQuantizer:
        """Learn the PCA (``pca_dim``), the rotation (``opq=True``) and one codebook per sub-vector. Returns
        ``self``."""
        sizes = self._validate_params()
        if self.opq:
            require_faiss()  # before any work (a fitted OPQ model loads and encodes without faiss)
        X = as_float_matrix(X)
        n, D = X.shape
        if n == 0:
            raise SemidError("X has no rows")
        self._validate_params(D)
        if n < max(sizes):
            raise SemidError(f"n_samples={n} should be >= codebook_size={max(sizes)}")
        if self.pca_dim is not None and self.pca_dim > n:
            raise SemidError(f"pca_dim={self.pca_dim} is more than the {n} rows of X")
        rng = check_random_state(self.random_state)
        device = resolve_device(self.device)
        self.pca_mean_ = self.pca_components_ = self.pca_explained_ = None
        if self.pca_dim is not None:
            self.pca_mean_, self.pca_components_, self.pca_explained_ = fit_pca(X, int(self.pca_dim), rng)
        Z = _reduce(X, self.pca_mean_, self.pca_components_)  # (n, d): d = pca_dim or D
        d = Z.shape[1]
        M, ds = len(sizes), d // len(sizes)
        rotation = None
        if self.opq:
            nbits = min(max(1, round(math.log2(max(sizes)))), _OPQ_MAX_NBITS, int(math.log2(n)))
            rotation = fit_opq_rotation(Z, M, nbits, rng, n_iter=int(self.opq_iter), verbose=self.verbose)
        Y = torch.from_numpy(_rotate(Z, rotation)).to(device)  # (n, d) in the rotated space
        centroids, n_iters, inertia = [], [], 0.0
        subs = tqdm(range(M), desc="PQ", unit="sub-vector", disable=not self.verbose)
        for m in subs:
            K = sizes[m]
            sub = Y[:, m * ds : (m + 1) * ds].contiguous()  # (n, d / M)
            rows = self._sample_rows(n, K, rng)
            C, it, _ = lloyd(
                sub[torch.as_tensor(rows, device=device)] if rows is not None else sub,
                K,
                n_iter=int(self.n_iter),
                tol=float(self.tol),
                rng=rng,
                init=self.init,
            )
            _, dist = nearest_centroid(sub, C, exact_ties=True)
            inertia += float(dist.double().sum())
            centroids.append(C.cpu().numpy().astype(np.float32, copy=False))
            n_iters.append(it)
        self.centroids_ = centroids
        self.rotation_ = rotation
        self.n_iter_ = n_iters
        self.n_features_in_ = D
        self.inertia_ = inertia
        self._device = device
        return self

    def _code_space(self, X: np.ndarray) -> np.ndarray:
        """(n, D) input -> (n, d) float32 where the sub-vectors are cut: the PCA, then the rotation."""
        return _rotate(_reduce(X, self.pca_mean_, self.pca_components_), self.rotation_)

    def _sample_rows(self, n: int, K: int, rng: np.random.Generator) -> np.ndarray | None:
        """Sorted rows to train one sub-vector's k-means on (``None``: all of them)."""
        m = n if self.sample_size == 0 else min(n, self.sample_size or 256 * K)
        m = max(m, K)
        return np.sort(rng.choice(n, m, replace=False)) if m < n else None

    # -- encode / decode ------------------------------------------------------------------------
    def _centroids_on(self, device: str) -> list[torch.Tensor]:
        cache = getattr(self, "_c_cache", None)
        if cache is None or cache[0] != device or cache[1] is not self.centroids_:
            cache = (device, self.centroids_, [torch.from_numpy(c).to(device) for c in self.centroids_])
            self._c_cache = cache
        return cache[2]

    def encode(self, X: Any, *, balanced: bool | None = None, batch_size: int = 65536) -> np.ndarray:
        """Codes (n, n_subvectors) int32: the nearest centroid of each sub-vector, in chunks of ``batch_size``.

        ``balanced`` is part of the quantizers' surface; PQ has no size-constrained assignment, so
        ``balanced=True`` is an error.
        """
        self._check_fitted()
        if balanced:
            raise SemidError("product quantization has no balanced assignment; encode with balanced=False")
        batch_size = check_positive_int("batch_size", batch_size)
        X = as_float_matrix(X)
        self._check_dim(X)
        device = resolve_device(getattr(self, "_device", None) or self.device)
        cs = self._centroids_on(device)
        ds = cs[0].shape[1]
        n = X.shape[0]
        out = np.empty((n, len(cs)), dtype=np.int32)
        step = batch_size
        for s in range(0, n, step):
            Y = torch.from_numpy(self._code_space(X[s : s + step])).to(device)  # (b, d)
            for m, C in enumerate(cs):
                sub = Y[:, m * ds : (m + 1) * ds]  # (b, d / M)
                out[s : s + step, m] = nearest_centroid(sub, C, return_dist=False)[0].cpu().numpy()
        return out

    def decode(self, codes: Any) -> np.ndarray:
        """Vectors (n, D) float32: each sub-vector's chosen centroid, side by side, rotated back (and
        mapped back from the principal components with ``pca_dim``)."""
        self._check_fitted()
        codes = self._check_codes(codes)
        Y = np.concatenate([C[codes[:, m]] for m, C in enumerate(self.centroids_)], axis=1)  # (n, d)
        if self.rotation_ is None and self.pca_components_ is None:
            return Y.astype(np.float32, copy=False)
        Y = Y.astype(np.float64)
        if self.rotation_ is not None:
            Y = Y @ self.rotation_.astype(np.float64)  # (n, d) back from the rotation
        if self.pca_components_ is not None:
            Y = Y @ self.pca_components_.astype(np.float64) + self.pca_mean_  # (n, D) back from the PCA
        return Y.astype(np.float32)

    def rank_last_level(self, X: Any) -> np.ndarray:
        """For each row, the last sub-vector's codes ordered nearest first (drives ``dedup="remap"``).

        (n, K_last) int32, by exact float64 distances (ties: lowest code first).
        """
        self._check_fitted()
        X = as_float_matrix(X)
        self._check_dim(X)
        last = self.centroids_[-1]
        Y = self._code_space(X)[:, -last.shape[1] :]  # (n, d / M) the last sub-vector
        d = torch.cdist(torch.from_numpy(Y).double(), torch.from_numpy(last).double())  # (n, K_last)
        return torch.argsort(d, dim=1, stable=True).numpy().astype(np.int32)

    # -- persistence hooks ----------------------------------------------------------------------
    def _get_config(self) -> dict[str, Any]:
        return {
            "n_subvectors": int(self.n_subvectors),
            "codebook_size": self._sizes(),
            "pca_dim": None if self.pca_dim is None else int(self.pca_dim),
            "pca_explained": getattr(self, "pca_explained_", None),
            "opq": bool(self.opq),
            "opq_iter": int(self.opq_iter),
            "n_iter": int(self.n_iter),
            "tol": float(self.tol),
            "init": self.init,
            "sample_size": self.sample_size,
            "random_state": self.random_state,
            "n_features_in": int(self.n_features_in_),
            "inertia": getattr(self, "inertia_", None),
            "n_iter_run": list(getattr(self, "n_iter_", [])),
        }

    def _get_arrays(self) -> dict[str, np.ndarray]:
        arrays = {f"centroids_{m}": c for m, c in enumerate(self.centroids_)}
        if self.rotation_ is not None:
            arrays["rotation"] = self.rotation_
        if getattr(self, "pca_components_", None) is not None:
            arrays["pca_mean"], arrays["pca_components"] = self.pca_mean_, self.pca_components_
        return arrays

    @classmethod
    def _from_config(cls, config: dict[str, Any], *, device: str) -> ProductQuantizer:
        keys = (
            "n_subvectors",
            "codebook_size",
            "pca_dim",
            "opq",
            "opq_iter",
            "n_iter",
            "tol",
            "init",
            "sample_size",
        )
        kwargs = {k: config[k] for k in keys if k in config}
        return cls(random_state=config.get("random_state"), device=device, **kwargs)

    def _set_state(self, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> None:
        M = int(config["n_subvectors"])
        try:
            self.centroids_ = [
                np.ascontiguousarray(arrays[f"centroids_{m}"], dtype=np.float32) for m in range(M)
            ]
        except KeyError as e:
            raise SemidError(f"model weights lack {e.args[0]!r} (n_subvectors={M} in config.json)") from None
        dims = {c.shape[1] for c in self.centroids_}
        if len(dims) != 1:
            raise SemidError(f"sub-vector codebooks have different dimensions {sorted(dims)}")
        d = M * dims.pop()  # where the sub-vectors are cut
        self.n_features_in_ = d
        self.pca_mean_ = self.pca_components_ = None
        self.pca_explained_ = config.get("pca_explained")
        if config.get("pca_dim") is not None:
            if "pca_components" not in arrays or "pca_mean" not in arrays:
                raise SemidError("model weights lack 'pca_components' / 'pca_mean' (pca_dim in config.json)")
            P = np.ascontiguousarray(arrays["pca_components"], dtype=np.float32)
            mean = np.ascontiguousarray(arrays["pca_mean"], dtype=np.float32)
            if P.ndim != 2 or P.shape[0] != d or mean.shape != (P.shape[1],):
                raise SemidError(
                    f"pca_components has shape {P.shape} and pca_mean {mean.shape}, expected ({d}, D) and (D,)"
                )
            self.pca_mean_, self.pca_components_ = mean, P
            self.n_features_in_ = P.shape[1]
        self.rotation_ = None
        if config.get("opq"):
            if "rotation" not in arrays:
                raise SemidError("model weights lack 'rotation' (opq=true in config.json)")
            self.rotation_ = np.ascontiguousarray(arrays["rotation"], dtype=np.float32)
            if self.rotation_.shape != (d, d):
                raise SemidError(f"rotation has shape {self.rotation_.shape}, expected ({d}, {d})")
        self.inertia_ = config.get("inertia")
        self.n_iter_ = config.get("n_iter_run", [])

    def __repr__(self) -> str:
        return (
            f"ProductQuantizer(n_subvectors={self.n_subvectors}, codebook_size={self.codebook_size}, "
            f"pca_dim={self.pca_dim}, opq={self.opq}, random_state={self.random_state})"
        )


def _reduce(X: np.ndarray, mean: np.ndarray | None, components: np.ndarray | None) -> np.ndarray:
    """``(X - mean) @ components.T`` (n, d) float32; ``X`` itself without a PCA."""
    if components is None:
        return X
    return _project(X, components, mean)


def _rotate(X: np.ndarray, rotation: np.ndarray | None) -> np.ndarray:
    """``X @ rotation.T`` (n, D) float32."""
    if rotation is None:
        return X if X.flags.writeable else X.copy()  # torch wants writable memory (e.g. X read from Arrow)
    return _project(X, rotation)


def _project(X: np.ndarray, matrix: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """``(X - mean) @ matrix.T`` (n, matrix rows) float32, computed in float64 blocks so every machine
    rounds alike."""
    M = matrix.astype(np.float64).T
    mu = None if mean is None else mean.astype(np.float64)
    out = np.empty((X.shape[0], M.shape[1]), dtype=np.float32)
    for s in range(0, X.shape[0], _ROTATE_ROWS):
        block = X[s : s + _ROTATE_ROWS].astype(np.float64)  # (b, D)
        out[s : s + _ROTATE_ROWS] = (block if mu is None else block - mu) @ M
    return out
