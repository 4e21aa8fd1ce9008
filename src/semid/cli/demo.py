"""`semid demo`: the whole pipeline on the bundled demo catalogue, offline, in a few minutes.

generate the demo shop -> item texts -> MiniLM embeddings (cached) -> RQ-KMeans -> unique IDs in a registry
-> a metrics table and groups of items that share an ID prefix (so a person sees that the IDs mean
something). Everything is written under ``--out`` (default ``./semid-demo``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from semid.cli import app
from semid.cli._shared import local_model
from semid.errors import SemidError

console = Console(soft_wrap=True)


DEMO_MARKER = "semid-demo.json"  # says a folder is a demo's, so a re-run may replace what it holds
# what a demo writes (and report.html, the `semid report` its output suggests)
DEMO_LAYOUT = frozenset(
    {"data", "cache", "embeddings.parquet", "model", "ids.db", "ids.parquet", "tiger", "report.html"}
)


def is_demo_dir(directory: Path) -> bool:
    """A folder an earlier ``semid demo`` wrote: it holds the marker, or (written before the marker existed)
    the demo's layout and nothing else (the registry's SQLite side files and hidden temporaries aside)."""
    if (directory / DEMO_MARKER).is_file():
        return True
    names = {p.name for p in directory.iterdir() if not p.name.startswith((".", "ids.db-"))}
    return names <= DEMO_LAYOUT and {"data", "model", "ids.parquet", "ids.db"} <= names


def _stage(name: str, timings: dict[str, float]):
    class _Timer:
        def __enter__(self):
            self.t = time.perf_counter()
            console.print(f"[bold]·[/bold] {name} ...")
            return self

        def __exit__(self, *exc):
            timings[name] = time.perf_counter() - self.t

    return _Timer()


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Where to write everything.")] = Path("semid-demo"),
    n_items: Annotated[int, typer.Option("--items", help="Catalogue size.")] = 3000,
    n_users: Annotated[int, typer.Option("--users", help="Users with sequences.")] = 2000,
    levels: Annotated[int, typer.Option("--levels", help="Code levels.")] = 3,
    codebook_size: Annotated[int, typer.Option("--codebook-size", help="Codes per level.")] = 32,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    model: Annotated[
        str | None, typer.Option("--model", help="Embedding model (default: packaged all-MiniLM-L6-v2).")
    ] = None,
    tiger: Annotated[
        bool,
        typer.Option("--tiger/--no-tiger", help="Also train TIGER briefly and compare with most-popular."),
    ] = True,
    tiger_minutes: Annotated[float, typer.Option("--tiger-minutes", help="TIGER training budget.")] = 2.0,
    serve: Annotated[
        bool, typer.Option("--serve", help="Then serve the result (API and web UI) on 127.0.0.1.")
    ] = False,
    port: Annotated[int, typer.Option("--port", help="Port for --serve.")] = 8000,
) -> None:
    """Run the pipeline end to end on the bundled demo data and print what the Semantic IDs look like."""
    from semid._outputs import check_output
    from semid.data import make_demo_dataset
    from semid.embed import EmbeddingCache, embed_catalogue, load_embedder, render_texts
    from semid.embed.store import write_embeddings
    from semid.ids import format_ids
    from semid.ids.registry import Registry
    from semid.ids.table import IdTable, write_ids
    from semid.quantize import RQKMeans
    from semid.quantize.metrics import quality_report

    check_output(  # an earlier demo's folder is replaced; a folder of anything else is refused, never emptied
        out,
        is_dir=True,
        inputs=[local_model(model)],
        replaceable=is_demo_dir,
        what="a demo folder",
    )
    for name in sorted(DEMO_LAYOUT):  # a re-run replaces these in place: never through a link to elsewhere
        if (out / name).is_symlink():
            raise SemidError(
                f"{out / name} is a symbolic link; the demo writes its own {name} there: remove the link "
                "or choose another --out (nothing was changed)"
            )
    timings: dict[str, float] = {}
    out.mkdir(parents=True, exist_ok=True)
    (out / DEMO_MARKER).write_text(
        json.dumps({"written_by": "semid demo", "items": n_items, "users": n_users, "seed": seed}) + "\n"
    )
    with _stage("generate the demo catalogue and user sequences", timings):
        ds = make_demo_dataset(n_items=n_items, n_users=n_users, seed=seed)
        ds.save(out / "data")
        cat = ds.catalogue
        item_ids = cat.item_ids
    with _stage("embed item texts (all-MiniLM-L6-v2, cached)", timings):
        texts = render_texts(cat)
        embedder = load_embedder(model)
        X = embed_catalogue(item_ids, texts, embedder, cache=EmbeddingCache(out / "cache"))
        write_embeddings(out / "embeddings.parquet", item_ids, X)
    with _stage(f"fit RQ-KMeans ({levels} levels x {codebook_size} codes)", timings):
        quantizer = RQKMeans(n_levels=levels, codebook_size=codebook_size, random_state=seed).fit(X)
        quantizer.save_pretrained(out / "model")
    with _stage("assign unique Semantic IDs (registry)", timings):
        base = quantizer.encode(X)
        with Registry(out / "ids.db", fingerprint=quantizer.fingerprint_, new_version=False) as reg:
            res = reg.assign(item_ids, base, dedup="suffix")
        codes = res.codes
        sids = format_ids(codes, "dash")
        meta = {
            "format": "dash",
            "dedup": "suffix",
            "model_type": quantizer.model_type,
            "fingerprint": quantizer.fingerprint_,
            "codebook_sizes": quantizer.codebook_sizes_,
            "model_dir": str(out / "model"),
        }
        write_ids(out / "ids.parquet", IdTable(np.asarray(item_ids), sids, codes, base, meta))

    rep = quality_report(base, codebook_sizes=quantizer.codebook_sizes_, X=X, X_hat=quantizer.decode(base))
    table = Table(title="Semantic ID quality")
    for col in ("metric", "value"):
        table.add_column(col)
    table.add_row("items", f"{rep.n_items:,}")
    table.add_row("unique IDs before dedup", f"{rep.unique_share:.3f}")
    table.add_row("largest collision bucket", str(rep.max_collision))
    table.add_row("relative reconstruction error", f"{rep.reconstruction_error:.3f}")
    for lv in rep.levels:
        table.add_row(
            f"level {lv['level']} usage / perplexity", f"{lv['usage']:.2f} / {lv['perplexity']:.1f}"
        )
    table.add_row("registry", f"{res.n_new:,} new, {res.n_existing:,} kept their stored IDs")
    console.print(table)

    # A few groups of items sharing an ID prefix: the IDs should group similar items.
    titles = cat.text_column("title").to_pylist()
    leaves = [c[-1] if c else "" for c in cat.column("categories").to_pylist()]
    for depth in (1, 2):
        keys = [tuple(r) for r in codes[:, :depth].tolist()]
        counts: dict[tuple, int] = {}
        for k in keys:
            counts[k] = counts.get(k, 0) + 1
        for prefix, cnt in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:2]:
            rows = [i for i, k in enumerate(keys) if k == prefix]
            top_leaf = max({leaves[i] for i in rows}, key=lambda x: sum(leaves[i] == x for i in rows))
            same = sum(leaves[i] == top_leaf for i in rows) / len(rows)
            g = Table(title=f"prefix {'-'.join(map(str, prefix))}: {cnt} items, {same:.0%} in '{top_leaf}'")
            g.add_column("Semantic ID")
            g.add_column("title")
            for i in rows[:5]:
                g.add_row(sids[i], titles[i])
            console.print(g)
    if tiger:
        import shutil

        from semid.ids.table import read_ids
        from semid.rec.train import train_demo_tiger

        shutil.rmtree(out / "tiger", ignore_errors=True)  # a re-run trains afresh
        with _stage(f"train TIGER on the user sequences (≤ {tiger_minutes:g} min)", timings):
            res_t = train_demo_tiger(
                ds, read_ids(out / "ids.parquet"), out / "tiger", max_minutes=tiger_minutes, seed=seed
            )
        t = Table(title=f"Next-item recommendation, test split ({res_t['epochs']} epochs of TIGER)")
        for col in ("model", "Recall@10", "NDCG@10"):
            t.add_column(col)
        for name, key in (("TIGER (constrained beam search)", "tiger"), ("most popular", "most_popular")):
            m = res_t[key]
            t.add_row(
                name, f"{m.get('recall@10', float('nan')):.4f}", f"{m.get('ndcg@10', float('nan')):.4f}"
            )
        console.print(t)
        verdict = "beats" if res_t["beats_most_popular"] else "does not beat"
        console.print(f"TIGER {verdict} most-popular after {res_t['train_seconds']:.0f}s of training")
    total = sum(timings.values())
    console.print(
        "time: "
        + ", ".join(f"{k.split(' (')[0]} {v:.1f}s" for k, v in timings.items())
        + f" — total {total:.1f}s"
    )
    console.print(f"wrote {out}/: data/, embeddings.parquet, model/, ids.db, ids.parquet")
    console.print(f"next: semid report {out}/ids.parquet --emb {out}/embeddings.parquet -o {out}/report.html")
    if serve:
        from semid.cli.serve import run_server

        run_server(out, port=port)
