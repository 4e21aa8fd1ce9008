"""The RQ-VAE trainer: resume after a kill, checkpoints, metrics log, schedule, clipping, accumulation."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY_RQVAE, clustered, dead_pid
from semid._outputs import _HOST
from semid.errors import SemidError
from semid.quantize.rq_vae import RQVAE
from semid.quantize.train import TrainConfig, Trainer, read_checkpoint_meta, read_metrics

TINY = TINY_RQVAE
TIMING = ("train_s", "eval_s")


def tiny(**kw) -> RQVAE:
    return RQVAE(**{**TINY, **kw})


def untimed(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING} for r in history]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered(n=400, dim=16, centres=12, noise=0.3)


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> RQVAE:
    run = tmp_path_factory.mktemp("full") / "run"
    return tiny(run_dir=str(run), dropout=0.1, save_every_steps=10).fit(data)


def test_resume_after_stopping_reproduces_the_uninterrupted_run(tmp_path, data, uninterrupted):
    run = tmp_path / "run"
    first = tiny(run_dir=str(run), dropout=0.1, save_every_steps=10).fit(data, stop_after_epochs=3)
    assert first.n_epochs_ == 3 and read_checkpoint_meta(run)["state"]["epoch"] == 3
    with open(run / "metrics.jsonl", "a") as f:  # killed while appending epoch 4's line: dropped on resume
        f.write('{"epoch": 4, "lo')
    resumed = RQVAE(device="cpu").fit(data, resume=run)  # the stored config is used, not the default one
    assert resumed.config.replace(run_dir=None) == uninterrupted.config.replace(run_dir=None)
    assert resumed.n_epochs_ == 6 and resumed.n_steps_ == uninterrupted.n_steps_
    np.testing.assert_array_equal(resumed.encode(data), uninterrupted.encode(data))
    assert untimed(resumed.history_) == untimed(uninterrupted.history_)
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2, 3, 4, 5, 6]


def test_a_new_run_never_writes_into_a_folder_of_other_files(tmp_path, data):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.jsonl").write_text('{"mine": 1}\n')
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(SemidError, match=r"mine holds files that are not an RQ-VAE run directory"):
        tiny(run_dir=str(mine)).fit(data)
    assert sorted(p.name for p in mine.iterdir()) == ["metrics.jsonl", "notes.txt"]
    assert (mine / "metrics.jsonl").read_text() == '{"mine": 1}\n'


def test_resume_from_a_mid_epoch_step_checkpoint(tmp_path, data, uninterrupted):
    run = tmp_path / "run"
    tiny(run_dir=str(run), dropout=0.1, save_every_steps=10).fit(data, stop_after_epochs=3)
    # step 10 falls in epoch 3 (4 steps per epoch): resume from there, in the middle of an epoch
    step10 = run / "checkpoints" / "step-000010"
    assert read_checkpoint_meta(step10)["state"]["batch_in_epoch"] == 2
    resumed = RQVAE().fit(data, resume=step10)
    np.testing.assert_array_equal(resumed.encode(data), uninterrupted.encode(data))
    assert untimed(resumed.history_) == untimed(uninterrupted.history_)


def _checkpoint_epoch(run) -> int:
    """The epoch of the run's last checkpoint, 0 while none is readable (the trainer swaps it in by rename)."""
    try:
        return json.loads((run / "checkpoints" / "last" / "trainer.json").read_text())["state"]["epoch"]
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def test_a_killed_training_process_resumes_and_ends_like_an_uninterrupted_run(tmp_path, data):
    np.save(tmp_path / "X.npy", data)
    run = tmp_path / "run"
    opts = {**TINY, "epochs": 8, "run_dir": str(run)}
    script = textwrap.dedent(
        f"""
        import time, numpy as np, torch
        from semid.quantize.rq_vae import RQVAE, RQVAENet
        torch.set_num_threads(1)
        evaluate = RQVAENet.evaluate
        def slow_evaluate(self, X, extra=None):  # slow the epochs down so the kill lands mid-run
            time.sleep(0.4)
            return evaluate(self, X, extra)
        RQVAENet.evaluate = slow_evaluate
        RQVAE(**{opts!r}).fit(np.load({str(tmp_path / "X.npy")!r}))
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if _checkpoint_epoch(run) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    killed_at = read_checkpoint_meta(run)["state"]["epoch"]
    assert 2 <= killed_at < 8
    resumed = RQVAE().fit(data, resume=run)
    reference = tiny(epochs=8).fit(data)
    assert resumed.n_epochs_ == 8
    last, ref = resumed.history_[-1], reference.history_[-1]
    for key in ("recon_loss", "commit_loss", "unique_share", "usage_l0", "usage_l1", "residual_norm_l2"):
        assert last[key] == pytest.approx(ref[key], rel=1e-3, abs=1e-4), key
    assert [r["epoch"] for r in read_metrics(run)] == list(range(1, 9))  # no epoch logged twice


def test_a_kill_between_the_two_renames_of_a_checkpoint_swap_still_resumes(tmp_path, data, uninterrupted):
    run = tmp_path / "run"
    tiny(run_dir=str(run), dropout=0.1, save_every_steps=10).fit(data, stop_after_epochs=3)
    last = run / "checkpoints" / "last"
    aside = run / "checkpoints" / f".last.{_HOST}.{dead_pid()}.k1ll3d.old"
    last.rename(aside)  # the old copy moved aside, the new one not yet in
    # Reading the run finds that copy and moves nothing: only the resuming process renames it back.
    assert read_checkpoint_meta(run)["state"]["epoch"] == 3 and aside.is_dir() and not last.exists()
    resumed = RQVAE().fit(data, resume=run)
    assert last.is_dir() and not list(last.parent.glob(".last.*"))
    # A copy an earlier kill left aside goes with the next swap, so at most one ever lies there.
    stale = run / "checkpoints" / f".last.{_HOST}.{dead_pid()}.stale.old"
    stale.mkdir()
    from semid._utils import atomic_path

    with atomic_path(last, is_dir=True, replaceable=lambda _: True) as tmp:  # as the trainer swaps it
        (tmp / "x").write_text("new")
    assert (last / "x").read_text() == "new" and not stale.exists()
    np.testing.assert_array_equal(resumed.encode(data), uninterrupted.encode(data))


def test_resume_rejects_other_data(tmp_path, data):
    run = tmp_path / "run"
    tiny(run_dir=str(run)).fit(data, stop_after_epochs=1)
    with pytest.raises(SemidError) as e:
        RQVAE().fit(data[:-1], resume=run)
    assert "this run was trained on other data" in str(e.value)
    with pytest.raises(SemidError) as e:
        RQVAE().fit(data, resume=tmp_path / "nowhere")
    assert str(e.value) == f"{tmp_path / 'nowhere'}: no such run directory to resume"


def test_metrics_jsonl_has_one_record_per_epoch_with_the_health_signals(uninterrupted):
    run = uninterrupted.config.train.run_dir
    records = read_metrics(run)
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in records] == [4, 8, 12, 16, 20, 24]
    expected = {
        "loss", "recon_loss", "commit_loss", "codebook_loss", "rel_error", "lr", "unique_share",
        "grad_norm_before", "grad_norm_after", "grad_norm_max", "train_s",
        "usage_l0", "usage_l1", "perplexity_l0", "perplexity_l1",
        "residual_norm_l0", "residual_norm_l1", "residual_norm_l2", "dead_code_resets_l0", "dead_code_resets_l1",
    }  # fmt: skip
    assert expected <= set(records[0])
    assert untimed(records) == untimed(uninterrupted.history_)
    assert all(0 < r["perplexity_l0"] <= 8 and 0 < r["unique_share"] <= 1 for r in records)
    assert [r["epoch"] for r in records if "eval_s" in r] == [6]  # eval_every=10: the last epoch only


def test_between_full_evaluations_the_health_metrics_come_from_the_training_pass(data):
    model = tiny(epochs=8, eval_every=2).fit(data)
    h = model.history_
    assert [r["epoch"] for r in h if "eval_s" in r] == [2, 4, 6, 8]
    health = ("unique_share", "usage_l0", "usage_l1", "perplexity_l0", "perplexity_l1", "residual_norm_l2")
    assert all(set(health) <= set(r) for r in h)
    # A full pass gives exactly the metrics of the codes encode() assigns...
    assert model.net_.code_metrics(model.encode(data)).items() <= h[-1].items()
    # ...and once past the first epochs' dead-code resets, the training pass's codes (one model state per
    # batch, dropout on) tell the same story as a full pass after the epoch.
    every = tiny(epochs=8, eval_every=1).fit(data).history_
    for epoch in (5, 7):
        for key in health:
            assert h[epoch - 1][key] == pytest.approx(every[epoch - 1][key], rel=0.15), (epoch, key)


def test_checkpoints_hold_config_step_optimizer_and_the_best_epoch(uninterrupted):
    ckpts = Path(uninterrupted.config.train.run_dir) / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["best", "last", "step-000010", "step-000020"]
    last = read_checkpoint_meta(ckpts / "last")
    assert last["state"]["step"] == 24 and last["state"]["done"] is True
    assert last["config"]["latent_dim"] == 4 and last["config"]["train"]["epochs"] == 6
    assert last["optimizer"]["param_groups"][0]["lr"] > 0
    from safetensors.numpy import load_file

    tensors = load_file(str(ckpts / "last" / "state.safetensors"))
    assert any(k.startswith("optim.") and k.endswith("exp_avg") for k in tensors)
    assert {"rng.torch", "rng.batch", "rng.aux", "model.rvq.levels.0.cluster_size"} <= set(tensors)
    best = read_checkpoint_meta(ckpts / "best")["state"]
    shares = [r["unique_share"] for r in uninterrupted.history_]
    assert best["best_value"] == max(shares) and best["best_epoch"] == shares.index(max(shares)) + 1


def test_restore_best_ends_with_the_best_epochs_weights(tmp_path, data):
    model = tiny(run_dir=str(tmp_path / "run"), restore_best=True, best_metric="recon_loss").fit(data)
    best_epoch = min(model.history_, key=lambda r: r["recon_loss"])["epoch"]
    from safetensors.torch import load_file

    best = load_file(str(tmp_path / "run" / "checkpoints" / "best" / "state.safetensors"))
    torch.testing.assert_close(model.net_.encoder[0].weight, best["model.encoder.0.weight"])
    assert (
        read_checkpoint_meta(tmp_path / "run" / "checkpoints" / "best")["state"]["best_epoch"] == best_epoch
    )


def test_gradient_clipping_logs_norms_before_and_after(data):
    model = tiny(clip_grad_norm=1e-3, epochs=2).fit(data)
    for r in model.history_:
        assert r["grad_norm_before"] > 1e-3
        assert r["grad_norm_after"] == pytest.approx(1e-3, rel=1e-3)
        assert r["grad_norm_max"] >= r["grad_norm_before"]
    free = tiny(clip_grad_norm=0, epochs=2).fit(data)
    assert all(r["grad_norm_after"] == r["grad_norm_before"] for r in free.history_)


def test_full_batch_and_adagrad_train_one_step_per_epoch(data):
    model = tiny(batch_size=0, optimizer="adagrad", epochs=3).fit(data)
    assert model.n_steps_ == 3
    assert model.history_[-1]["recon_loss"] < model.history_[0]["recon_loss"]


def test_tensorboard_gets_every_scalar_when_installed(tmp_path, data, monkeypatch):
    logged = []

    class FakeWriter:
        def __init__(self, log_dir):
            logged.append(("dir", log_dir))

        def add_scalar(self, tag, value, step):
            logged.append((tag, step))

        def flush(self):
            pass

        def close(self):
            logged.append(("closed", None))

    monkeypatch.setitem(
        sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter)
    )
    tiny(run_dir=str(tmp_path / "run"), epochs=2).fit(data)
    assert logged[0] == ("dir", str(tmp_path / "run" / "tensorboard")) and logged[-1] == ("closed", None)
    assert ("unique_share", 2) in logged and ("usage_l1", 1) in logged and ("grad_norm_before", 2) in logged


def test_progress_bar_when_verbose(data, capsys):
    RQVAE(**{**TINY, "epochs": 2}, verbose=True).fit(data)
    err = capsys.readouterr().err
    assert "RQ-VAE" in err and "2/2" in err


# -- the Trainer on a model small enough to reason about ---------------------------------------------------
class Linear(torch.nn.Module):
    """y = x w: the Trainer contract around a least-squares problem."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(3, 1))

    def prepare(self, X, extra, rng, rows_per_step):
        pass

    def training_loss(self, x, extra, generator):
        loss = (x @ self.w - extra).square().mean()
        return loss, {"loss": loss.item()}

    def evaluate(self, X, extra):
        return {"fit_error": (X @ self.w - extra).square().mean().item()}


def _regression(n: int = 120) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, 3, generator=g)
    return X, X @ torch.tensor([[1.0], [-2.0], [0.5]])


def test_gradient_accumulation_equals_the_larger_batch():
    X, y = _regression()
    big, acc = Linear(), Linear()
    Trainer(big, TrainConfig(epochs=3, batch_size=40, lr=0.05, clip_grad_norm=0), seed=0).fit(X, y)
    Trainer(acc, TrainConfig(epochs=3, batch_size=20, grad_accum=2, lr=0.05, clip_grad_norm=0), seed=0).fit(
        X, y
    )
    torch.testing.assert_close(acc.w, big.w, atol=1e-4, rtol=0)  # same steps, up to float summation order
    other = Linear()
    Trainer(other, TrainConfig(epochs=3, batch_size=20, lr=0.05, clip_grad_norm=0), seed=0).fit(X, y)
    assert (other.w - big.w).abs().max() > 1e-2  # without accumulation: twice the steps


def test_lr_schedule_warmup_then_cosine_to_the_floor():
    t = Trainer(Linear(), TrainConfig(lr=1.0, warmup_steps=4, min_lr_ratio=0.1, schedule="cosine"))
    assert [t._lr(s, 14) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert t._lr(4, 14) == pytest.approx(1.0)
    assert t._lr(9, 14) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the decay
    assert t._lr(14, 14) == pytest.approx(0.1)
    flat = Trainer(Linear(), TrainConfig(lr=0.3, schedule="constant"))
    assert {flat._lr(s, 10) for s in range(10)} == {0.3}


def test_trainer_learns_and_logs_lr_per_epoch():
    X, y = _regression()
    model = Linear()
    state = Trainer(
        model, TrainConfig(epochs=20, batch_size=30, lr=0.1, schedule="constant", eval_every=1), seed=0
    ).fit(X, y)
    assert state.history[-1]["fit_error"] < 1e-3 < state.history[0]["fit_error"]
    assert {r["lr"] for r in state.history} == {0.1}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"grad_accum": 0}, "grad_accum=0 should be an integer >= 1"),
        ({"schedule": "step"}, "schedule='step' is not one of 'cosine', 'constant'"),
        ({"precision": "fp16"}, "precision='fp16' is not one of 'auto', 'fp32', 'bf16'"),
        ({"clip_grad_norm": -1}, "clip_grad_norm=-1 should be a number >= 0"),
        ({"min_lr_ratio": 2}, "min_lr_ratio=2 should be a number >= 0 and <= 1"),
    ],
    ids=["grad_accum", "schedule", "precision", "clip", "min_lr_ratio"],
)
def test_bad_train_options_are_rejected(options, message):
    with pytest.raises(SemidError) as e:
        Trainer(Linear(), TrainConfig(**options))
    assert str(e.value) == message
