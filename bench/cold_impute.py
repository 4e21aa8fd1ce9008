"""Fused Semantic IDs for items without interactions: SASRec's untrained row vs a row imputed from the text.

    python bench/beauty_rec.py --models sasrec --sasrec-config configs/sasrec-beauty.json --cold-start 0.05 \
        --out bench/out/cold-fused
    python bench/beauty_rec.py --models tiger --ids fused --collab-run bench/out/cold-fused/sasrec-cold \
        --config configs/tiger-beauty.json --cold-start 0.05 --out bench/out/cold-fused ...
    python bench/cold_impute.py --out bench/out/cold-fused          # evaluates only: trains nothing

Fused IDs quantize ``[text, SASRec item vector]``. An item in no training sequence (on Beauty's cold-start
split: the 605 cold items and 30 items seen only as validation or test targets) has no learned SASRec
vector: its row was only ever a negative. This script asks whether predicting that row from the text
(:func:`semid.quantize.collab.impute_from_text`, what ``semid export-embeddings --impute-from`` writes)
places those items better. It is the path of a new item in production: the quantizer and TIGER stay as
trained, and only the untrained items are encoded again, from ``[text, imputed vector]``, each taking the
smallest free suffix under its new prefix. TIGER never trained on those items, so its weights serve both
ID tables; the copy of the run with the new codes is ``--out``/``<tiger run>-imputed``.

Printed for both ID tables: how many untrained items share their first 1, 2 and 3 codes with a trained item
(the TIGER paper's cold-start rule reaches the 3-code ones), then the test metrics on the cold-target users,
TIGER alone and with the rule (share 0.1, fixed in advance: validation has no cold target to choose on), and
on all test users with the rule. Test only: nothing here is chosen from these figures.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table  # noqa: E402
from _rec_ids import minilm  # noqa: E402

SHARE = 0.1  # the TIGER paper's share of the list for unseen items, as beauty_rec.py's cold-start table


def shared_prefixes(codes: np.ndarray, untrained: np.ndarray, levels: int) -> int:
    """How many untrained items share their first ``levels`` codes with at least one trained item."""
    trained = {tuple(row) for row in codes[~untrained, :levels].tolist()}
    return sum(tuple(row) in trained for row in codes[untrained, :levels].tolist())


def reassign(
    codes: np.ndarray, rows: np.ndarray, base: np.ndarray, suffix_size: int
) -> tuple[np.ndarray, int]:
    """``codes`` (n, L + 1) with ``rows`` moved to the prefixes ``base`` (len(rows), L), each with the smallest
    suffix no item holds or held (the old codes of moved rows stay reserved, so a row that cannot move keeps
    codes nobody took); a row whose prefix has no free suffix below ``suffix_size`` keeps its codes. Returns
    the new codes and the number kept."""
    out = codes.copy()
    used: dict[tuple[int, ...], set[int]] = {}
    for row in codes.tolist():
        used.setdefault(tuple(row[:-1]), set()).add(row[-1])
    kept = 0
    for r, prefix in zip(rows.tolist(), base.tolist(), strict=True):
        taken = used.setdefault(tuple(prefix), set())
        suffix = next(s for s in range(len(taken) + 1) if s not in taken)
        if suffix >= suffix_size:
            kept += 1
            continue
        taken.add(suffix)
        out[r] = [*prefix, suffix]
    return out, kept


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("bench/out/cold-fused"), help="beauty_rec.py's --out")
    p.add_argument("--seed", type=int, default=0, help="the seed of the runs (their ID file and quantizer)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = p.parse_args()
    import torch

    from semid.ids import format_ids
    from semid.ids.table import read_ids
    from semid.quantize import RQKMeans
    from semid.quantize.collab import align_by_item_id, fit_fused, impute_from_text
    from semid.rec.data import RecData
    from semid.rec.io import load_model, load_sasrec_run, save_model, untrained_items
    from semid.rec.runs import evaluate_run

    torch.set_num_threads(args.threads)
    suffix = "" if args.seed == 0 else f"-s{args.seed}"
    sasrec_dir, tiger_dir = args.out / f"sasrec-cold{suffix}", args.out / f"tiger-fused-cold{suffix}"
    ids = read_ids(args.out / f"ids-fused-cold{suffix}.parquet")
    weight = float(ids.meta["weight"])
    X, text_ids = minilm()
    sasrec, sdata = load_sasrec_run(sasrec_dir)
    C = align_by_item_id(text_ids, sdata.item_ids, sasrec.item_embeddings(), name=str(sasrec_dir))
    untrained = align_by_item_id(text_ids, sdata.item_ids, untrained_items(sdata)[:, None].astype(np.float32))
    untrained = untrained[:, 0] > 0
    t = time.perf_counter()
    # the quantizer of _rec_ids.make_ids, fitted again the same way; it must give the same base codes
    quantizer = fit_fused(RQKMeans(n_levels=3, codebook_size=256, random_state=args.seed), X, C, weight)
    base = quantizer.encode(quantizer.fusion_.apply(X, C))
    recorded = align_by_item_id(text_ids, ids.item_ids, np.asarray(ids.base_codes, dtype=np.float32)).astype(
        np.int64
    )
    same = float(np.mean(np.all(base == recorded, axis=1)))
    print(
        f"quantizer refitted in {time.perf_counter() - t:.0f}s: {same:.2%} of the items get their recorded codes"
    )
    if same < 1:
        raise SystemExit("the refitted quantizer differs from the one behind the ID file: nothing to compare")
    filled, imputation = impute_from_text(X, C, ~untrained, random_state=args.seed)
    print(f"{int(untrained.sum())} untrained items; {imputation.describe()}")
    rows = np.flatnonzero(untrained)
    moved = quantizer.encode(quantizer.fusion_.apply(X[rows], filled[rows]))

    model = load_model(tiger_dir)
    data = RecData.load(tiger_dir)
    order = np.array([data.index[str(i)] for i in text_ids])  # text row -> run item
    codes = data.codes.copy()
    new_codes, kept = reassign(codes, order[rows], moved, model.config.codebook_sizes[-1])
    changed = int(np.any(new_codes != codes, axis=1).sum())
    print(f"imputed IDs: {changed} of {len(rows)} untrained items moved, {kept} kept (no free suffix)")
    run_untrained = np.zeros(data.n_items, dtype=bool)
    run_untrained[order[rows]] = True
    reach = {}
    for name, table in (("SASRec's untrained row", codes), ("row imputed from the text", new_codes)):
        reach[name] = {f"shares {k} codes": shared_prefixes(table, run_untrained, k) for k in (1, 2, 3)}

    imputed_dir = tiger_dir.with_name(tiger_dir.name + "-imputed")
    model.item_codes.copy_(torch.as_tensor(new_codes))
    save_model(model, imputed_dir)
    shutil.copy(tiger_dir / "config.json", imputed_dir / "config.json")
    data.codes, data.semantic_ids = new_codes, np.asarray(format_ids(new_codes, "dash"), dtype=object)
    data.save(imputed_dir)

    result_rows = []
    for name, run in (("SASRec's untrained row", tiger_dir), ("row imputed from the text", imputed_dir)):
        row: dict[str, Any] = {"untrained item's SASRec half": name, **reach[name]}
        # the cold-target users, TIGER alone and with the rule; all test users with the rule (its cost to
        # everyone; TIGER alone on all users is beauty_rec.py's row of the run)
        for users, cold, rule, share in (
            ("cold", True, "", None),
            ("cold", True, " +rule", SHARE),
            ("all", False, " +rule", SHARE),
        ):
            m = evaluate_run(run, "test", cold_start=cold, unseen_share=share)["model"]
            row[f"{users} R@10{rule}"], row[f"{users} N@10{rule}"] = m["recall@10"], m["ndcg@10"]
        result_rows.append(row)
        print(json.dumps(row), flush=True)
    columns = list(result_rows[0])
    print_table(
        result_rows, columns, f"Fused IDs of the {len(rows)} untrained items (test, 1 seed: {args.seed})"
    )


if __name__ == "__main__":
    main()
