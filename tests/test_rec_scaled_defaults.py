"""TIGER's defaults scale with the data: small data gets a small model, options given still win one by one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import load_bench, walk_rec_data, write_grid_ids, write_walk_shop
from semid.data import Sequences
from semid.rec.config import TIGER_SHAPE, TIGER_SMALL_SHAPE, TIGER_SMALL_TARGETS, scaled_shape
from semid.rec.data import RecData
from semid.rec.tiger import TIGERConfig
from semid.rec.train import build_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
BOUND, SMALL = TIGER_SMALL_TARGETS, TIGER_SMALL_SHAPE


def shape_of(config: object) -> dict[str, int]:
    return {k: getattr(config, k) for k in TIGER_SHAPE}


def test_training_targets_are_the_training_items_after_each_users_first() -> None:
    # Lengths 5, 3 and 4 leave 3, 1 and 2 training items (the last two are validation and test targets):
    # 2 + 0 + 1 targets.
    data = RecData(
        item_ids=np.array(["a", "b", "c", "d", "e"], dtype=object),
        sequences=Sequences(np.array([0, 5, 8, 12]), np.array([0, 1, 2, 3, 4, 1, 2, 3, 4, 0, 1, 2])),
        user_ids=np.array(["u", "v", "w"], dtype=object),
    )
    assert data.n_train_targets == 3
    # A streamed log's size is not read up front.
    log = RecData(
        data.item_ids,
        Sequences(np.zeros(1, dtype=np.int64), np.zeros(0, dtype=np.int64)),
        data.user_ids[:0],
        log="x",
    )
    assert log.n_train_targets is None


def test_the_scaled_shape_is_the_small_one_up_to_its_bound_and_the_paper_shape_above() -> None:
    assert scaled_shape("tiger", 1) == SMALL
    assert scaled_shape("tiger", BOUND) == SMALL
    assert scaled_shape("tiger", BOUND + 1) == {}  # TIGERConfig's own: the paper's 4+4 layers of 128
    assert scaled_shape("tiger", None) == {}  # a streamed log: its size is not read up front
    assert scaled_shape("sasrec", 1) == scaled_shape("rpg", 1) == {}  # only TIGER scales
    assert set(SMALL) == set(TIGER_SHAPE)
    paper = TIGERConfig()
    assert SMALL["d_model"] < paper.d_model and SMALL["n_encoder_layers"] < paper.n_encoder_layers


def test_build_model_gives_small_data_the_small_shape_and_large_data_the_paper_shape() -> None:
    small = build_model("tiger", walk_rec_data()).config
    assert shape_of(small) == SMALL
    data = walk_rec_data(n_users=BOUND // 2 + 1)  # 5 to 9 items a user: 2 to 6 targets, over the bound
    assert data.n_train_targets > BOUND
    large = build_model("tiger", data).config
    paper = TIGERConfig()
    assert shape_of(large) == shape_of(paper)


def test_options_given_override_the_scaled_defaults_one_by_one() -> None:
    config = build_model("tiger", walk_rec_data(), n_encoder_layers=3, d_ff=512).config
    assert (config.n_encoder_layers, config.d_ff) == (3, 512)
    assert (config.d_model, config.n_decoder_layers) == (SMALL["d_model"], SMALL["n_decoder_layers"])


@pytest.mark.parametrize("name", ["tiger-beauty.json", "tiger-paper.json"])
def test_the_shipped_tiger_recipes_pin_their_shape_whatever_the_data_size(name: str) -> None:
    recipe = json.loads((CONFIGS / name).read_text())["model"]
    config = build_model("tiger", walk_rec_data(), **recipe).config
    paper = TIGERConfig()
    assert shape_of(config) == shape_of(paper)


def test_the_cli_says_when_it_scales_the_model_down(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import semid.cli.rec  # noqa: F401  (registers the commands)
    from semid.cli import main

    (tmp_path / "data").mkdir()
    write_walk_shop(tmp_path / "data", 40, n_users=60, lengths=(5, 10))
    write_grid_ids(tmp_path / "ids.parquet", 40)
    argv = ["train", "tiger", str(tmp_path / "data"), "--ids", str(tmp_path / "ids.parquet"), "--epochs", "1"]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "-o", str(tmp_path / "run"), "--quiet", "--threads", "1"])
    assert exc.value.code in (0, None)
    err = capsys.readouterr().err
    n = RecData.load(tmp_path / "run").n_train_targets
    assert (
        f"{n:,} training targets: a smaller TIGER than the paper's, the defaults for data this small (" in err
    )
    assert ", ".join(f"{k}={v}" for k, v in SMALL.items()) in err
    model = json.loads((tmp_path / "run" / "config.json").read_text())["model"]
    assert {k: model[k] for k in TIGER_SHAPE} == SMALL
    # An option in the config file wins, and the message names only the others.
    (tmp_path / "paper.json").write_text(json.dumps({"model": {"d_model": 128}}))
    with pytest.raises(SystemExit):
        main(
            [
                *argv,
                "-o",
                str(tmp_path / "run2"),
                "--quiet",
                "--threads",
                "1",
                "--config",
                str(tmp_path / "paper.json"),
            ]
        )
    err = capsys.readouterr().err
    assert f"({', '.join(f'{k}={v}' for k, v in SMALL.items() if k != 'd_model')})" in err
    assert json.loads((tmp_path / "run2" / "config.json").read_text())["model"]["d_model"] == 128


def test_the_bench_subsample_keeps_whole_users_and_the_catalogue() -> None:
    bench = load_bench("scaled_defaults")
    data = walk_rec_data(n_users=200)
    part = bench.subsample(data, 0.25)
    assert part.n_users == 50 and part.n_items == data.n_items and part.codes is data.codes
    rows = {u: i for i, u in enumerate(data.user_ids)}
    for j, u in enumerate(part.user_ids):  # each kept user has its whole sequence
        assert part.sequences.row(j).tolist() == data.sequences.row(rows[u]).tolist()
    assert bench.subsample(data, 0.25).user_ids.tolist() == part.user_ids.tolist()  # seeded


def test_the_bench_table_averages_seeds_and_divides_by_the_paper_shape() -> None:
    bench = load_bench("scaled_defaults")
    run = {"fraction": 0.1, "users": 10, "examples": 30, "params": 5, "R@10": 0.1, "best epoch": 3}
    results = {
        "a": {**run, "shape": "paper", "N@10": 0.02, "epochs": 5, "train min": 2.0},
        "b": {**run, "shape": "small", "N@10": 0.03, "epochs": 6, "train min": 1.0},
        "c": {**run, "shape": "small", "N@10": 0.05, "epochs": 8, "train min": 3.0},
    }
    paper, small = bench.table(results)
    assert (paper["shape"], paper["N@10 / paper"], paper["seeds"]) == ("paper", 1.0, 1)
    assert (small["N@10"], small["epochs"], small["train min"], small["seeds"]) == (0.04, 7, 2.0, 2)
    assert small["N@10 / paper"] == pytest.approx(2.0)
    # a run with a --model-set option is its own row, named by it, still divided by the plain paper shape
    results["d"] = {**results["b"], "N@10": 0.06, "options": "label_smoothing=0.1"}
    rows = bench.table(results)
    assert [r["shape"] for r in rows] == ["paper", "small", "small label_smoothing=0.1"]
    assert rows[2]["N@10 / paper"] == pytest.approx(3.0) and rows[1]["seeds"] == 2
