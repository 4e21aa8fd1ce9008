"""The RQ-VAE trains data-parallel (two gloo ranks) as one process does on the same global batches: EMA
codebooks from statistics summed over ranks, dead-code resets and balanced assignment over the global batch."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from conftest import free_port
from semid.errors import SemidError
from semid.quantize.rq_vae import RQVAE
from semid.quantize.train import read_metrics

# 600 rows: the last batch of 600 % 128 = 88 rows is split over the ranks too; dead codes are re-seeded
OPTIONS = {
    "n_levels": 3, "codebook_size": 16, "latent_dim": 8, "hidden_dims": [32], "device": "cpu", "random_state": 0,
    "dead_code_threshold": 2.0, "balanced_last_level": True,
    "train": {"epochs": 6, "batch_size": 128, "lr": 3e-3, "eval_every": 3, "tensorboard": False, "precision": "fp32"},
}  # fmt: skip


def data() -> np.ndarray:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(24, 12))
    return (centres[rng.integers(0, 24, 600)] + 0.3 * rng.normal(size=(600, 12))).astype(np.float32)


def fit(run_dir: str) -> RQVAE:
    options = {**OPTIONS, "train": {**OPTIONS["train"], "run_dir": run_dir}}
    return RQVAE(**options).fit(data())


def _rank(rank: int, run_dir: str, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    model = fit(run_dir)
    np.save(os.path.join(out, f"codes{rank}.npy"), model.encode(data()))
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("rqvae_ddp")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        alone = fit(str(root / "one")).encode(data())
    finally:
        torch.set_num_threads(threads)
    port = free_port()
    torch.multiprocessing.spawn(_rank, args=(str(root / "two"), port, str(root)), nprocs=2)
    return root, alone


def test_two_ranks_log_the_losses_of_one_process(runs) -> None:
    root, _ = runs
    one, two = read_metrics(root / "one"), read_metrics(root / "two")
    assert [r["epoch"] for r in one] == [r["epoch"] for r in two] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(one, two, strict=True):
        for key in ("loss", "recon_loss", "commit_loss", "grad_norm_before"):
            assert b[key] == pytest.approx(a[key], rel=1e-4), key
    assert one[-1]["recon_loss"] < one[0]["recon_loss"]
    assert sum(r.get(k, 0) for r in one for k in r if k.startswith("dead_code_resets")) > 0  # resets happened


def test_two_ranks_give_every_item_the_codes_of_one_process(runs) -> None:
    root, alone = runs
    for rank in (0, 1):
        np.testing.assert_array_equal(np.load(root / f"codes{rank}.npy"), alone)


def test_rank_0_alone_writes_the_run(runs) -> None:
    root, _ = runs
    assert sorted(p.name for p in (root / "two").iterdir()) == sorted(
        p.name for p in (root / "one").iterdir()
    )
    assert len((root / "two" / "metrics.jsonl").read_text().splitlines()) == 6


def _bad_rank(rank: int, port: int, out: str, case: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    try:
        if case == "collab":
            RQVAE(**{**OPTIONS, "collab_weight": 0.1}).fit(data(), collab=data()[:, :4])
        else:
            RQVAE(**{**OPTIONS, "train": {**OPTIONS["train"], "batch_size": 1}}).fit(data())
    except SemidError as e:
        with open(os.path.join(out, f"error{rank}.json"), "w") as fh:
            json.dump(str(e), fh)
    finally:
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("collab", "collab_weight > 0 trains in one process: its in-batch negatives span the whole batch"),
        (
            "batch",
            "batch_size=1 is smaller than the 2 data-parallel ranks: every rank needs rows of each batch",
        ),
    ],
)
def test_what_two_ranks_cannot_train_is_one_clear_error_on_each(tmp_path, case, message) -> None:
    torch.multiprocessing.spawn(_bad_rank, args=(free_port(), str(tmp_path), case), nprocs=2)
    for rank in (0, 1):
        assert json.loads((tmp_path / f"error{rank}.json").read_text()) == message
