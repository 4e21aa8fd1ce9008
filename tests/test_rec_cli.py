"""`semid train`, `semid evaluate`, `semid recommend` in-process: exit codes, outputs and exact errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import semid.cli.rec  # noqa: F401  (registers the commands)
from conftest import TINY_TIGER, write_walk_shop
from semid.cli import main
from semid.ids.table import IdTable, write_ids

N_ITEMS = 40
TINY = {"model": TINY_TIGER["model"], "train": {**TINY_TIGER["train"], "epochs": 10, "batch_size": 32}}


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny models, one thread


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """items.csv + interactions.csv (users walk the catalogue in order), ids.parquet, config.json."""
    root = tmp_path_factory.mktemp("shop")
    data = root / "data"
    data.mkdir()
    write_walk_shop(data, N_ITEMS, n_users=120, lengths=(5, 10))
    with (data / "interactions.csv").open("a") as fh:
        fh.write("lonely,i3,0\n")  # one user with a single interaction: left out, and said so
    codes = np.stack([np.arange(N_ITEMS) // 5, np.arange(N_ITEMS) % 5], axis=1)
    ids = IdTable(
        np.array([f"i{i}" for i in range(N_ITEMS)], dtype=object),
        [f"{a}-{b}" for a, b in codes],
        codes,
        codes,
    )
    write_ids(root / "ids.parquet", ids)
    partial = IdTable(ids.item_ids[:-1], ids.semantic_ids[:-1], codes[:-1], codes[:-1])
    write_ids(root / "partial.parquet", partial)
    (root / "config.json").write_text(json.dumps(TINY))
    return root


@pytest.fixture(scope="module")
def tiger_run(shop: Path) -> Path:
    run_dir = shop / "runs" / "tiger"
    with pytest.raises(SystemExit) as exc:
        main(
            ["train", "tiger", str(shop / "data"), "--ids", str(shop / "ids.parquet"), "-o", str(run_dir)]
            + ["--config", str(shop / "config.json"), "--quiet"]
        )
    assert exc.value.code in (0, None)
    return run_dir


def test_train_writes_a_complete_run(tiger_run: Path) -> None:
    for name in ("config.json", "model.safetensors", "items.parquet", "sequences.parquet", "metrics.jsonl"):
        assert (tiger_run / name).is_file(), name
    config = json.loads((tiger_run / "config.json").read_text())
    assert config["model_type"] == "tiger"
    assert config["model"]["codebook_sizes"] == [8, 5]  # from the IDs
    assert config["train"]["epochs"] == 10 and config["data"]["paths"][0].endswith("data")
    assert len((tiger_run / "metrics.jsonl").read_text().splitlines()) == 10


def test_evaluate_json(tiger_run: Path, capsys) -> None:
    code, out, err = run(["evaluate", str(tiger_run), "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert (res["model_type"], res["split"]) == ("tiger", "test")
    assert res["model"]["n_users"] == 120
    assert res["model"]["invalid_rate"] == 0.0
    assert res["model"]["recall@10"] > res["most_popular"]["recall@10"]
    assert set(res["most_popular"]) == {"recall@5", "ndcg@5", "recall@10", "ndcg@10"}


def test_evaluate_table_shows_the_baseline_and_decoding_speed(tiger_run: Path, capsys) -> None:
    code, out, err = run(["evaluate", str(tiger_run), "--split", "valid", "--beam-size", "12"], capsys)
    assert code == 0, err
    assert "most popular" in out and "R@10" in out and "invalid IDs 0.00%" in out and "users/s" in out


def test_recommend_prints_items_with_ids_and_titles(tiger_run: Path, capsys) -> None:
    code, out, err = run(
        ["recommend", str(tiger_run), "--history", "i10,i11,i12", "-k", "5", "--json"], capsys
    )
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 5 and len({r["item_id"] for r in rows}) == 5
    assert rows[0] == {
        "item_id": "i13",  # the rule: i12 is followed by i13
        "semantic_id": "2-3",
        "score": rows[0]["score"],
        "title": "Item number 13",
    }
    assert all(r["score"] <= rows[0]["score"] for r in rows)
    code, out, err = run(["recommend", str(tiger_run), "--history", "i10", "--user", "u3"], capsys)
    assert code == 0, err
    assert "Item number" in out and out.count("\n") > 10


def test_weights_that_diverged_to_nan_are_one_error_not_an_empty_answer(
    tiger_run: Path, tmp_path: Path, capsys
) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    run_dir = tmp_path / "nan"
    shutil.copytree(tiger_run, run_dir)
    weights = load_file(str(run_dir / "model.safetensors"))
    name = sorted(k for k, t in weights.items() if t.is_floating_point())[0]
    weights[name] = weights[name] * float("nan")
    save_file(weights, str(run_dir / "model.safetensors"))
    code, out, err = run(["recommend", str(run_dir), "--history", "i1,i2", "--json"], capsys)
    assert (code, out) == (1, "")
    assert err.strip() == (
        f"Error: {run_dir / 'model.safetensors'}: 1 weight tensors hold NaN or infinite values (e.g. {name}); "
        "the training diverged, or the file was damaged"
    )


def test_evaluate_refuses_a_run_whose_data_was_changed_after_training(
    tiger_run: Path, tmp_path: Path, capsys
) -> None:
    import shutil

    import pyarrow.parquet as pq

    run_dir = tmp_path / "edited"
    shutil.copytree(tiger_run, run_dir)
    seq = pq.read_table(run_dir / "sequences.parquet")
    pq.write_table(seq.slice(1), run_dir / "sequences.parquet")  # one user fewer, e.g. another split's file
    code, _, err = run(["evaluate", str(run_dir)], capsys)
    assert code == 1
    assert err.strip().startswith(
        f"Error: {run_dir}: its items.parquet/sequences.parquet are not the data it was trained on (fingerprint "
    )
    assert err.strip().endswith("the run was changed after training")
    code, _, err = run(["evaluate", str(tiger_run), "--json"], capsys)  # the run as trained evaluates
    assert code == 0, err


def test_a_run_config_without_its_model_section_is_one_error(tiger_run: Path, tmp_path: Path, capsys) -> None:
    import shutil

    run_dir = tmp_path / "nomodel"
    shutil.copytree(tiger_run, run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    del config["model"]
    (run_dir / "config.json").write_text(json.dumps(config))
    code, _, err = run(["recommend", str(run_dir), "--history", "i1"], capsys)
    assert (code, err.strip()) == (
        1,
        f"Error: {run_dir / 'config.json'}: no 'model' section (the model's configuration)",
    )


def test_resume_trains_more_epochs(tiger_run: Path, capsys) -> None:
    code, out, err = run(
        ["train", "tiger", "-o", str(tiger_run), "--resume", "--epochs", "11", "--quiet"], capsys
    )
    assert code == 0, err
    assert "of 11 (epochs)" in out
    assert len((tiger_run / "metrics.jsonl").read_text().splitlines()) == 11


def test_sasrec_trains_without_ids_and_exports_embeddings(shop: Path, capsys) -> None:
    config = shop / "sasrec.json"
    config.write_text(
        json.dumps({"model": {"d_model": 16, "n_heads": 2, "n_layers": 1}, "train": TINY["train"]})
    )
    run_dir = shop / "runs" / "sasrec"
    code, out, err = run(
        [
            "train",
            "sasrec",
            str(shop / "data"),
            "-o",
            str(run_dir),
            "--config",
            str(config),
            "--epochs",
            "2",
            "-q",
        ],
        capsys,
    )
    assert code == 0, err
    assert "left out 1 users with fewer than 3 interactions" in err
    assert "sasrec (validation)" in out
    assert (run_dir / "item_embeddings.parquet").is_file()
    code, out, err = run(["recommend", str(run_dir), "--history", "i1", "-k", "3", "--json"], capsys)
    assert code == 0, err
    assert [r["semantic_id"] for r in json.loads(out)] == [None, None, None]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["recommend", "{run}", "--history", "i1,nope"],
            "history item 'nope' is not in this run's catalogue (40 items)",
        ),
        (["recommend", "{run}", "--history", " , "], "the history is empty; give at least one item id"),
        (
            ["recommend", "{run}", "--history", "i1", "-k", "41"],
            "-k 41 is larger than the catalogue (40 items)",
        ),
        (
            ["evaluate", "{shop}/data"],
            "{shop}/data/config.json: no such file (is {shop}/data a semid run directory?)",
        ),
        (
            ["train", "tiger", "{shop}/data", "-o", "{shop}/runs/x"],
            "TIGER needs the items' Semantic IDs: give --ids ids.parquet",
        ),
        (
            ["train", "tiger", "{shop}/data", "--ids", "{shop}/partial.parquet", "-o", "{shop}/runs/x"],
            "{shop}/partial.parquet has no Semantic ID for item 'i39' (1 of 40 items have none; "
            "assign IDs to the whole catalogue)",
        ),
        (
            ["train", "sasrec", "-o", "{shop}/runs/x"],
            "give DATA: the dataset's files or directories (or --resume a run)",
        ),
        (
            ["train", "tiger", "{shop}/data", "--ids", "{shop}/ids.parquet", "-o", "{run}"],
            "{run} already holds a run; resume it (--resume) or choose another directory",
        ),
        (["train", "sasrec", "-o", "{run}", "--resume"], "{run} holds a tiger run, not sasrec"),
        (["evaluate", "{run}", "--split", "valid", "--beam-size", "5", "--json"], None),
    ],
    ids=[
        "unknown-item",
        "empty-history",
        "k-beyond-catalogue",
        "not-a-run",
        "tiger-without-ids",
        "ids-missing-an-item",
        "no-data",
        "existing-run",
        "resume-other-model",
        "narrow-beam-is-fine",
    ],
)
def test_user_errors(argv: list[str], message: str | None, shop: Path, tiger_run: Path, capsys) -> None:
    argv = [a.format(run=tiger_run, shop=shop) for a in argv]
    code, out, err = run(argv, capsys)
    if message is None:
        assert code == 0, err
        return
    assert code == 1
    assert err == f"Error: {message.format(run=tiger_run, shop=shop)}\n"


def test_a_bad_training_option_fails_before_the_data_is_read(shop: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "c.yaml").write_text("train:\n  lr: 1e-3\n")  # YAML 1.1 reads this as the text '1e-3'
    code, out, err = run(["train", "sasrec", str(tmp_path / "no-data"), "-o", str(tmp_path / "r"),
                          "--config", str(tmp_path / "c.yaml")], capsys)  # fmt: skip
    assert (code, err.strip()) == (
        1,
        "Error: lr='1e-3' should be a number in [0, inf]; YAML reads 1e-3 as text: write 1.0e-3",
    )
    assert not (tmp_path / "r").exists()


def test_train_maps_the_id_columns_of_a_users_own_log(shop: Path, tmp_path: Path, capsys) -> None:
    lines = (shop / "data" / "interactions.csv").read_text().splitlines()
    header, rows = lines[0].split(","), lines[1:]
    renamed = {"user_id": "userId", "item_id": "movieId"}
    (tmp_path / "ratings.csv").write_text(
        ",".join(renamed.get(c, c) for c in header) + "\n" + "\n".join(rows) + "\n"
    )
    argv = [
        "train",
        "sasrec",
        str(tmp_path / "ratings.csv"),
        "-o",
        str(tmp_path / "run"),
        "--epochs",
        "1",
        "-q",
    ]
    code, _, err = run(argv, capsys)
    assert code == 1 and "pass --user-id userId --item-id movieId" in err
    code, _, err = run([*argv, "--user-id", "userId", "--item-id", "movieId"], capsys)
    assert code == 0, err
    assert "120 users" in err and (tmp_path / "run" / "model.safetensors").is_file()


def test_the_shipped_beauty_recipe_trains_tiger_with_its_settings(shop: Path, capsys) -> None:
    # configs/tiger-beauty.json is the recipe of bench/results/beauty_rec_tiger_nouser.txt; the CLI flags
    # still override it (one epoch here instead of its 145-minute budget).
    recipe = Path(__file__).resolve().parents[1] / "configs" / "tiger-beauty.json"
    run_dir = shop / "runs" / "recipe"
    argv = ["train", "tiger", str(shop / "data"), "--ids", str(shop / "ids.parquet"), "-o", str(run_dir)]
    code, _, err = run(argv + ["--config", str(recipe), "--epochs", "1", "--quiet"], capsys)
    assert code == 0, err
    config = json.loads((run_dir / "config.json").read_text())
    recipe_options = json.loads(recipe.read_text())
    assert {k: config["model"][k] for k in recipe_options["model"]} == recipe_options["model"]
    assert {k: config["train"][k] for k in recipe_options["train"]} == recipe_options["train"]
    assert config["model"]["encoder_tokens"] == "items" and config["model"]["d_model"] == 128  # paper scale
    assert config["train"]["epochs"] == 1


def test_without_a_config_tiger_trains_the_best_measured_recipe_and_the_paper_is_one_file_away(
    shop: Path, capsys
) -> None:
    from semid.rec.tiger import TIGERConfig
    from semid.rec.train import default_train_config

    beauty = json.loads((Path(__file__).resolve().parents[1] / "configs" / "tiger-beauty.json").read_text())
    defaults = TIGERConfig().to_dict()
    assert {k: defaults[k] for k in beauty["model"]} == beauty["model"]  # items layout, dropout 0.2, 1 user
    train = default_train_config("tiger").to_dict()
    assert {k: train[k] for k in ("lr", "warmup_steps", "weight_decay")} == {
        k: beauty["train"][k] for k in ("lr", "warmup_steps", "weight_decay")
    }
    paper = Path(__file__).resolve().parents[1] / "configs" / "tiger-paper.json"
    run_dir = shop / "runs" / "paper"
    argv = ["train", "tiger", str(shop / "data"), "--ids", str(shop / "ids.parquet"), "-o", str(run_dir)]
    code, _, err = run(argv + ["--config", str(paper), "--epochs", "1", "--quiet"], capsys)
    assert code == 0, err
    config = json.loads((run_dir / "config.json").read_text())
    assert (
        config["model"]["encoder_tokens"],
        config["model"]["dropout"],
        config["model"]["n_user_tokens"],
    ) == (
        "codes",
        0.1,
        2000,
    )
    assert (config["train"]["lr"], config["train"]["weight_decay"]) == (0.001, 0.035)


def test_without_a_config_sasrec_is_the_tuned_beauty_recipe() -> None:
    from semid.rec.sasrec import SASRecConfig
    from semid.rec.train import default_train_config

    recipe = json.loads((Path(__file__).resolve().parents[1] / "configs" / "sasrec-beauty.json").read_text())
    model = SASRecConfig().to_dict()
    assert {k: model[k] for k in recipe["model"]} == recipe["model"]
    train = default_train_config("sasrec").to_dict()
    schedule = ("epochs", "lr", "batch_size", "warmup_steps", "schedule", "patience")
    assert {k: train[k] for k in schedule} == {k: recipe["train"][k] for k in schedule}


@pytest.fixture(scope="module")
def cold_run(shop: Path) -> Path:
    run_dir = shop / "runs" / "tiger-cold"
    with pytest.raises(SystemExit) as exc:
        main(
            ["train", "tiger", str(shop / "data"), "--ids", str(shop / "ids.parquet"), "-o", str(run_dir)]
            + ["--config", str(shop / "config.json"), "--quiet", "--cold-start", "0.2"]
        )
    assert exc.value.code in (0, None)
    return run_dir


def test_a_cold_start_run_trains_without_the_cold_items_and_keeps_them_in_the_trie(cold_run: Path) -> None:
    from semid.rec.data import RecData
    from semid.rec.train import load_model

    data = RecData.load(cold_run)
    assert len(data.cold_items) == 8  # 20% of the 40 interacted items
    s = data.split
    assert not np.isin(s.train.items, data.cold_items).any()  # no training sequence holds one
    assert not np.isin(s.valid_target, data.cold_items).any()
    assert not np.isin(s.test_history.items, data.cold_items).any()
    assert np.isin(s.test_target, data.cold_items).any()  # but some users' test targets are cold
    model = load_model(cold_run)
    assert data.codes.shape[0] == 40  # every item keeps its Semantic ID ...
    np.testing.assert_array_equal(model.item_codes.numpy(), data.codes)
    assert all(row in model.index.trie for row in data.codes[data.cold_items])  # ... in the decoding trie


def test_evaluate_cold_start_scores_the_cold_target_users_and_the_content_baseline(
    cold_run: Path, shop: Path, capsys
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from semid.rec.data import RecData

    X = np.eye(N_ITEMS, dtype=np.float32) + np.eye(N_ITEMS, k=1, dtype=np.float32)  # item i is near i + 1
    pq.write_table(
        pa.table({"item_id": [f"i{i}" for i in range(N_ITEMS)], "embedding": pa.array(list(X))}),
        shop / "text.parquet",
    )
    code, out, err = run(
        ["evaluate", str(cold_run), "--cold-start", "--json", "--embeddings", str(shop / "text.parquet")],
        capsys,
    )
    assert code == 0, err
    res = json.loads(out)
    data = RecData.load(cold_run)
    n_cold_users = int(np.isin(data.split.test_target, data.cold_items).sum())
    assert res["cold_start"] == {"cold_items": 8, "users": n_cold_users}
    assert res["model"]["n_users"] == n_cold_users and res["model"]["invalid_rate"] == 0.0
    assert set(res["content"]) == {"recall@5", "ndcg@5", "recall@10", "ndcg@10"}
    assert res["content"]["recall@10"] > 0.3  # the next item of a walk is the nearest text vector


def test_cold_start_on_a_run_without_the_split_is_one_clear_error(tiger_run: Path, capsys) -> None:
    code, _, err = run(["evaluate", str(tiger_run), "--cold-start"], capsys)
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        f"Error: {tiger_run} was trained without a cold-start split; train with --cold-start 0.05 to measure one"
    )
