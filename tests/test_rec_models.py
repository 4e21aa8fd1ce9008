"""SASRec and TIGER learn a deterministic next-item rule in seconds; runs save, load and resume exactly."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_TIGER as TINY_TIGER_CONFIG
from conftest import dead_pid
from semid._outputs import _HOST
from semid.data import Sequences, make_demo_dataset
from semid.embed.store import read_embeddings
from semid.errors import SemidError
from semid.ids.table import IdTable
from semid.rec.data import RecData, collate
from semid.rec.evaluate import evaluate, evaluate_most_popular
from semid.rec.sasrec import SASRecConfig
from semid.rec.train import (
    TrainConfig,
    build_model,
    check_new_run_dir,
    fit,
    load_model,
    read_checkpoint,
    read_metrics,
    split_examples,
    train_demo_tiger,
)

N_ITEMS = 40
TINY_SASREC = {"d_model": 32, "n_heads": 2, "n_layers": 1, "d_ff": 64, "dropout": 0.0, "max_len": 8}
# 64 possible IDs for 40 items: decoding can go wrong without the trie.
TINY_TIGER = {**TINY_TIGER_CONFIG["model"], "codebook_sizes": [8, 8]}
FAST = {
    "progress": False,
    "num_threads": 1,
    "autocast": "off",
    "tensorboard": False,
    "patience": 0,
    "warmup_steps": 5,
}


def ruled_data(n_users: int = 150, seed: int = 0) -> RecData:
    """Users walk the catalogue in order: item i is always followed by item i + 1 (mod 40)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 10, n_users)
    starts = rng.integers(0, N_ITEMS, n_users)
    items = np.concatenate([(s + np.arange(n)) % N_ITEMS for s, n in zip(starts, lengths, strict=True)])
    codes = np.stack([np.arange(N_ITEMS) // 5, np.arange(N_ITEMS) % 5], axis=1)
    return RecData(
        item_ids=np.array([f"i{i}" for i in range(N_ITEMS)], dtype=object),
        sequences=Sequences(np.concatenate([[0], np.cumsum(lengths)]), items),
        user_ids=np.array([f"u{u}" for u in range(n_users)], dtype=object),
        codes=codes,
        semantic_ids=np.array([f"{a}-{b}" for a, b in codes], dtype=object),
    )


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny models, one thread


@pytest.fixture(scope="module")
def data() -> RecData:
    return ruled_data()


@pytest.fixture(scope="module")
def sasrec_run(data: RecData, tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("sasrec")
    train = {**FAST, "epochs": 10, "batch_size": 16, "lr": 0.01}
    model, result = fit("sasrec", data, run_dir, model_config=TINY_SASREC, train_config=train)
    return model, result, run_dir


@pytest.fixture(scope="module")
def tiger_run(data: RecData, tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("tiger")
    train = {**FAST, "epochs": 10, "batch_size": 32, "lr": 0.005}
    model, result = fit("tiger", data, run_dir, model_config=TINY_TIGER, train_config=train)
    return model, result, run_dir


@pytest.fixture(scope="module")
def tiger_items_run(data: RecData, tmp_path_factory: pytest.TempPathFactory):
    """TIGER whose encoder reads one token per history item (the sum of its codes' embeddings)."""
    run_dir = tmp_path_factory.mktemp("tiger-items")
    train = {**FAST, "epochs": 10, "batch_size": 32, "lr": 0.005}
    config = {**TINY_TIGER, "encoder_tokens": "items"}
    model, result = fit("tiger", data, run_dir, model_config=config, train_config=train)
    return model, result, run_dir


@pytest.mark.parametrize(
    ("run", "min_recall_at_1"),
    [("sasrec_run", 1.0), ("tiger_run", 0.95), ("tiger_items_run", 0.95)],
    ids=["sasrec", "tiger", "tiger-item-tokens"],
)
def test_tiny_models_learn_the_rule_and_beat_most_popular(
    run: str, min_recall_at_1: float, data: RecData, request: pytest.FixtureRequest
) -> None:
    model, result, _ = request.getfixturevalue(run)
    test = evaluate(model, split_examples(model, data, "test"), ks=(1, 10))
    assert test.metrics["recall@1"] >= min_recall_at_1
    assert test.invalid_rate == 0.0
    popular = evaluate_most_popular(data.split.test_history, data.split.test_target, data.n_items, ks=(1, 10))
    assert popular["recall@10"] < 0.35  # 40 items visited about equally: a popularity list finds few
    assert result.best_valid["ndcg@10"] >= 0.9
    assert result.epochs == 10 and result.stopped == "epochs"


@pytest.mark.parametrize(
    "run", ["sasrec_run", "tiger_run", "tiger_items_run"], ids=["sasrec", "tiger", "tiger-item-tokens"]
)
def test_a_saved_model_makes_the_same_predictions(
    run: str, data: RecData, request: pytest.FixtureRequest
) -> None:
    model, result, run_dir = request.getfixturevalue(run)
    loaded = load_model(run_dir)
    assert type(loaded) is type(model) and loaded.config == model.config
    ex = split_examples(model, data, "test")
    batch = collate(ex, np.arange(len(ex)))
    items, scores = model.recommend(batch, 10)
    items2, scores2 = loaded.recommend(batch, 10)
    assert torch.equal(items, items2)
    torch.testing.assert_close(scores, scores2)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["model_type"] == model.model_type and config["train"]["epochs"] == 10
    assert [r["epoch"] for r in read_metrics(run_dir)] == list(range(1, 11))


def test_saving_never_replaces_files_of_a_folder_that_is_no_run(sasrec_run, data: RecData, tmp_path) -> None:
    from semid.rec.io import save_model

    model, _, run_dir = sasrec_run
    mine = tmp_path / "mine"
    mine.mkdir()
    for name in ("config.json", "model.safetensors", "items.parquet"):
        (mine / name).write_text(f"my {name}")
    with pytest.raises(SemidError) as e:
        save_model(model, mine)
    assert str(e.value) == (
        f"{mine / 'model.safetensors'}: would replace a file that is not a semid run's (no recommender "
        "config.json beside it); give a new directory"
    )
    with pytest.raises(SemidError, match=r"items\.parquet: would replace a file that is not a semid run's"):
        data.save(mine)
    assert {p.name: p.read_text() for p in mine.iterdir()} == {
        n: f"my {n}" for n in ("config.json", "model.safetensors", "items.parquet")
    }
    save_model(model, tmp_path / "new")  # a new folder, and a run's own, are written
    save_model(model, tmp_path / "new")
    assert load_model(tmp_path / "new").config == model.config
    data.save(tmp_path / "plain")
    data.save(tmp_path / "plain")  # a folder holding nothing but an earlier save's files
    # A run killed while its data was written (items.parquet only, no config yet) starts again there.
    (tmp_path / "killed" / "checkpoints").mkdir(parents=True)
    shutil.copy(tmp_path / "plain" / "items.parquet", tmp_path / "killed" / "items.parquet")
    fit("sasrec", data, tmp_path / "killed", model_config=TINY_SASREC, train_config={**FAST, "max_steps": 1})
    broken = copy.copy(data)
    broken.user_ids = data.user_ids[:-1]  # one user id short
    with pytest.raises(SemidError, match=r"^RecData\.save: inconsistent data \("):
        broken.save(tmp_path / "broken")
    assert not (tmp_path / "broken").exists()  # nothing half-written


@pytest.mark.parametrize("run", ["sasrec_run", "tiger_run"])
def test_recommend_refuses_histories_and_k_it_would_misread(run: str, request: pytest.FixtureRequest) -> None:
    from semid.rec.data import histories_batch

    model = request.getfixturevalue(run)[0]
    with pytest.raises(
        SemidError, match=rf"^history item index 999 is outside 0\.\.{N_ITEMS - 1} \(the model's items\)$"
    ):
        model.recommend(histories_batch([np.array([1, 999])]), 3)
    with pytest.raises(
        SemidError, match=r"^history 0: item index -5 is negative$"
    ):  # it wrapped to another item
        histories_batch([np.array([-5])])
    with pytest.raises(SemidError, match=r"^history 1 should be a non-empty 1-D array of item indices"):
        histories_batch([np.array([1]), np.array([], dtype=int)])
    with pytest.raises(SemidError, match=r"^no histories"):
        histories_batch([])
    with pytest.raises(SemidError, match=r"^k=2\.5 should be a positive integer$"):
        model.recommend(histories_batch([np.array([1, 2])]), 2.5)


def test_sasrec_exports_its_item_embeddings(sasrec_run, data: RecData) -> None:
    model, _, run_dir = sasrec_run
    ids, X = read_embeddings(run_dir / "item_embeddings.parquet")
    assert ids.tolist() == data.item_ids.tolist()
    np.testing.assert_array_equal(X, model.item_embeddings())
    assert X.shape == (N_ITEMS, 32)


def test_unconstrained_decoding_reports_invalid_ids(data: RecData) -> None:
    torch.manual_seed(0)
    model = build_model("tiger", data, **TINY_TIGER).eval()  # untrained: its guesses are anywhere
    ex = split_examples(model, data, "test")
    free = evaluate(model, ex, constrained=False)
    assert 0.1 < free.invalid_rate < 1.0  # 24 of the 64 possible IDs are no item
    assert evaluate(model, ex).invalid_rate == 0.0


def test_tiger_encoder_reads_a_token_per_code_or_one_per_item(data: RecData) -> None:
    torch.manual_seed(0)
    history = torch.tensor([[-1, -1, 3], [5, 6, 7]])  # (B=2, T=3), left-padded
    user = torch.tensor([11, -1])
    codes_model = build_model("tiger", data, **{**TINY_TIGER, "encoder_tokens": "codes"}).eval()
    items_model = build_model("tiger", data, **{**TINY_TIGER, "encoder_tokens": "items"}).eval()
    with torch.no_grad():
        per_code, code_mask = codes_model.encode(history, user)
        per_item, item_mask = items_model.encode(history, user)
    assert per_code.shape == (2, 1 + 3 * 2, 64) and per_item.shape == (2, 1 + 3, 64)
    # the user token and the real items are visible; padding is not
    assert code_mask[:, 0, 0].tolist() == [[True, False, False, False, False, True, True], [True] * 7]
    assert item_mask[:, 0, 0].tolist() == [[True, False, False, True], [True] * 4]


@pytest.mark.parametrize("encoder_tokens", ["codes", "items"])
def test_tiger_step_by_step_decoding_scores_ids_like_the_full_decoder(
    data: RecData, encoder_tokens: str
) -> None:
    # Beam search decodes with a key/value cache that follows each beam's parent; a returned score must
    # equal the log-probability of that ID under one teacher-forced pass of the whole decoder.
    torch.manual_seed(1)
    config = {**TINY_TIGER, "n_decoder_layers": 2, "encoder_tokens": encoder_tokens}
    model = build_model("tiger", data, **config).eval()
    ex = split_examples(model, data, "test")
    batch = collate(ex, np.arange(6))
    res = model.generate(batch, k=10)
    with torch.no_grad():
        memory, mask = model.encode(batch.history, batch.user)
        codes = res.codes.reshape(60, 2)  # (B * k, L)
        memory, mask = memory.repeat_interleave(10, 0), mask.repeat_interleave(10, 0)
        h, _ = model.decode(model.decoder_inputs(codes[:, :-1]), model.memory_kv(memory), mask)
        logp = sum(
            torch.log_softmax(model.level_logits(h[:, lv], lv), -1).gather(1, codes[:, lv : lv + 1])[:, 0]
            for lv in range(2)
        )
    torch.testing.assert_close(res.scores.reshape(-1), logp, atol=1e-5, rtol=1e-5)


def test_resume_continues_from_the_saved_step_exactly(tmp_path: Path) -> None:
    # BCE with dropout: sampled negatives and dropout masks both come from the saved RNG state.
    data = ruled_data(n_users=60)
    model_config = {**TINY_SASREC, "loss": "bce", "n_negatives": 2, "dropout": 0.2}
    train = {**FAST, "epochs": 3, "batch_size": 16, "lr": 0.01}
    _, whole = fit("sasrec", data, tmp_path / "whole", model_config=model_config, train_config=train)
    _, first = fit(
        "sasrec", data, tmp_path / "split", model_config=model_config, train_config={**train, "max_steps": 2}
    )
    assert (first.steps, first.epochs, first.stopped) == (2, 0, "max_steps")
    # Killed between the two renames of a checkpoint swap: the old copy lies aside, and resuming finds it.
    aside = tmp_path / "split" / "checkpoints" / f".last.{_HOST}.{dead_pid()}.x.old"
    (tmp_path / "split" / "checkpoints" / "last").rename(aside)
    # Readers see that copy without moving it (the run's own trainer could be mid-swap); a new run is refused.
    assert read_checkpoint(tmp_path / "split")["state"]["step"] == 2 and aside.is_dir()
    with pytest.raises(SemidError, match="already holds a run"):
        check_new_run_dir(tmp_path / "split")
    # ... and killed again while appending a metrics line: the torn line is dropped on resume.
    with open(tmp_path / "split" / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 1, "lo')
    _, rest = fit("sasrec", None, tmp_path / "split", train_config={"max_steps": 0}, resume=True)
    assert rest.steps == whole.steps == 3 * 4  # 60 users -> 60 windows -> 4 batches per epoch
    assert [r["step"] for r in rest.history] == [4, 8, 12]  # the first epoch ends where it left off
    assert [r["step"] for r in read_metrics(tmp_path / "split")] == [2, 4, 8, 12]
    assert read_metrics(tmp_path / "split")[0]["partial"] is True

    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "whole" / "checkpoints" / "last" / "state.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoints" / "last" / "state.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_learning_rate_decays_over_the_time_budget() -> None:
    from semid.rec.train import _lr_at

    config = TrainConfig(lr=0.01, warmup_steps=0, min_lr_ratio=0.0, max_minutes=2.0)
    # Step 10 of 1,000 is barely into the decay, but half the two-minute budget is spent: the cosine is at 0.5.
    assert _lr_at(10, 1000, config, seconds=60.0) == pytest.approx(0.005)
    assert _lr_at(10, 1000, config, seconds=120.0) == pytest.approx(0.0)
    # Without a budget (or when the steps are further along) the steps decide.
    assert _lr_at(
        500, 1000, TrainConfig(lr=0.01, warmup_steps=0, min_lr_ratio=0.0), seconds=1e6
    ) == pytest.approx(0.005)
    assert _lr_at(900, 1000, config, seconds=60.0) < 0.005


def test_patience_counts_validations_once_warmup_is_over(data: RecData, tmp_path: Path) -> None:
    # At a learning rate of 1e-12 the weights stay put, so no validation after the first one is better.
    still = {**FAST, "epochs": 8, "batch_size": 16, "lr": 1e-12, "patience": 2}

    def run(warmup_steps: int, name: str) -> object:
        return fit(
            "sasrec",
            data,
            tmp_path / name,
            model_config=TINY_SASREC,
            train_config={**still, "warmup_steps": warmup_steps},
        )[1]

    no_warmup = run(0, "none")
    assert (no_warmup.stopped, no_warmup.epochs, no_warmup.best_epoch) == ("early_stop", 3, 1)
    per_epoch = no_warmup.steps // 3
    # Warmup ends with epoch 4: epochs 5 and 6 are the two that count, and the run stops there.
    mid = run(4 * per_epoch, "mid")
    assert (mid.stopped, mid.epochs) == ("early_stop", 6)
    # A warmup longer than the run: patience never starts counting.
    assert run(100 * per_epoch, "long").stopped == "epochs"


def test_max_minutes_is_a_budget_over_all_sessions_of_a_run(sasrec_run, tmp_path: Path) -> None:
    _, result, finished = sasrec_run
    run_dir = shutil.copytree(finished, tmp_path / "run")
    spent = result.seconds / 60 * 0.999  # (a hair under: 60 * (s / 60) may round above s)
    # The run has used its budget already: resuming with the same budget trains nothing more.
    _, again = fit("sasrec", None, run_dir, train_config={"epochs": 99, "max_minutes": spent}, resume=True)
    assert (again.steps, again.stopped, again.history) == (result.steps, "time", [])


def test_a_training_log_drops_only_a_torn_last_line(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    assert read_metrics(tmp_path) == []  # no log yet
    log.write_text('{"step": 1}\n{"step": 2}\n{"st')
    assert read_metrics(tmp_path) == [{"step": 1}, {"step": 2}]
    log.write_text('{"step": 1}\n{"st\n{"step": 3}\n')  # damage inside the log is not a kill's trace
    with pytest.raises(SemidError, match=r"metrics\.jsonl line 2: not valid JSON \("):
        read_metrics(tmp_path)
    log.write_text('{"step": 1}\n[2]\n')
    with pytest.raises(SemidError, match=r"metrics\.jsonl line 2: expected a JSON object$"):
        read_metrics(tmp_path)


def test_resume_refuses_a_changed_recipe(sasrec_run) -> None:
    _, _, run_dir = sasrec_run
    with pytest.raises(SemidError, match=r"^lr cannot change when resuming \(only .* can\)$"):
        fit("sasrec", None, run_dir, train_config={"lr": 0.5}, resume=True)
    with pytest.raises(SemidError, match=r"holds a sasrec run, not tiger$"):
        fit("tiger", None, run_dir, resume=True)


def test_resuming_a_finished_run_does_nothing(sasrec_run) -> None:
    _, result, run_dir = sasrec_run
    _, again = fit("sasrec", None, run_dir, train_config={"progress": False}, resume=True)
    assert (again.steps, again.stopped, again.history) == (result.steps, "epochs", [])


@pytest.mark.parametrize(
    ("model_type", "model_config", "data_kind", "message"),
    [
        ("tiger", {}, "no-ids", r"^TIGER needs the items' Semantic IDs: give --ids ids.parquet$"),
        ("sasrec", {"hidden": 8}, "ok", r"^sasrec config: unknown option 'hidden' \(known: .*\)$"),
        ("sasrec", {"d_model": 30, "n_heads": 4}, "ok", r"^d_model=30 should be a multiple of n_heads=4$"),
        ("tiger", {"codebook_sizes": [8, 4]}, "ok", r"^codebook_sizes=\[8, 4\] do not fit the IDs"),
        ("gpt", {}, "ok", r"^model 'gpt' is not one of 'sasrec', 'tiger', 'rpg'$"),
        ("tiger", {"encoder_tokens": "item"}, "ok", r"^encoder_tokens='item' should be 'codes' or 'items'$"),
    ],
    ids=[
        "tiger-without-ids",
        "unknown-option",
        "heads",
        "narrow-codebooks",
        "unknown-model",
        "encoder-tokens",
    ],
)
def test_bad_models(model_type: str, model_config: dict, data_kind: str, message: str, data: RecData) -> None:
    if data_kind == "no-ids":
        data = RecData(data.item_ids, data.sequences, data.user_ids)
    with pytest.raises(SemidError, match=message):
        build_model(model_type, data, **model_config)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lr": 0.0}, r"^lr=0.0 should be > 0$"),
        ({"schedule": "step"}, r"^schedule='step' is not one of 'cosine', 'linear', 'constant'$"),
        ({"epochs": 0}, r"^epochs=0 should be an integer >= 1$"),
        ({"min_lr_ratio": 2}, r"^min_lr_ratio=2 should be a number in \[0, 1\]$"),
        ({"tensorboard": "false"}, r"^tensorboard='false' should be true or false$"),
    ],
    ids=["lr", "schedule", "epochs", "min-lr-ratio", "tensorboard-string"],
)
def test_bad_train_configs(changes: dict, message: str) -> None:
    with pytest.raises(SemidError, match=message):
        TrainConfig(**changes).validate()


def test_a_run_directory_is_not_overwritten(sasrec_run, data: RecData) -> None:
    _, _, run_dir = sasrec_run
    with pytest.raises(
        SemidError, match=r"already holds a run; resume it \(--resume\) or choose another directory$"
    ):
        fit("sasrec", data, run_dir, model_config=TINY_SASREC, train_config=FAST)


def test_a_run_without_checkpoints_is_a_model_and_is_not_trained_over(
    sasrec_run, data: RecData, tmp_path
) -> None:
    _, _, run_dir = sasrec_run
    shipped = tmp_path / "shipped"
    shutil.copytree(run_dir, shipped, ignore=shutil.ignore_patterns("checkpoints"))
    before = {p.name: p.read_bytes() for p in shipped.iterdir()}
    with pytest.raises(SemidError) as e:
        fit("tiger", data, shipped, train_config=FAST)
    assert str(e.value) == (
        f"{shipped} holds a trained model (model.safetensors, item_embeddings.parquet) and no checkpoint to "
        "resume from; choose another directory or remove it"
    )
    assert {p.name: p.read_bytes() for p in shipped.iterdir()} == before
    # Killed after its first best weights, before its first checkpoint: its checkpoints/ folder says a run
    # started there, so a new run reuses the folder, and the old weights never sit beside the new config.
    killed = tmp_path / "killed"
    shutil.copytree(run_dir, killed)
    shutil.rmtree(killed / "checkpoints" / "last")
    old = (killed / "model.safetensors").read_bytes()
    (killed / "model.safetensors").write_bytes(old)
    fit("tiger", data, killed, train_config={**FAST, "max_steps": 1})  # the killed run was a SASRec
    assert load_model(killed).model_type == "tiger" and (killed / "checkpoints" / "last").is_dir()


def test_sasrec_config_defaults_follow_recbole() -> None:
    c = SASRecConfig(n_items=10)
    assert (c.max_len, c.d_model, c.n_layers, c.n_heads, c.loss) == (50, 64, 2, 2, "ce")


def test_demo_training_reports_tiger_next_to_most_popular(tmp_path: Path) -> None:
    ds = make_demo_dataset(n_items=120, n_users=100, seed=0)
    ids = ds.catalogue.item_ids
    codes = np.stack([np.arange(120) // 12, np.arange(120) % 12], axis=1)
    table = IdTable(ids, [f"{a}-{b}" for a, b in codes], codes, codes)
    res = train_demo_tiger(ds, table, tmp_path / "demo", max_minutes=0.05, num_threads=1)
    assert set(res) >= {
        "tiger",
        "most_popular",
        "beats_most_popular",
        "epochs",
        "train_seconds",
        "users_per_s",
    }
    assert set(res["tiger"]) == set(res["most_popular"]) == {"recall@5", "ndcg@5", "recall@10", "ndcg@10"}
    assert all(0 <= v <= 1 for v in res["tiger"].values())
    assert res["train_seconds"] < 0.05 * 60 + 2  # the time limit, plus the validation at the stop
    assert (tmp_path / "demo" / "model.safetensors").is_file()


@pytest.mark.parametrize("encoder_tokens", ["codes", "items"])
def test_tiger_training_path_computes_the_eval_path_loss_without_dropout(
    data: RecData, encoder_tokens: str
) -> None:
    # Training uses semid.rec.layers.attention (faster on CPU), evaluation torch's fused attention.
    torch.manual_seed(0)
    model = build_model("tiger", data, **{**TINY_TIGER, "encoder_tokens": encoder_tokens})
    examples = split_examples(model, data, "valid")
    batch = collate(examples, np.arange(32))
    with torch.no_grad():
        train_loss = model.train().loss(batch)
        eval_loss = model.eval().loss(batch)
    torch.testing.assert_close(train_loss, eval_loss, rtol=1e-5, atol=1e-6)


def test_target_bias_keeps_late_targets_more_often() -> None:
    from semid.rec.data import prefix_examples
    from semid.rec.train import target_keep_probability

    seqs = Sequences(np.array([0, 3, 8]), np.arange(8))  # rows of 3 and 5 items: 2 + 4 prefix examples
    examples = prefix_examples(seqs, np.zeros(2, dtype=np.int64), max_history=20)
    assert examples.target.tolist() == [1, 2, 4, 5, 6, 7]
    keep = target_keep_probability
    np.testing.assert_allclose(keep(examples, seqs, 0.0), np.ones(6))
    np.testing.assert_allclose(keep(examples, seqs, 1.0), [1 / 2, 1, 1 / 4, 2 / 4, 3 / 4, 1])
    np.testing.assert_allclose(keep(examples, seqs, 2.0), [1 / 4, 1, 1 / 16, 1 / 4, 9 / 16, 1])


def test_tiger_with_target_bias_trains_on_fewer_examples_and_still_learns(
    data: RecData, tiger_run, tmp_path: Path
) -> None:
    _, plain, _ = tiger_run
    train = {**FAST, "epochs": 10, "batch_size": 32, "lr": 0.005, "target_bias": 1.0}
    model, biased = fit("tiger", data, tmp_path / "run", model_config=TINY_TIGER, train_config=train)
    assert biased.steps < 0.8 * plain.steps  # about 0.6x the examples per epoch on this data
    res = evaluate(model, split_examples(model, data, "test"), ks=(1,))
    assert res.metrics["recall@1"] >= 0.95
    with pytest.raises(SemidError, match=r"^target_bias applies to TIGER's prefix examples, not to SASRec$"):
        fit("sasrec", data, tmp_path / "s", model_config=TINY_SASREC, train_config={**train, "lr": 0.01})


@pytest.mark.parametrize("run", ["sasrec_run", "tiger_items_run"], ids=["sasrec", "tiger"])
def test_exclude_history_never_recommends_a_history_item_and_keeps_the_others_order(
    run: str, data: RecData, request: pytest.FixtureRequest
) -> None:
    model = request.getfixturevalue(run)[0].eval()
    ex = split_examples(model, data, "test")
    batch = collate(ex, np.arange(32))
    k = 10
    plain, _ = model.recommend(batch, k + batch.history.shape[1])
    filtered, _ = model.recommend(batch, k, exclude_history=True)
    for row in range(32):
        seen = set(batch.history[row][batch.history[row] >= 0].tolist())
        got = filtered[row].tolist()
        assert not seen & set(got) and min(got) >= 0
        if run == "sasrec_run":  # a full ranking: the filtered list is the plain one without the history
            assert got == [i for i in plain[row].tolist() if i not in seen][:k]


def test_with_the_history_excluded_a_list_longer_than_the_rest_of_the_catalogue_ends_in_no_item(
    sasrec_run, data: RecData
) -> None:
    model = sasrec_run[0].eval()
    batch = collate(split_examples(model, data, "test"), np.arange(4))
    items, scores = model.recommend(batch, data.n_items, exclude_history=True)
    for row in range(4):
        n_seen = len(set(batch.history[row][batch.history[row] >= 0].tolist()))
        assert (items[row] == -1).sum() == n_seen  # the excluded items are not returned, not even last
        assert not torch.isfinite(scores[row][items[row] == -1]).any()
