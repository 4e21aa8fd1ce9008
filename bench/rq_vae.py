"""RQ-VAE benchmark on Amazon Beauty (MiniLM, 12,101 x 384), 3 x 256, all in one run on one machine:

    semid RQVAE (defaults)  vs  semid RQKMeans  vs  semantic-id RQVAE  vs  vector-quantize-pytorch ResidualVQ

    python bench/rq_vae.py                    # every method, semid's default epochs (100)
    python bench/rq_vae.py --quick            # 20 epochs
    python bench/rq_vae.py --methods semid,vqp --threads 1 --json
    python bench/rq_vae.py --throughput 5 --epochs 20   # semid vs vqp epoch throughput, runs alternating
                                              # (with 10 epochs, the first epoch and the one full
                                              # evaluation weigh a fifth of semid's mean)

Each method runs in its own subprocess with ``--threads`` torch threads. The learned models share the
architecture of TIGER (MLP 384 -> 512-256-128 -> 32, mirrored decoder, 3 residual levels of 256 codes) and
the training budget of semid's defaults (epochs, batch size, learning rate); each package otherwise uses
its own recipe:

* ``semid``: ``RQVAE(random_state=0)`` - nothing else set (precision "auto" = bf16 autocast where the CPU
  has native bfloat16). ``semid-fp32``: the same in float32, to show what bf16 buys.
* ``semantic-id``: ``semantic_id.RQVAE`` with k-means init and LC-Rec's Sinkhorn on the last level
  (``sk_epsilons=[0, 0, 0.003]``), ``verbose=True`` (with ``verbose=False`` version 0.2.5 restores the
  weights of epoch 1 at the end: its "best collision rate" is 0.0 at every epoch when not monitored).
* ``vqp``: ``vector_quantize_pytorch.ResidualVQ`` (k-means init, EMA decay 0.99, dead-code threshold 2,
  rotation trick, commitment 0.25) between the same MLPs, AdamW + the same cosine schedule, float32.

Reported: wall seconds of ``fit`` (initialisation included), seconds per epoch (the mean epoch: for semid
its training loop with the per-epoch health metrics, plus its full evaluations every ``eval_every`` epochs,
for vqp its loop; semantic-id's loop is
its own, so fit seconds / epochs), relative reconstruction error ``sum ||x - decode(encode(x))||^2 /
sum ||x - mean||^2``, unique-ID share before dedup, codebook usage per level, epoch throughput relative to
the vqp model. The machine may be shared: the load average is printed, and ``--throughput`` alternates
semid and vqp runs so that both see the same load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BEAUTY, emit_json, peak_rss_mib, print_table  # noqa: E402

LEVELS, K, LATENT, HIDDEN = 3, 256, 32, [512, 256, 128]


def load() -> np.ndarray:
    return np.load(BEAUTY / "embeddings" / "minilm-l6-v2.npy").astype(np.float32)


def quality(X: np.ndarray, codes: np.ndarray, X_hat: np.ndarray) -> dict:
    from semid.quantize.metrics import codebook_usage, collision_stats, relative_reconstruction_error

    return {
        "rel_error": relative_reconstruction_error(X, X_hat),
        "unique_share": collision_stats(codes)["unique_share"],
        "usage": [round(lv["usage"], 3) for lv in codebook_usage(codes, [K] * LEVELS)],
    }


def _mlp(dims: list[int]):
    from torch import nn

    layers = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def fit_vqp(X: np.ndarray, epochs: int, batch_size: int, lr: float, seed: int = 0):
    """The same autoencoder around vector-quantize-pytorch's ResidualVQ; returns (encode, decode) closures."""
    import torch
    from vector_quantize_pytorch import ResidualVQ

    torch.manual_seed(seed)
    enc, dec = _mlp([X.shape[1], *HIDDEN, LATENT]), _mlp([LATENT, *reversed(HIDDEN), X.shape[1]])
    rvq = ResidualVQ(
        dim=LATENT,
        num_quantizers=LEVELS,
        codebook_size=K,
        kmeans_init=True,
        kmeans_iters=10,
        decay=0.99,
        threshold_ema_dead_code=2,
        commitment_weight=0.25,
    )
    params = [*enc.parameters(), *dec.parameters(), *(p for p in rvq.parameters() if p.requires_grad)]
    opt = torch.optim.AdamW(params, lr=lr)
    Xt = torch.from_numpy(X)
    steps = epochs * math.ceil(len(X) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    g = torch.Generator().manual_seed(seed)
    epoch_s = []
    for _ in range(epochs):
        t = time.perf_counter()
        perm = torch.randperm(len(X), generator=g)
        for i in range(0, len(X), batch_size):
            x = Xt[perm[i : i + batch_size]]
            quantized, _, commit = rvq(enc(x))
            loss = (dec(quantized) - x).square().sum(1).mean() + commit.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        epoch_s.append(time.perf_counter() - t)
    rvq.eval()

    @torch.no_grad()
    def encode(A: np.ndarray) -> np.ndarray:
        return rvq(enc(torch.from_numpy(A)))[1].numpy().astype(np.int32)

    @torch.no_grad()
    def decode(codes: np.ndarray) -> np.ndarray:
        return dec(rvq.get_output_from_indices(torch.from_numpy(codes.astype(np.int64)))).numpy()

    return encode, decode, epoch_s


def run_method(method: str, epochs: int) -> dict:
    import torch

    from semid.quantize.rq_vae import RQVAEConfig

    X = load()
    defaults = RQVAEConfig().train
    bs, lr = defaults.batch_size, defaults.lr
    extra: dict = {}
    epoch_s: list[float] = []
    t = time.perf_counter()
    if method in ("semid", "semid-fp32"):
        from semid.quantize.rq_vae import RQVAE

        opts = {"epochs": epochs} if epochs != defaults.epochs else {}
        if method == "semid-fp32":
            opts["precision"] = "fp32"
        model = RQVAE(random_state=0, **opts).fit(X)
        fit_s = time.perf_counter() - t
        codes = model.encode(X)
        X_hat = model.decode(codes)
        h = model.history_
        epoch_s = [r["train_s"] + r.get("eval_s", 0.0) for r in h]  # the loop and the full evaluations
        extra = {
            "train_loop_s_per_epoch": float(np.mean([r["train_s"] for r in h])),
            "metrics_s_per_epoch": float(np.mean([r.get("eval_s", 0.0) for r in h])),
        }
    elif method == "rq-kmeans":
        from semid.quantize import RQKMeans

        model = RQKMeans(LEVELS, K, random_state=0).fit(X)
        fit_s = time.perf_counter() - t
        codes = model.encode(X)
        X_hat = model.decode(codes)
        epochs = 0
    elif method == "semantic-id":
        from semantic_id import RQVAE as PeerRQVAE

        model = PeerRQVAE(
            in_dim=X.shape[1],
            num_emb_list=[K] * LEVELS,
            e_dim=LATENT,
            layers=HIDDEN,
            kmeans_init=True,
            sk_epsilons=[0.0] * (LEVELS - 1) + [0.003],
            lr=lr,
            batch_size=bs,
            epochs=epochs,
            lr_scheduler="cosine",
            device="cpu",
            verbose=True,
        )
        torch.manual_seed(0)
        model.fit(X)
        fit_s = time.perf_counter() - t
        codes = model.encode(X)
        X_hat = model.decode(codes)
    elif method == "vqp":
        encode, decode, epoch_s = fit_vqp(X, epochs, bs, lr)
        fit_s = time.perf_counter() - t
        codes = encode(X)
        X_hat = decode(codes)
    else:
        raise SystemExit(f"unknown method {method}")
    return {
        "method": method,
        "n": int(X.shape[0]),
        "epochs": epochs,
        "batch_size": bs if epochs else None,
        "threads": torch.get_num_threads(),
        "fit_s": fit_s,
        # mean seconds of one epoch where the loop is ours to time (semid's full evaluations every
        # eval_every epochs included), else fit seconds / epochs
        "s_per_epoch": float(np.mean(epoch_s)) if epoch_s else (fit_s / epochs if epochs else None),
        "peak_rss_mib": peak_rss_mib(),
        **quality(X, np.asarray(codes), np.asarray(X_hat, dtype=np.float32)),
        **extra,
    }


def _worker(method: str, epochs: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--epochs", str(epochs), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def throughput(rounds: int, epochs: int, threads: int) -> None:
    """semid and vqp alternate (semid, vqp, vqp, semid, ...), so a busy neighbour slows both alike."""
    times: dict[str, list[float]] = {"semid": [], "vqp": []}
    for i in range(rounds):
        for method in ("semid", "vqp") if i % 2 == 0 else ("vqp", "semid"):
            row = _worker(method, epochs, threads)
            times[method].append(row["s_per_epoch"])
            print(f"  round {i + 1} {method:6s} {row['s_per_epoch']:.3f} s/epoch", file=sys.stderr)
    semid, vqp = statistics.median(times["semid"]), statistics.median(times["vqp"])
    print(
        f"median s/epoch over {rounds} alternating rounds of {epochs} epochs, {threads} thread(s): "
        f"semid {semid:.3f}, vqp {vqp:.3f} -> semid has {vqp / semid:.2f}x the epoch throughput "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="semid,semid-fp32,rq-kmeans,semantic-id,vqp")
    ap.add_argument(
        "--epochs", type=int, default=None, help="epochs of every learned model (default: semid's)"
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads per method (the machine is shared)")
    ap.add_argument("--quick", action="store_true", help="20 epochs")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--throughput",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="only compare epoch throughput: alternate semid and vqp runs ROUNDS times (same load for both)",
    )
    ap.add_argument("--worker", metavar="METHOD", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.epochs is None:
        from semid.quantize.rq_vae import RQVAEConfig

        args.epochs = 20 if args.quick else RQVAEConfig().train.epochs
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(run_method(args.worker, args.epochs)))
        return
    if not (BEAUTY / "embeddings").exists():
        raise SystemExit(f"{BEAUTY / 'embeddings'} not found (set SEMID_SHARED to the shared data folder)")
    if args.throughput:
        throughput(args.throughput, args.epochs, args.threads)
        return
    rows = []
    for method in args.methods.split(","):
        t = time.perf_counter()
        try:
            rows.append(_worker(method, args.epochs, args.threads))
        except RuntimeError as e:
            print(e, file=sys.stderr)
            continue
        print(f"  {method:12s} done in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    by = {r["method"]: r for r in rows}
    for r in rows:
        if "vqp" in by and r.get("s_per_epoch"):
            r["epoch_speed_vs_vqp"] = by["vqp"]["s_per_epoch"] / r["s_per_epoch"]
        if "rq-kmeans" in by:
            r["error_vs_rq_kmeans"] = r["rel_error"] / by["rq-kmeans"]["rel_error"]
    if args.json:
        emit_json(rows)
        return
    columns = ["method", "epochs", "fit_s", "s_per_epoch", "rel_error", "unique_share", "usage"]
    columns += ["epoch_speed_vs_vqp", "error_vs_rq_kmeans", "peak_rss_mib"]
    print_table(rows, columns, f"RQ-VAE {LEVELS}x{K} on Amazon Beauty, {args.threads} thread(s) per method")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end of the run")
    s = by.get("semid")
    if s:
        print(
            f"semid defaults: train loop {s['train_loop_s_per_epoch']:.3f} s/epoch + full evaluations "
            f"{s['metrics_s_per_epoch']:.3f} s/epoch (means)"
        )
        checks = {
            "unique share before dedup >= 0.95": s["unique_share"] >= 0.95,
            "usage >= 0.90 at every level": min(s["usage"]) >= 0.90,
            "fit <= 300 s": s["fit_s"] <= 300,
        }
        if "vqp" in by:
            checks[">= 2x the epoch throughput of vqp"] = s["epoch_speed_vs_vqp"] >= 2.0
        for name, ok in checks.items():
            print(f"  [{'ok' if ok else 'MISSED'}] {name}")


if __name__ == "__main__":
    main()
