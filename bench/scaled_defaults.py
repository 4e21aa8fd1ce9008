"""Which TIGER shape for how much data (issue #21 part 4): the validation table behind the scaled defaults.

    python bench/scaled_defaults.py --fractions 0.05,0.2 --threads 1 --out bench/out/scaled
    python bench/scaled_defaults.py --fractions 0.05 --shapes small,auto --seeds 0,1 --out bench/out/scaled
    python bench/scaled_defaults.py --fractions 0.5 --shapes small --model-set label_smoothing=0.1  # an option
    python bench/scaled_defaults.py --merge bench/out/scaled-a bench/out/scaled-b   # one table, trains nothing

Amazon Beauty's users are subsampled (seeded, the same users for every shape) to each ``--fractions``
share: fewer users and interactions over the same 12,101-item catalogue and the same text IDs (RQ-KMeans
3 x 256 on the MiniLM vectors + a suffix level). Each shape then trains with the library's TIGER training
defaults (``default_train_config("tiger")``: what ``semid train tiger`` uses with no config), validated
every epoch on up to ``--valid-users`` users, until early stopping. Shapes:

- ``paper``: the TIGER paper's 4+4 layers, d_model 128, 6 x 64 heads, MLP 1024 (the default before the
  scaled defaults);
- ``medium``: 2+2 layers, d_model 128, 4 x 32 heads, MLP 512;
- ``small``: 2+2 layers, d_model 64, 4 x 16 heads, MLP 256;
- ``auto``: no shape options, so the library's defaults for this data (:func:`semid.rec.config.scaled_shape`).

``--model-set KEY=VALUE`` (repeatable) sets a TIGER option over every shape, for an ablation of a recipe
option at a given size; the run keys and the table's ``shape`` column name it.

Printed per fraction and shape: training examples per epoch, parameters, best validation R@10 / N@10 and
its epoch, training minutes, and the N@10 as a ratio of the paper shape's on the same data. No test user is
evaluated: the defaults chosen from this table are a design decision. Runs resume (``--out`` keeps each
run directory and ``results.json``); a finished run is not trained again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BEAUTY, add_set_option, print_table  # noqa: E402
from _rec_ids import load_beauty, make_ids  # noqa: E402
from semid.rec.config import TIGER_SHAPE, TIGER_SMALL_SHAPE  # noqa: E402
from semid.rec.tiger import TIGERConfig  # noqa: E402

SHAPES: dict[str, dict[str, Any]] = {
    "paper": {k: getattr(TIGERConfig(), k) for k in TIGER_SHAPE},  # TIGERConfig's own defaults
    "medium": {
        "d_model": 128,
        "n_heads": 4,
        "d_head": 32,
        "d_ff": 512,
        "n_encoder_layers": 2,
        "n_decoder_layers": 2,
    },
    "small": TIGER_SMALL_SHAPE,  # the library's shape for small data
    "auto": {},
}
COLUMNS = ["fraction", "patience", "shape", "users", "examples", "params", "R@10", "N@10", "N@10 / paper"]
COLUMNS += ["best epoch", "epochs", "train min", "seeds"]


def subsample(data: Any, fraction: float, seed: int = 0) -> Any:
    """``data`` with a seeded ``fraction`` of its users (all of them at 1), the items unchanged."""
    from semid.data import Sequences
    from semid.rec.data import RecData

    if fraction >= 1:
        return data
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(data.n_users, size=max(1, round(fraction * data.n_users)), replace=False))
    seqs = data.sequences
    lengths = np.diff(seqs.offsets)[keep]
    rows = [seqs.items[seqs.offsets[u] : seqs.offsets[u + 1]] for u in keep]
    return RecData(
        item_ids=data.item_ids,
        sequences=Sequences(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64), np.concatenate(rows)),
        user_ids=data.user_ids[keep],
        titles=data.titles,
        codes=data.codes,
        semantic_ids=data.semantic_ids,
    )


def run_one(data: Any, shape: str, run_dir: Path, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    from semid.rec.train import LAST, fit

    resume = (run_dir / LAST).exists()
    train = {"num_threads": args.threads, "progress": not args.quiet}
    if not resume:
        train.update(seed=seed, eval_every=1, valid_users=args.valid_users)
    if args.epochs:
        train["epochs"] = args.epochs
    if args.patience is not None and not resume:
        train["patience"] = args.patience
    model, result = fit(
        "tiger",
        None if resume else data,
        run_dir,
        model_config={**SHAPES[shape], **dict(args.model_set)},
        train_config=train,
        resume=resume,
    )
    return {
        "R@10": result.best_valid.get("recall@10"),
        "N@10": result.best_valid.get("ndcg@10"),
        "best epoch": result.best_epoch,
        "epochs": result.epochs,
        "train min": result.seconds / 60,
        "params": sum(p.numel() for p in model.parameters()),
        "shape_options": {k: getattr(model.config, k) for k in TIGER_SHAPE},
    }


def table(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per fraction, patience and shape: the mean over its seeds, N@10 as a ratio of the paper shape's."""
    groups: dict[tuple[float, str, int, str], list[dict[str, Any]]] = {}
    for r in results.values():  # runs without a patience of their own had TIGER's default, 5
        key = (r["fraction"], r["shape"], r.get("patience", 5), r.get("options", ""))
        groups.setdefault(key, []).append(r)
    rows = []
    order = sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][2], list(SHAPES).index(kv[0][1]), kv[0][3])
    )
    for (fraction, shape, patience, options), runs in order:
        row = {"fraction": fraction, "patience": patience, "shape": f"{shape} {options}".strip()}
        row["seeds"] = len(runs)
        for k in ("users", "examples", "params", "R@10", "N@10", "best epoch", "epochs", "train min"):
            row[k] = statistics.mean(r[k] for r in runs)
        rows.append(row)
    paper = {(r["fraction"], r["patience"]): r["N@10"] for r in rows if r["shape"] == "paper"}  # no options
    for r in rows:
        if (r["fraction"], r["patience"]) in paper:
            r["N@10 / paper"] = r["N@10"] / paper[r["fraction"], r["patience"]]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fractions", default="0.05,0.2", help="shares of Beauty's users (comma-separated)")
    p.add_argument("--shapes", default="paper,medium,small", help=f"of {', '.join(SHAPES)}")
    p.add_argument("--seeds", default="0", help="training seeds (the subsample is always seed 0)")
    p.add_argument("--valid-users", type=int, default=2000, help="validation users per epoch (0: all)")
    p.add_argument(
        "--patience", type=int, help="validations without a better N@10 before stopping (default: TIGER's, 5)"
    )
    p.add_argument("--epochs", type=int, default=0, help="most epochs per run (0: the default, 200)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument(
        "--out", type=Path, default=Path("bench/out/scaled"), help="run directories + results.json"
    )
    p.add_argument("--merge", type=Path, nargs="+", help="print these --out folders' results as one table")
    add_set_option(p, "--model-set", "a TIGER option over every shape (repeatable), e.g. label_smoothing=0.1")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args()
    if args.merge:
        merged = {}
        for out in args.merge:
            merged.update(json.loads((out / "results.json").read_text()))
        print_table(table(merged), COLUMNS, "TIGER shapes on subsampled Beauty (best validation epoch)")
        return
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = sorted(set(shapes) - set(SHAPES))
    if unknown:
        raise SystemExit(f"unknown --shapes {unknown[0]!r} (known: {', '.join(SHAPES)})")
    if not (BEAUTY / "p5" / "sequential_data.txt").is_file():
        raise SystemExit(f"{BEAUTY} not found (set SEMID_SHARED to the folder holding data/amazon-beauty)")
    import torch

    from semid.rec.data import RecData

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    full = RecData.from_dataset(load_beauty(), make_ids("rq-kmeans", args.out, 0), ids_name="ids-rq-kmeans")
    for fraction in (float(f) for f in args.fractions.split(",") if f.strip()):
        data = subsample(full, fraction)
        sizes = {"users": data.n_users, "examples": data.n_train_targets}
        print(f"fraction {fraction:g}: {sizes['users']:,} users, {sizes['examples']:,} training examples")
        for seed in (int(s) for s in args.seeds.split(",") if s.strip()):
            for shape in shapes:
                key = f"f{fraction:g}-{shape}-s{seed}" + (
                    "" if args.patience is None else f"-p{args.patience}"
                )
                key += "".join(f"-{k}{v}" for k, v in args.model_set)
                if key in results:
                    continue
                t = time.perf_counter()
                run = run_one(data, shape, args.out / key, args, seed)
                results[key] = {"fraction": fraction, "shape": shape, "seed": seed, **sizes, **run}
                if args.patience is not None:
                    results[key]["patience"] = args.patience
                if args.model_set:
                    results[key]["options"] = " ".join(f"{k}={v}" for k, v in args.model_set)
                results_path.write_text(json.dumps(results, indent=1) + "\n")
                print(
                    f"{key}: valid N@10 {run['N@10']:.4f} in {(time.perf_counter() - t) / 60:.1f} min",
                    flush=True,
                )
    print_table(table(results), COLUMNS, "TIGER shapes on subsampled Beauty (best validation epoch)")


if __name__ == "__main__":
    main()
