"""Semantic IDs of the Amazon Beauty items for ``bench/beauty_rec.py`` and the benchmarks built on it
(``scaled_defaults.py``, ``tiger_step.py``, ``train_scale.py``, ``cold_impute.py``): the data loader, the
MiniLM vectors and the ID sets, each fitted once and cached beside the runs.

ID sets: ``rq-kmeans`` and ``rq-vae`` (3 x 256 on the MiniLM vectors), ``pq`` (RPG's OPQ 32 x 256), and two
built with a SASRec run's item vectors too, ``rq-vae-collab`` (LETTER's alignment term) and ``fused``
(RQ-KMeans on [MiniLM, SASRec]); all get a suffix level for collisions.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BEAUTY  # noqa: E402

PQ_DIGITS = 32  # RPG's Beauty IDs: OPQ32 x 256 (arXiv 2506.05781)
COLLAB_IDS = ("rq-vae-collab", "fused")  # IDs built from a SASRec run's item vectors too
ID_METHODS = ("rq-kmeans", "rq-vae", "pq", *COLLAB_IDS)


def load_beauty() -> Any:
    from semid.data import load_dataset

    return load_dataset([BEAUTY / "recbole_item", BEAUTY / "p5"])


def minilm() -> tuple[np.ndarray, np.ndarray]:
    """The reference MiniLM vectors of the Beauty items (float32, one row per item) and their item ids."""
    X = np.load(BEAUTY / "embeddings" / "minilm-l6-v2.npy").astype(np.float32)
    return X, np.array(json.loads((BEAUTY / "embeddings" / "items.json").read_text()), dtype=object)


def make_ids(
    method: str,
    out: Path,
    seed: int,
    *,
    collab_run: Path | None = None,
    collab_weight: float | None = None,
    fuse_weight: float | None = None,
    pq_pca: int | None = None,
    tag: str = "",
) -> Any:
    """Semantic IDs of the Beauty items (cached in ``out``): 3 x 256 codes (``pq``: OPQ 32 x 256) + a suffix
    level for collisions. ``rq-vae-collab`` and ``fused`` also read the item vectors of the SASRec run
    ``collab_run``, joined by item id; their file name carries ``tag`` (e.g. ``-cold``), and a cached one is
    used only if it was made from that run, as trained now, with the same weight.

    ``pq_pca``: ``pq`` reduces the MiniLM vectors to that many principal components first (RPG's recipe:
    128, so 4 features per sub-vector); the file is then ``ids-pq-pca<d>.parquet``.

    Seed 0 keeps the file name of the single-seed runs (``ids-rq-kmeans.parquet``); others add ``-s<seed>``.
    """
    from semid.ids import deduplicate, format_ids
    from semid.ids.table import IdTable, read_ids, write_ids
    from semid.quantize.collab import DEFAULT_COLLAB_WEIGHT, DEFAULT_FUSE_WEIGHT

    meta: dict[str, Any] = {"method": method}
    if method in COLLAB_IDS:
        weight = collab_weight if method == "rq-vae-collab" else fuse_weight
        default = DEFAULT_COLLAB_WEIGHT if method == "rq-vae-collab" else DEFAULT_FUSE_WEIGHT
        meta.update(collab_run=str(collab_run), weight=default if weight is None else weight)
    if method == "pq" and pq_pca:
        meta["pca_dim"] = pq_pca
        tag = f"-pca{pq_pca}"
    path = (
        out
        / f"ids-{method}{tag if method in COLLAB_IDS or 'pca_dim' in meta else ''}{seed_suffix(seed)}.parquet"
    )
    if path.is_file():
        cached = read_ids(path)
        trained = collab_run / "model.safetensors" if method in COLLAB_IDS else None
        if trained is None or (
            all(cached.meta.get(k) == v for k, v in meta.items())
            and trained.is_file()
            and path.stat().st_mtime >= trained.stat().st_mtime
        ):
            return cached
    X, item_ids = minilm()
    t = time.perf_counter()
    if method in COLLAB_IDS:
        from semid.quantize.collab import align_by_item_id
        from semid.rec.io import load_sasrec_run, untrained_items

        sasrec, sasrec_data = load_sasrec_run(collab_run)
        C = align_by_item_id(
            item_ids, sasrec_data.item_ids, sasrec.item_embeddings(), name=str(collab_run), catalogue="MiniLM"
        )
        untrained = untrained_items(sasrec_data)
        print(
            f"{method}: {C.shape[1]}-d item vectors of {collab_run} "
            f"({int(untrained.sum()) if untrained is not None else '?'} items in no training sequence)"
        )
    if method == "rq-vae-collab":  # LETTER's alignment term; the IDs encode the MiniLM vector alone
        from semid.quantize.rq_vae import RQVAE

        quantizer = RQVAE(n_levels=3, codebook_size=256, random_state=seed, collab_weight=meta["weight"]).fit(
            X, collab=C
        )
    elif method == "fused":  # both vectors decide the codes
        from semid.quantize import RQKMeans
        from semid.quantize.collab import fit_fused

        quantizer = fit_fused(
            RQKMeans(n_levels=3, codebook_size=256, random_state=seed), X, C, meta["weight"]
        )
        X = quantizer.fusion_.apply(X, C)
    elif method == "rq-kmeans":
        from semid.quantize import RQKMeans

        quantizer = RQKMeans(n_levels=3, codebook_size=256, random_state=seed).fit(X)
    elif method == "rq-vae":
        from semid.quantize.rq_vae import RQVAE

        quantizer = RQVAE(n_levels=3, codebook_size=256, random_state=seed).fit(X)
    elif method == "pq":  # RPG's IDs: OPQ, 32 digits of 256 codes (faiss learns the rotation)
        from semid.quantize import ProductQuantizer

        dim = pq_pca or X.shape[1]
        digits = max(m for m in range(1, PQ_DIGITS + 1) if dim % m == 0)
        quantizer = ProductQuantizer(
            n_subvectors=digits, codebook_size=256, opq=True, pca_dim=pq_pca, random_state=seed
        ).fit(X)
    else:
        raise SystemExit(f"unknown --ids method {method!r} ({', '.join(ID_METHODS)})")
    base = quantizer.encode(X)
    codes = deduplicate(base, "suffix", item_ids=item_ids).codes
    table = IdTable(item_ids, format_ids(codes, "dash"), codes, base, meta)
    write_ids(path, table)
    unique = len(np.unique(base, axis=0)) / len(base)
    print(
        f"{method}: fitted in {time.perf_counter() - t:.0f}s, unique before suffix {unique:.4f}, levels {codes.shape[1]}"
    )
    return table


def seed_suffix(seed: int) -> str:
    return "" if seed == 0 else f"-s{seed}"
