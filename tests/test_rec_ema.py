"""A moving average of the weights (``ema_decay``) is what a run validates and saves, resumes exactly, and
leaves training itself alone; with ``ema_select=False`` it is only validated beside the trained weights (its
ablation inside one run); TIGER's label smoothing is F.cross_entropy's, level by level."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from conftest import TINY_TIGER, walk_rec_data
from semid.errors import SemidError
from semid.rec.data import collate
from semid.rec.ema import WeightAverage
from semid.rec.evaluate import evaluate
from semid.rec.tiger import TIGERConfig
from semid.rec.train import (
    TrainConfig,
    build_model,
    default_train_config,
    fit,
    read_metrics,
    split_examples,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRAIN = {**TINY_TIGER["train"], "epochs": 3, "batch_size": 32}  # validated after every epoch


def train_tiny(data, run_dir: Path, **changes):
    """The tiny TIGER of the conftest trained on ``data`` into ``run_dir``, with ``changes`` to TRAIN."""
    return fit("tiger", data, run_dir, model_config=TINY_TIGER["model"], train_config={**TRAIN, **changes})


def state(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / "last" / "state.safetensors"))


# -- the average itself ---------------------------------------------------------------------------------


def test_the_average_follows_the_warmed_up_recurrence() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    ema = WeightAverage(model, decay=0.9)
    expected = {n: p.detach().clone() for n, p in model.named_parameters()}
    for n in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ema.update(model, n)
        d = min(0.9, (1 + n) / (10 + n))  # 0.1, 0.18, ..., 0.78 at n = 29: the cap only binds from n = 80
        for name, p in model.named_parameters():
            expected[name] = d * expected[name] + (1 - d) * p.detach()
    assert [ema.decay_at(n) for n in (0, 1, 80, 10**6)] == [0.1, 2 / 11, 0.9, 0.9]
    for name, avg in zip(ema.names, ema.shadow, strict=True):
        torch.testing.assert_close(avg, expected[name], rtol=1e-6, atol=1e-6)


def test_applied_swaps_the_average_in_and_restores_the_trained_weights_bit_for_bit() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    ema = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model, 100)  # decay 0.5: halfway between the start and now
    trained = {n: p.detach().clone() for n, p in model.named_parameters()}
    with ema.applied(model) as m:
        torch.testing.assert_close(m.weight, trained["weight"] - 0.5)
        torch.testing.assert_close(m.bias, trained["bias"])
    for n, p in model.named_parameters():
        assert torch.equal(p, trained[n])


def test_the_average_checkpoints_and_refuses_a_checkpoint_without_one() -> None:
    model = nn.Linear(3, 2)
    ema = WeightAverage(model, decay=0.99)
    saved = ema.state_dict()
    assert sorted(saved) == ["ema.bias", "ema.weight"]
    other = WeightAverage(nn.Linear(3, 2), decay=0.99)
    other.load_state_dict(saved)
    assert all(torch.equal(a, b) for a, b in zip(ema.shadow, other.shadow, strict=True))
    with pytest.raises(SemidError, match=r"^ckpt holds no weight average for 'weight'; it was saved without"):
        other.load_state_dict({}, "ckpt")


@pytest.mark.parametrize("decay", [1.0, 1.5, -0.1, True])
def test_a_decay_outside_0_1_is_refused(decay) -> None:
    with pytest.raises(SemidError, match=r"^ema_decay="):
        TrainConfig(ema_decay=decay).validate()


def test_validating_the_average_beside_a_run_that_keeps_none_is_refused() -> None:
    with pytest.raises(SemidError, match=r"^ema_select=false validates a weight average .*: set ema_decay$"):
        TrainConfig(ema_select=False).validate()
    with pytest.raises(SemidError, match=r"^ema_select='no' should be true or false$"):
        TrainConfig(ema_decay=0.9, ema_select="no").validate()


# -- in a training run ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same tiny TIGER trained with and without the average (same seed, same batches)."""
    data = walk_rec_data()
    root = tmp_path_factory.mktemp("ema")
    _, plain = train_tiny(data, root / "plain")
    model, averaged = train_tiny(data, root / "ema", ema_decay=0.9)
    return data, root, plain, averaged, model


def test_with_ema_select_false_the_run_is_the_plain_one_and_logs_the_average_beside_it(
    runs, tmp_path
) -> None:
    _, root, plain, averaged, _ = runs
    data = walk_rec_data()
    _, both = train_tiny(data, tmp_path / "both", ema_decay=0.9, ema_select=False)
    keys = ["ndcg@5", "ndcg@10", "recall@5", "recall@10"]
    # what it validates, selects and saves is the plain run's: the trained weights ...
    assert [[r[f"valid/{k}"] for k in keys] for r in both.history] == [
        [r[f"valid/{k}"] for k in keys] for r in plain.history
    ]
    assert (both.best_epoch, both.best_valid) == (plain.best_epoch, plain.best_valid)
    saved, plain_saved = (
        load_file(str(d / "model.safetensors")) for d in (tmp_path / "both", root / "plain")
    )
    assert all(torch.equal(saved[k], plain_saved[k]) for k in plain_saved)
    # ... and beside them the average scores exactly what the averaged run validated, epoch by epoch
    assert [[r[f"valid_ema/{k}"] for k in keys] for r in both.history] == [
        [r[f"valid/{k}"] for k in keys] for r in averaged.history
    ]
    assert not any(k.startswith("valid_ema/") for r in plain.history + averaged.history for k in r)


@pytest.fixture(scope="module")
def validated_last(tmp_path_factory):
    """The averaged run validated once, after its last epoch: its best model is its last average."""
    data = walk_rec_data()
    run_dir = tmp_path_factory.mktemp("ema-last") / "run"
    model, result = train_tiny(data, run_dir, ema_decay=0.9, eval_every=3)
    return data, run_dir, result, model


def test_training_itself_is_unchanged_by_the_average(runs) -> None:
    _, root, plain, averaged, _ = runs
    # the same losses, and the same trained weights at the end, though the average was swapped in and out
    # for each epoch's validation: only what is validated and saved differs
    assert len(averaged.history) == 3 and all("valid/ndcg@10" in r for r in averaged.history)
    assert [r["loss"] for r in plain.history] == [r["loss"] for r in averaged.history]
    a, b = state(root / "plain"), state(root / "ema")
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("model."))
    assert not any(k.startswith("ema.") for k in a) and any(k.startswith("ema.") for k in b)


def test_the_saved_model_is_the_average_that_validation_scored(validated_last) -> None:
    data, run_dir, averaged, model = validated_last
    weights = load_file(str(run_dir / "model.safetensors"))
    last = state(run_dir)
    assert averaged.best_epoch == averaged.epochs == 3  # validated once, at the last epoch
    averaged_names = [name for name in weights if f"ema.{name}" in last]
    assert len(averaged_names) > 10  # every weight matrix, embedding and norm; not the item-code buffer
    for name in averaged_names:  # the saved model is the average ...
        assert torch.equal(weights[name], last[f"ema.{name}"]), name
    # ... not the trained weights (a weight that never moved would be both)
    moved = [name for name in averaged_names if not torch.equal(weights[name], last[f"model.{name}"])]
    assert len(moved) > len(averaged_names) // 2
    # what validation logged for the best epoch is what the saved model scores now
    res = evaluate(model, split_examples(model, data, "valid"), batch_size=TrainConfig().eval_batch_size)
    best = next(r for r in read_metrics(run_dir) if r["epoch"] == averaged.best_epoch)
    assert res.metrics["ndcg@10"] == pytest.approx(best["valid/ndcg@10"])
    assert res.metrics == pytest.approx(averaged.best_valid)


def test_a_stopped_run_resumes_to_the_same_average(runs, tmp_path: Path) -> None:
    data, root, _, averaged, _ = runs
    _, first = train_tiny(data, tmp_path / "split", ema_decay=0.9, max_steps=7)
    assert (first.steps, first.stopped) == (7, "max_steps")
    _, rest = fit("tiger", None, tmp_path / "split", train_config={"max_steps": 0}, resume=True)
    assert rest.steps == averaged.steps
    a, b = state(root / "ema"), state(tmp_path / "split")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_a_run_checkpointed_before_these_options_existed_resumes(runs, tmp_path: Path) -> None:
    data, root, plain, _, _ = runs
    train_tiny(data, tmp_path / "old", max_steps=7)
    trainer = tmp_path / "old" / "checkpoints" / "last" / "trainer.json"
    meta = json.loads(trainer.read_text())
    # as written before they were added
    del meta["model"]["label_smoothing"], meta["train"]["ema_decay"], meta["train"]["ema_select"]
    trainer.write_text(json.dumps(meta))
    # a full TrainConfig names ema_decay (0): the same as the checkpoint's, which predates it
    full = default_train_config("tiger", **TRAIN)
    _, rest = fit("tiger", None, tmp_path / "old", train_config=full, resume=True)
    assert rest.steps == plain.steps
    a, b = state(root / "plain"), state(tmp_path / "old")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a missing option that is not one of those added later still means another model
    meta["model"].pop("dropout")
    trainer.write_text(json.dumps(meta))
    with pytest.raises(SemidError, match="the checkpoint holds another model"):
        fit("tiger", None, tmp_path / "old", resume=True)


# -- label smoothing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_label_smoothing_is_cross_entropy_against_the_smoothed_target_per_level(eps: float) -> None:
    data = walk_rec_data()
    model = build_model("tiger", data, **TINY_TIGER["model"], label_smoothing=eps)
    plain = build_model("tiger", data, **TINY_TIGER["model"])
    plain.load_state_dict(model.state_dict())
    model.eval()
    plain.eval()
    batch = collate(split_examples(model, data, "valid"), np.arange(16))
    with torch.no_grad():
        memory, mask = model.encode(batch.history, batch.user)
        target = model.item_codes[batch.target]  # (B, L)
        h, _ = model.decode(model.decoder_inputs(target[:, :-1]), model.memory_kv(memory), mask)
        expected = 0.0
        for lv in range(model.n_levels):
            logp = F.log_softmax(model.level_logits(h[:, lv], lv).float(), -1)  # (B, K_lv)
            nll = -logp.gather(1, target[:, lv : lv + 1])[:, 0]
            expected += ((1 - eps) * nll - eps * logp.mean(-1)).mean()
        expected /= model.n_levels
        torch.testing.assert_close(model.loss(batch), expected, rtol=1e-5, atol=1e-6)
        if eps == 0:  # no smoothing is the plain loss, as before the option existed
            torch.testing.assert_close(model.loss(batch), plain.loss(batch), rtol=0, atol=0)


@pytest.mark.parametrize("bad", [1.0, -0.1, "0.1", True])
def test_a_label_smoothing_outside_0_1_is_refused(bad) -> None:
    with pytest.raises(SemidError, match=r"^label_smoothing="):
        TIGERConfig(codebook_sizes=[4], n_items=4, label_smoothing=bad).validate()
