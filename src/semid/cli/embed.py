"""``semid embed CATALOGUE -o embeddings.parquet``: item texts -> vectors, through the embedding cache.

Thin: read the catalogue (:func:`semid.data.load_dataset`), render one text per item
(:func:`semid.embed.render_texts`), embed (:func:`semid.embed.embed_catalogue`), write
(:func:`semid.embed.write_embeddings`). Heavy imports (torch, transformers) happen inside the command.
"""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from semid._outputs import check_output
from semid.cli import app
from semid.cli._shared import Engine, local_model
from semid.errors import SemidError

if TYPE_CHECKING:
    from semid.embed.backends import Embedder

console = Console(stderr=True, soft_wrap=True)


class Backend(str, Enum):
    auto = "auto"
    st = "st"
    hf = "hf"


class Quotes(str, Enum):
    tokens = "tokens"
    single = "single"


@app.command()
def embed(
    catalogue: Annotated[
        list[Path],
        typer.Argument(
            help="Item catalogue: a RecBole .item file, Amazon meta, MovieLens items, or JSONL/CSV/Parquet "
            "with an item_id column (a file or a directory).",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Embeddings file to write (.parquet).", show_default=False)
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Model directory or hub name (default: packaged all-MiniLM-L6-v2)."
        ),
    ] = None,
    backend: Annotated[
        Backend,
        typer.Option(help="st: sentence-transformers; hf: transformers AutoModel + pooling; auto: by model."),
    ] = Backend.auto,
    template: Annotated[
        str | None,
        typer.Option(
            "--template",
            "-t",
            help="Item text, {field} placeholders in ';'-separated parts; a part with an empty field is "
            "left out. Default: built from the catalogue's fields, title-, brand-, category- and price-like "
            "ones, then other short text ('Title: {title}; Brand: {brand}; ...'); the fields used are printed.",
        ),
    ] = None,
    format: Annotated[
        str, typer.Option("--format", "-f", help="Catalogue format (default: from the file names).")
    ] = "auto",
    encoding: Annotated[
        str, typer.Option("--encoding", help="Text encoding of a JSONL/CSV/RecBole catalogue, e.g. latin-1.")
    ] = "utf-8",
    item_id: Annotated[
        str | None, typer.Option("--item-id", help="Item id column of a JSONL/CSV/Parquet catalogue.")
    ] = None,
    dim: Annotated[
        int | None, typer.Option("--dim", help="Keep the first N dimensions (Matryoshka models).")
    ] = None,
    instruction: Annotated[
        str | None,
        typer.Option(
            "--instruction",
            help="hf: a task, wrapped as 'Instruct: {instruction}\\nQuery:{text}'; st: a prompt prepended "
            "to every text.",
        ),
    ] = None,
    pooling: Annotated[str, typer.Option(help="hf backend: last, mean or cls.")] = "last",
    quotes: Annotated[
        Quotes,
        typer.Option(
            "--quotes",
            help="List values: 'tokens' strips the quotes around each element; 'single' deletes every ' "
            "as the reference Amazon-Beauty vectors did.",
        ),
    ] = Quotes.tokens,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Most texts per forward pass.")] = 64,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")] = "auto",
    dtype: Annotated[
        str | None, typer.Option(help="Model weights: float32 (default), float16 or bfloat16.")
    ] = None,
    cache: Annotated[
        bool, typer.Option("--cache/--no-cache", help="Reuse vectors of texts embedded before.")
    ] = True,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir", help="Cache directory (default: $SEMID_CACHE_DIR or ~/.cache/semid/embeddings)."
        ),
    ] = None,
    engine: Annotated[
        Engine | None,
        typer.Option(
            help="local: stream record batches to part files (bounded memory); ray: Ray Data workers. "
            "Default: in memory for an -o ending in .parquet, else local.",
        ),
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Ray cluster to join (auto, ray://host:10001); default: start one.")
    ] = None,
    num_workers: Annotated[
        int | None, typer.Option("--num-workers", help="Ray embedding workers (default: the cluster's CPUs).")
    ] = None,
    rows_per_part: Annotated[
        int, typer.Option("--rows-per-part", help="Streamed: catalogue rows per batch and part file.")
    ] = 8192,
) -> None:
    """Embed every item's text and write item_id + embedding to Parquet.

    Example: semid embed data/amazon-beauty/recbole_item -o beauty.parquet

    -o beauty.parquet: one file, in memory. -o beauty/ (or --engine): part files, streamed from a Parquet
    catalogue in record batches with flat memory, or on a Ray cluster with --engine ray.
    """
    from semid.data import load_dataset
    from semid.embed.cache import EmbeddingCache, default_cache_dir
    from semid.embed.pipeline import EmbedStats, embed_catalogue
    from semid.embed.store import write_embeddings
    from semid.embed.text import TextTemplate, default_template, render_texts
    from semid.scale.assign import streamed_output
    from semid.scale.embed import EMBED_DIR

    streamed = engine is not None or output.suffix != ".parquet"
    check_output(
        output,
        is_dir=streamed,
        # the cache the run reads and writes, wherever it is ($SEMID_CACHE_DIR too), is an input
        inputs=[*catalogue, (cache_dir or default_cache_dir()) if cache else None, local_model(model)],
        replaceable=streamed_output("embed") if streamed else None,
        what=EMBED_DIR if streamed else "an embeddings file",
    )
    if streamed:
        if engine is None and output.suffix:
            raise SemidError(f"{output}: write embeddings.parquet (in memory) or a directory (streamed)")
        if encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
            raise SemidError(
                "--encoding applies to an in-memory embed (-o FILE.parquet); streamed reads UTF-8"
            )
        from semid.embed.cache import default_cache_dir
        from semid.scale.embed import embed_dataset

        t0 = time.perf_counter()
        res = embed_dataset(
            catalogue,
            output,
            model=model,
            template=template,
            strip_quotes=quotes.value,
            id_column=item_id or "item_id",
            format=format,
            engine=(engine or Engine.local).value,
            address=address,
            num_workers=num_workers,
            rows_per_part=rows_per_part,
            cache_dir=(cache_dir or default_cache_dir()) if cache and engine is not Engine.ray else None,
            **_embedder_options(model, backend.value, dim, instruction, pooling, device, dtype, batch_size),
        )
        secs = time.perf_counter() - t0
        if not template:
            console.print(f"item text: {res.template}", markup=False, highlight=False)
        console.print(
            f"embedded {res.n_items:,} items -> {output}/ ({res.n_parts} part files, engine {res.engine}) "
            f"in {secs:.1f}s, {res.n_items / max(secs, 1e-9):,.0f} items/s"
        )
        return
    t0 = time.perf_counter()
    ds = load_dataset(catalogue, format=format, item_id=item_id, encoding=encoding)
    if ds.catalogue is None:
        raise SemidError(f"{', '.join(map(str, catalogue))}: no item catalogue found (only interactions)")
    cat = ds.catalogue
    if template:
        tpl = TextTemplate(template, strip_quotes=quotes.value)
    else:
        tpl = default_template(cat, strip_quotes=quotes.value)
        console.print(f"item text from fields: {', '.join(tpl.fields)}", markup=False, highlight=False)
    texts = render_texts(cat, tpl)
    example = texts[0] if len(texts[0]) <= 200 else texts[0][:200] + f"... ({len(texts[0]):,} characters)"
    console.print(f"read {len(cat):,} items from {', '.join(map(str, catalogue))}; e.g. {example!r}")

    from semid.embed.backends import load_embedder

    options = _embedder_options(model, backend.value, dim, instruction, pooling, device, dtype, batch_size)
    embedder: Embedder = load_embedder(model, **options)
    stats = EmbedStats()
    store = EmbeddingCache(cache_dir) if cache else None
    try:
        X = embed_catalogue(cat.item_ids, texts, embedder, cache=store, stats=stats)
    finally:
        if store is not None:
            store.close()
    write_embeddings(
        output,
        cat.item_ids,
        X,
        metadata={"model": embedder.name, "template": tpl.template, "quotes": tpl.strip_quotes},
    )
    cached = f", {stats.n_cached:,} from the cache" if store is not None else ""
    console.print(
        f"embedded {stats.n_items:,} items ({stats.n_unique_texts:,} distinct texts{cached}) "
        f"-> {X.shape[0]:,} x {X.shape[1]} with {embedder.name} in {time.perf_counter() - t0:.1f}s; "
        f"wrote {output}"
    )


def _embedder_options(
    model: str | None,
    backend: str,
    dim: int | None,
    instruction: str | None,
    pooling: str,
    device: str,
    dtype: str | None,
    batch_size: int,
) -> dict:
    """Keyword arguments of :func:`semid.embed.load_embedder` for the command's options."""
    from semid.embed.backends import resolve_backend

    options: dict = {
        "backend": backend,
        "dim": dim,
        "device": device,
        "dtype": dtype,
        "batch_size": batch_size,
    }
    if resolve_backend(model, backend) == "hf":
        options.update(pooling=pooling, instruction=instruction)
    else:
        if pooling != "last":
            raise SemidError(
                "--pooling applies to --backend hf (sentence-transformers models pool themselves)"
            )
        options["prompt"] = instruction
    return options
