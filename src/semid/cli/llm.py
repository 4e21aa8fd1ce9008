"""``semid llm ...``: a language model that answers requests in words with real catalogue items.

Quick start::

    semid llm prepare data/items.jsonl --ids ids.parquet -o llm_data/
    semid llm train llm_data/ -o llm_model/ --max-minutes 30
    semid llm ask llm_model/ "a matte red lipstick under $10" -k 10
"""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from semid._outputs import check_output, has_marker
from semid.cli import app
from semid.cli._shared import ItemIdOpt, UserIdOpt

llm_app = typer.Typer(
    help="Query -> item language model: prepare examples, train (scratch Llama or a base model, LoRA), ask.",
    no_args_is_help=True,
)
app.add_typer(llm_app, name="llm")


@llm_app.command("prepare")
def prepare(
    paths: list[Path] = typer.Argument(
        ...,
        help="Catalogue files or directories (with interactions for next-item examples).",
        show_default=False,
    ),
    ids: Path = typer.Option(
        ..., "--ids", help="ids.parquet from semid assign; must cover every catalogue item."
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Directory for train.jsonl, valid.jsonl, items.parquet."
    ),
    per_item: int = typer.Option(
        4, "--per-item", help="Query examples per item (training templates drawn at random)."
    ),
    valid_items: int | None = typer.Option(
        None, "--valid-items", help="Items that get held-out validation queries (default: all)."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed gives the same examples."),
    encoding: str = typer.Option(
        "utf-8", "--encoding", help="Text encoding of JSONL/CSV/RecBole files, e.g. latin-1."
    ),
    user_id: UserIdOpt = None,
    item_id: ItemIdOpt = None,
) -> None:
    """Write chat training examples (query -> [REC] + Semantic ID, attribute questions, next item)."""
    from semid.data import load_dataset
    from semid.errors import SemidError
    from semid.ids.table import read_ids
    from semid.llm.examples import DATA_META, EXAMPLES_DIR, ExampleConfig, prepare_dataset

    check_output(  # before reading anything (prepare_dataset checks again, without the inputs)
        out,
        is_dir=True,
        inputs=[*paths, ids],
        replaceable=has_marker(DATA_META),
        what=EXAMPLES_DIR,
    )
    table = read_ids(ids)
    ds = load_dataset(paths, encoding=encoding, user_id=user_id, item_id=item_id)
    if ds.catalogue is None:
        raise SemidError(f"no item catalogue in {', '.join(map(str, paths))}: give the items file as well")
    sequences = ds.sequences() if ds.interactions is not None else None
    config = ExampleConfig(n_per_item=per_item, n_valid_items=valid_items, seed=seed)
    ex = prepare_dataset(ds.catalogue, table, out, config, sequences=sequences, ids_path=str(ids))
    typer.echo(f"{len(ex.train):,} training and {len(ex.valid):,} validation examples -> {out}")


@llm_app.command("train")
def train(
    data: Path = typer.Argument(..., help="Directory from semid llm prepare.", show_default=False),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the trained model."),
    base_model: str | None = typer.Option(
        None,
        "--base-model",
        help="Local path or hub name of a causal LM (default: a small Llama from scratch).",
    ),
    lora: bool = typer.Option(False, "--lora", help="Train LoRA adapters (merged into the saved model)."),
    epochs: float = typer.Option(10.0, "--epochs"),
    max_steps: int | None = typer.Option(None, "--max-steps"),
    max_minutes: float | None = typer.Option(
        None, "--max-minutes", help="Stop after this much training time."
    ),
    batch_size: int = typer.Option(64, "--batch-size"),
    lr: float | None = typer.Option(
        None, "--lr", help="Peak learning rate (default 2e-3 scratch, 1e-4 base, 2e-4 LoRA)."
    ),
    hidden_size: int = typer.Option(256, "--hidden-size", help="Scratch model width."),
    layers: int = typer.Option(4, "--layers", help="Scratch model depth."),
    query_prefix: bool = typer.Option(
        True,
        "--query-prefix/--no-query-prefix",
        help="Feed the query's sentence embedding to the model as soft-prompt vectors.",
    ),
    query_encoder: str | None = typer.Option(
        None,
        "--query-encoder",
        help="Sentence encoder of the query prefix, local path or hub name (default: the packaged MiniLM).",
    ),
    n_prefix: int = typer.Option(4, "--n-prefix", help="Soft-prompt vectors per query."),
    code_head: bool = typer.Option(
        True,
        "--code-head/--no-code-head",
        help="The query embedding also scores each ID token, starting from the items' own embeddings.",
    ),
    device: str = typer.Option("auto", "--device"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Fine-tune (or train from scratch) and save the model with its tokenizer and items."""
    from semid.errors import SemidError
    from semid.llm.model import ScratchConfig
    from semid.llm.prefix import PrefixConfig
    from semid.llm.train import TrainConfig, train_llm

    if query_encoder is not None and not query_prefix:
        raise SemidError("--query-encoder needs the query prefix (drop --no-query-prefix)")
    if lr is None:
        lr = 2e-3 if base_model is None else (2e-4 if lora else 1e-4)
    config = TrainConfig(
        base_model=base_model,
        lora=lora,
        scratch=ScratchConfig(
            hidden_size=hidden_size, n_layers=layers, intermediate_size=(hidden_size * 8 // 3 + 7) // 8 * 8
        ),
        query_prefix=(
            PrefixConfig(query_encoder=query_encoder, n_prefix=n_prefix, code_head=code_head)
            if query_prefix
            else None
        ),
        epochs=epochs,
        max_steps=max_steps,
        max_minutes=max_minutes,
        batch_size=batch_size,
        lr=lr,
        device=device,
        seed=seed,
    )
    result = train_llm(data, out, config)
    if os.environ.get("RANK", "0") != "0":  # torchrun: rank 0 reports
        return
    shown = ", ".join(f"{k} {v:.3f}" for k, v in result.metrics.items())
    how = (
        f"query prefix x{n_prefix}{' + code head' if code_head else ''}"
        if query_prefix
        else "no query prefix"
    )
    typer.echo(f"{result.steps:,} steps in {result.seconds:.0f} s ({how}); validation: {shown} -> {out}")


@llm_app.command("ask")
def ask(
    model_dir: Path = typer.Argument(..., help="Directory from semid llm train.", show_default=False),
    query: str = typer.Argument(
        ..., help='What you are looking for, e.g. "a matte red lipstick under $10".', show_default=False
    ),
    k: int = typer.Option(10, "-k", help="How many items."),
    run: Path | None = typer.Option(
        None, "--run", help="A TIGER run over the same IDs: with --history, search for that user."
    ),
    history: str | None = typer.Option(
        None, "--history", help="The user's items, oldest first: ITEM,ITEM,... (needs --run)."
    ),
    history_weight: float = typer.Option(
        2.0, "--history-weight", help="Weight of TIGER's log-probabilities next to the query model's."
    ),
    use_filter: bool = typer.Option(
        True,
        "--filter/--no-filter",
        help="Answer only with items of the brand and price the request states (then the best others).",
    ),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Answer a request with the k most likely catalogue items (every answer is a real item).

    A model trained with a query prefix loads its sentence encoder too. With --run and --history, the query
    model and TIGER search together (personalised search, semid.llm.personal)."""
    from semid._utils import resolve_device
    from semid.errors import SemidError
    from semid.llm.constraints import filter_for
    from semid.llm.generate import QueryRecommender
    from semid.llm.model import load_llm

    if not query.strip():
        raise SemidError("the query is empty: ask for something, e.g. 'a matte red lipstick'")
    if (run is None) != (history is None):
        raise SemidError("personalised search needs both --run (a TIGER run) and --history")
    llm = load_llm(model_dir, device=resolve_device(device))
    if k < 1 or k > len(llm.codes):
        raise SemidError(f"k={k} should be between 1 and the number of items ({len(llm.codes):,})")
    flt = filter_for(llm) if use_filter else None
    allow = None if flt is None else flt.masks([query])
    if run is None:
        res = QueryRecommender.from_llm(llm).recommend([query], k=k, allow=allow)
    else:
        from semid.llm.personal import PersonalisedSearch
        from semid.rec.data import RecData
        from semid.rec.train import load_model

        search = PersonalisedSearch.from_llm(
            llm, load_model(run, device=resolve_device(device)), RecData.load(run)
        )
        items = [h.strip() for h in (history or "").split(",") if h.strip()]
        res = search.search([query], [items], k=k, history_weight=history_weight, allow=allow)
    table = Table("rank", "item_id", "semantic_id", "title", "log p")
    for rank, (item, score) in enumerate(zip(res.items[0], res.scores[0], strict=True), start=1):
        table.add_row(
            str(rank), str(llm.item_ids[item]), llm.semantic_ids[item], llm.titles[item], f"{score:.2f}"
        )
    Console(width=160).print(table)
