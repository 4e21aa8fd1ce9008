"""Unseen items by Semantic-ID prefix (semid.rec.unseen): the TIGER paper's cold-start rule."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import semid.cli.rec  # noqa: F401  (registers the commands)
from conftest import TINY_TIGER, walk_rec_data
from semid.cli import main
from semid.errors import SemidError
from semid.rec.data import RecData
from semid.rec.io import untrained_items
from semid.rec.runs import evaluate_run
from semid.rec.train import fit
from semid.rec.unseen import PrefixSiblings, UnseenByPrefix, mix_unseen

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny models, one thread

# Six items; the first two codes are the prefix. Items 4 and 5 are unseen: 4 shares item 0's prefix (1, 2),
# 5 shares item 2's prefix (3, 3); item 3 has a prefix of its own.
CODES = np.array([[1, 2, 0], [1, 3, 0], [3, 3, 0], [2, 0, 0], [1, 2, 1], [3, 3, 1]])
UNSEEN = np.array([4, 5])


def siblings(prefix_levels: int | None = None) -> PrefixSiblings:
    return PrefixSiblings(CODES, UNSEEN, prefix_levels)


def test_an_unseen_sibling_follows_the_decoded_item_whose_prefix_it_shares_with_its_score() -> None:
    items = np.array([[0, 1, 2, 3]])
    scores = np.array([[-1.0, -2.0, -3.0, -4.0]], dtype=np.float32)
    out, out_scores = mix_unseen(items, scores, siblings(), k=4, share=0.5)  # at most 2 of 4 slots
    assert out.tolist() == [[0, 4, 1, 2]]
    assert out_scores.tolist() == [[-1.0, -1.0, -2.0, -3.0]]
    out, _ = mix_unseen(items, scores, siblings(), k=6, share=0.5)  # 3 slots: both siblings fit
    assert out.tolist() == [[0, 4, 1, 2, 5, 3]]


def test_unseen_items_never_take_more_than_the_share_of_the_slots() -> None:
    items = np.array([[0, 2, 1, 3]])
    scores = np.zeros((1, 4), dtype=np.float32)
    out, _ = mix_unseen(items, scores, siblings(), k=4, share=0.25)  # floor(0.25 * 4) = 1 slot
    assert out.tolist() == [[0, 4, 2, 1]]  # 5 (item 2's sibling) would be a second unseen item
    # an unseen item the decoder proposed itself stays, and counts towards the cap
    out, _ = mix_unseen(np.array([[5, 0, 1, 2]]), scores, siblings(), k=4, share=0.25)
    assert out.tolist() == [[5, 0, 1, 2]]  # no room left for 4, item 0's sibling
    out, _ = mix_unseen(np.array([[5, 0, 1, 2]]), scores, siblings(), k=4, share=0.0)
    assert out.tolist() == [[5, 0, 1, 2]]


def test_share_zero_returns_the_decoded_list_and_a_short_row_is_padded() -> None:
    items = np.array([[3, 1, -1, 0]])
    scores = np.array([[-1.0, -2.0, -np.inf, -3.0]], dtype=np.float32)
    out, out_scores = mix_unseen(items, scores, siblings(), k=4, share=0.0)
    assert out.tolist() == [[3, 1, 0, -1]]  # the invalid ID skipped; the row padded at the end
    assert out_scores[0, -1] == -np.inf
    out, _ = mix_unseen(items, scores, siblings(), k=4, share=1.0)
    assert out.tolist() == [[3, 1, 0, 4]]


def test_a_sibling_in_the_users_history_is_not_added() -> None:
    items = np.array([[0, 1, 2, 3]])
    scores = np.zeros((1, 4), dtype=np.float32)
    out, _ = mix_unseen(items, scores, siblings(), k=4, share=0.5, history=np.array([[4, -1]]))
    assert out.tolist() == [[0, 1, 2, 5]]


def test_the_prefix_defaults_to_all_levels_but_the_last_and_counts_the_reachable_items() -> None:
    s = siblings()
    assert s.prefix_levels == 2
    assert s.siblings(0) == [4] and s.siblings(2) == [5] and s.siblings(1) == [] and s.siblings(4) == []
    assert s.reachable == 2
    one = siblings(1)  # prefix (1,): items 0, 1 and 4; (3,): items 2 and 5
    assert one.siblings(1) == [4] and one.reachable == 2
    assert siblings(3).reachable == 0  # whole IDs are unique: no seen item shares one with an unseen one


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: PrefixSiblings(CODES, UNSEEN, 0), r"^prefix_levels=0 should be an integer in \[1, 3\]$"),
        (lambda: PrefixSiblings(CODES, UNSEEN, 4), r"^prefix_levels=4 should be an integer in \[1, 3\]$"),
        (lambda: PrefixSiblings(CODES, [9]), r"^unseen items should be indices in \[0, 6\), got 9$"),
        (lambda: PrefixSiblings(CODES[:, 0], UNSEEN), r"^codes should be \(n_items, levels\), got shape"),
        (lambda: PrefixSiblings(CODES, [-1, 4]), r"^unseen items should be indices in \[0, 6\), got -1$"),
        (
            lambda: PrefixSiblings(CODES, np.arange(6) >= 4),
            r"^unseen items should be item indices, not a mask: pass np\.flatnonzero\(mask\)$",
        ),
        (
            lambda: mix_unseen(np.zeros((1, 2), int), np.zeros((1, 2)), siblings(), 2, share=1.5),
            r"^unseen share=1\.5 should be a number in \[0, 1\], e\.g\. 0\.1$",
        ),
    ],
    ids=["prefix-0", "prefix-too-long", "unseen-out-of-range", "codes-1d", "negative", "mask", "share"],
)
def test_bad_input_is_one_clear_error(make, message: str) -> None:
    with pytest.raises(SemidError, match=message):
        make()


# --------------------------------------------------------------------------------------------------------
# A tiny TIGER on a cold-start split: the rule reaches cold targets the model alone never decodes
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cold_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RecData]:
    cold = walk_rec_data(40).with_cold_start(0.1, seed=0)
    run_dir = tmp_path_factory.mktemp("unseen") / "tiger"
    train = {**TINY_TIGER["train"], "epochs": 4, "batch_size": 32}
    fit("tiger", cold, run_dir, model_config=TINY_TIGER["model"], train_config=train)
    return run_dir, cold


def test_untrained_items_are_the_cold_items_of_the_split(cold_run) -> None:
    run_dir, _ = cold_run
    data = RecData.load(run_dir)
    np.testing.assert_array_equal(np.flatnonzero(untrained_items(data)), data.cold_items)


def test_each_list_holds_cold_items_within_the_cap_and_the_warm_items_in_decoded_order(cold_run) -> None:
    run_dir, _ = cold_run
    alone = evaluate_run(run_dir, "test", cold_start=True)
    # prefix 1 (the item's block of 8): the walk's next item shares it, so the rule reaches cold targets
    mixed = evaluate_run(run_dir, "test", cold_start=True, unseen_share=0.5, unseen_prefix=1)
    assert mixed["model_type"] == "tiger + unseen by prefix"
    assert mixed["unseen"] == {"share": 0.5, "prefix_levels": 1, "unseen_items": 4, "reachable": 4}
    assert mixed["model"]["n_users"] == alone["model"]["n_users"]
    metrics = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")
    none = evaluate_run(run_dir, "test", cold_start=True, unseen_share=0.0)  # share 0: TIGER's own lists
    assert [none["model"][m] for m in metrics] == [alone["model"][m] for m in metrics]
    # every list: no repeat, at most 5 of 10 cold items beyond those decoded
    from semid.rec.data import collate
    from semid.rec.runs import split_examples
    from semid.rec.train import load_model

    data = RecData.load(run_dir)
    tiger = load_model(run_dir)
    model = UnseenByPrefix(tiger, data.codes, data.cold_items, share=0.5, prefix_levels=1)
    examples = split_examples(model, data, "test")
    batch = collate(examples, np.arange(len(examples)), "cpu")
    items, _ = model.recommend(batch, 10)
    decoded, _ = tiger.recommend(batch, 10)
    is_cold = np.isin(items.numpy(), data.cold_items)
    decoded_cold = np.isin(decoded.numpy(), data.cold_items)
    assert (is_cold.sum(axis=1) <= np.maximum(5, decoded_cold.sum(axis=1))).all()
    assert is_cold.sum() > decoded_cold.sum()  # siblings were added
    cold = set(data.cold_items.tolist())
    for row, dec in zip(items.tolist(), decoded.tolist(), strict=True):
        assert len(set(row)) == len(row)
        warm = [i for i in row if i not in cold]
        # the decoded warm items keep their order; only the tail is pushed out, by at most 5
        assert warm == [i for i in dec if i not in cold][: len(warm)]
        assert len(warm) >= len([i for i in dec if i not in cold]) - 5
    assert isinstance(items, torch.Tensor) and items.shape == (len(examples), 10)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    cap = capsys.readouterr()
    return int(exc.value.code or 0), cap.out, cap.err


def test_evaluate_unseen_share_on_the_command_line(cold_run, capsys) -> None:
    run_dir, _ = cold_run
    argv = ["evaluate", str(run_dir), "--cold-start", "--unseen-share", "0.5", "--unseen-prefix", "1"]
    code, out, err = run([*argv, "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["unseen"]["reachable"] == 4 and res["model_type"] == "tiger + unseen by prefix"
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "unseen items by prefix: up to 50% of each list; 4 items in no training sequence, 4 of them" in out


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--unseen-prefix", "1"], "Error: --unseen-prefix applies with --unseen-share"),
        (["--unseen-share", "2"], "Error: unseen share=2.0 should be a number in [0, 1], e.g. 0.1"),
        (["--unseen-share", "0.1", "--unseen-prefix", "9"], "Error: prefix_levels=9 should be an integer in"),
        (
            ["--unseen-share", "0.1", "--unconstrained"],
            "Error: unseen items by prefix need constrained decoding (every decoded ID an item)",
        ),
    ],
    ids=["prefix-alone", "share", "prefix", "unconstrained"],
)
def test_bad_unseen_options_are_one_clear_error(cold_run, capsys, extra: list[str], message: str) -> None:
    run_dir, _ = cold_run
    code, out, err = run(["evaluate", str(run_dir), *extra], capsys)
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(message)


def test_unseen_items_on_a_sasrec_run_are_one_clear_error(cold_run, tmp_path: Path, capsys) -> None:
    _, cold = cold_run
    train = {"progress": False, "num_threads": 1, "autocast": "off", "tensorboard": False, "epochs": 1}
    sasrec = {"d_model": 16, "n_heads": 2, "n_layers": 1, "d_ff": 32, "max_len": 8, "dropout": 0.0}
    fit("sasrec", cold, tmp_path / "sasrec", model_config=sasrec, train_config=train)
    code, _, err = run(["evaluate", str(tmp_path / "sasrec"), "--unseen-share", "0.1"], capsys)
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        f"Error: {tmp_path / 'sasrec'} is a sasrec run: unseen items by prefix apply to TIGER, which decodes IDs"
    )
