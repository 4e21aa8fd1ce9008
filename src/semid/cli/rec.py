"""`semid train`, `semid evaluate`, `semid recommend`: generative retrieval over Semantic IDs.

semid train tiger data/beauty --ids ids.parquet -o runs/tiger       # paper config, early stopping
semid train tiger -o runs/tiger --resume --max-minutes 60            # continue it
semid train sasrec data/beauty -o runs/sasrec                        # the baseline (+ item embeddings)
semid train rpg data/beauty --ids pq-ids.parquet -o runs/rpg         # long PQ IDs, all digits at once
semid evaluate runs/tiger --split test                               # Recall/NDCG@5/10 vs most-popular
semid evaluate runs/tiger --rerank runs/sasrec                       # TIGER's beam reranked by SASRec
semid evaluate runs/tiger --cold-start --unseen-share 0.1             # + unseen items sharing an ID prefix
semid recommend runs/tiger --history B004756YJA,B004ZT0SSG -k 10     # items with IDs and titles
semid export-embeddings runs/sasrec -o sasrec-items.parquet          # SASRec's item vectors (fit --fuse)
semid export-embeddings runs/sasrec -o c.parquet --impute-from emb.parquet   # + untrained / new items from text

Data-parallel training (docs/scaling.md), the same run directory and options:
torchrun --nproc-per-node 4 -m semid train tiger data/beauty --ids ids.parquet -o runs/tiger
semid train tiger data/beauty --ids ids.parquet -o runs/tiger --engine ray --num-workers 4
"""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from semid.cli import app
from semid.cli._shared import Engine, ItemIdOpt, TimestampOpt, UserIdOpt
from semid.errors import SemidError

console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


class ModelName(str, Enum):
    sasrec = "sasrec"
    tiger = "tiger"
    rpg = "rpg"


class Split(str, Enum):
    valid = "valid"
    test = "test"


RunDir = Annotated[Path, typer.Argument(help="Run directory written by `semid train`.", show_default=False)]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or mps.")]


def _metrics_row(name: str, m: dict[str, float]) -> list[str]:
    return [name, *(f"{m[key]:.4f}" for key in ("recall@5", "ndcg@5", "recall@10", "ndcg@10"))]


def _metrics_table(title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("model")
    for col in ("R@5", "N@5", "R@10", "N@10"):
        table.add_column(col, justify="right")
    return table


@app.command("train")
def train_cmd(
    model: Annotated[ModelName, typer.Argument(help="sasrec, tiger or rpg.", show_default=False)],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Run directory to write.", show_default=False)
    ],
    data: Annotated[
        list[Path] | None,
        typer.Argument(help="Dataset files or directories (as for `semid data stats`).", show_default=False),
    ] = None,
    ids: Annotated[
        Path | None, typer.Option("--ids", help="ids.parquet from `semid assign` (TIGER and RPG need it).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="JSON/YAML file with 'model' and 'train' sections of options."),
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in -o RUN_DIR.")] = False,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Most epochs to train.")] = None,
    max_minutes: Annotated[
        float | None,
        typer.Option(
            "--max-minutes",
            help="Stop (validated and saved) after this many minutes of training in all; "
            "the learning rate decays over this budget.",
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed; same seed, same run.")] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads for torch.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or mps.")] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="Dataset format (default: detect).")] = "auto",
    user_id: UserIdOpt = None,
    item_id: ItemIdOpt = None,
    timestamp: TimestampOpt = None,
    cold_start: Annotated[
        float | None,
        typer.Option(
            "--cold-start",
            help="Make this share of the items cold (e.g. 0.05): out of every training sequence, kept only "
            "as test targets and in the ID trie; `semid evaluate RUN --cold-start` then measures them.",
        ),
    ] = None,
    cold_start_seed: Annotated[
        int, typer.Option("--cold-start-seed", help="Seed of the cold items (the same set for every model).")
    ] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    log: Annotated[
        Path | None,
        typer.Option(
            "--stream",
            help="Stream the interactions from this directory of Parquet files sharded by user (user_id, "
            "item_id, timestamp; semid.rec.stream) instead of holding them in memory; the items come from "
            "DATA's catalogue or --ids.",
        ),
    ] = None,
    engine: Annotated[
        Engine,
        typer.Option(
            "--engine",
            help="local: this process (or the ranks torchrun started); ray: --num-workers Ray Train workers.",
        ),
    ] = Engine.local,
    address: Annotated[
        str | None, typer.Option("--address", help="Ray cluster to join (e.g. auto); default: start one.")
    ] = None,
    num_workers: Annotated[
        int | None, typer.Option("--num-workers", help="Ray Train workers (data-parallel ranks).")
    ] = None,
    gpus_per_worker: Annotated[
        float, typer.Option("--gpus-per-worker", help="GPUs per Ray worker (> 0: NCCL on CUDA).")
    ] = 0.0,
) -> None:
    """Train SASRec, TIGER or RPG with leave-one-out validation each epoch; the best epoch is kept in RUN_DIR.

    Data-parallel on N processes: launch this command with torchrun, or give --engine ray --num-workers N.
    """
    import os

    from semid.rec.data import RecData
    from semid.rec.train import check_new_run_dir, fit, read_config_file

    if engine is Engine.local and (address is not None or num_workers is not None or gpus_per_worker):
        raise SemidError("--address, --num-workers and --gpus-per-worker apply to --engine ray")
    if num_workers is not None and num_workers < 1:
        raise SemidError(f"--num-workers {num_workers} should be at least 1")
    if gpus_per_worker < 0:
        raise SemidError(f"--gpus-per-worker {gpus_per_worker:g} should be >= 0")
    if engine is Engine.ray and os.environ.get("WORLD_SIZE", "1") != "1":
        raise SemidError("--engine ray starts its own workers: do not launch it with torchrun")
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 prints

    def run_fit(data: RecData | None, **options: Any) -> Any:
        if engine is Engine.ray:
            from semid.rec.ray_train import fit_on_ray

            return fit_on_ray(
                model.value,
                data,
                output,
                num_workers=num_workers or 2,
                gpus_per_worker=gpus_per_worker,
                address=address,
                **options,
            )
        return fit(model.value, data, output, **options)[1]

    sections: dict[str, dict[str, Any]] = {"model": {}, "train": {}}
    if config is not None:
        sections = read_config_file(config)
    changes = {
        "epochs": epochs,
        "max_minutes": max_minutes,
        "seed": seed,
        "num_threads": threads,
        "device": device,
        "progress": False if quiet else None,
    }
    train_options = {**sections["train"], **{k: v for k, v in changes.items() if v is not None}}
    if not resume:  # the training options fail now, not after minutes of reading the data
        from semid.rec.config import TrainConfig, config_from_dict, default_train_config

        early = {**default_train_config(model.value).to_dict(), **train_options}
        if engine is Engine.ray:  # the device is the Ray workers' (they hold the GPUs), not this driver's
            early["device"] = "auto"
        config_from_dict(TrainConfig, early, source=str(config or "train config")).validate()
    if resume:
        if data or ids is not None or sections["model"] or cold_start is not None or log is not None:
            raise SemidError(
                "--resume continues a run with its own data, IDs, split and model: "
                "drop DATA, --ids, --stream, --cold-start, 'model'"
            )
        result = run_fit(None, train_config=train_options, resume=True)
    elif log is not None:
        if model is not ModelName.sasrec and ids is None:
            raise SemidError(f"{model.value.upper()} needs the items' Semantic IDs: give --ids ids.parquet")
        if not data and ids is None:
            raise SemidError(
                "--stream needs the items the log refers to: give DATA (a catalogue) or --ids ids.parquet"
            )
        if cold_start is not None:
            raise SemidError("--cold-start needs the sequences in memory; it does not apply to --stream")
        check_new_run_dir(output, inputs=[*(data or []), ids, config, log])
        rec = _log_data(log, data, ids, format, item_id)
        if main_rank:
            console.print(f"{rec.n_items:,} items, interactions streamed from {log} -> {output}")
        notes = {"log": str(log), "paths": [str(p) for p in data or []], "ids": str(ids) if ids else None}
        result = run_fit(rec, model_config=sections["model"], train_config=train_options, notes=notes)
    else:
        if not data:
            raise SemidError("give DATA: the dataset's files or directories (or --resume a run)")
        if model is not ModelName.sasrec and ids is None:
            raise SemidError(f"{model.value.upper()} needs the items' Semantic IDs: give --ids ids.parquet")
        check_new_run_dir(output, inputs=[*data, ids, config])  # before reading any data
        from semid.data import load_dataset

        ds = load_dataset(data, format=format, user_id=user_id, item_id=item_id, timestamp=timestamp)
        id_table = None
        if ids is not None:
            from semid.ids.table import read_ids

            id_table = read_ids(ids)
        rec = RecData.from_dataset(ds, id_table, ids_name=str(ids))
        if cold_start is not None:
            n_before = rec.n_users
            rec = rec.with_cold_start(cold_start, cold_start_seed)
            if main_rank:
                console.print(
                    f"cold start: {len(rec.cold_items):,} items kept out of training (test targets only); "
                    f"{n_before - rec.n_users:,} users left with < 3 items dropped"
                )
        if main_rank:
            if rec.n_dropped_users:
                console.print(f"left out {rec.n_dropped_users:,} users with fewer than 3 interactions")
            console.print(f"{rec.n_users:,} users, {rec.n_items:,} items -> {output}")
            if model is ModelName.tiger:
                _print_scaled_shape(rec, sections["model"])
        notes = {"paths": [str(p) for p in data], "ids": str(ids) if ids else None, "name": ds.name}
        result = run_fit(rec, model_config=sections["model"], train_config=train_options, notes=notes)
    if not main_rank:
        return
    table = _metrics_table(
        f"{model.value}: best epoch {result.best_epoch} of {result.epochs} ({result.stopped}), "
        f"{result.seconds / 60:.1f} min, {result.steps:,} steps"
    )
    if result.best_valid:
        table.add_row(*_metrics_row(f"{model.value} (validation)", result.best_valid))
        out.print(table)
    out.print(f"next: semid evaluate {output}")


def _print_scaled_shape(rec: Any, given: dict[str, Any]) -> None:
    """Say which shape options the defaults scaled down for this small data (semid.rec.config.scaled_shape)."""
    from semid.rec.config import scaled_shape

    shape = {k: v for k, v in scaled_shape("tiger", rec.n_train_targets).items() if k not in given}
    if shape:
        console.print(
            f"{rec.n_train_targets:,} training targets: a smaller TIGER than the paper's, the defaults for data "
            f"this small ({', '.join(f'{k}={v}' for k, v in shape.items())}); options in the config's "
            "'model' section override them, and configs/tiger-paper.json is the paper's shape"
        )


def _log_data(log: Path, data: list[Path] | None, ids: Path | None, format: str, item_id: str | None) -> Any:
    """The RecData of a streamed run: the items of DATA's catalogue (else of the IDs file), the log's path."""
    from semid.rec.data import RecData

    id_table = None
    if ids is not None:
        from semid.ids.table import read_ids

        id_table = read_ids(ids)
    titles = None
    if data:
        from semid.data import load_dataset

        ds = load_dataset(data, format=format, item_id=item_id)
        if ds.catalogue is None:
            raise SemidError(
                f"{data[0]}: no catalogue; --stream needs the items (a catalogue, or --ids alone)"
            )
        item_ids = ds.catalogue.item_ids
        cat = ds.catalogue
        title_field = "title" if "title" in cat.fields else (cat.text_fields or [None])[0]
        if title_field:
            titles = cat.text_column(title_field).to_numpy(zero_copy_only=False)
    else:
        item_ids = id_table.item_ids
    return RecData.for_log(log, item_ids, titles=titles, ids=id_table, ids_name=str(ids))


@app.command("evaluate")
def evaluate_cmd(
    run_dir: RunDir,
    split: Annotated[Split, typer.Option("--split", help="valid or test targets.")] = Split.test,
    as_json: Annotated[bool, typer.Option("--json", help="Print the numbers as JSON.")] = False,
    beam_size: Annotated[
        int | None, typer.Option("--beam-size", help="TIGER beams (default: the run's).")
    ] = None,
    unconstrained: Annotated[
        bool, typer.Option("--unconstrained", help="TIGER: decode without the trie; report invalid IDs.")
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Users per batch.")] = 256,
    cold_start: Annotated[
        bool,
        typer.Option(
            "--cold-start",
            help="Only test users whose target is a cold item (a run trained with --cold-start).",
        ),
    ] = False,
    exclude_history: Annotated[
        bool,
        typer.Option(
            "--exclude-history",
            help="Never recommend an item of the user's history ('filter seen items', as most SASRec "
            "benchmarks evaluate).",
        ),
    ] = False,
    embeddings: Annotated[
        Path | None,
        typer.Option(
            "--embeddings",
            help="Item text embeddings (.parquet item_id + embedding): adds the content baseline (nearest "
            "items to the mean of the history).",
        ),
    ] = None,
    rerank: Annotated[
        Path | None,
        typer.Option(
            "--rerank",
            help="A SASRec run on the same data and items: rerank this TIGER or RPG run's candidates by "
            "generative log-probability + weight x SASRec log-probability.",
            show_default=False,
        ),
    ] = None,
    rerank_weight: Annotated[
        float | None,
        typer.Option(
            "--rerank-weight",
            help="SASRec's weight (default: the best validation NDCG@10 of 0, 0.25, 0.5, 1, 2, 4, 8, 16).",
            show_default=False,
        ),
    ] = None,
    rerank_candidates: Annotated[
        int | None,
        typer.Option("--rerank-candidates", help="Generative candidates reranked per user (default 50)."),
    ] = None,
    unseen_share: Annotated[
        float | None,
        typer.Option(
            "--unseen-share",
            help="TIGER: up to this share of each list goes to items in no training sequence whose ID "
            "shares its prefix with a decoded item (the TIGER paper's cold-start rule; e.g. 0.1).",
            show_default=False,
        ),
    ] = None,
    unseen_prefix: Annotated[
        int | None,
        typer.Option(
            "--unseen-prefix",
            help="Leading codes an unseen item must share with a decoded one (default: all but the last).",
            show_default=False,
        ),
    ] = None,
    device: Device = "cpu",
) -> None:
    """Recall/NDCG@5/10 of a run's best model (full ranking), next to the most-popular baseline.

    With --rerank SASREC_RUN: the run's candidates reranked by SASRec, next to the same candidates in
    generative order; the weight is chosen on the validation split unless --rerank-weight gives it.
    """
    from semid.rec.train import evaluate_run

    if rerank is not None and embeddings is not None:
        raise SemidError("--embeddings (the content baseline) does not combine with --rerank")
    vectors = _run_item_vectors(run_dir, embeddings) if embeddings is not None else None
    if batch_size < 1:
        raise SemidError(f"--batch-size {batch_size} should be at least 1")
    if beam_size is not None and beam_size < 1:
        raise SemidError(f"--beam-size {beam_size} should be at least 1")
    if rerank is None and (rerank_weight is not None or rerank_candidates is not None):
        raise SemidError("--rerank-weight and --rerank-candidates apply with --rerank SASREC_RUN")
    if unseen_prefix is not None and unseen_share is None:
        raise SemidError("--unseen-prefix applies with --unseen-share")
    if unseen_share is not None and rerank is not None:
        raise SemidError("--unseen-share does not combine with --rerank")
    options: dict[str, Any] = {  # what a plain and a reranked evaluation share
        "device": device,
        "batch_size": batch_size,
        "beam_size": beam_size,
        "constrained": not unconstrained,
        "progress": not as_json,
        "cold_start": cold_start,
        "exclude_history": exclude_history,
    }
    if rerank is not None:
        if rerank_weight is not None and not rerank_weight >= 0:  # also NaN
            raise SemidError(f"--rerank-weight {rerank_weight:g} should be >= 0")
        if rerank_candidates is not None and rerank_candidates < 1:
            raise SemidError(f"--rerank-candidates {rerank_candidates} should be at least 1")
        _evaluate_rerank(
            run_dir,
            rerank,
            split.value,
            as_json=as_json,
            weight=rerank_weight,
            n_candidates=rerank_candidates,
            **options,
        )
        return
    res = evaluate_run(
        run_dir,
        split.value,
        item_vectors=vectors,
        unseen_share=unseen_share,
        unseen_prefix=unseen_prefix,
        **options,
    )
    if as_json:
        typer.echo(json.dumps(res, indent=2, sort_keys=True))
        return
    m = res["model"]
    who = f"{m['n_users']:,} users ({split.value})"
    if cold_start:
        who = f"{m['n_users']:,} test users whose target is one of {res['cold_start']['cold_items']:,} cold items"
    table = _metrics_table(f"{run_dir} on {who}")
    table.add_row(*_metrics_row(res["model_type"], m))
    table.add_row(*_metrics_row("most popular", res["most_popular"]))
    if "content" in res:
        table.add_row(*_metrics_row("content (text embeddings)", res["content"]))
    speed = f"{m['users_per_s']:,.0f} users/s"
    if res["model_type"].startswith("tiger"):
        speed += f", invalid IDs {m['invalid_rate']:.2%}"
    table.caption = speed
    out.print(table)
    if "unseen" in res:
        u = res["unseen"]
        out.print(
            f"unseen items by prefix: up to {u['share']:.0%} of each list; {u['unseen_items']:,} items in no "
            f"training sequence, {u['reachable']:,} of them share their first {u['prefix_levels']} codes "
            "with a trained item"
        )


def _evaluate_rerank(
    run_dir: Path, sasrec_dir: Path, split: str, *, as_json: bool, n_candidates: int | None, **options: Any
) -> None:
    """`semid evaluate RUN --rerank SASREC_RUN`: the hybrid's row, the generative row, most popular."""
    from semid.rec.hybrid import N_CANDIDATES
    from semid.rec.runs import evaluate_hybrid_run

    res = evaluate_hybrid_run(
        run_dir, sasrec_dir, split, n_candidates=n_candidates or N_CANDIDATES, **options
    )
    if as_json:
        typer.echo(json.dumps(res, indent=2, sort_keys=True))
        return
    m, gen_type = res["model"], res["model_type"].split(" + ")[0]
    who = f"{m['n_users']:,} users ({split})"
    if "cold_start" in res:
        cold = res["cold_start"]["cold_items"]
        who = f"{m['n_users']:,} test users whose target is one of {cold:,} cold items"
    table = _metrics_table(f"{run_dir} reranked by {sasrec_dir} on {who}")
    table.add_row(*_metrics_row(f"{res['model_type']} rerank (weight {res['weight']:g})", m))
    table.add_row(
        *_metrics_row(f"{gen_type} ({res['n_candidates']} candidates, generative order)", res["generative"])
    )
    table.add_row(*_metrics_row("most popular", res["most_popular"]))
    table.caption = f"{m['users_per_s']:,.0f} users/s (one generative decode + one SASRec forward per batch)"
    if gen_type == "tiger":
        table.caption += f", invalid IDs {m['invalid_rate']:.2%}"
    out.print(table)
    if res["weight_from"] == "valid":
        by_weight = ", ".join(f"{w} {v:.4f}" for w, v in res["valid_ndcg_by_weight"].items())
        chosen = f"rerank weight {res['weight']:g}: chosen on the validation split"
        out.print(f"{chosen} (NDCG@10 by weight: {by_weight})")
    else:
        out.print(f"rerank weight {res['weight']:g}: given (--rerank-weight)")


def _run_item_vectors(run_dir: Path, path: Path) -> Any:
    """The vectors of ``path`` in the run's item order; items without one are an error naming the first."""
    import numpy as np

    from semid.embed.store import read_embeddings
    from semid.rec.data import RecData

    data = RecData.load(run_dir)
    ids, X = read_embeddings(path)
    row = {str(i): r for r, i in enumerate(ids)}
    missing = [str(i) for i in data.item_ids if str(i) not in row]
    if missing:
        raise SemidError(
            f"{path}: no embedding for item {missing[0]!r} ({len(missing):,} of the run's "
            f"{data.n_items:,} items have none)"
        )
    return X[np.array([row[str(i)] for i in data.item_ids])]


@app.command("export-embeddings")
def export_embeddings_cmd(
    run_dir: RunDir,
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Embeddings .parquet to write.", show_default=False)
    ],
    impute_from: Annotated[
        Path | None,
        typer.Option(
            "--impute-from",
            help="Text embeddings (.parquet item_id + embedding) of the run's items and any new ones: the "
            "untrained items' rows are predicted from their text (ridge regression fitted on the trained "
            "items), and the new items are added the same way.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """SASRec's learned item vectors as an embeddings file (item_id + embedding), one row per item.

    For Semantic IDs with collaborative signal: semid fit EMB -o MODEL --fuse FILE (any method), or
    --method rq-vae --collab FILE. Items in no training sequence (cold items, items nobody bought) keep
    their untrained row, so the file covers the catalogue; their number is printed. With --impute-from
    EMB those rows, and the rows of EMB's items the run lacks, are predicted from the text instead.
    """
    from semid._outputs import check_output
    from semid.rec.io import export_run_embeddings

    check_output(output, inputs=[run_dir, impute_from], what="an embeddings file")
    if output.suffix != ".parquet":
        raise SemidError(f"{output}: embeddings are written as .parquet, got {output.suffix!r}")
    res = export_run_embeddings(run_dir, output, impute_from=impute_from)
    msg = f"{res['n_items']:,} x {res['dim']} item vectors of {run_dir} -> {output}"
    if res["untrained_items"]:
        msg += f" (untrained, in no training sequence: {res['untrained_items']:,})"
    if res["imputation"] is not None:
        msg += f"\n{res['new_items']:,} new items; {res['imputation'].describe()}"
    out.print(msg)


@app.command("recommend")
def recommend_cmd(
    run_dir: RunDir,
    history: Annotated[
        str, typer.Option("--history", help="Item ids, oldest first: ITEM,ITEM,...", show_default=False)
    ],
    k: Annotated[int, typer.Option("-k", help="How many items.")] = 10,
    user: Annotated[str | None, typer.Option("--user", help="User id (TIGER hashes it).")] = None,
    beam_size: Annotated[int | None, typer.Option("--beam-size", help="TIGER beams.")] = None,
    exclude_history: Annotated[
        bool, typer.Option("--exclude-history", help="Never recommend an item of the history.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    device: Device = "cpu",
) -> None:
    """The next items for a history, with their Semantic IDs and titles."""
    from semid.rec.data import RecData, histories_batch, user_keys
    from semid.rec.tiger import TIGER
    from semid.rec.train import load_model

    if k < 1:
        raise SemidError(f"-k {k} should be at least 1")
    if beam_size is not None and beam_size < 1:
        raise SemidError(f"--beam-size {beam_size} should be at least 1")
    model = load_model(run_dir, device=device)
    data = RecData.load(run_dir)
    if k > data.n_items:
        raise SemidError(f"-k {k} is larger than the catalogue ({data.n_items:,} items)")
    items = data.parse_history([h.strip() for h in history.split(",") if h.strip()])
    users = user_keys([user]) if user is not None else None
    batch = histories_batch([items], users, device=next(model.parameters()).device)
    options = {"beam_size": beam_size} if isinstance(model, TIGER) else {}
    top, scores = model.recommend(batch, k, exclude_history=exclude_history, **options)
    rows = []
    for item, score in zip(top[0].tolist(), scores[0].tolist(), strict=True):
        if item < 0:  # fewer than k items left once the history is excluded
            continue
        rows.append(
            {
                "item_id": str(data.item_ids[item]),
                "semantic_id": None if data.semantic_ids is None else str(data.semantic_ids[item]),
                "score": round(float(score), 4),
                "title": None if data.titles is None else str(data.titles[item]),
            }
        )
    if as_json:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table(title=f"next items after {len(items)} ({model.model_type})", title_justify="left")
    for col in ("#", "item", "semantic id", "score", "title"):
        table.add_column(col, justify="right" if col in ("#", "score") else "left")
    for rank, row in enumerate(rows, 1):
        table.add_row(
            str(rank), row["item_id"], row["semantic_id"] or "", f"{row['score']:.4f}", row["title"] or ""
        )
    out.print(table)
