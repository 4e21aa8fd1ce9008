"""TIGER training throughput on Amazon Beauty: semid's training layers against torch's own.

    python bench/tiger_step.py                      # 5 alternating rounds of 40 batches per variant
    python bench/tiger_step.py --dropout 0.1 --encoder-tokens codes --json

While training, TIGER draws dropout masks with ``semid.rec.layers.dropout`` (uniform floats instead of
``bernoulli_``) and computes attention with ``semid.rec.layers.attention`` (plain products instead of
``F.scaled_dot_product_attention``); see that module. This times full training steps (the trainer's
``semid.rec.train.train_step``: bf16 autocast, forward, backward, clipping, AdamW) of the paper-size
model on the real Beauty training examples, batched by length as the trainer does, once with semid's
layers and once with torch's (``nn.Dropout`` and ``F.scaled_dot_product_attention`` swapped back in),
alternating the two in rounds; it prints examples per second (median over rounds) and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BEAUTY, emit_json, print_table  # noqa: E402


def torch_layers(model) -> None:
    """Swap torch's dropout and attention back into a TIGER (the baseline)."""
    import torch.nn.functional as F
    from torch import nn

    import semid.rec.tiger as tiger

    def sdpa(q, k, v, mask=None, is_causal=False, dropout_p=0.0):
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal
        )

    tiger.attention = sdpa
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Dropout):
                setattr(module, name, nn.Dropout(child.p))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batches", type=int, default=40, help="training batches per variant and round")
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--encoder-tokens", default="items", choices=["items", "codes"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("bench/out/tiger-step"), help="cache of the Semantic IDs")
    p.add_argument("--json", action="store_true")
    p.add_argument("--variant", choices=["semid", "torch"], help=argparse.SUPPRESS)  # one timed process
    args = p.parse_args()
    if not (BEAUTY / "p5" / "sequential_data.txt").is_file():
        raise SystemExit(f"{BEAUTY} not found (set SEMID_SHARED to the folder holding data/amazon-beauty)")
    if args.rounds < 1 or args.batches < 1:
        raise SystemExit("--rounds and --batches must be at least 1")
    # Each variant runs in its own process (a swapped module would leak into the other one), alternating.
    if args.variant is None:
        speeds: dict[str, list[float]] = {"semid": [], "torch": []}
        for _ in range(args.rounds):
            for variant in speeds:
                cmd = [sys.executable, __file__, *sys.argv[1:], "--variant", variant]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                speeds[variant].append(float(out.split()[-1]))
        rows = []
        for variant, values in speeds.items():
            rows.append(
                {
                    "layers": "semid.rec.layers" if variant == "semid" else "torch (nn.Dropout, F.sdpa)",
                    "examples/s": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                }
            )
        baseline = statistics.median(speeds["torch"])
        for r in rows:
            r["ratio"] = r["examples/s"] / baseline
        title = (
            f"TIGER training steps on Beauty ({args.encoder_tokens} encoder tokens, dropout {args.dropout}, "
            f"bf16 autocast, {args.threads} threads): median of {args.rounds} alternating rounds of "
            f"{args.batches} batches"
        )
        print_table(rows, ["layers", "examples/s", "min", "max", "ratio"], title)
        if args.json:
            emit_json(rows)
        return
    _time_variant(args)


def _time_variant(args: argparse.Namespace) -> None:
    import torch

    from _rec_ids import load_beauty, make_ids
    from semid.rec.data import RecData, collate, length_batches
    from semid.rec.train import _param_groups, build_model, train_step, training_examples

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    data = RecData.from_dataset(load_beauty(), make_ids("rq-kmeans", args.out, 0))
    model = build_model("tiger", data, dropout=args.dropout, encoder_tokens=args.encoder_tokens).train()
    if args.variant == "torch":
        torch_layers(model)
    examples = training_examples(model, data)
    batches = length_batches(examples.lengths, 256, np.random.default_rng(0))[: args.batches + 5]
    optimizer = torch.optim.AdamW(_param_groups(model, 0.1), lr=1e-3, betas=(0.9, 0.98))

    bf16 = partial(torch.autocast, device_type="cpu", dtype=torch.bfloat16)

    def step(idx: np.ndarray) -> None:
        train_step(model, optimizer, collate(examples, idx), bf16, clip_grad_norm=1.0)

    for idx in batches[:5]:  # warm-up
        step(idx)
    t, n = time.perf_counter(), 0
    for idx in batches[5:]:
        step(idx)
        n += len(idx)
    print(n / (time.perf_counter() - t))


if __name__ == "__main__":
    main()
