"""Codebook and ID quality: how well codes use their codebooks, collide, and reconstruct the input.

    report = quality_report(X, codes, codebook_sizes=[256] * 3, X_hat=model.decode(codes))

Per level: share of codes used, perplexity (exp of the code distribution's entropy; K when uniform).
Overall: unique-ID share before dedup, largest collision bucket, relative reconstruction error
``sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``, mean residual norm after each level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from semid.errors import SemidError


def _as_codes(codes: Any) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 2 or not np.issubdtype(codes.dtype, np.integer):
        raise SemidError(
            f"codes have shape {codes.shape} and dtype {codes.dtype}, expected an integer (n, levels) matrix"
        )
    return codes


def row_keys(codes: Any) -> np.ndarray:
    """One int64 key per row, equal exactly when rows are equal (mixed radix, or a rank when too wide)."""
    codes = _as_codes(codes).astype(np.int64, copy=False)
    if codes.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    radix = codes.max(0) + 1
    if np.all(codes >= 0) and np.sum(np.log2(np.maximum(radix, 1).astype(np.float64))) < 62:
        key = np.zeros(codes.shape[0], dtype=np.int64)
        for level in range(codes.shape[1]):
            key = key * radix[level] + codes[:, level]
        return key
    _, inverse = np.unique(codes, axis=0, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def codebook_usage(codes: Any, codebook_sizes: Sequence[int] | None = None) -> list[dict[str, float]]:
    """Per level: ``used`` codes, ``usage`` = used / K, ``perplexity`` = exp(entropy of code counts)."""
    codes = _as_codes(codes)
    sizes = list(codebook_sizes) if codebook_sizes is not None else [int(c.max()) + 1 for c in codes.T]
    out = []
    for level in range(codes.shape[1]):
        K = sizes[level] if level < len(sizes) else int(codes[:, level].max()) + 1
        counts = np.bincount(codes[:, level], minlength=K)
        p = counts[counts > 0] / max(codes.shape[0], 1)
        out.append(
            {
                "level": level,
                "codebook_size": int(K),
                "used": int((counts > 0).sum()),
                "usage": float((counts > 0).sum() / K),
                "perplexity": float(np.exp(-(p * np.log(p)).sum())) if p.size else 0.0,
                "max_bucket": int(counts.max()) if counts.size else 0,
            }
        )
    return out


def collision_stats(codes: Any) -> dict[str, float]:
    """Unique-ID share, largest bucket, items in colliding buckets, number of distinct IDs."""
    codes = _as_codes(codes)
    n = codes.shape[0]
    if n == 0:
        return {"n_items": 0, "n_unique": 0, "unique_share": 0.0, "max_collision": 0, "collided_share": 0.0}
    _, counts = np.unique(row_keys(codes), return_counts=True)
    return {
        "n_items": int(n),
        "n_unique": int(counts.size),
        "unique_share": float(counts.size / n),
        "max_collision": int(counts.max()),
        "collided_share": float(counts[counts > 1].sum() / n),
    }


def relative_reconstruction_error(X: Any, X_hat: Any) -> float:
    """``sum ||x - x_hat||^2 / sum ||x - mean(x)||^2`` (0 = perfect, 1 = as bad as predicting the mean)."""
    X = np.asarray(X, dtype=np.float64)
    X_hat = np.asarray(X_hat, dtype=np.float64)
    if X.shape != X_hat.shape:
        raise SemidError(f"X has shape {X.shape} but X_hat has shape {X_hat.shape}")
    denom = ((X - X.mean(0)) ** 2).sum()
    return float(((X - X_hat) ** 2).sum() / denom) if denom > 0 else 0.0


def residual_norms(X: Any, codes: Any, codebooks: Sequence[np.ndarray]) -> list[float]:
    """Mean L2 norm of the residual after each level (input norm first): the ``len(codebooks) + 1`` values."""
    R = np.array(X, dtype=np.float32, copy=True)
    codes = _as_codes(codes)
    norms = [float(np.linalg.norm(R, axis=1).mean())]
    for level, C in enumerate(codebooks):
        R -= C[codes[:, level]]
        norms.append(float(np.linalg.norm(R, axis=1).mean()))
    return norms


@dataclass
class QualityReport:
    """Everything ``semid stats`` prints about a set of codes."""

    n_items: int
    n_levels: int
    unique_share: float
    n_unique: int
    max_collision: int
    collided_share: float
    levels: list[dict[str, float]] = field(default_factory=list)
    reconstruction_error: float | None = None
    residual_norms: list[float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quality_report(
    codes: Any,
    *,
    codebook_sizes: Sequence[int] | None = None,
    X: Any = None,
    X_hat: Any = None,
    codebooks: Sequence[np.ndarray] | None = None,
) -> QualityReport:
    """Collect usage, collisions and (when X is given) reconstruction metrics into one report."""
    codes = _as_codes(codes)
    col = collision_stats(codes)
    rep = QualityReport(
        n_items=col["n_items"],
        n_levels=int(codes.shape[1]),
        unique_share=col["unique_share"],
        n_unique=col["n_unique"],
        max_collision=col["max_collision"],
        collided_share=col["collided_share"],
        levels=codebook_usage(codes, codebook_sizes),
    )
    if X is not None and X_hat is not None:
        rep.reconstruction_error = relative_reconstruction_error(X, X_hat)
    if X is not None and codebooks is not None:
        rep.residual_norms = residual_norms(X, codes, codebooks)
    return rep
