"""``semid data ...``: look at a dataset before anything is embedded or trained.

``semid data stats PATH...`` reads files or directories (formats detected from file names, or forced with
``--format``) and prints users, items, interactions, sequence lengths, field coverage and the parse report.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import typer
from rich.console import Console
from rich.table import Table

from semid.cli import app
from semid.data import FORMATS, load_dataset
from semid.data.model import Dataset, DatasetStats

data_app = typer.Typer(
    help="Datasets: read catalogues and interactions (RecBole, P5, Amazon, MovieLens, JSONL/CSV/Parquet).",
    no_args_is_help=True,
)
app.add_typer(data_app, name="data")


@data_app.command("stats")
def stats(
    paths: list[Path] = typer.Argument(
        ...,
        help="Files or directories of one dataset, e.g. a RecBole .item dir and a P5 dir.",
        show_default=False,
    ),
    format: str = typer.Option("auto", "--format", "-f", help=f"One of: {', '.join(FORMATS)}."),
    as_json: bool = typer.Option(False, "--json", help="Print the numbers as JSON."),
    item_id: str | None = typer.Option(None, "--item-id", help="Item id column (JSONL/CSV/Parquet/RecBole)."),
    user_id: str | None = typer.Option(None, "--user-id", help="User id column."),
    timestamp: str | None = typer.Option(None, "--timestamp", help="Timestamp column."),
    rating: str | None = typer.Option(None, "--rating", help="Rating column."),
    max_bad_fraction: float = typer.Option(
        0.01, "--max-bad-fraction", help="Share of malformed lines a file may have before it is an error."
    ),
    encoding: str = typer.Option(
        "utf-8", "--encoding", help="Text encoding of JSONL/CSV/RecBole files, e.g. latin-1."
    ),
) -> None:
    """Users, items, interactions, sequence lengths, field coverage and parse report of a dataset.

    Example: semid data stats data/amazon-beauty/recbole_item data/amazon-beauty/p5
    """
    ds = load_dataset(
        paths,
        format=format,
        item_id=item_id,
        user_id=user_id,
        timestamp=timestamp,
        rating=rating,
        max_bad_fraction=max_bad_fraction,
        encoding=encoding,
    )
    st = ds.stats()
    if as_json:
        typer.echo(json.dumps(st.to_dict(), indent=2, ensure_ascii=False))
        return
    print_stats(ds, st, Console(width=110))


def print_stats(ds: Dataset, st: DatasetStats, console: Console) -> None:
    """The human-readable report: a summary table, a coverage table, the parse report."""
    summary = Table(title=f"Dataset: {st.name}", show_header=False, title_justify="left")
    summary.add_column("what", style="bold")
    summary.add_column("value", justify="right")
    summary.add_row("users", f"{st.n_users:,}")
    summary.add_row("items", f"{st.n_items:,}")
    summary.add_row("interactions", f"{st.n_interactions:,}")
    if st.n_interactions:
        summary.add_row(
            "sequence length",
            f"min {st.seq_len_min:,} / median {st.seq_len_median:g} / mean {st.seq_len_mean:.2f} / max {st.seq_len_max:,}",
        )
    console.print(summary)

    if ds.catalogue is not None:
        n = len(ds.catalogue)
        cov = Table(title="Field coverage (non-empty values)", title_justify="left")
        cov.add_column("field")
        cov.add_column("type")
        cov.add_column("items", justify="right")
        cov.add_column("coverage", justify="right")
        schema = ds.catalogue.table.schema
        for name, share in st.coverage.items():
            cov.add_row(
                name, _type_name(schema.field(name).type), f"{round(share * n):,}", f"{100 * share:.2f}%"
            )
        console.print(cov)

    rep = st.report
    console.print(
        f"[bold]Parse report[/bold]: {rep.n_skipped:,} lines skipped, {rep.n_repaired:,} repaired",
        highlight=False,
    )
    for title, issues, count in (
        ("skipped", rep.skipped, rep.n_skipped),
        ("repaired", rep.repaired, rep.n_repaired),
    ):
        if issues:
            more = f" (first {len(issues)} of {count:,})" if count > len(issues) else ""
            console.print(f"  {title}{more}:", highlight=False)
            for issue in issues:
                console.print(f"    {issue}", markup=False, highlight=False, soft_wrap=True)
    for note in rep.notes:
        console.print(f"  note: {note}", markup=False, highlight=False, soft_wrap=True)


def _type_name(t: pa.DataType) -> str:
    """``list<string>`` rather than arrow's ``list<item: string>``."""
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{_type_name(t.value_type)}>"
    return str(t)
