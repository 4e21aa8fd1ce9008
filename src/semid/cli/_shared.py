"""What `semid fit`, `semid assign` and `semid stats` share: option types, the embeddings readers (with
the --fuse join by item id) and the quality-report table."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from semid.errors import SemidError

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


class Method(str, Enum):
    rq_kmeans = "rq-kmeans"
    rq_vae = "rq-vae"
    pq = "pq"


class Dedup(str, Enum):
    suffix = "suffix"
    remap = "remap"
    none = "none"


class Engine(str, Enum):
    local = "local"
    ray = "ray"


class Format(str, Enum):
    dash = "dash"
    angle = "angle"
    bracket = "bracket"


EmbOpt = Annotated[
    Path, typer.Argument(help="Embeddings: .parquet (item_id + embedding) or .npy.", show_default=False)
]
IdCol = Annotated[str, typer.Option("--id-column", help="Item id column of a Parquet EMB.")]
EmbCol = Annotated[str, typer.Option("--embedding-column", help="Embedding column of a Parquet EMB.")]
IdsFile = Annotated[
    Path | None, typer.Option("--ids", help="Item ids for a .npy EMB (.json list, .txt lines or .npy).")
]
FuseFile = Annotated[
    Path | None,
    typer.Option(
        "--fuse",
        help="Collaborative item vectors (.parquet item_id + embedding, e.g. `semid export-embeddings`): "
        "quantize [text, weight x collaborative], both L2-normalised, joined to EMB by item_id.",
    ),
]


def _read(
    emb: Path, id_column: str, embedding_column: str, ids: Path | None
) -> tuple[np.ndarray, np.ndarray]:
    from semid.embed.store import read_embeddings

    t = time.perf_counter()
    item_ids, X = read_embeddings(emb, id_column=id_column, embedding_column=embedding_column, ids_path=ids)
    console.print(
        f"read {X.shape[0]:,} x {X.shape[1]} embeddings from {emb} in {time.perf_counter() - t:.1f}s"
    )
    return item_ids, X


def _read_joined(path: Path, item_ids: np.ndarray, emb: Path, *, allow_extra: bool = False) -> np.ndarray:
    """The vectors of ``path`` in the order of ``item_ids`` (EMB's items), joined by item_id: a missing (or,
    unless ``allow_extra``, an extra) item is one error naming both sizes."""
    from semid.embed.store import read_embeddings
    from semid.quantize.collab import align_by_item_id

    t = time.perf_counter()
    cids, C = read_embeddings(path)
    C = align_by_item_id(item_ids, cids, C, name=str(path), catalogue=str(emb), allow_extra=allow_extra)
    console.print(
        f"joined {C.shape[0]:,} x {C.shape[1]} collaborative vectors from {path} by item_id in "
        f"{time.perf_counter() - t:.1f}s"
    )
    return C


def _model_input(
    model: Any, model_dir: Path, item_ids: np.ndarray, X: np.ndarray, emb: Path, fuse: Path | None
) -> np.ndarray:
    """What ``model`` encodes: ``X``, or for a model fitted fused, ``X`` fused with ``fuse``'s vectors."""
    fusion = model.fusion_
    if fusion is None:
        if fuse is not None:
            raise SemidError(f"--fuse: {model_dir} was fitted on embeddings alone, not fused ones")
        return X
    if fuse is None:
        raise SemidError(
            f"{model_dir} was fitted on {fusion.describe()} ({fusion.source}): give the collaborative "
            "vectors with --fuse"
        )
    C = _read_joined(fuse, item_ids, emb, allow_extra=True)  # EMB may be a batch of the catalogue
    return fusion.apply(X, C, where=str(emb), collab_where=str(fuse))


def local_model(model: str | None) -> Path | None:
    """A ``--model`` that names a local directory (an input no output may overwrite), else None (a hub name
    or the packaged default)."""
    return Path(model) if model and Path(model).exists() else None


def _report_table(rep: dict, title: str) -> Table:
    table = Table(title=title)
    table.add_column("level", justify="right")
    table.add_column("K", justify="right")
    table.add_column("used", justify="right")
    table.add_column("usage", justify="right")
    table.add_column("perplexity", justify="right")
    table.add_column("largest bucket", justify="right")
    norms = rep.get("residual_norms")
    if norms:
        table.add_column("residual norm", justify="right")
    for lv in rep["levels"]:
        row = [
            str(lv["level"]),
            str(lv["codebook_size"]),
            f"{lv['used']:,}",
            f"{lv['usage']:.3f}",
            f"{lv['perplexity']:.1f}",
            f"{lv['max_bucket']:,}",
        ]
        if norms:
            row.append(f"{norms[lv['level'] + 1]:.4f}" if lv["level"] + 1 < len(norms) else "")
        table.add_row(*row)
    cap = [
        f"items {rep['n_items']:,}",
        f"unique IDs before dedup {rep['unique_share']:.4f} ({rep['n_unique']:,})",
        f"largest collision {rep['max_collision']}",
    ]
    if rep.get("reconstruction_error") is not None:
        cap.append(f"relative reconstruction error {rep['reconstruction_error']:.4f}")
    table.caption = " | ".join(cap)
    return table


UserIdOpt = Annotated[
    str | None,
    typer.Option("--user-id", help="User id column of JSONL/CSV/Parquet interactions.", show_default=False),
]
ItemIdOpt = Annotated[
    str | None,
    typer.Option("--item-id", help="Item id column of JSONL/CSV/Parquet files.", show_default=False),
]
TimestampOpt = Annotated[
    str | None,
    typer.Option(
        "--timestamp", help="Timestamp column of JSONL/CSV/Parquet interactions.", show_default=False
    ),
]
