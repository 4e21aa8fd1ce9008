"""The query LM trains data-parallel (two gloo ranks) exactly as one process on the same global batches."""

from __future__ import annotations

import json
import os

import pytest
import torch

from conftest import WordHashEmbedder, free_port
from semid.data import make_demo_dataset
from semid.llm.examples import ExampleConfig, prepare_dataset
from semid.llm.model import ScratchConfig, load_llm
from semid.llm.prefix import PrefixConfig
from semid.llm.train import TrainConfig, train_llm
from test_llm_train import tiny_ids

TINY = ScratchConfig(vocab_size=400, hidden_size=64, n_layers=2, n_heads=2, intermediate_size=128)


def config(prefix: bool) -> TrainConfig:
    return TrainConfig(
        scratch=TINY, query_prefix=PrefixConfig() if prefix else None, max_steps=12, batch_size=16, lr=3e-3,
        warmup_steps=4, eval_every=0, eval_queries=16, save_every=0, log_every=1, progress=False, seed=0,
        device="cpu",
    )  # fmt: skip


def _train_rank(rank: int, data: str, out: str, port: int, prefix: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.set_num_threads(1)
    train_llm(data, out, config(prefix), query_encoder=WordHashEmbedder() if prefix else None)
    torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    cat = make_demo_dataset(n_items=32, n_users=5, seed=0).catalogue
    out = tmp_path_factory.mktemp("llm_ddp")
    prepare_dataset(
        cat, tiny_ids(cat.item_ids), out, ExampleConfig(n_per_item=3, attribute_examples=False, seed=0)
    )
    return out


def losses(model_dir) -> list[float]:
    rows = [json.loads(x) for x in (model_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.parametrize("prefix", [True], ids=["query-prefix"])  # the prefix and code head train too
def test_two_ranks_train_the_query_lm_as_one_process(prepared, tmp_path, one_torch_thread, prefix) -> None:
    alone = train_llm(
        prepared, tmp_path / "one", config(prefix), query_encoder=WordHashEmbedder() if prefix else None
    )
    port = free_port()
    torch.multiprocessing.spawn(
        _train_rank, args=(str(prepared), str(tmp_path / "two"), port, prefix), nprocs=2
    )
    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == alone.steps == 12
    assert two == pytest.approx(one, rel=1e-5)
    assert one[-1] < one[0]
    encoder = WordHashEmbedder() if prefix else None
    a, b = (load_llm(tmp_path / name, query_encoder=encoder) for name in ("one", "two"))
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )
