"""`semid fit / assign / stats` end to end: files in, files out, exit codes and one-line errors."""

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import clustered
from semid.cli import main
from semid.ids.table import read_ids


def run(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


def error_line(err: str) -> str:
    """The CLI's failure output: exactly one `Error: ...` line (after any progress lines), no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and err.rstrip("\n").endswith(lines[0]), err
    return lines[0]


def write_parquet(path, ids, X):
    pq.write_table(
        pa.table({"item_id": ids, "embedding": pa.array(list(X), type=pa.list_(pa.float32()))}), path
    )


@pytest.fixture
def emb(tmp_path):
    X = clustered(n=500, dim=16)
    path = tmp_path / "emb.parquet"
    write_parquet(path, [f"item{i:03d}" for i in range(500)], X)
    return path


def test_fit_assign_stats_round_trip(tmp_path, capsys, emb):
    code, out, err = run(
        capsys, "fit", str(emb), "-o", str(tmp_path / "model"), "--levels", "2", "--codebook-size", "8,4"
    )
    assert code in (0, None), err
    assert (tmp_path / "model" / "model.safetensors").exists()
    assert "unique IDs before dedup" in out

    code, out, err = run(
        capsys,
        "assign",
        str(tmp_path / "model"),
        str(emb),
        "-o",
        str(tmp_path / "ids.parquet"),
        "--registry",
        str(tmp_path / "ids.db"),
        "--format",
        "angle",
    )
    assert code in (0, None), err
    t = read_ids(tmp_path / "ids.parquet")
    assert len(t) == 500 and t.codes.shape == (500, 3)
    assert len(set(t.semantic_ids)) == 500  # unique after the suffix level
    assert t.semantic_ids[0].startswith("<a_") and "<c_" in t.semantic_ids[0]
    assert t.meta["format"] == "angle" and t.meta["codebook_sizes"] == [8, 4]

    # a second assign through the registry gives the same IDs
    run(
        capsys,
        "assign",
        str(tmp_path / "model"),
        str(emb),
        "-o",
        str(tmp_path / "ids2.parquet"),
        "--registry",
        str(tmp_path / "ids.db"),
        "--format",
        "angle",
    )
    assert read_ids(tmp_path / "ids2.parquet").semantic_ids == t.semantic_ids

    code, out, _ = run(capsys, "stats", str(tmp_path / "ids.parquet"), "--json")
    rep = json.loads(out)
    assert rep["n_items"] == 500 and rep["unique_share_after_dedup"] == 1.0
    assert [lv["codebook_size"] for lv in rep["levels"]] == [8, 4]
    code, out, _ = run(capsys, "stats", str(tmp_path / "model"), "--emb", str(emb), "--json")
    rep = json.loads(out)
    assert rep["model_type"] == "rq-kmeans" and 0 < rep["reconstruction_error"] < 1


def test_remap_keeps_ids_fixed_length(tmp_path, capsys, emb):
    run(capsys, "fit", str(emb), "-o", str(tmp_path / "m"), "--levels", "2", "--codebook-size", "4")
    code, out, err = run(
        capsys,
        "assign",
        str(tmp_path / "m"),
        str(emb),
        "-o",
        str(tmp_path / "ids.parquet"),
        "--dedup",
        "remap",
        "--format",
        "dash",
    )
    # 500 items cannot fit 4 x 4 = 16 codes: remap must refuse with a clear message, leaving no file
    assert code == 1 and error_line(err).startswith("Error: dedup='remap': prefix")
    assert not (tmp_path / "ids.parquet").exists()


def test_npy_input_with_ids_file(tmp_path, capsys):
    X = clustered(n=300, dim=8)
    np.save(tmp_path / "emb.npy", X)
    (tmp_path / "ids.json").write_text(json.dumps([f"a{i}" for i in range(300)]))
    code, _, err = run(
        capsys, "fit", str(tmp_path / "emb.npy"), "-o", str(tmp_path / "m"), "--codebook-size", "4"
    )
    assert code in (0, None), err
    code, _, err = run(
        capsys,
        "assign",
        str(tmp_path / "m"),
        str(tmp_path / "emb.npy"),
        "--ids",
        str(tmp_path / "ids.json"),
        "-o",
        str(tmp_path / "ids.parquet"),
    )
    assert code in (0, None), err
    assert read_ids(tmp_path / "ids.parquet").item_ids[:2].tolist() == ["a0", "a1"]


def _bad_files(tmp_path):
    X = clustered(n=40, dim=16)
    cases = {}
    nan = X.copy()
    nan[17, 2] = np.nan
    write_parquet(tmp_path / "nan.parquet", [f"i{i}" for i in range(40)], nan)
    cases["nan"] = ("nan.parquet", r"nan.parquet row 17: contains NaN")
    write_parquet(tmp_path / "dup.parquet", ["x"] + [f"i{i}" for i in range(38)] + ["x"], X)
    cases["duplicate-id"] = ("dup.parquet", r"item_id 'x' appears at rows 0 and 39")
    pq.write_table(
        pa.table({"item_id": pa.array([], pa.string()), "embedding": pa.array([], pa.list_(pa.float32()))}),
        tmp_path / "empty.parquet",
    )
    cases["empty"] = ("empty.parquet", r"empty.parquet: no rows")
    write_parquet(tmp_path / "few.parquet", [f"i{i}" for i in range(5)], X[:5])
    cases["fewer-rows-than-codes"] = ("few.parquet", r"few.parquet: 5 rows, fewer than codebook_size=8")
    cases["missing"] = ("nope.parquet", r"nope.parquet")
    return cases


@pytest.mark.parametrize("case", ["nan", "duplicate-id", "empty", "fewer-rows-than-codes", "missing"])
def test_fit_bad_input_one_line_error_and_no_output(tmp_path, capsys, case):
    name, message = _bad_files(tmp_path)[case]
    code, _, err = run(capsys, "fit", str(tmp_path / name), "-o", str(tmp_path / "m"), "--codebook-size", "8")
    assert code == 1
    assert re.search(message, error_line(err)), err
    assert not (tmp_path / "m").exists()


def test_assign_wrong_dimension_and_unknown_format(tmp_path, capsys, emb):
    run(capsys, "fit", str(emb), "-o", str(tmp_path / "m"), "--codebook-size", "4")
    X = clustered(n=50, dim=15)
    write_parquet(tmp_path / "d15.parquet", [f"i{i}" for i in range(50)], X)
    code, _, err = run(
        capsys,
        "assign",
        str(tmp_path / "m"),
        str(tmp_path / "d15.parquet"),
        "-o",
        str(tmp_path / "o.parquet"),
    )
    assert code == 1 and "d15.parquet: 15 values per embedding, but" in err and "expects 16" in err
    assert not (tmp_path / "o.parquet").exists()
    code, _, err = run(
        capsys, "assign", str(tmp_path / "m"), str(emb), "-o", str(tmp_path / "o.parquet"), "--format", "xml"
    )
    assert code == 2 and "xml" in err
    assert not (tmp_path / "o.parquet").exists()


def test_registry_bound_to_model(tmp_path, capsys, emb):
    run(capsys, "fit", str(emb), "-o", str(tmp_path / "m1"), "--codebook-size", "4", "--seed", "1")
    run(capsys, "fit", str(emb), "-o", str(tmp_path / "m2"), "--codebook-size", "4", "--seed", "2")
    db = str(tmp_path / "ids.db")
    assert run(
        capsys, "assign", str(tmp_path / "m1"), str(emb), "-o", str(tmp_path / "a.parquet"), "--registry", db
    )[0] in (0, None)
    code, _, err = run(
        capsys, "assign", str(tmp_path / "m2"), str(emb), "-o", str(tmp_path / "b.parquet"), "--registry", db
    )
    assert code == 1 and "--new-version" in err
    code, _, err = run(
        capsys,
        "assign",
        str(tmp_path / "m2"),
        str(emb),
        "-o",
        str(tmp_path / "b.parquet"),
        "--registry",
        db,
        "--new-version",
    )
    assert code in (0, None), err


def test_rq_vae_fit_then_assign_stats_report_unchanged(tmp_path, capsys, emb):
    cfg = tmp_path / "rqvae.json"
    cfg.write_text(
        json.dumps(
            {
                "n_levels": 2,
                "codebook_size": 8,
                "latent_dim": 4,
                "hidden_dims": [32, 16],
                "epochs": 4,
                "batch_size": 100,
                "random_state": 0,
            }
        )
    )
    code, out, err = run(
        capsys, "fit", str(emb), "--method", "rq-vae", "--config", str(cfg), "-o", str(tmp_path / "vae")
    )
    assert code in (0, None), err
    assert "RQ-VAE trained" in out and (tmp_path / "vae" / "metrics.jsonl").is_file()
    assert (tmp_path / "vae.run" / "checkpoints").is_dir()  # resumable run beside the model
    code, _, err = run(capsys, "assign", str(tmp_path / "vae"), str(emb), "-o", str(tmp_path / "ids.parquet"))
    assert code in (0, None), err
    t = read_ids(tmp_path / "ids.parquet")
    assert t.meta["model_type"] == "rq-vae" and t.codes.shape == (500, 3) and len(set(t.semantic_ids)) == 500
    code, out, _ = run(capsys, "stats", str(tmp_path / "vae"), "--emb", str(emb), "--json")
    assert json.loads(out)["model_type"] == "rq-vae"


def test_rq_vae_bad_config_rejected_before_reading_data(tmp_path, capsys):
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"latent_dim": 0}))
    code, _, err = run(
        capsys,
        "fit",
        str(tmp_path / "missing.parquet"),
        "--method",
        "rq-vae",
        "--config",
        str(cfg),
        "-o",
        str(tmp_path / "m"),
    )
    assert code == 1 and "latent_dim" in error_line(err) and "0" in error_line(err)
    assert not (tmp_path / "m").exists()
