"""TIGER / RPG candidates reranked by SASRec (semid.rec.hybrid): the rule, its guarantees, the weight, the CLI."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

import semid.cli.rec  # noqa: F401  (registers the commands)
from conftest import TINY_TIGER, walk_rec_data
from semid.cli import main
from semid.data import Sequences
from semid.errors import SemidError
from semid.rec.data import RecData, collate, histories_batch
from semid.rec.evaluate import evaluate
from semid.rec.hybrid import Candidates, HybridRecommender, choose_weight, collect_candidates, rerank
from semid.rec.runs import split_examples
from semid.rec.train import build_model, fit, load_model

N_ITEMS = 40
FAST = {"progress": False, "num_threads": 1, "autocast": "off", "tensorboard": False, "patience": 0}
TINY_SASREC = {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32, "max_len": 8, "dropout": 0.0}
TINY_RPG = {"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64, "max_len": 4, "dropout": 0.0}
TINY_RPG["attn_dropout"] = 0.0

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny models, one thread


# --------------------------------------------------------------------------------------------------------
# Fixed scores: the rule by hand
# --------------------------------------------------------------------------------------------------------


class FixedGenerative(nn.Module):
    """A "generative model" that proposes the same candidates, with the same log-probabilities, to everyone."""

    max_history = 4

    def __init__(self, items: list[int], scores: list[float], n_items: int = 5) -> None:
        super().__init__()
        self.config = SimpleNamespace(n_items=n_items)
        self.items, self.scores = torch.tensor([items]), torch.tensor([scores])

    def recommend(self, batch, k, *, exclude_history=False):
        return self.items[:, :k].expand(len(batch), -1), self.scores[:, :k].expand(len(batch), -1)


class FixedSASRec(nn.Module):
    """A "SASRec" whose next-item distribution is the same for everyone: ``scores`` are its log-probabilities."""

    max_history = 8

    def __init__(self, probs: list[float]) -> None:
        super().__init__()
        self.config = SimpleNamespace(n_items=len(probs))
        self.logp = torch.tensor([probs]).log()

    def scores(self, history):
        return self.logp.expand(len(history), -1)


BATCH = histories_batch([np.array([0, 1])])
SASREC = FixedSASRec([0.1, 0.2, 0.3, 0.1, 0.3])  # item 2 is SASRec's favourite, tied with item 4


def test_each_candidate_gets_its_generative_log_probability_plus_weight_times_sasrecs() -> None:
    gen = FixedGenerative(items=[3, 1, 4, 0], scores=[-1.0, -1.5, -2.0, -4.0])
    items, scores = HybridRecommender(gen, SASREC, weight=1.0, n_candidates=4).recommend(BATCH, k=3)
    # item 3: -1 + ln .1 = -3.303; item 1: -1.5 + ln .2 = -3.109; item 4: -2 + ln .3 = -3.204; item 0: -6.303
    assert items.tolist() == [[1, 4, 3]]
    expected = [-1.5 + math.log(0.2), -2.0 + math.log(0.3), -1.0 + math.log(0.1)]
    assert scores[0].tolist() == pytest.approx(expected, abs=1e-6)
    # item 2, SASRec's favourite, was never a candidate: it is never returned


def test_weight_zero_keeps_the_generative_order() -> None:
    gen = FixedGenerative(items=[3, 1, 4, 0], scores=[-1.0, -1.5, -2.0, -4.0])
    items, scores = HybridRecommender(gen, SASREC, weight=0.0, n_candidates=4).recommend(BATCH, k=4)
    assert items.tolist() == [[3, 1, 4, 0]]
    assert scores[0].tolist() == [-1.0, -1.5, -2.0, -4.0]


def test_an_invalid_id_is_never_promoted_whatever_its_generative_score() -> None:
    # unconstrained decoding: the second candidate is no item (-1) yet has a finite log-probability
    gen = FixedGenerative(items=[2, -1, 0], scores=[-1.0, -1.2, -3.0])
    items, scores = HybridRecommender(gen, SASREC, weight=100.0, n_candidates=3).recommend(BATCH, k=3)
    assert items.tolist() == [[2, 0, -1]]
    assert scores[0, -1].item() == -math.inf
    items, _ = HybridRecommender(gen, SASREC, weight=0.0, n_candidates=3).recommend(BATCH, k=3)
    assert items.tolist() == [[2, 0, -1]]  # with weight 0 too: an invalid ID is never ranked


def test_rerank_never_turns_an_invalid_candidate_into_nan() -> None:
    items = torch.tensor([[1, -1]])
    gen, sas = torch.tensor([[-1.0, -math.inf]]), torch.tensor([[-2.0, -math.inf]])
    top, scores = rerank(items, gen, sas, 0.0, 2)  # 0 * -inf would be NaN
    assert top.tolist() == [[1, -1]] and scores.tolist() == [[-1.0, -math.inf]]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: HybridRecommender(FixedGenerative([0], [0.0], n_items=40), FixedSASRec([0.5, 0.5])),
            "the generative model has 40 items and SASRec 2: both must be built on the same item set",
        ),
        (
            lambda: HybridRecommender(FixedGenerative([0], [0.0], n_items=5), SASREC, weight=-0.5),
            "weight=-0.5 should be a finite number >= 0",
        ),
        (
            lambda: HybridRecommender(FixedGenerative([0], [0.0], n_items=5), SASREC, n_candidates=0),
            "n_candidates=0 should be a positive integer",
        ),
        (
            lambda: HybridRecommender(FixedGenerative([0, 1], [0.0, -1.0]), SASREC, n_candidates=2).recommend(
                BATCH, k=3
            ),
            "k=3 is larger than the 2 candidates per user (n_candidates)",
        ),
    ],
    ids=["different-item-sets", "negative-weight", "no-candidates", "k-beyond-candidates"],
)
def test_bad_input_is_one_clear_error(make, message: str) -> None:
    with pytest.raises(SemidError) as e:
        make()
    assert str(e.value) == message


# --------------------------------------------------------------------------------------------------------
# The weight, chosen on validation
# --------------------------------------------------------------------------------------------------------


def constructed(users: list[int]) -> Candidates:
    """Two users with three candidates each, in generative order.

    User 0's target is the generative model's last candidate, SASRec's first: it comes first once the
    weight exceeds 0.5. User 1's target is the generative first, SASRec's second: first while weight < 4/3.
    """
    items = np.array([[0, 1, 2], [0, 1, 2]])
    gen = np.array([[-1.0, -1.5, -2.0], [-1.0, -3.0, -3.5]], dtype=np.float32)
    sas = np.array([[-3.0, -2.0, -1.0], [-2.0, -0.5, -3.0]], dtype=np.float32)
    target = np.array([2, 0])
    return Candidates(items, gen, sas, target, seconds=1.0).take(np.array(users))


def test_choose_weight_takes_the_grid_point_with_the_best_validation_ndcg() -> None:
    weight, by_weight = choose_weight(constructed([0, 1]))
    assert weight == 1.0  # 0.5 and below lose user 0, 2 and above lose user 1
    assert by_weight[1.0] == 1.0
    assert by_weight[0.0] == pytest.approx((0.5 + 1.0) / 2)  # user 0's target third: 1 / log2(4)
    assert by_weight[2.0] == pytest.approx((1.0 + 1 / math.log2(3)) / 2)  # user 1's target second


def test_choose_weight_breaks_ties_towards_the_smaller_weight() -> None:
    weight, by_weight = choose_weight(constructed([0]), grid=(4, 2, 1, 0))
    assert by_weight == {0.0: 0.5, 1.0: 1.0, 2.0: 1.0, 4.0: 1.0}
    assert weight == 1.0


def test_choose_weight_rejects_a_bad_grid_or_metric() -> None:
    with pytest.raises(SemidError, match=r"^the weight grid is empty$"):
        choose_weight(constructed([0]), grid=())
    with pytest.raises(SemidError, match=r"^weight=-1 should be a finite number >= 0$"):
        choose_weight(constructed([0]), grid=(0, -1))
    with pytest.raises(SemidError, match=r"^metric='mrr' should be recall@K or ndcg@K$"):
        choose_weight(constructed([0]), metric="mrr")


# --------------------------------------------------------------------------------------------------------
# Trained tiny models: TIGER, RPG and SASRec on one catalogue
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data() -> RecData:
    return walk_rec_data(N_ITEMS)


@pytest.fixture(scope="module")
def runs(data: RecData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """runs/tiger, runs/rpg and runs/sasrec trained on the same data (a few seconds each)."""
    root = tmp_path_factory.mktemp("runs")
    tiger_train = {**TINY_TIGER["train"], "epochs": 4, "batch_size": 32}
    fit("tiger", data, root / "tiger", model_config=TINY_TIGER["model"], train_config=tiger_train)
    train = {**FAST, "epochs": 6, "batch_size": 16, "lr": 0.01, "warmup_steps": 5}
    fit("rpg", data, root / "rpg", model_config=TINY_RPG, train_config=train)
    sasrec_data = replace(
        data, codes=None, semantic_ids=None
    )  # SASRec reads no IDs: the same items, no codes
    fit("sasrec", sasrec_data, root / "sasrec", model_config=TINY_SASREC, train_config=train)
    return root


def one_batch(model: nn.Module, data: RecData, split: str = "valid"):
    """Every user's ``split`` history as one batch, users in order, as much history as ``model`` reads."""
    examples = split_examples(model, data, split)
    return collate(examples, np.arange(len(examples)))


@pytest.mark.parametrize("generative", ["tiger", "rpg"])
def test_weight_zero_gives_the_generative_list_each_model_reading_its_own_history(
    generative: str, runs: Path, data: RecData
) -> None:
    gen, sasrec = load_model(runs / generative), load_model(runs / "sasrec")
    hybrid = HybridRecommender(gen, sasrec, weight=0.0, n_candidates=20)
    assert hybrid.max_history == 8  # SASRec's window; the generative model cuts its 4 itself
    items, _ = hybrid.recommend(one_batch(hybrid, data), k=10)
    options = {"beam_size": 20} if generative == "tiger" else {}  # the hybrid's beam: its 20 candidates
    alone, _ = gen.recommend(one_batch(gen, data), 10, **options)  # batches of 4 items only
    assert torch.equal(items, alone)


def test_only_candidates_are_returned_ranked_by_the_combined_score(runs: Path, data: RecData) -> None:
    tiger = load_model(runs / "tiger")
    sasrec = build_model("sasrec", data, **TINY_SASREC).eval()  # untrained: it disagrees with TIGER
    hybrid = HybridRecommender(tiger, sasrec, weight=1000.0, n_candidates=8)
    batch = one_batch(hybrid, data)
    items, scores = hybrid.recommend(batch, k=5)  # the best 5 of 8 candidates
    cand, gen = tiger.recommend(batch, 8)
    sas = sasrec.scores(batch.history).log_softmax(-1)
    for row in range(len(batch)):
        assert set(items[row].tolist()) <= set(cand[row].tolist())  # never an item outside the beam
        gen_of = dict(zip(cand[row].tolist(), gen[row].tolist(), strict=True))
        combined = sorted((gen_of[i] + 1000.0 * sas[row, i].item() for i in gen_of), reverse=True)
        assert scores[row].tolist() == pytest.approx(combined[:5], rel=1e-5)  # the top 5 of all 8
        expected = [gen_of[i] + 1000.0 * sas[row, i].item() for i in items[row].tolist()]
        assert scores[row].tolist() == pytest.approx(expected, rel=1e-5)
        assert scores[row].tolist() == sorted(scores[row].tolist(), reverse=True)
    assert not torch.equal(items, cand[:, :5])  # a heavy SASRec weight did reorder


def test_candidates_decoded_once_score_every_weight_as_evaluate_does(runs: Path, data: RecData) -> None:
    hybrid = HybridRecommender(load_model(runs / "tiger"), load_model(runs / "sasrec"), n_candidates=20)
    examples = split_examples(hybrid, data, "valid")
    found = collect_candidates(hybrid, examples, batch_size=64)
    for weight in (0.0, 0.5, 2.0):
        via_evaluate = evaluate(hybrid, examples, batch_size=64, weight=weight)
        assert found.result(weight).metrics == via_evaluate.metrics
    tiger_alone = evaluate(hybrid.generative, examples, batch_size=64, beam_size=20)
    assert found.result(None).metrics == tiger_alone.metrics


def test_with_the_history_excluded_no_candidate_is_an_item_the_user_had(runs: Path, data: RecData) -> None:
    hybrid = HybridRecommender(load_model(runs / "tiger"), load_model(runs / "sasrec"), weight=1.0)
    batch = one_batch(hybrid, data)
    items, _ = hybrid.recommend(batch, k=10, exclude_history=True)
    seen = batch.seen(N_ITEMS)  # the whole history the batch holds: SASRec's 8 items, not only TIGER's 4
    assert not seen.gather(1, items.clamp(min=0))[items >= 0].any()


# --------------------------------------------------------------------------------------------------------
# The CLI: semid evaluate RUN --rerank SASREC_RUN
# --------------------------------------------------------------------------------------------------------


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_evaluate_rerank_chooses_the_weight_on_validation_and_reports_both_rows(runs: Path, capsys) -> None:
    code, out, err = run(
        ["evaluate", str(runs / "tiger"), "--rerank", str(runs / "sasrec"), "--json"], capsys
    )
    assert code == 0, err
    res = json.loads(out)
    assert (res["model_type"], res["split"], res["weight_from"]) == ("tiger + sasrec", "test", "valid")
    assert res["valid_ndcg_by_weight"].keys() == {"0", "0.25", "0.5", "1", "2", "4", "8", "16"}
    best = max(res["valid_ndcg_by_weight"].values())
    assert res["valid_ndcg_by_weight"][f"{res['weight']:g}"] == best
    assert res["n_candidates"] == 40  # 50 asked, the catalogue has 40
    assert res["model"]["n_users"] == res["generative"]["n_users"] == 150
    assert res["model"]["invalid_rate"] == 0.0
    assert set(res["most_popular"]) == {"recall@5", "ndcg@5", "recall@10", "ndcg@10"}

    code, out, err = run(["evaluate", str(runs / "rpg"), "--rerank", str(runs / "sasrec")], capsys)
    assert code == 0, err
    assert "rpg + sasrec rerank (weight" in out and "rpg (40 candidates, generative order)" in out
    assert "chosen on the validation split (NDCG@10 by weight: 0 " in out


def test_evaluate_rerank_with_weight_zero_is_the_generative_row(runs: Path, capsys) -> None:
    argv = ["evaluate", str(runs / "tiger"), "--rerank", str(runs / "sasrec"), "--rerank-weight", "0"]
    code, out, err = run(argv + ["--rerank-candidates", "20", "--split", "valid", "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert (res["weight"], res["weight_from"], res["n_candidates"]) == (0.0, "given", 20)
    metrics = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
    assert [res["model"][m] for m in metrics] == [res["generative"][m] for m in metrics]


def test_evaluate_rerank_cold_start_scores_the_cold_target_users(
    data: RecData, tmp_path: Path, capsys
) -> None:
    from semid.rec.runs import evaluate_run

    cold = data.with_cold_start(0.1, seed=0)
    tiger_train = {**TINY_TIGER["train"], "epochs": 2, "batch_size": 32}
    fit("tiger", cold, tmp_path / "tiger", model_config=TINY_TIGER["model"], train_config=tiger_train)
    train = {**FAST, "epochs": 2, "batch_size": 16, "lr": 0.01, "warmup_steps": 5}
    fit("sasrec", cold, tmp_path / "sasrec", model_config=TINY_SASREC, train_config=train)
    argv = [
        "evaluate",
        str(tmp_path / "tiger"),
        "--rerank",
        str(tmp_path / "sasrec"),
        "--cold-start",
        "--json",
    ]
    code, out, err = run(argv + ["--rerank-candidates", "20"], capsys)
    assert code == 0, err
    res = json.loads(out)
    alone = evaluate_run(tmp_path / "tiger", "test", cold_start=True, beam_size=20)
    assert (
        res["cold_start"] == alone["cold_start"] and res["model"]["n_users"] == alone["cold_start"]["users"]
    )
    assert res["generative"]["ndcg@10"] == alone["model"]["ndcg@10"]
    assert res["most_popular"] == alone["most_popular"]


@pytest.fixture(scope="module")
def other_runs(runs: Path, data: RecData) -> Path:
    """Copies of runs/sasrec whose data differ from the generative runs' in one way each."""
    root = runs / "other"
    for name, changed in {
        "fewer-items": replace(data, item_ids=data.item_ids[:-1], codes=None, semantic_ids=None),
        "reordered-items": replace(data, item_ids=data.item_ids[::-1], codes=None, semantic_ids=None),
        "other-users": replace(
            data,
            sequences=Sequences(
                data.sequences.offsets[:-1], data.sequences.items[: data.sequences.offsets[-2]]
            ),
            user_ids=data.user_ids[:-1],
        ),
    }.items():
        shutil.copytree(runs / "sasrec", root / name)
        changed.save(root / name)
    return root


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["{runs}/sasrec", "--rerank", "{runs}/sasrec"],
            "{runs}/sasrec is a SASRec run: only a generative run (TIGER or RPG) is reranked by SASRec",
        ),
        (
            ["{runs}/rpg", "--rerank", "{runs}/tiger"],
            "{runs}/tiger is a tiger run, not SASRec: the reranker must be a SASRec run",
        ),
        (
            ["{runs}/tiger", "--rerank", "{runs}/other/fewer-items"],
            "{runs}/tiger has 40 items and {runs}/other/fewer-items has 39: the two runs must be built on the "
            "same item set",
        ),
        (
            ["{runs}/tiger", "--rerank", "{runs}/other/reordered-items"],
            "{runs}/tiger and {runs}/other/reordered-items have 40 items each but not the same ones in the same "
            "order (item 0: 'i0' vs 'i39'): the two runs must be built on the same item set",
        ),
        (
            ["{runs}/tiger", "--rerank", "{runs}/other/other-users"],
            "{runs}/tiger and {runs}/other/other-users were trained on different interactions (150 and 149 "
            "users): rerank with a SASRec run of the same data and split",
        ),
        (
            ["{runs}/tiger", "--rerank", "{runs}/sasrec", "--rerank-weight", "-1"],
            "--rerank-weight -1 should be >= 0",
        ),
        (
            ["{runs}/tiger", "--rerank", "{runs}/sasrec", "--rerank-candidates", "0"],
            "--rerank-candidates 0 should be at least 1",
        ),
        (
            ["{runs}/tiger", "--rerank-weight", "1"],
            "--rerank-weight and --rerank-candidates apply with --rerank SASREC_RUN",
        ),
        (
            ["{runs}/tiger", "--rerank", "{runs}/sasrec", "--embeddings", "{runs}/e.parquet"],
            "--embeddings (the content baseline) does not combine with --rerank",
        ),
        (
            ["{runs}/rpg", "--rerank", "{runs}/sasrec", "--beam-size", "5", "--rerank-weight", "1"],
            "beam size and unconstrained decoding apply to TIGER runs only",
        ),
        (
            ["{runs}/tiger", "--rerank", "{runs}/nothing"],
            "{runs}/nothing/config.json: no such file (is {runs}/nothing a semid run directory?)",
        ),
    ],
    ids=[
        "sasrec-reranking-itself",
        "reranker-not-sasrec",
        "item-set-sizes",
        "item-order",
        "other-interactions",
        "negative-weight",
        "no-candidates",
        "weight-without-rerank",
        "with-content-baseline",
        "beam-size-on-rpg",
        "not-a-run",
    ],
)
def test_evaluate_rerank_user_errors(
    argv: list[str], message: str, runs: Path, other_runs: Path, capsys
) -> None:
    code, _, err = run(["evaluate", *(a.format(runs=runs) for a in argv)], capsys)
    assert code == 1
    assert err == f"Error: {message.format(runs=runs)}\n"


# --------------------------------------------------------------------------------------------------------
# The benchmark's row (bench/beauty_rec.py --hybrid), on the tiny runs
# --------------------------------------------------------------------------------------------------------


def beauty_rec(part: str):
    """A helper module of bench/beauty_rec.py (``_rec_runs``: the runs, ``_rec_tables``: the tables)."""
    from conftest import load_bench

    return load_bench(part)


def test_the_benchmark_row_is_reranked_on_validation_and_summarised_over_seeds_like_the_others(
    runs: Path,
) -> None:
    bench, tables = beauty_rec("_rec_runs"), beauty_rec("_rec_tables")
    args = SimpleNamespace(quiet=True, cold_start=0.0)
    row = bench.run_hybrid(runs / "tiger", runs / "sasrec", args, seed=0, train_min=3.0)
    assert row["rerank weight"] in (0, 0.25, 0.5, 1, 2, 4, 8, 16)
    assert row["valid N@10 by weight"][f"{row['rerank weight']:g}"] == max(
        row["valid N@10 by weight"].values()
    )
    assert {"R@5", "N@5", "R@10", "N@10", "R@10 unseen", "N@10 unseen", "users/s", "invalid"} <= row.keys()
    assert row["train min"] == 3.0 and "epochs" not in row  # both models' training; no epochs of its own
    name = "TIGER + SASRec rerank, rq-kmeans IDs (ours)"
    tiger = {"model": "TIGER, rq-kmeans IDs (ours)", **{k: 0.5 for k in tables.COLUMNS[1:]}}
    seeds = [tiger, {"model": name, **row}, tiger, {"model": name, **row, "R@10": row["R@10"] + 0.01}]
    summary = tables.summarize_seeds(seeds)
    assert [r["model"] for r in summary] == ["TIGER, rq-kmeans IDs (ours), 2 seeds", f"{name}, 2 seeds"]
    assert summary[1]["R@10 mean"] == pytest.approx(row["R@10"] + 0.005)
    assert summary[1]["rerank weights"] == [row["rerank weight"]] * 2
    assert "epochs mean" not in summary[1]


def test_the_benchmark_refuses_a_hybrid_without_its_sasrec_runs_before_training(tmp_path: Path) -> None:
    bench = beauty_rec("_rec_runs")
    args = SimpleNamespace(hybrid=True, hybrid_sasrec=None, out=tmp_path)
    with pytest.raises(SystemExit, match="--hybrid needs SASRec runs: add sasrec to --models or give"):
        bench.hybrid_sasrec_dirs(args, ["tiger"], [0], "")
    args.hybrid_sasrec = tmp_path / "sasrec"
    with pytest.raises(SystemExit, match=r"sasrec-s1 holds no finished run \(no model.safetensors\)"):
        bench.hybrid_sasrec_dirs(args, ["tiger"], [1], "")
    with pytest.raises(SystemExit, match=r"^--hybrid-sasrec reranks with finished SASRec runs, yet --models"):
        bench.hybrid_sasrec_dirs(args, ["sasrec", "tiger"], [0], "")
    args.hybrid_sasrec = None  # the SASRec runs this invocation trains, one per seed
    expected = {0: tmp_path / "sasrec", 2: tmp_path / "sasrec-s2"}
    assert bench.hybrid_sasrec_dirs(args, ["sasrec", "tiger"], [0, 2], "") == expected
