"""`semid fit`, `semid assign`, `semid stats`: embeddings -> quantizer -> unique Semantic IDs.

semid fit emb.parquet -o rqk/                                         # RQ-KMeans 3 x 256
semid fit emb.parquet -o pq/ --method pq --levels 32 --opq --pca-dim 128   # RPG's IDs: PCA, OPQ 32 x 256
semid assign pq/ emb.parquet -o ids.parquet                           # + a suffix level for collisions
semid fit emb.parquet -o fused/ --fuse sasrec-items.parquet          # text + SASRec vectors, any method
semid assign fused/ emb.parquet --fuse sasrec-items.parquet -o ids.parquet
semid fit emb.parquet -o vae/ --method rq-vae --collab sasrec-items.parquet   # RQ-VAE + collaborative term
"""

from __future__ import annotations

import json
import os
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from semid._outputs import check_output, has_marker
from semid.cli import app
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


FIT_READ_LIMIT = 2_000_000  # rows `semid fit` reads at most unless --sample-size says otherwise


def _read_for_fit(
    emb: Path, sample_size: int | None, seed: int, id_column: str, embedding_column: str, ids: Path | None
) -> tuple[np.ndarray, np.ndarray]:
    """All rows, or for a large Parquet input a seeded sample read batch by batch (never all of it)."""
    if sample_size == 0 or ids is not None or not (emb.is_dir() or emb.suffix == ".parquet"):
        return _read(emb, id_column, embedding_column, ids)
    from semid.scale.parts import list_parts, sample_embeddings

    total = list_parts(emb, (id_column, embedding_column)).n_rows
    limit = FIT_READ_LIMIT if sample_size is None else sample_size
    if total <= limit:
        return _read(emb, id_column, embedding_column, ids)
    t = time.perf_counter()
    item_ids, X, _ = sample_embeddings(
        emb, limit, random_state=seed, id_column=id_column, embedding_column=embedding_column
    )
    console.print(
        f"sampled {X.shape[0]:,} of {total:,} embeddings (seed {seed}) from {emb} in "
        f"{time.perf_counter() - t:.1f}s"
    )
    return item_ids, X


def _read_joined(path: Path, item_ids: np.ndarray, emb: Path) -> np.ndarray:
    """The vectors of ``path`` in the order of ``item_ids`` (EMB's items), joined by item_id: a missing or
    an extra item is one error naming both sizes."""
    from semid.embed.store import read_embeddings
    from semid.quantize.collab import align_by_item_id

    t = time.perf_counter()
    cids, C = read_embeddings(path)
    C = align_by_item_id(item_ids, cids, C, name=str(path), catalogue=str(emb))
    console.print(
        f"joined {C.shape[0]:,} x {C.shape[1]} collaborative vectors from {path} by item_id in "
        f"{time.perf_counter() - t:.1f}s"
    )
    return C


def _fit_input(
    emb: Path,
    sample_size: int | None,
    seed: int,
    id_column: str,
    embedding_column: str,
    ids: Path | None,
    fuse: Path | None,
    fuse_weight: float,
    collab: Path | None,
) -> tuple[np.ndarray, np.ndarray | None, Any]:
    """The quantizer's input ``X`` (fused with ``fuse``'s vectors when given), the RQ-VAE's row-aligned
    collaborative matrix (``collab``) and the :class:`~semid.quantize.collab.Fusion` (or None).

    A collaborative table is joined to every item, so with ``fuse`` or ``collab`` EMB is read whole."""
    if fuse is None and collab is None:
        return _read_for_fit(emb, sample_size, seed, id_column, embedding_column, ids)[1], None, None
    item_ids, X = _read(emb, id_column, embedding_column, ids)
    C = _read_joined(collab, item_ids, emb) if collab is not None else None
    if fuse is None:
        return X, C, None
    from semid.quantize.collab import Fusion

    F = _read_joined(fuse, item_ids, emb) if fuse != collab else C
    fusion = Fusion(fuse_weight, X.shape[1], F.shape[1], str(fuse))
    return fusion.apply(X, F, where=str(emb), collab_where=str(fuse)), C, fusion


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
    C = _read_joined(fuse, item_ids, emb)
    return fusion.apply(X, C, where=str(emb), collab_where=str(fuse))


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


@app.command()
def fit(
    emb: EmbOpt,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Model directory to write.", show_default=False)
    ],
    method: Annotated[Method, typer.Option(help="Quantizer.")] = Method.rq_kmeans,
    levels: Annotated[int, typer.Option("--levels", help="Code levels (pq: sub-vectors, digits).")] = 3,
    codebook_size: Annotated[
        str, typer.Option("--codebook-size", help="Codes per level: 256, or one per level: 256,256,128.")
    ] = "256",
    balanced: Annotated[
        bool, typer.Option("--balanced/--no-balanced", help="Equal-size clusters per level.")
    ] = False,
    opq: Annotated[
        bool, typer.Option("--opq/--no-opq", help="pq: learn an OPQ rotation first (needs faiss).")
    ] = False,
    pca_dim: Annotated[
        int | None,
        typer.Option(
            "--pca-dim",
            help="pq: reduce the embeddings to this many principal components first (RPG: 128).",
            show_default=False,
        ),
    ] = None,
    n_iter: Annotated[int, typer.Option("--n-iter", help="Max k-means iterations per level.")] = 20,
    sample_size: Annotated[
        int | None,
        typer.Option(
            "--sample-size",
            help="Rows to train on: a seeded sample read batch by batch from a large Parquet input, and "
            "RQ-KMeans' rows per level (0 = all; default 256*K per level, at most 2M rows read).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; same seed, same codes.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    config: Annotated[
        Path | None, typer.Option("--config", help="Quantizer config (JSON/YAML), rq-vae.")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Resume an rq-vae run from this directory.")
    ] = None,
    id_column: IdCol = "item_id",
    embedding_column: EmbCol = "embedding",
    ids: IdsFile = None,
    fuse: FuseFile = None,
    fuse_weight: Annotated[
        float | None,
        typer.Option(
            "--fuse-weight", help="Weight of the collaborative half of a fused vector [default: 1]."
        ),
    ] = None,
    collab: Annotated[
        Path | None,
        typer.Option(
            "--collab",
            help="rq-vae: collaborative item vectors (.parquet item_id + embedding) for the RQ-VAE's "
            "alignment term (LETTER), joined to EMB by item_id; the IDs still encode EMB alone.",
        ),
    ] = None,
    collab_weight: Annotated[
        float | None,
        typer.Option(
            "--collab-weight", help="Weight of the collaborative term [default: the config's, else 0.1]."
        ),
    ] = None,
) -> None:
    """Fit a quantizer on embeddings and save it (config.json + model.safetensors).

    With --fuse the quantizer learns on the text embeddings fused with collaborative vectors (any method);
    the model records it, and `semid assign` then needs the same --fuse file. With --fuse or --collab, EMB
    is read whole: every item joins its collaborative row.
    """
    from semid.quantize.base import is_quantizer_dir
    from semid.quantize.collab import DEFAULT_FUSE_WEIGHT

    try:
        sizes = [int(s) for s in codebook_size.split(",")]
    except ValueError:
        raise SemidError(
            f"--codebook-size {codebook_size!r} should be an integer or a comma-separated list"
        ) from None
    if sample_size is not None and sample_size < 0:
        raise SemidError(f"--sample-size {sample_size} should be 0 (all rows) or a positive number of rows")
    if seed < 0:
        raise SemidError(f"--seed {seed} should be a non-negative integer")
    if opq and method is not Method.pq:
        raise SemidError("--opq applies to --method pq only")
    if pca_dim is not None and method is not Method.pq:
        raise SemidError("--pca-dim applies to --method pq only")
    if collab is not None and method is not Method.rq_vae:
        raise SemidError(
            "--collab applies to --method rq-vae only (a term of its loss); --fuse works with every method"
        )
    if collab_weight is not None and collab is None:
        raise SemidError("--collab-weight needs --collab ITEMS.parquet")
    if fuse_weight is not None and fuse is None:
        raise SemidError("--fuse-weight needs --fuse ITEMS.parquet")
    if collab_weight is not None and not collab_weight > 0:
        raise SemidError(f"--collab-weight {collab_weight:g} should be > 0")
    if fuse_weight is not None and not fuse_weight > 0:
        raise SemidError(f"--fuse-weight {fuse_weight:g} should be > 0")
    fuse_weight = DEFAULT_FUSE_WEIGHT if fuse_weight is None else fuse_weight
    check_output(  # before any work: a fit must not fail at its last step, nor replace what is not a model
        output,
        is_dir=True,
        inputs=[emb, ids, config, resume, fuse, collab],
        replaceable=is_quantizer_dir,
        what="a quantizer directory",
    )
    if method is Method.rq_vae:
        _fit_rq_vae(
            emb,
            output,
            levels,
            sizes,
            seed,
            device,
            config,
            resume,
            id_column,
            embedding_column,
            ids,
            sample_size,
            fuse,
            fuse_weight,
            collab,
            collab_weight,
        )
        return
    if config is not None or resume is not None:
        raise SemidError("--config/--resume apply to --method rq-vae only")
    from semid.quantize import ProductQuantizer, RQKMeans
    from semid.quantize.metrics import quality_report

    model: RQKMeans | ProductQuantizer
    common = {  # the k-means options both quantizers take
        "codebook_size": sizes[0] if len(sizes) == 1 else sizes,
        "n_iter": n_iter,
        "sample_size": sample_size,
        "random_state": seed,
        "device": device,
        "verbose": True,
    }
    if method is Method.pq:
        if balanced:
            raise SemidError("--balanced applies to --method rq-kmeans only (PQ has no balanced assignment)")
        model = ProductQuantizer(n_subvectors=levels, opq=opq, pca_dim=pca_dim, **common)
    else:
        model = RQKMeans(n_levels=levels, balanced=balanced, **common)
    model._validate_params()  # bad values fail before any work
    X, _, fusion = _fit_input(
        emb, sample_size, seed, id_column, embedding_column, ids, fuse, fuse_weight, None
    )
    if X.shape[0] < max(sizes):
        raise SemidError(f"{emb}: {X.shape[0]} rows, fewer than codebook_size={max(sizes)}")
    if method is Method.pq:
        model._validate_params(X.shape[1])  # the sub-vectors must divide the dimension
    t = time.perf_counter()
    model.fit(X)
    fit_s = time.perf_counter() - t
    model.fusion_ = fusion
    codes = model.encode(X)
    model.save_pretrained(output)
    rep = quality_report(
        codes,
        codebook_sizes=model.codebook_sizes_,
        X=X,
        X_hat=model.decode(codes),
        codebooks=getattr(model, "codebooks_", None),  # residual norms: RQ-KMeans only
    )
    name = "RQ-KMeans" if method is Method.rq_kmeans else ("OPQ" if opq else "PQ")
    if getattr(model, "pca_explained_", None) is not None:
        name += f" on {pca_dim} principal components ({model.pca_explained_:.0%} of the variance)"
    if fusion is not None:
        name += f" on {fusion.describe()}"
    out.print(_report_table(rep.to_dict(), f"{name} fitted in {fit_s:.1f}s -> {output}"))


def _fit_rq_vae(
    emb: Path,
    output: Path,
    levels: int,
    sizes: list[int],
    seed: int,
    device: str,
    config: Path | None,
    resume: Path | None,
    id_column: str,
    embedding_column: str,
    ids: Path | None,
    sample_size: int | None,
    fuse: Path | None,
    fuse_weight: float,
    collab: Path | None,
    collab_weight: float | None,
) -> None:
    """RQ-VAE: metrics and checkpoints go to ``<output>.run/`` (resumable); the model to ``output``."""
    import shutil

    from semid.quantize.collab import DEFAULT_COLLAB_WEIGHT
    from semid.quantize.metrics import quality_report
    from semid.quantize.rq_vae import RQVAE

    run_dir = Path(f"{output}.run") if resume is None else resume
    if config is not None:
        model = RQVAE(config, verbose=True, device=device, run_dir=str(run_dir))
    else:
        model = RQVAE(
            verbose=True,
            n_levels=levels,
            codebook_size=sizes[0] if len(sizes) == 1 else sizes,
            random_state=seed,
            device=device,
            run_dir=str(run_dir),
        )
    if collab is not None:  # --collab-weight, else the config's, else the default
        weight = collab_weight or model.config.collab_weight or DEFAULT_COLLAB_WEIGHT
        model.config = model.config.replace(collab_weight=weight)
    elif model.config.collab_weight > 0 and resume is None:
        raise SemidError(
            f"collab_weight={model.config.collab_weight:g} ({config}) needs the collaborative vectors: "
            "give --collab ITEMS.parquet"
        )
    model._validate_params()  # bad values fail before any data is read
    X, C, fusion = _fit_input(
        emb, sample_size, seed, id_column, embedding_column, ids, fuse, fuse_weight, collab
    )
    model._validate_params(X.shape[1])
    t = time.perf_counter()
    model.fit(X, collab=C, resume=resume)
    fit_s = time.perf_counter() - t
    if os.environ.get("RANK", "0") != "0":  # torchrun: every rank trained the same model; rank 0 writes it
        return
    model.fusion_ = fusion
    model.save_pretrained(output)
    metrics = Path(model.config.train.run_dir or run_dir) / "metrics.jsonl"
    if metrics.is_file():
        shutil.copyfile(metrics, output / "metrics.jsonl")  # training curves for `semid report`
    codes = model.encode(X)
    rep = quality_report(codes, codebook_sizes=model.codebook_sizes_, X=X, X_hat=model.decode(codes))
    name = "RQ-VAE" + (f" on {fusion.describe()}" if fusion is not None else "")
    if C is not None:
        name += f" with a collaborative term (weight {model.config.collab_weight:g})"
    out.print(_report_table(rep.to_dict(), f"{name} trained in {fit_s:.1f}s -> {output} (run: {run_dir})"))


@app.command()
def assign(
    model_dir: Annotated[Path, typer.Argument(help="Model directory from `semid fit`.", show_default=False)],
    emb: EmbOpt,
    output: Annotated[Path, typer.Option("-o", "--output", help="ids.parquet to write.", show_default=False)],
    registry: Annotated[
        Path | None, typer.Option("--registry", help="SQLite registry (ids.db): stable IDs.")
    ] = None,
    new_version: Annotated[
        bool, typer.Option("--new-version", help="Start a new ID version when the model changed.")
    ] = False,
    dedup: Annotated[Dedup, typer.Option(help="How colliding items get unique IDs.")] = Dedup.suffix,
    fmt: Annotated[Format, typer.Option("--format", help="Semantic ID string format.")] = Format.dash,
    balanced: Annotated[
        bool | None,
        typer.Option("--balanced/--no-balanced", help="Balanced assignment (default: as fitted)."),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    id_column: IdCol = "item_id",
    embedding_column: EmbCol = "embedding",
    ids: IdsFile = None,
    engine: Annotated[
        Engine | None,
        typer.Option(
            help="local: stream record batches (bounded memory); ray: Ray Data. Default: in memory for an "
            "-o ending in .parquet, else local.",
        ),
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster to join (auto, ray://host:10001); default: start one.")
    ] = None,
    num_workers: Annotated[
        int | None, typer.Option("--num-workers", help="Ray encoder workers (default: the cluster's CPUs).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per streamed batch.")] = 65536,
    fuse: FuseFile = None,
) -> None:
    """Encode embeddings with a fitted quantizer and write unique Semantic IDs.

    -o ids.parquet: one file, in memory. -o ids/ (or --engine): a directory of part files, streamed in
    batches with flat memory, or on a Ray cluster with --engine ray; the IDs are the same item for item.
    A model fitted with --fuse needs the same --fuse file here (in memory).
    """
    from semid.scale.assign import MANIFEST

    streamed = engine is not None or output.suffix != ".parquet"
    check_output(
        output,
        is_dir=streamed,
        inputs=[model_dir, emb, ids, registry, fuse],
        replaceable=has_marker(MANIFEST) if streamed else None,
        what="a directory of IDs written by semid assign" if streamed else "an IDs file",
    )
    if registry is not None:
        check_output(registry, inputs=[model_dir, emb, ids, fuse], what="a registry file")
    if streamed:
        if fuse is not None:
            raise SemidError("--fuse joins the collaborative vectors in memory: write -o ids.parquet")
        if balanced:
            raise SemidError(
                "--balanced needs the whole set in memory; a streamed assign encodes each item on its own "
                "(write -o ids.parquet for a balanced assignment)"
            )
        if ids is not None or emb.suffix == ".npy":
            raise SemidError(f"{emb}: a streamed assign reads Parquet (a file or a directory of part files)")
        if engine is None and output.suffix:
            raise SemidError(f"{output}: write ids.parquet (in memory) or a directory (streamed)")
        _assign_stream(
            model_dir,
            emb,
            output,
            registry,
            new_version,
            dedup,
            fmt,
            engine or Engine.local,
            address,
            num_workers,
            batch_size,
            id_column,
            embedding_column,
            device,
        )
        return
    from semid.ids import deduplicate, format_ids
    from semid.ids.table import IdTable, write_ids
    from semid.quantize import load_quantizer
    from semid.quantize.metrics import collision_stats

    model = load_quantizer(model_dir, device=device)
    item_ids, X = _read(emb, id_column, embedding_column, ids)
    X = _model_input(model, model_dir, item_ids, X, emb, fuse)
    if X.shape[1] != model.n_features_in_:
        raise SemidError(
            f"{emb}: {X.shape[1]} values per embedding, but {model_dir} expects {model.n_features_in_}"
        )
    t = time.perf_counter()
    base = model.encode(X, balanced=balanced) if balanced is not None else model.encode(X)
    enc_s = time.perf_counter() - t

    def rank(rows: np.ndarray) -> np.ndarray:
        return model.rank_last_level(X[rows])

    remap = rank if dedup is Dedup.remap else None
    n_moved = 0
    if registry is not None:
        from semid.ids.registry import Registry

        with Registry(registry, fingerprint=model.fingerprint_, new_version=new_version) as reg:
            res = reg.assign(item_ids, base, dedup=dedup.value, rank_last_level=remap)
        codes, n_moved = res.codes, res.n_moved
        console.print(
            f"registry {registry} (version {res.version}): {res.n_new:,} new, {res.n_existing:,} known"
            + (f", {res.n_changed:,} known items whose codes changed kept their IDs" if res.n_changed else "")
        )
    else:
        d = deduplicate(base, dedup.value, item_ids=item_ids, rank_last_level=remap)
        codes, n_moved = d.codes, d.n_moved
    sids = format_ids(codes, fmt.value)
    meta = {
        "format": fmt.value,
        "dedup": dedup.value,
        "model_type": model.model_type,
        "fingerprint": model.fingerprint_,
        "codebook_sizes": model.codebook_sizes_,
        "model_dir": str(model_dir),
    }
    write_ids(output, IdTable(np.asarray(item_ids), sids, codes, base, meta))
    col = collision_stats(base)
    final = collision_stats(codes)
    msg = (
        f"{len(sids):,} Semantic IDs -> {output} (encoded in {enc_s:.1f}s); unique before dedup "
        f"{col['unique_share']:.4f}, after {final['unique_share']:.4f}"
    )
    if dedup is Dedup.remap:
        msg += f"; {n_moved:,} items remapped"
    out.print(msg)


def _assign_stream(
    model_dir: Path,
    emb: Path,
    output: Path,
    registry: Path | None,
    new_version: bool,
    dedup: Dedup,
    fmt: Format,
    engine: Engine,
    address: str | None,
    num_workers: int | None,
    batch_size: int,
    id_column: str,
    embedding_column: str,
    device: str,
) -> None:
    from semid.scale.assign import assign_dataset

    res = assign_dataset(
        model_dir,
        emb,
        output,
        dedup=dedup.value,
        fmt=fmt.value,
        registry=registry,
        new_version=new_version,
        engine=engine.value,
        address=address,
        num_workers=num_workers,
        batch_size=batch_size,
        id_column=id_column,
        embedding_column=embedding_column,
        device="cpu" if device == "auto" else device,
    )
    secs = sum(res.seconds.values())
    msg = (
        f"{res.n_items:,} Semantic IDs -> {output}/ ({res.n_buckets} part files, engine {res.engine}) in "
        f"{secs:.1f}s, {res.rows_per_s:,.0f} rows/s"
    )
    if res.n_new is not None:
        msg += f"; registry {registry} (version {res.registry_version}): {res.n_new:,} new, {res.n_existing:,} known"
    else:
        msg += f"; {res.n_collided:,} items shared codes before dedup"
    if dedup is Dedup.remap:
        msg += f"; {res.n_moved:,} items remapped"
    out.print(msg)


@app.command()
def stats(
    path: Annotated[Path, typer.Argument(help="ids.parquet or a model directory.", show_default=False)],
    emb: Annotated[
        Path | None, typer.Option("--emb", help="Embeddings to measure a model on (reconstruction).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    id_column: IdCol = "item_id",
    embedding_column: EmbCol = "embedding",
    ids: IdsFile = None,
    fuse: FuseFile = None,
) -> None:
    """Quality of Semantic IDs: usage and perplexity per level, collisions, reconstruction error."""
    from semid.quantize.metrics import collision_stats, quality_report

    if fuse is not None and emb is None:
        raise SemidError("--fuse goes with --emb (the embeddings to measure a fused model on)")

    if path.is_dir() and (path / "config.json").exists():
        from semid.quantize import load_quantizer

        model = load_quantizer(path, device="cpu")
        result: dict = {
            "model_type": model.model_type,
            "fingerprint": model.fingerprint_,
            "codebook_sizes": model.codebook_sizes_,
            "dim": model.n_features_in_,
        }
        title = f"{model.model_type} {path} ({model.fingerprint_})"
        if model.fusion_ is not None:
            result["fusion"] = model.fusion_.to_dict()
        if emb is not None:
            item_ids, X = _read(emb, id_column, embedding_column, ids)
            X = _model_input(model, path, item_ids, X, emb, fuse)
            codes = model.encode(X)
            rep = quality_report(
                codes,
                codebook_sizes=model.codebook_sizes_,
                X=X,
                X_hat=model.decode(codes),
                codebooks=getattr(model, "codebooks_", None),
            )
            result.update(rep.to_dict())
    elif path.suffix == ".parquet" or path.is_file() or any(path.glob("*.parquet")):
        from semid.ids.table import read_ids

        t = read_ids(path)
        sizes = t.meta.get("codebook_sizes")
        rep = quality_report(t.base_codes, codebook_sizes=sizes)
        result = {"path": str(path), **t.meta, **rep.to_dict()}
        result["unique_share_after_dedup"] = collision_stats(t.codes)["unique_share"]
        title = f"{path}: {len(t):,} items, unique after dedup {result['unique_share_after_dedup']:.4f}"
    else:
        raise SemidError(f"{path}: no such file, IDs directory or model directory")
    if as_json:
        print(json.dumps(result, sort_keys=True))
    elif "levels" in result:
        out.print(_report_table(result, title))
    else:
        out.print(title)
        out.print(
            f"codebook sizes {result['codebook_sizes']}, dim {result['dim']} (pass --emb to measure quality)"
        )


@app.command()
def report(
    path: Annotated[Path, typer.Argument(help="A model directory or an ids.parquet.", show_default=False)],
    output: Annotated[Path, typer.Option("-o", "--output", help="HTML file to write.")] = Path("report.html"),
    emb: Annotated[
        Path | None, typer.Option("--emb", help="Item embeddings (for the map and a model's codes).")
    ] = None,
    catalogue: Annotated[
        Path | None, typer.Option("--catalogue", help="Catalogue (any `semid data` format) for item titles.")
    ] = None,
) -> None:
    """A self-contained HTML page: usage per level, collisions, training curves, item map, samples."""
    from semid.ids.report import build_report

    check_output(output, inputs=[path, emb, catalogue], what="an HTML file")

    titles: dict[str, str] = {}
    if catalogue is not None:
        from semid.data import load_dataset

        cat = load_dataset(catalogue).catalogue
        if cat is not None and "title" in cat.fields:
            titles = dict(zip(cat.item_ids.tolist(), cat.text_column("title").to_pylist(), strict=True))
    build_report(path, output, emb=emb, titles=titles)
    out.print(f"report -> {output}")
