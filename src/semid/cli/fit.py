"""`semid fit`: embeddings -> a quantizer (RQ-KMeans, PQ/OPQ, RQ-VAE), saved with its quality report.

semid fit emb.parquet -o rqk/                                         # RQ-KMeans 3 x 256
semid fit emb.parquet -o pq/ --method pq --levels 32 --opq --pca-dim 128   # RPG's IDs: PCA, OPQ 32 x 256
semid fit emb.parquet -o fused/ --fuse sasrec-items.parquet          # text + SASRec vectors, any method
semid fit emb.parquet -o vae/ --method rq-vae --collab sasrec-items.parquet   # RQ-VAE + collaborative term
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from semid._outputs import check_output, holds_only
from semid.cli import app
from semid.cli._shared import (
    EmbCol,
    EmbOpt,
    FuseFile,
    IdCol,
    IdsFile,
    Method,
    _read,
    _read_joined,
    _report_table,
    console,
    out,
)
from semid.errors import SemidError

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


def _refuse_unfinished_run(run_dir: Path, output: Path) -> None:
    """A run whose last checkpoint is newer than the model it should have saved (or with no model) was
    killed: a fresh fit would write over its checkpoints, so the user resumes it or removes it (as `semid
    train` refuses a directory that holds a run)."""
    from semid.quantize.train import TRAINER_NAME, checkpoint_path

    try:
        last = checkpoint_path(run_dir) / TRAINER_NAME
    except SemidError:  # no checkpoint: nothing to lose
        return
    saved = output / "config.json"
    if saved.is_file() and saved.stat().st_mtime >= last.stat().st_mtime:
        return  # the run finished and saved its model: a new fit replaces both
    raise SemidError(
        f"{run_dir} holds an unfinished RQ-VAE run; resume it (--resume {run_dir}) or remove it to start over"
    )


def _check_resume_recipe(resume: Path, config: Path | None, levels: int, sizes: list[int]) -> None:
    """``--resume`` continues the recipe stored in the run's checkpoint: a --config, or --levels /
    --codebook-size other than the defaults and the run's, would be silently ignored, so they are refused."""
    from semid.quantize.base import per_level_sizes
    from semid.quantize.train import read_checkpoint_meta

    if config is not None:
        raise SemidError(
            f"--resume continues the recipe stored in {resume}; --config cannot change it "
            "(start a new run to train another recipe)"
        )
    stored = read_checkpoint_meta(resume).get("config")
    if not isinstance(stored, dict) or (levels, sizes) == (3, [256]):  # the CLI defaults: nothing asked
        return
    n_levels = stored.get("n_levels")
    run_sizes = per_level_sizes(stored.get("codebook_size"), n_levels, "n_levels", "level")
    if run_sizes != (sizes * levels if len(sizes) == 1 else sizes):
        raise SemidError(
            f"--levels/--codebook-size differ from the run's ({n_levels} levels, codebook sizes "
            f"{','.join(map(str, run_sizes))}); "
            f"--resume continues the recipe stored in {resume}"
        )


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
    from semid.quantize.train import RUN_FILES as TRAINER_RUN_FILES

    run_dir = Path(f"{output}.run") if resume is None else resume
    if resume is not None:
        _check_resume_recipe(resume, config, levels, sizes)
    if resume is None:  # a new run writes over an earlier run of this output only: no input, no other files
        check_output(
            run_dir,
            is_dir=True,
            inputs=[emb, ids, config, fuse, collab],
            replaceable=holds_only(TRAINER_RUN_FILES),
            what="an RQ-VAE run directory",
        )
        _refuse_unfinished_run(run_dir, output)
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
