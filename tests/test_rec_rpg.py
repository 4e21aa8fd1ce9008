"""RPG: all digits of a long ID predicted at once, every item scored exactly; trains, saves, resumes, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import WordHashEmbedder, walk_rec_data, write_grid_ids, write_walk_shop
from semid.cli import main
from semid.data import make_demo_dataset
from semid.errors import SemidError
from semid.ids import format_ids
from semid.ids.dedup import deduplicate
from semid.ids.table import IdTable
from semid.quantize import ProductQuantizer
from semid.rec.data import RecData, collate
from semid.rec.evaluate import evaluate, evaluate_most_popular
from semid.rec.rpg import RPG, RPGConfig, is_suffix_digit
from semid.rec.train import build_model, default_train_config, fit, load_model, read_metrics, split_examples

N_ITEMS = 40
# max_len 4: every position a test history reads is trained (positions count from the oldest item read,
# and the longest test histories here are two items longer than the longest training window)
TINY_RPG = {
    "d_model": 32,
    "n_heads": 2,
    "n_layers": 1,
    "d_ff": 64,
    "max_len": 4,
    "dropout": 0.0,
    "attn_dropout": 0.0,
}
FAST = {"progress": False, "num_threads": 1, "autocast": "off", "tensorboard": False, "patience": 0}

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny models, one thread


@pytest.fixture(scope="module")
def data() -> RecData:
    return walk_rec_data(N_ITEMS)


@pytest.fixture(scope="module")
def rpg_run(data: RecData, tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("rpg")
    train = {**FAST, "epochs": 10, "batch_size": 16, "lr": 0.01, "warmup_steps": 5}
    model, result = fit("rpg", data, run_dir, model_config=TINY_RPG, train_config=train)
    return model, result, run_dir


@pytest.fixture(scope="module")
def demo_data() -> RecData:
    """The tiny demo catalogue with OPQ IDs (8 digits x 8 codes, word-hash title embeddings) + a suffix."""
    ds = make_demo_dataset(n_items=150, n_users=200, seed=0)
    item_ids = np.asarray([str(i) for i in ds.catalogue.item_ids], dtype=object)
    X = WordHashEmbedder().encode(ds.catalogue.text_column("title").to_pylist())
    base = ProductQuantizer(8, 8, opq=True, random_state=0).fit(X).encode(X)
    codes = deduplicate(base, "suffix", item_ids=item_ids).codes
    return RecData.from_dataset(ds, IdTable(item_ids, format_ids(codes, "dash"), codes, base, {}))


def test_pq_ids_train_end_to_end_on_the_demo_catalogue(demo_data: RecData, tmp_path: Path) -> None:
    assert demo_data.codes.shape == (150, 9)  # 8 PQ digits + the suffix level
    train = {**FAST, "epochs": 4, "batch_size": 32, "lr": 0.005, "warmup_steps": 2}
    model, result = fit("rpg", demo_data, tmp_path / "run", model_config=TINY_RPG, train_config=train)
    assert model.config.codebook_sizes == [int(c) + 1 for c in demo_data.codes.max(axis=0)]
    losses = [r["loss"] for r in read_metrics(tmp_path / "run")]
    assert len(losses) == 4 and losses[-1] < 0.6 * losses[0]
    test = evaluate(model, split_examples(model, demo_data, "test"))
    assert set(test.metrics) == {"recall@5", "ndcg@5", "recall@10", "ndcg@10"} and test.invalid_rate == 0.0
    batch = collate(split_examples(model, demo_data, "test"), np.arange(8))
    items, scores = model.eval().recommend(batch, 20)
    assert items.shape == (8, 20) and items.min() >= 0 and items.max() < demo_data.n_items
    assert all(len(set(row)) == 20 for row in items.tolist())  # distinct real items
    assert torch.all(scores[:, :-1] >= scores[:, 1:])  # best first


def test_tiny_rpg_learns_the_rule_and_beats_most_popular(rpg_run, data: RecData) -> None:
    model, result, _ = rpg_run
    test = evaluate(model, split_examples(model, data, "test"), ks=(1, 10))
    assert test.metrics["recall@1"] >= 0.95 and test.invalid_rate == 0.0
    popular = evaluate_most_popular(data.split.test_history, data.split.test_target, data.n_items, ks=(1, 10))
    assert test.metrics["recall@10"] > popular["recall@10"] + 0.5
    assert result.epochs == 10 and result.stopped == "epochs"


def test_an_item_score_is_the_sum_of_its_digits_log_probabilities(rpg_run, data: RecData) -> None:
    model = rpg_run[0].eval()
    batch = collate(split_examples(model, data, "test"), np.arange(5))
    with torch.no_grad():
        scores = model.scores(batch.history)  # (5, 40)
        h = model.hidden(batch.history)[:, -1]  # (5, C)
        C, sizes, t = h.shape[1], model.config.codebook_sizes, model.config.temperature
        W, b, E = model.heads.weight, model.heads.bias, model.token_emb.weight
        expected = torch.zeros(5, N_ITEMS)
        first = 0
        for m, K in enumerate(sizes):  # by hand: digit m's head, cosine logits, its own softmax
            s = h + F.silu(h @ W[m * C : (m + 1) * C].T + b[m * C : (m + 1) * C])  # (5, C)
            logits = F.normalize(s, dim=-1) @ F.normalize(E[first : first + K], dim=-1).T / t  # (5, K_m)
            expected += torch.log_softmax(logits, -1)[:, torch.as_tensor(data.codes[:, m])]
            first += K
    torch.testing.assert_close(scores, expected, atol=1e-4, rtol=1e-5)
    # log-probabilities of IDs: the 40 items are 40 of the 5 x 8 x 3 = 120 possible IDs
    assert torch.all(torch.logsumexp(scores, 1) <= 1e-5)
    items, top = model.recommend(batch, 10)
    torch.testing.assert_close(top, scores.gather(1, items))


def test_each_digit_has_its_own_softmax_over_its_own_codes(rpg_run) -> None:
    model = rpg_run[0].eval()
    with torch.no_grad():
        logp = model.digit_log_probs(torch.randn(3, model.config.d_model))  # (M, 3, K) digit first
    assert logp.shape == (3, 3, 8)
    for m, K in enumerate(model.config.codebook_sizes):
        assert torch.all(torch.isneginf(logp[m, :, K:]))  # codes a digit does not have
        torch.testing.assert_close(logp[m, :, :K].exp().sum(-1), torch.ones(3))


def test_a_saved_model_gives_identical_scores(rpg_run, data: RecData) -> None:
    model, _, run_dir = rpg_run
    loaded = load_model(run_dir)
    assert isinstance(loaded, RPG) and loaded.config == model.config
    assert torch.equal(loaded.item_codes, torch.as_tensor(data.codes))
    batch = collate(split_examples(model, data, "test"), np.arange(32))
    with torch.no_grad():
        assert torch.equal(model.eval().scores(batch.history), loaded.scores(batch.history))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model_type"] == "rpg" and config["model"]["codebook_sizes"] == [5, 8, 3]


def test_same_seed_same_weights_and_resume_continues_exactly(data: RecData, tmp_path: Path) -> None:
    model_config = {**TINY_RPG, "dropout": 0.2, "attn_dropout": 0.2}  # dropout masks follow the saved RNG
    train = {**FAST, "epochs": 2, "batch_size": 32, "lr": 0.01, "warmup_steps": 2}
    a, whole = fit("rpg", data, tmp_path / "a", model_config=model_config, train_config=train)
    _, first = fit(
        "rpg", data, tmp_path / "b", model_config=model_config, train_config={**train, "max_steps": 3}
    )
    assert first.stopped == "max_steps"
    b, rest = fit("rpg", None, tmp_path / "b", train_config={"max_steps": 0}, resume=True)
    assert rest.steps == whole.steps and [r["epoch"] for r in rest.history] == [1, 2]
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
    c, _ = fit("rpg", data, tmp_path / "c", model_config=model_config, train_config={**train, "seed": 1})
    assert not torch.equal(a.token_emb.weight, c.token_emb.weight)


def test_bf16_autocast_trains(data: RecData, tmp_path: Path) -> None:
    train = {**FAST, "epochs": 1, "batch_size": 32, "lr": 0.01, "autocast": "bf16", "max_steps": 2}
    model, result = fit("rpg", data, tmp_path / "bf16", model_config=TINY_RPG, train_config=train)
    assert result.steps == 2 and np.isfinite(read_metrics(tmp_path / "bf16")[-1]["loss"])


def test_bf16_autocast_keeps_the_logits_in_float32(rpg_run, data: RecData) -> None:
    # cosine / 0.03 reaches +-33, where bf16 rounds by up to 0.25: the logits' product stays float32, so
    # the loss under autocast is within bf16's rounding of the transformer only
    model = rpg_run[0].eval()
    batch = collate(split_examples(model, data, "valid"), np.arange(32))
    with torch.no_grad():
        exact = model.loss(batch).item()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.loss(batch).item()
            h = model.hidden(batch.history)[:, -1]
            assert model.digit_logits(h).dtype == torch.float32
    assert abs(low - exact) < 0.02 * exact


def test_an_empty_history_is_not_read_as_item_0(rpg_run) -> None:
    model = rpg_run[0].eval()
    with torch.no_grad():
        empty = model.scores(torch.full((1, 4), -1))
        first = model.scores(torch.tensor([[-1, -1, -1, 0]]))
    assert not torch.allclose(empty, first, atol=1e-3)


def test_a_dedup_suffix_is_read_not_predicted_and_twins_split_their_base_id() -> None:
    # items 0 and 1 share the base ID (0, 0) and differ only by the suffix; every other base is unique
    base = np.array([[0, 0], [0, 0], [0, 1], [1, 0], [1, 1], [2, 1]])
    codes = np.concatenate([base, [[0], [1], [0], [0], [0], [0]]], axis=1)
    assert is_suffix_digit(codes) and not is_suffix_digit(np.array([[0, 0, 1], [0, 1, 2]]))
    assert not is_suffix_digit(np.array([[i // 8, i % 8, i % 3] for i in range(40)]))  # a real digit
    torch.manual_seed(0)
    config = RPGConfig(codebook_sizes=[3, 2, 2], d_model=16, n_heads=2, d_ff=32, max_len=4, dropout=0.0)
    model = RPG(config, codes).eval()
    assert model.config.suffix_digit is True and model.n_predicted == 2
    history = torch.tensor([[-1, 2, 3, 4]])
    with torch.no_grad():
        scores = model.scores(history)[0]
        logp = model.digit_log_probs(model.hidden(history)[:, -1])[:, 0]  # (2, K): the base digits only
    assert logp.shape[0] == 2
    assert scores[0] == pytest.approx(scores[1].item(), abs=1e-6)  # twins tie
    expected = logp[0, 0] + logp[1, 0] - np.log(2)  # their base ID's probability, split in two
    assert scores[0].item() == pytest.approx(expected.item(), abs=1e-5)
    assert scores[4].item() == pytest.approx((logp[0, 1] + logp[1, 1]).item(), abs=1e-5)
    # base IDs, not the suffix, are a distribution: the items' probabilities sum to at most 1
    assert torch.logsumexp(scores, 0).item() <= 1e-5
    no = RPG(RPGConfig(**{**config.to_dict(), "suffix_digit": False}), codes).eval()
    assert no.n_predicted == 3


def test_exclude_history_never_recommends_a_history_item(rpg_run, data: RecData) -> None:
    model = rpg_run[0].eval()
    batch = collate(split_examples(model, data, "test"), np.arange(16))
    items, _ = model.recommend(batch, 10, exclude_history=True)
    for row in range(16):
        assert not set(batch.history[row][batch.history[row] >= 0].tolist()) & set(items[row].tolist())
    with pytest.raises(SemidError, match=r"^k=41 is larger than the catalogue \(40 items\)$"):
        model.recommend(batch, 41)


@pytest.mark.parametrize(
    ("overrides", "data_kind", "message"),
    [
        ({}, "no-ids", r"^RPG needs the items' Semantic IDs: give --ids ids.parquet$"),
        ({"temperature": 0}, "ok", r"^temperature=0 should be a number > 0$"),
        ({"attn_dropout": 1.0}, "ok", r"^attn_dropout=1.0 should be a number in \[0, 1\)$"),
        ({"codebook_sizes": [5, 8, 2]}, "ok", r"^codebook_sizes=\[5, 8, 2\] do not fit the IDs"),
        ({"d_model": 30, "n_heads": 4}, "ok", r"^d_model=30 should be a multiple of n_heads=4$"),
        ({"temprature": 0.1}, "ok", r"^rpg config: unknown option 'temprature' \(known: .*\)$"),
    ],
    ids=["no-ids", "temperature", "dropout", "narrow-codebooks", "heads", "unknown-option"],
)
def test_bad_models_are_one_clear_error(overrides: dict, data_kind: str, message: str, data: RecData) -> None:
    if data_kind == "no-ids":
        data = RecData(data.item_ids, data.sequences, data.user_ids)
    with pytest.raises(SemidError, match=message):
        build_model("rpg", data, **overrides)


def test_item_codes_outside_their_codebook_are_refused() -> None:
    with pytest.raises(SemidError, match=r"^item 1 digit 1: code 4 is outside \[0, 4\)$"):
        RPG(RPGConfig(codebook_sizes=[4, 4], d_model=16, n_heads=2), np.array([[0, 0], [1, 4]]))


def test_defaults_follow_the_papers_beauty_recipe() -> None:
    c = RPGConfig(n_items=10)
    assert (c.d_model, c.n_layers, c.n_heads, c.d_ff, c.max_len) == (448, 2, 4, 1024, 50)
    assert (c.dropout, c.attn_dropout, c.resid_dropout, c.temperature) == (0.5, 0.5, 0.0, 0.03)
    t = default_train_config("rpg")
    assert (t.batch_size, t.epochs, t.weight_decay, t.patience) == (256, 150, 0.0, 20)


# --- `semid train rpg` ---------------------------------------------------------------------------------------


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_cli_trains_evaluates_and_recommends_with_rpg(tmp_path: Path, capsys) -> None:
    (tmp_path / "data").mkdir()
    write_walk_shop(tmp_path / "data", N_ITEMS, n_users=80, lengths=(5, 9))
    write_grid_ids(tmp_path / "ids.parquet", N_ITEMS)
    (tmp_path / "config.json").write_text(json.dumps({"model": TINY_RPG, "train": {**FAST, "epochs": 2}}))
    run_dir = tmp_path / "run"
    argv = [
        "train",
        "rpg",
        str(tmp_path / "data"),
        "--ids",
        str(tmp_path / "ids.parquet"),
        "-o",
        str(run_dir),
    ]
    code, out, err = run([*argv, "--config", str(tmp_path / "config.json"), "--quiet"], capsys)
    assert code == 0, err
    assert (
        "rpg (validation)" in out and json.loads((run_dir / "config.json").read_text())["model_type"] == "rpg"
    )
    code, out, err = run(["evaluate", str(run_dir), "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert (
        res["model_type"] == "rpg" and res["model"]["invalid_rate"] == 0.0 and res["model"]["n_users"] == 80
    )
    code, out, err = run(["recommend", str(run_dir), "--history", "i3,i4", "-k", "5", "--json"], capsys)
    assert code == 0, err
    rows = json.loads(out)
    assert len({r["item_id"] for r in rows}) == 5 and rows[0]["semantic_id"] is not None
    from semid.serve.service import Service  # served like a SASRec run: no beam, every item scored

    served = Service.load(run_dir, embedder=WordHashEmbedder()).recommend(["i3", "i4"], k=5)
    assert [r.item_id for r in served] == [r["item_id"] for r in rows]

    code, _, err = run(["train", "rpg", str(tmp_path / "data"), "-o", str(tmp_path / "no-ids")], capsys)
    assert (code, err) == (1, "Error: RPG needs the items' Semantic IDs: give --ids ids.parquet\n")
    code, _, err = run(["evaluate", str(run_dir), "--beam-size", "5"], capsys)
    assert (code, err) == (1, "Error: beam size and unconstrained decoding apply to TIGER runs only\n")


def test_rpg_trains_from_a_streamed_log(tmp_path: Path, capsys) -> None:
    import pyarrow.csv as pacsv

    from semid.rec.stream import write_user_shards

    (tmp_path / "data").mkdir()
    write_walk_shop(tmp_path / "data", N_ITEMS, n_users=60, lengths=(5, 9))
    table = pacsv.read_csv(tmp_path / "data" / "interactions.csv")
    write_user_shards(table["user_id"], table["item_id"], table["timestamp"], tmp_path / "log", 2)
    write_grid_ids(tmp_path / "ids.parquet", N_ITEMS)
    (tmp_path / "config.json").write_text(json.dumps({"model": TINY_RPG, "train": {**FAST, "epochs": 2}}))
    run_dir = tmp_path / "run"
    argv = ["train", "rpg", "--stream", str(tmp_path / "log"), "--ids", str(tmp_path / "ids.parquet")]
    code, _, err = run(
        [*argv, "-o", str(run_dir), "--config", str(tmp_path / "config.json"), "--quiet"], capsys
    )
    assert code == 0, err
    records = read_metrics(run_dir)
    assert [r["epoch"] for r in records] == [1, 2] and records[-1]["loss"] < records[0]["loss"]
    code, _, err = run([*argv[:2], "--stream", str(tmp_path / "log"), "-o", str(tmp_path / "r2")], capsys)
    assert (code, err) == (1, "Error: RPG needs the items' Semantic IDs: give --ids ids.parquet\n")
