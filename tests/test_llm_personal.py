"""Personalised search: a request and a history searched together over one trie of Semantic IDs.

The two limits are the two models alone (history weight 0: the query model's beam; query weight 0:
TIGER's), every answer is a real, distinct item, and bad histories and weights are one clear error.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TINY_TIGER
from semid.data import make_demo_dataset
from semid.errors import SemidError
from semid.ids.table import IdTable
from semid.llm.examples import ExampleConfig, prepare_dataset
from semid.llm.generate import QueryRecommender
from semid.llm.model import ScratchConfig, load_llm
from semid.llm.personal import PersonalisedSearch, combine_steps
from semid.llm.train import TrainConfig, train_llm
from semid.rec.data import RecData, histories_batch
from semid.rec.train import build_model
from test_llm_train import tiny_ids

pytestmark = pytest.mark.usefixtures("one_torch_thread")
N_ITEMS = 40
QUERIES = ["a matte lipstick", "something for dry skin", "a cheap shampoo"]
HISTORIES = [["i0"], ["i3", "i4", "i5"], ["i10", "i11"]]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    """A tiny query LM (30 steps) over the 40 demo items, with :func:`tiny_ids` as their IDs."""
    ds = make_demo_dataset(n_items=N_ITEMS, n_users=30, seed=0)
    out = tmp_path_factory.mktemp("personal")
    prepare_dataset(ds.catalogue, tiny_ids(ds.catalogue.item_ids), out / "data",
                    ExampleConfig(n_per_item=2, attribute_examples=False, seed=0))  # fmt: skip
    scratch = ScratchConfig(vocab_size=400, hidden_size=32, n_layers=1, n_heads=2, intermediate_size=64)
    config = TrainConfig(scratch=scratch, query_prefix=None, max_steps=30, batch_size=16, eval_every=0,
                         eval_queries=8, save_every=0, progress=False, seed=0)  # fmt: skip
    train_llm(out / "data", out / "llm", config)
    return out / "llm"


@pytest.fixture(scope="module")
def models(lm_dir):
    """That LM and a tiny (untrained) TIGER over the same items and IDs, both naming the items i0..i39."""
    ds = make_demo_dataset(n_items=N_ITEMS, n_users=30, seed=0)
    names = np.array([f"i{i}" for i in range(N_ITEMS)], dtype=object)
    llm = load_llm(lm_dir)
    data = RecData.from_dataset(ds, tiny_ids(ds.catalogue.item_ids))
    data.item_ids = names
    torch.manual_seed(0)
    tiger = build_model("tiger", data, **TINY_TIGER["model"]).eval()
    llm.item_ids = names
    return llm, tiger, data


def test_history_weight_0_is_the_query_models_beam(models) -> None:
    llm, tiger, data = models
    alone = QueryRecommender.from_llm(llm).recommend(QUERIES, k=5, beam_size=10)
    both = PersonalisedSearch.from_llm(llm, tiger, data).search(
        QUERIES, HISTORIES, k=5, beam_size=10, history_weight=0.0
    )
    np.testing.assert_array_equal(both.items, alone.items)
    np.testing.assert_allclose(both.scores, alone.scores, atol=1e-5)


def test_query_weight_0_is_tigers_beam(models) -> None:
    llm, tiger, data = models
    batch = histories_batch([data.parse_history(h) for h in HISTORIES])
    alone = tiger.generate(batch, 5, beam_size=10)
    both = PersonalisedSearch.from_llm(llm, tiger, data).search(
        QUERIES, HISTORIES, k=5, beam_size=10, query_weight=0.0, history_weight=1.0
    )
    # the same items: the LM's rows and the run's rows name the same item ids here
    np.testing.assert_array_equal(llm.item_ids[both.items], data.item_ids[alone.items.numpy()])
    np.testing.assert_allclose(both.scores, alone.scores.numpy(), atol=1e-5)


def test_both_weights_give_real_distinct_items_and_other_rankings(models) -> None:
    llm, tiger, data = models
    search = PersonalisedSearch.from_llm(llm, tiger, data)
    res = search.search(QUERIES, HISTORIES, k=8, history_weight=1.0)
    assert res.items.shape == (3, 8) and (res.items >= 0).all() and (res.items < N_ITEMS).all()
    assert all(len(set(row)) == 8 for row in res.items.tolist())
    assert (np.diff(res.scores, axis=1) <= 1e-6).all()  # best first
    query_only = search.search(QUERIES, HISTORIES, k=8, history_weight=0.0)
    assert not np.array_equal(res.items, query_only.items)  # the history moved something


def test_exclude_history_never_answers_an_item_of_the_history(models) -> None:
    llm, tiger, data = models
    res = PersonalisedSearch.from_llm(llm, tiger, data).search(QUERIES, HISTORIES, k=10, exclude_history=True)
    for row, history in zip(res.items.tolist(), HISTORIES, strict=True):
        assert not set(llm.item_ids[row]) & set(history)


def test_allow_answers_only_allowed_items_with_both_models_scoring(models) -> None:
    llm, tiger, data = models
    search = PersonalisedSearch.from_llm(llm, tiger, data)
    allow = np.zeros((3, N_ITEMS), bool)
    allow[0, :20], allow[1, 5:35], allow[2, ::2] = True, True, True
    res = search.search(QUERIES, HISTORIES, k=8, beam_size=40, allow=allow)
    assert all(allow[q, res.items[q]].all() for q in range(3))
    # a beam as wide as the catalogue finds the exact best allowed items: the unrestricted ranking's
    # allowed entries, in its order
    full = search.search(QUERIES, HISTORIES, k=N_ITEMS, beam_size=N_ITEMS)
    for q in range(3):
        best = [i for i in full.items[q] if allow[q, i]][:8]
        assert res.items[q].tolist() == best


def test_fewer_allowed_items_than_k_come_first_then_the_best_others(models) -> None:
    llm, tiger, data = models
    search = PersonalisedSearch.from_llm(llm, tiger, data)
    allow = np.zeros((3, N_ITEMS), bool)
    allow[:, [7, 30]] = True
    allow[2] = True  # this row may get anything: unchanged
    res = search.search(QUERIES, HISTORIES, k=5, beam_size=20, allow=allow)
    free = search.search(QUERIES, HISTORIES, k=5, beam_size=20)
    for q in range(2):
        assert sorted(res.items[q, :2].tolist()) == [7, 30]
        assert [i for i in free.items[q] if i not in (7, 30)][:3] == res.items[q, 2:].tolist()
    np.testing.assert_array_equal(res.items[2], free.items[2])
    strict = search.search(QUERIES, HISTORIES, k=5, beam_size=20, allow=allow, backfill=False)
    assert (strict.items[:2, 2:] == -1).all() and np.isneginf(strict.scores[:2, 2:]).all()


def test_allow_of_the_wrong_shape_is_one_clear_error(models) -> None:
    llm, tiger, data = models
    search = PersonalisedSearch.from_llm(llm, tiger, data)
    with pytest.raises(
        SemidError, match=r"allow should be a bool array of shape \(3, 40\), got bool \(3, 39\)"
    ):
        search.search(QUERIES, HISTORIES, allow=np.ones((3, N_ITEMS - 1), bool))


def test_combined_scores_are_the_weighted_sum_renormalised() -> None:
    a = torch.tensor([[[2.0, 0.0, -1.0]]])
    b = torch.tensor([[[0.0, 3.0, 0.0]]])
    step = combine_steps([(lambda p, q: a, 1.0), (lambda p, q: b, 0.5)])
    got = step(torch.zeros(1, 1, 0, dtype=torch.long), None)
    want = torch.log_softmax(a, -1) + 0.5 * torch.log_softmax(b, -1)
    torch.testing.assert_close(got, want)


# --------------------------------------------------------------------------------------------------------
# Bad input


def test_unknown_history_items_are_named(models) -> None:
    llm, tiger, data = models
    search = PersonalisedSearch.from_llm(llm, tiger, data)
    with pytest.raises(SemidError, match=r"history item 'nope' is not in this run's catalogue \(40 items\)"):
        search.search(["lipstick"], [["i1", "nope"]], k=3)
    with pytest.raises(SemidError, match="the history is empty"):
        search.search(["lipstick"], [[]], k=3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"history_weight": -1.0}, "history_weight=-1.0 should be a finite number >= 0"),
        ({"query_weight": float("nan")}, "query_weight=nan should be a finite number >= 0"),
        ({"query_weight": 0.0, "history_weight": 0.0}, "every weight is 0"),
    ],
)
def test_bad_weights_are_one_clear_error(models, options, message) -> None:
    llm, tiger, data = models
    with pytest.raises(SemidError, match=message):
        PersonalisedSearch.from_llm(llm, tiger, data).search(["lipstick"], [["i1"]], k=3, **options)


def test_a_request_needs_its_history_and_an_empty_request_is_refused(models) -> None:
    llm, tiger, data = models
    search = PersonalisedSearch.from_llm(llm, tiger, data)
    with pytest.raises(SemidError, match="2 requests but 1 histories"):
        search.search(["a", "b"], [["i1"]], k=3)
    with pytest.raises(SemidError, match="query 0 is empty"):
        search.search(["  "], [["i1"]], k=3)


def test_models_trained_on_other_ids_are_refused_naming_an_item(models) -> None:
    llm, tiger, data = models
    ds = make_demo_dataset(n_items=N_ITEMS, n_users=30, seed=0)
    same = tiny_ids(ds.catalogue.item_ids)
    codes = same.codes[::-1].copy()  # every item gets another item's ID
    other = IdTable(same.item_ids, same.semantic_ids[::-1], codes, codes, same.meta)
    other_data = RecData.from_dataset(ds, other)
    other_data.item_ids = data.item_ids
    torch.manual_seed(0)
    other_tiger = build_model("tiger", other_data, **TINY_TIGER["model"])
    with pytest.raises(
        SemidError, match=r"item 'i0' has ID \[0, 0, 0\] in the language model and \[2, 1, 3\]"
    ):
        PersonalisedSearch.from_llm(llm, other_tiger, other_data)


# --------------------------------------------------------------------------------------------------------
# `semid llm ask --run RUN --history ...`


@pytest.fixture(scope="module")
def dirs(lm_dir, tmp_path_factory):
    """The LM directory of `models` and a TIGER run (one training step) over the same items and IDs."""
    from semid.rec.train import fit

    root = tmp_path_factory.mktemp("ask")
    ds = make_demo_dataset(n_items=N_ITEMS, n_users=30, seed=0)
    data = RecData.from_dataset(ds, tiny_ids(ds.catalogue.item_ids))
    fit("tiger", data, root / "run", model_config=TINY_TIGER["model"],
        train_config={**TINY_TIGER["train"], "max_steps": 1})  # fmt: skip
    return lm_dir, root / "run", [str(i) for i in ds.catalogue.item_ids[:3]]


def run_cli(argv, capsys):
    import semid.cli.llm  # noqa: F401  (registers `semid llm`)
    from semid.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_cli_ask_with_a_run_and_a_history_answers_real_items(dirs, capsys) -> None:
    llm_dir, run_dir, history = dirs
    code, out, err = run_cli(["llm", "ask", str(llm_dir), "a lipstick", "-k", "3", "--run", str(run_dir),
                              "--history", ",".join(history)], capsys)  # fmt: skip
    assert code == 0, err
    assert sum(line.strip().startswith(("│ 1 ", "│ 2 ", "│ 3 ")) for line in out.splitlines()) == 3


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--history", "D00001"], "personalised search needs both --run (a TIGER run) and --history"),
        (["--run", "RUN", "--history", "D00001,nope"], "history item 'nope' is not in this run's catalogue"),
    ],
)
def test_cli_ask_personalised_bad_input_is_one_error_line(dirs, capsys, extra, message) -> None:
    llm_dir, run_dir, _ = dirs
    extra = [str(run_dir) if a == "RUN" else a for a in extra]
    code, _, err = run_cli(["llm", "ask", str(llm_dir), "a lipstick", "-k", "3", *extra], capsys)
    assert code != 0 and err.count("Error:") == 1 and message in err and "Traceback" not in err
