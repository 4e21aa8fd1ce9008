"""`semid assign`, `semid stats`, `semid report`: a fitted quantizer -> unique Semantic IDs, and their quality.

semid assign pq/ emb.parquet -o ids.parquet                           # + a suffix level for collisions
semid assign fused/ emb.parquet --fuse sasrec-items.parquet -o ids.parquet
(`semid fit`, which makes the quantizer, is in fit.py.)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from semid._outputs import check_output
from semid.cli import app
from semid.cli._shared import (
    Dedup,
    EmbCol,
    EmbOpt,
    Engine,
    Format,
    FuseFile,
    IdCol,
    IdsFile,
    _model_input,
    _read,
    _report_table,
    console,
    out,
)
from semid.errors import SemidError


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
    from semid.scale.assign import ASSIGN_DIR, streamed_output

    streamed = engine is not None or output.suffix != ".parquet"
    check_output(
        output,
        is_dir=streamed,
        inputs=[model_dir, emb, ids, registry, fuse],
        replaceable=streamed_output("assign") if streamed else None,
        what=ASSIGN_DIR if streamed else "an IDs file",
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
    from semid.ids.registry import open_registry

    # opened (and checked) before the encoding, not after it
    with open_registry(registry, fingerprint=model.fingerprint_, new_version=new_version) as reg:
        t = time.perf_counter()
        base = model.encode(X, balanced=balanced) if balanced is not None else model.encode(X)
        enc_s = time.perf_counter() - t

        def rank(rows: np.ndarray) -> np.ndarray:
            return model.rank_last_level(X[rows])

        remap = rank if dedup is Dedup.remap else None
        if reg is not None:
            res = reg.assign(item_ids, base, dedup=dedup.value, rank_last_level=remap)
    n_moved = 0
    if registry is not None:
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
    from semid.ids.table import read_ids_meta

    # an IDs file's report also reads its model (model_dir: its training curves, metrics.jsonl): an input too,
    # so no file of that model folder is replaced
    model_dir = read_ids_meta(path).get("model_dir") if not (path / "config.json").is_file() else None
    check_output(output, inputs=[path, emb, catalogue, model_dir], what="an HTML file")

    titles: dict[str, str] = {}
    if catalogue is not None:
        from semid.data import load_dataset

        cat = load_dataset(catalogue).catalogue
        if cat is not None and "title" in cat.fields:
            titles = dict(zip(cat.item_ids.tolist(), cat.text_column("title").to_pylist(), strict=True))
    build_report(path, output, emb=emb, titles=titles)
    out.print(f"report -> {output}")
