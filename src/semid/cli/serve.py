"""`semid serve`: the HTTP API and web UI over a served directory.

semid serve semid-demo                         # http://127.0.0.1:8000/ui, API docs at /docs
semid serve runs/tiger --ids ids.parquet --embeddings emb.parquet --port 8080 --no-ui
semid serve semid-demo --llm llm_model/        # search by the query -> item language model
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from semid.cli import app

console = Console(stderr=True, soft_wrap=True)

LOOPBACK = "127.0.0.1"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_server(
    path: Path,
    *,
    host: str = LOOPBACK,
    port: int = 8000,
    ui: bool = True,
    ids: Path | None = None,
    embeddings: Path | None = None,
    llm: Path | None = None,
    embed_model: str | None = None,
    batching: bool = True,
    max_batch: int = 64,
    max_wait_ms: float = 2.0,
    beam_size: int | None = None,
    threads: int | None = None,
    device: str = "cpu",
    log_level: str = "warning",
    search_filter: bool = True,
    history_weight: float = 2.0,
) -> None:
    """Load ``path`` once, then serve it with uvicorn until interrupted (Ctrl-C)."""
    import time

    import torch
    import uvicorn

    from semid.errors import SemidError
    from semid.serve.api import create_app
    from semid.serve.service import ServeConfig, Service

    if not 0 <= port <= 65535:
        raise SemidError(f"--port {port} should be between 0 and 65535")
    from uvicorn.config import LOG_LEVELS

    if log_level.lower() not in LOG_LEVELS:
        raise SemidError(f"--log-level {log_level!r} should be one of {', '.join(LOG_LEVELS)}")
    _check_port_free(host, port)  # before the minutes of loading, not after
    if threads is not None:
        if threads < 1:
            raise SemidError(f"--threads {threads} should be at least 1")
        torch.set_num_threads(threads)
    start = time.perf_counter()
    if not 0 <= history_weight <= 100:
        raise SemidError(f"--history-weight {history_weight} should be between 0 and 100")
    config = ServeConfig(
        batching=batching,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        beam_size=beam_size,
        device=device,
        search_filter=search_filter,
        history_weight=history_weight,
    )
    service = Service.load(path, ids=ids, embeddings=embeddings, llm=llm, embedder=embed_model, config=config)
    info = service.info()
    console.print(
        f"loaded {path} in {time.perf_counter() - start:.1f}s: {info['items']:,} items, "
        f"recommend: {info['recommend'] or 'none'}, search: {info['search'] or 'none'}, "
        f"batching: {'up to ' + str(max_batch) if batching else 'off'}"
    )
    if info["search_filter"] == "unavailable":
        console.print(
            "[yellow]warning:[/yellow] the language model's items.parquet keeps no brand or price, so "
            "search cannot filter by them: prepare and train it again with this version to get the filter"
        )
    if not _is_loopback(host):
        console.print(
            f"[yellow]warning:[/yellow] binding to {host}: the server is reachable from other machines "
            "and has no authentication"
        )
    server_app = create_app(service, ui=ui)
    shown = f"[{host}]" if ":" in host else host
    console.print(
        f"serving on http://{shown}:{port}"
        + (f"  (UI http://{shown}:{port}/ui)" if ui else "")
        + "  docs /docs"
    )
    uvicorn.run(server_app, host=host, port=port, log_level=log_level.lower(), timeout_graceful_shutdown=5)


def _check_port_free(host: str, port: int) -> None:
    """Bind ``host:port`` as uvicorn will (asyncio's ``create_server``: every address the host resolves to,
    IPv6 sockets IPv6-only) and let go: a port another server holds, or a host this machine does not have,
    is one error now (uvicorn would report it only after loading, without an ``Error:`` line)."""
    import socket

    from semid.errors import SemidError

    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise SemidError(f"--host {host}: cannot resolve it ({e.strerror})") from None
    shown = f"[{host}]" if ":" in host else host
    for family, kind, proto, _, address in dict.fromkeys(infos):
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as e:
                raise SemidError(f"cannot listen on {shown}:{port} ({e.strerror})") from None


@app.command("serve")
def serve_cmd(
    run_dir: Annotated[
        Path,
        typer.Argument(
            help="`semid demo --out` directory, or a `semid train` run directory.", show_default=False
        ),
    ],
    host: Annotated[str, typer.Option("--host", help="Address to bind (loopback by default).")] = LOOPBACK,
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8000,
    no_ui: Annotated[bool, typer.Option("--no-ui", help="API only, no web page at /ui.")] = False,
    ids: Annotated[
        Path | None, typer.Option("--ids", help="ids.parquet (default: RUN_DIR/ids.parquet if there).")
    ] = None,
    embeddings: Annotated[
        Path | None,
        typer.Option(
            "--embeddings", help="Item embeddings for dense search (default: RUN_DIR/embeddings.parquet)."
        ),
    ] = None,
    llm: Annotated[
        Path | None,
        typer.Option("--llm", help="`semid llm train` directory: search by it (default: RUN_DIR/llm)."),
    ] = None,
    embed_model: Annotated[
        str | None,
        typer.Option(
            "--embed-model", help="Query embedder for dense search (default: packaged all-MiniLM-L6-v2)."
        ),
    ] = None,
    no_batch: Annotated[bool, typer.Option("--no-batch", help="One model call per request.")] = False,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Most requests in one model call.")] = 64,
    beam_size: Annotated[
        int | None, typer.Option("--beam-size", help="TIGER beams (default: the run's).")
    ] = None,
    threads: Annotated[int | None, typer.Option("--threads", help="CPU threads for torch.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, mps or auto.")] = "cpu",
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "warning",
    search_filter: Annotated[
        bool,
        typer.Option(
            "--search-filter/--no-search-filter",
            help="Language-model search answers only with items of the brand and price a request states.",
        ),
    ] = True,
    history_weight: Annotated[
        float,
        typer.Option(
            "--history-weight", help="Personalised search: weight of TIGER's scores next to the query's."
        ),
    ] = 2.0,
) -> None:
    """Serve recommendations and search over HTTP (FastAPI) with a web UI at /ui (Gradio)."""
    run_server(
        run_dir,
        host=host,
        port=port,
        ui=not no_ui,
        ids=ids,
        embeddings=embeddings,
        llm=llm,
        embed_model=embed_model,
        batching=not no_batch,
        max_batch=max_batch,
        beam_size=beam_size,
        threads=threads,
        device=device,
        log_level=log_level,
        search_filter=search_filter,
        history_weight=history_weight,
    )
