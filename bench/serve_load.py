"""Load test of `semid serve`: 1,000 requests at 16 concurrent clients on loopback, batched vs unbatched.

For each server mode (``batched``: concurrent requests share one model call, the default; ``unbatched``:
``--no-batch``, one model call per request) this starts a live server in a subprocess (``semid serve DIR
--no-ui``), waits for ``/health`` and warms it up; then, endpoint by endpoint, it fires ``--requests``
requests per mode at ``--concurrency`` concurrent clients (httpx, asyncio; one connection each), in
``--rounds`` rounds that alternate the modes (a neighbour's load on the machine falls on both alike):

- ``/recommend``: the last <= 10 items of a random user's sequence, ``k=10`` (TIGER constrained beam search);
- ``/search``: 2-4 words of a random item title, ``k=10`` (dense retrieval: MiniLM query embedding).

Reported per mode and endpoint: errors (non-200 answers or failed connections), p50/p99 latency, requests/s,
and the mean number of requests per model call (``/health`` counters); then batched / unbatched ratios.
The load generator runs on the same machine as the server, so both share its cores.

Usage::

    python bench/serve_load.py                         # demo directory in bench/out/serve-demo (made if missing)
    python bench/serve_load.py --dir semid-demo --requests 2000 --concurrency 32
    python bench/serve_load.py --json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_json, free_port, print_table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIR = ROOT / "bench" / "out" / "serve-demo"
MODES = {"batched": [], "unbatched": ["--no-batch"]}


def ensure_demo(path: Path) -> None:
    """Run `semid demo --out path` once (about a minute and a half) when there is nothing to serve."""
    if (path / "tiger" / "model.safetensors").is_file() and (path / "embeddings.parquet").is_file():
        return
    print(f"no demo run in {path}: running semid demo (about 2 minutes) ...", file=sys.stderr)
    subprocess.run(
        [sys.executable, "-m", "semid", "demo", "--out", str(path), "--tiger-minutes", "1"],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def make_payloads(path: Path, n: int, seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """``n`` request bodies per endpoint, drawn from the served run's users and titles."""
    from semid.rec.data import RecData

    data = RecData.load(path / "tiger")
    rng = random.Random(seed)
    seqs = data.sequences
    recommend, search = [], []
    for _ in range(n):
        u = rng.randrange(data.n_users)
        items = seqs.items[seqs.offsets[u] : seqs.offsets[u + 1]][-10:]
        recommend.append({"history": [str(data.item_ids[i]) for i in items], "k": 10})
        words = str(data.titles[rng.randrange(data.n_items)]).replace(" - ", " ").split()
        start = rng.randrange(max(1, len(words) - 3))
        search.append({"query": " ".join(words[start : start + rng.randint(2, 4)]), "k": 10})
    return {"recommend": recommend, "search": search}


class Server:
    """`semid serve DIR --no-ui` in a subprocess on a free loopback port (stopped on exit)."""

    def __init__(self, path: Path, extra: list[str], threads: int | None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "semid", "serve", str(path), "--no-ui", "--port", str(self.port), *extra]
        if threads:
            cmd += ["--threads", str(threads)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the server exited: {self.proc.stderr.read() if self.proc.stderr else ''}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server did not answer /health within 180 s")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def fire(url: str, payloads: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    """Send every payload to ``url`` from ``concurrency`` clients at once; latencies and errors."""
    latencies: list[float] = []
    errors = 0
    queue = list(reversed(payloads))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def worker() -> None:
            nonlocal errors
            while queue:
                body = queue.pop()
                t = time.perf_counter()
                try:
                    r = await client.post(url, json=body)
                    ok = r.status_code == 200 and len(r.json()["items"]) == body["k"]
                except (httpx.HTTPError, ValueError, KeyError):
                    ok = False
                latencies.append(time.perf_counter() - t)
                errors += not ok

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    return {"latencies": latencies, "errors": errors, "seconds": seconds}


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Requests, errors, p50/p99 latency (ms) and requests/s over the rounds of one mode."""
    latencies = sorted(x for p in parts for x in p["latencies"])
    return {
        "requests": len(latencies),
        "errors": sum(p["errors"] for p in parts),
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "req_per_s": len(latencies) / sum(p["seconds"] for p in parts),
    }


def run(modes: list[str], path: Path, payloads: dict[str, list], args: argparse.Namespace) -> list[dict]:
    """Every mode's server at once; each endpoint's requests in ``args.rounds`` rounds that alternate the
    modes, so that a neighbour's load on the machine falls on every mode alike."""
    rows = []
    with contextlib.ExitStack() as stack:
        servers = {m: stack.enter_context(Server(path, MODES[m], args.threads)) for m in modes}
        for endpoint, bodies in payloads.items():
            parts: dict[str, list[dict]] = {m: [] for m in modes}
            before = {}
            for mode, server in servers.items():
                asyncio.run(fire(f"{server.url}/{endpoint}", bodies[: args.warmup], args.concurrency))
                before[mode] = httpx.get(f"{server.url}/health").json()["batching"][endpoint]
            step = -(-len(bodies) // args.rounds)
            for start in range(0, len(bodies), step):
                for mode, server in servers.items():
                    parts[mode].append(
                        asyncio.run(
                            fire(f"{server.url}/{endpoint}", bodies[start : start + step], args.concurrency)
                        )
                    )
            for mode, server in servers.items():
                after = httpx.get(f"{server.url}/health").json()["batching"][endpoint]
                calls = after["calls"] - before[mode]["calls"]
                per_call = (after["requests"] - before[mode]["requests"]) / calls if calls else 0.0
                rows.append(
                    {"mode": mode, "endpoint": f"/{endpoint}", **merge(parts[mode]), "per_call": per_call}
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="semid demo output to serve")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4, help="rounds per endpoint, alternating the modes")
    parser.add_argument("--threads", type=int, default=None, help="server torch threads")
    parser.add_argument("--modes", default="batched,unbatched")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    ensure_demo(args.dir)
    payloads = make_payloads(args.dir, args.requests)
    rows = run(args.modes.split(","), args.dir, payloads, args)
    if args.json:
        emit_json(rows)
        return
    import torch

    print(
        f"# {platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, {args.requests} requests "
        f"per endpoint at {args.concurrency} concurrent clients on loopback (client and server share the cpus)"
    )
    print_table(
        rows,
        ["mode", "endpoint", "requests", "errors", "p50_ms", "p99_ms", "req_per_s", "per_call"],
        "latency and throughput (per_call: requests answered per model call)",
    )
    by = {(r["mode"], r["endpoint"]): r for r in rows}
    ratios = []
    for endpoint in sorted({r["endpoint"] for r in rows}):
        b, u = by.get(("batched", endpoint)), by.get(("unbatched", endpoint))
        if b and u:
            ratios.append(
                {
                    "endpoint": endpoint,
                    "req_per_s": f"{b['req_per_s'] / u['req_per_s']:.2f}x",
                    "p50": f"{b['p50_ms'] / u['p50_ms']:.2f}x",
                    "p99": f"{b['p99_ms'] / u['p99_ms']:.2f}x",
                }
            )
    if ratios:
        print_table(ratios, ["endpoint", "req_per_s", "p50", "p99"], "batched / unbatched")


if __name__ == "__main__":
    main()
