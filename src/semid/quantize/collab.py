"""Collaborative vectors as quantizer input: joined to the catalogue by item id, or fused with the text.

Two ways to give Semantic IDs collaborative signal (e.g. SASRec's item vectors, ``semid export-embeddings``):

- the RQ-VAE's collaborative term (``RQVAE(collab_weight=w).fit(X, collab=C)``, LETTER): the IDs still
  encode the text embedding alone, the collaborative vectors only shape the training;
- fusing (:func:`fuse`, any quantizer): quantize ``[x / ||x||, w c / ||c||]``, the text embedding and the
  collaborative vector side by side, so both decide the codes. A fused model records its :class:`Fusion`
  in ``config.json``; encoding new items needs the same collaborative table.

Either way the collaborative table is joined to the embeddings **by item id** (:func:`align_by_item_id`),
never by row order, and must cover the same items::

    C = align_by_item_id(item_ids, collab_ids, collab)       # (n, d) rows in the order of item_ids
    model = RQKMeans(n_levels=3, codebook_size=256).fit(fuse(X, C, weight=1.0))
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from semid.errors import SemidError
from semid.quantize.base import BaseQuantizer, as_float_matrix

# Defaults of `semid fit --collab-weight` / `--fuse-weight`. Not tuned: 0.1 puts the RQ-VAE's in-batch
# InfoNCE term (about log(batch) at the start) on the scale of its reconstruction loss (a relative error
# below 1); a fuse weight of 1 gives both halves of a fused vector the same norm.
DEFAULT_COLLAB_WEIGHT = 0.1
DEFAULT_FUSE_WEIGHT = 1.0


def align_by_item_id(
    item_ids: Any,
    collab_ids: Any,
    collab: np.ndarray,
    *,
    name: str = "collab",
    catalogue: str = "the catalogue",
    allow_extra: bool = False,
) -> np.ndarray:
    """The rows of ``collab`` (m, d) in the order of ``item_ids`` (n,): ``(n, d)`` float32.

    Ids match as text (``17`` and ``"17"`` are one item). Both tables must hold the same items: a missing
    or an extra item is one :class:`SemidError` that names both sizes and the first item concerned, e.g.
    ``collab has 90 items, the catalogue has 100 (10 of the catalogue's items are missing, e.g. 'B00X')``.
    ``name`` and ``catalogue`` name the two tables in that message. ``allow_extra``: ``collab`` may hold
    items ``item_ids`` lacks (encoding a batch of a catalogue against its whole table); missing ones still
    fail.
    """
    keys = [str(i) for i in np.asarray(item_ids, dtype=object)]
    ckeys = [str(i) for i in np.asarray(collab_ids, dtype=object)]
    C = as_float_matrix(collab, name=name)
    if len(ckeys) != C.shape[0]:
        raise SemidError(f"{name}: {len(ckeys)} item ids for {C.shape[0]} rows")
    row = dict(zip(ckeys, range(len(ckeys)), strict=True))
    if len(row) != len(ckeys):
        raise SemidError(f"{name}: item ids repeat ({len(ckeys) - len(row)} duplicates)")
    missing = [k for k in keys if k not in row]
    wanted = set(keys)
    extra = [] if allow_extra else [k for k in ckeys if k not in wanted]
    if missing or extra:
        why = []
        if missing:
            why.append(f"{len(missing):,} of {catalogue}'s items are missing, e.g. {missing[0]!r}")
        if extra:
            why.append(f"{len(extra):,} are not in {catalogue}, e.g. {extra[0]!r}")
        raise SemidError(f"{name} has {len(ckeys):,} items, {catalogue} has {len(keys):,} ({'; '.join(why)})")
    return C[np.fromiter((row[k] for k in keys), dtype=np.int64, count=len(keys))]


IMPUTE_ALPHAS = (0.01, 0.1, 1.0, 10.0, 100.0)  # ridge penalties tried on the held-out known rows


@dataclass(frozen=True)
class Imputation:
    """What :func:`impute_from_text` did: ``n_known`` rows fitted on, ``n_imputed`` rows filled, the ridge
    penalty ``alpha`` chosen, and on the held-out known rows: the share of the unit vectors' variance the
    fit explains (``held_out_r2``; the mean vector explains 0), and the mean cosine to the true vectors, of
    the fit (``held_out_cosine``) and of the mean known vector in its place (``mean_vector_cosine``)."""

    n_known: int
    n_imputed: int
    alpha: float
    held_out_r2: float
    held_out_cosine: float
    mean_vector_cosine: float

    def describe(self) -> str:
        """One phrase for messages."""
        return (
            f"{self.n_imputed:,} rows imputed from the text by ridge regression (alpha {self.alpha:g}, fitted on "
            f"{self.n_known:,}; held out: R² {self.held_out_r2:.3f}, cosine {self.held_out_cosine:.3f} against "
            f"the mean vector's {self.mean_vector_cosine:.3f})"
        )


def impute_from_text(
    X: Any,
    collab: Any,
    known: Any,
    *,
    alphas: tuple[float, ...] = IMPUTE_ALPHAS,
    held_out: float = 0.1,
    random_state: int = 0,
) -> tuple[np.ndarray, Imputation]:
    """``collab`` with the rows not ``known`` predicted from the text: ``(C_filled (n, d), Imputation)``.

    Items without interactions (cold items, new ones) have no learned collaborative vector: a SASRec row of
    such an item was only ever a negative, and a new item has none. On Beauty's cold-start split the 635
    untrained SASRec rows all point one way (mean pairwise cosine 0.9998, against 0.51 for trained rows, at
    4x their norm), so fused IDs file those items together, apart from every trained item. Here a ridge
    regression from the unit text vector (plus a bias) to the unit collaborative vector is fitted on the
    ``known`` rows; its penalty is the one of ``alphas`` with the least squared error on a seeded
    ``held_out`` share of them, then it is refitted on all of them. The unknown rows become its
    predictions, at the median norm of the known rows; known rows are returned unchanged. ``X`` (n, D) and
    ``collab`` (n, d) are row-aligned, ``known`` is (n,) bool. Cost: one (D+1) x (D+1) solve per penalty.
    """
    X = _unit_rows(as_float_matrix(X)).astype(np.float64)
    C = as_float_matrix(collab, name="collab")
    known = np.asarray(known)
    if known.shape != (X.shape[0],) or known.dtype != bool:
        raise SemidError(
            f"known should be a bool array of {X.shape[0]} values (one per row of X), got {known.shape}"
        )
    if C.shape[0] != X.shape[0]:
        raise SemidError(f"collab has {C.shape[0]} rows, X has {X.shape[0]} (one per row of X)")
    if not 0 < held_out < 1:
        raise SemidError(f"held_out={held_out!r} should be a share in (0, 1), e.g. 0.1")
    rows = np.flatnonzero(known)
    n_test = max(1, round(held_out * len(rows)))
    if len(rows) - n_test < 2:
        raise SemidError(f"{len(rows)} rows have a collaborative vector: too few to learn one from the text")
    A = np.hstack([X, np.ones((X.shape[0], 1))])  # (n, D + 1): the text and a bias
    T = _unit_rows(C).astype(np.float64)  # (n, d): the directions to predict (fusing normalises them)

    def ridge(fit: np.ndarray, alpha: float) -> np.ndarray:  # (D + 1, d)
        G = A[fit].T @ A[fit] + alpha * np.eye(A.shape[1])
        return np.linalg.solve(G, A[fit].T @ T[fit])

    def cosine(pred: np.ndarray, test: np.ndarray) -> float:
        return float(np.mean(np.sum(_unit_rows(pred) * T[test], axis=1)))

    order = np.random.default_rng(random_state).permutation(rows)
    test, fit = order[:n_test], order[n_test:]
    preds = {a: A[test] @ ridge(fit, a) for a in alphas}
    errors = {a: float(np.sum((P - T[test]) ** 2)) for a, P in preds.items()}
    alpha = min(errors, key=errors.__getitem__)
    mean = np.broadcast_to(T[fit].mean(axis=0), (n_test, T.shape[1]))
    r2 = 1 - errors[alpha] / float(np.sum((mean - T[test]) ** 2))
    filled = C.copy()
    unknown = np.flatnonzero(~known)
    if len(unknown):
        norm = float(np.median(np.linalg.norm(C[rows], axis=1)))
        filled[unknown] = (norm * _unit_rows(A[unknown] @ ridge(rows, alpha))).astype(np.float32)
    report = Imputation(len(rows), len(unknown), alpha, r2, cosine(preds[alpha], test), cosine(mean, test))
    return filled, report


def _unit_rows(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def fuse(X: Any, collab: Any, weight: float = DEFAULT_FUSE_WEIGHT) -> np.ndarray:
    """``[x / ||x||, weight * c / ||c||]`` per row: (n, D) text + (n, d) collaborative -> (n, D + d) float32.

    Row ``i`` of ``collab`` must belong to row ``i`` of ``X`` (:func:`align_by_item_id`). With both halves at
    unit norm, ``weight`` is the collaborative half's share of every squared distance: 1 weighs them equally.
    """
    _check_weight(weight)
    X = as_float_matrix(X)
    C = as_float_matrix(collab, name="collab")
    if C.shape[0] != X.shape[0]:
        raise SemidError(f"collab has {C.shape[0]} rows, X has {X.shape[0]} (one per row of X)")
    return np.ascontiguousarray(np.hstack([_unit_rows(X), float(weight) * _unit_rows(C)]), dtype=np.float32)


def _check_weight(weight: Any) -> None:
    if (
        isinstance(weight, bool)
        or not isinstance(weight, numbers.Real)
        or not 0 < weight < math.inf  # also NaN
    ):
        raise SemidError(f"fuse weight={weight!r} should be a number > 0")


@dataclass(frozen=True)
class Fusion:
    """How a fused quantizer's input was built: ``text_dim`` + ``collab_dim`` values, the collaborative half
    weighted by ``weight``; ``source`` names the collaborative table it was fitted with (a record only).

    Saved as ``"fusion"`` in the model's ``config.json`` (:meth:`BaseQuantizer.save_pretrained`), so that
    ``semid assign --fuse`` builds the same input.
    """

    weight: float
    text_dim: int
    collab_dim: int
    source: str | None = None

    def apply(self, X: Any, collab: Any, *, where: str = "X", collab_where: str = "collab") -> np.ndarray:
        """The fused input of row-aligned ``X`` (n, text_dim) and ``collab`` (n, collab_dim)."""
        X = as_float_matrix(X, name=where)
        C = as_float_matrix(collab, name=collab_where)
        for label, got, want in (
            (where, X.shape[1], self.text_dim),
            (collab_where, C.shape[1], self.collab_dim),
        ):
            if got != want:
                raise SemidError(
                    f"{label}: {got} values per row, but the model was fitted on {self.text_dim} text values "
                    f"fused with {self.collab_dim} collaborative ones"
                )
        return fuse(X, C, self.weight)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "config.json") -> Fusion:
        try:
            fusion = cls(
                weight=float(data["weight"]),
                text_dim=int(data["text_dim"]),
                collab_dim=int(data["collab_dim"]),
                source=data.get("source"),
            )
        except (KeyError, TypeError, ValueError):
            raise SemidError(
                f'{source}: "fusion" should hold weight, text_dim and collab_dim, got {data!r}'
            ) from None
        _check_weight(fusion.weight)
        return fusion

    def describe(self) -> str:
        """One phrase for messages: ``384 text + 64 collaborative values (weight 1)``."""
        return f"{self.text_dim} text + {self.collab_dim} collaborative values (weight {self.weight:g})"


def fit_fused(
    model: BaseQuantizer,
    X: Any,
    collab: Any,
    weight: float = DEFAULT_FUSE_WEIGHT,
    *,
    source: str | None = None,
    **fit_params: Any,
) -> BaseQuantizer:
    """Fit ``model`` (any quantizer) on ``fuse(X, collab, weight)`` and record the :class:`Fusion` in
    ``model.fusion_``; returns the model. ``collab`` is row-aligned with ``X`` (:func:`align_by_item_id`).

    Encode new items with ``model.encode(model.fusion_.apply(X_new, collab_new))``.
    """
    X = as_float_matrix(X)
    C = as_float_matrix(collab, name="collab")
    fused = fuse(X, C, weight)
    model.fit(fused, **fit_params)
    model.fusion_ = Fusion(float(weight), X.shape[1], C.shape[1], source)
    return model
