"""Semantic IDs with collaborative signal: SASRec's item vectors exported, then either the RQ-VAE's
collaborative term (`semid fit --method rq-vae --collab`) or text fused with them (`semid fit --fuse`, any
method). Both join the collaborative table to the catalogue by item_id, and both run end to end on a tiny
shop: SASRec -> export -> fit -> assign -> TIGER."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import TINY_RQVAE, TINY_TIGER, clustered, load_bench, write_walk_shop
from semid.cli import main
from semid.embed.store import read_embeddings, read_metadata, write_embeddings
from semid.errors import SemidError
from semid.ids.table import read_ids
from semid.quantize import RQKMeans, load_quantizer
from semid.quantize.collab import IMPUTE_ALPHAS, Fusion, align_by_item_id, fit_fused, fuse, impute_from_text
from semid.rec.data import RecData
from semid.rec.io import load_model

N_WALKED = 40  # items i0..i39, walked by the users; i40 is in the catalogue, but nobody bought it
N_ITEMS = N_WALKED + 1
TINY_SASREC = {"model": {"d_model": 16, "n_heads": 2, "n_layers": 1}, "train": TINY_TIGER["train"]}
TINY_TIGER_1 = {"model": TINY_TIGER["model"], "train": {**TINY_TIGER["train"], "epochs": 1}}

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest: tiny models, one thread


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def error_line(err: str) -> str:
    """The CLI's failure output: exactly one `Error: ...` line, last, no traceback."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("Error: ")]
    assert len(lines) == 1 and err.rstrip("\n").endswith(lines[0]), err
    return lines[0]


def item_names(n: int) -> list[str]:
    return [f"i{i}" for i in range(n)]


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """data/ (items.csv + interactions.csv), emb.parquet (16-d text vectors), tiny configs, a SASRec run
    trained through the CLI (runs/sasrec) and its exported item vectors (sasrec-items.parquet)."""
    root = tmp_path_factory.mktemp("collab")
    (root / "data").mkdir()
    write_walk_shop(root / "data", N_WALKED, n_users=120, lengths=(5, 10))
    with (root / "data" / "items.csv").open("a") as fh:
        fh.write(f"i{N_WALKED},Never bought\n")
    write_embeddings(root / "emb.parquet", item_names(N_ITEMS), clustered(n=N_ITEMS, dim=16, centres=5))
    (root / "sasrec.json").write_text(json.dumps(TINY_SASREC))
    (root / "tiger.json").write_text(json.dumps(TINY_TIGER_1))
    (root / "rqvae.json").write_text(json.dumps({**TINY_RQVAE, "epochs": 4}))
    with pytest.raises(SystemExit) as exc:
        main(["train", "sasrec", str(root / "data"), "-o", str(root / "runs" / "sasrec")]
             + ["--config", str(root / "sasrec.json"), "--epochs", "2", "-q"])  # fmt: skip
    assert exc.value.code in (0, None)
    with pytest.raises(SystemExit) as exc:
        main(["export-embeddings", str(root / "runs" / "sasrec"), "-o", str(root / "sasrec-items.parquet")])
    assert exc.value.code in (0, None)
    return root


def shuffled_copy(src: Path, dst: Path, seed: int = 0) -> Path:
    """The same item vectors in another row order."""
    ids, X = read_embeddings(src)
    order = np.random.default_rng(seed).permutation(len(ids))
    write_embeddings(dst, ids[order], X[order])
    return dst


# --- export ----------------------------------------------------------------------------------------------


def test_export_writes_each_items_learned_vector_under_its_item_id(shop: Path) -> None:
    ids, X = read_embeddings(shop / "sasrec-items.parquet")
    model = load_model(shop / "runs" / "sasrec")
    data = RecData.load(shop / "runs" / "sasrec")
    assert ids.tolist() == [str(i) for i in data.item_ids] and len(ids) == N_ITEMS
    weight = model.item_emb.weight.detach().numpy()  # row 0 pads: item i is row i + 1
    for row, item in enumerate(ids):
        np.testing.assert_array_equal(X[row], weight[data.index[item] + 1])
    np.testing.assert_array_equal(X, model.item_embeddings())
    assert X.dtype == np.float32 and X.shape == (N_ITEMS, 16)


def test_export_keeps_items_in_no_training_sequence_and_counts_them(
    shop: Path, tmp_path: Path, capsys
) -> None:
    code, out, err = run(
        ["export-embeddings", shop / "runs" / "sasrec", "-o", tmp_path / "v.parquet"], capsys
    )
    assert code == 0, err
    assert out.strip() == (
        f"{N_ITEMS} x 16 item vectors of {shop / 'runs' / 'sasrec'} -> {tmp_path / 'v.parquet'} "
        "(untrained, in no training sequence: 1)"
    )
    ids, _ = read_embeddings(tmp_path / "v.parquet")
    assert f"i{N_WALKED}" in ids.tolist()  # the item nobody bought keeps its (untrained) row
    assert read_metadata(tmp_path / "v.parquet") == {
        "model_type": "sasrec",
        "dim": "16",
        "untrained_items": "1",
    }


def test_export_is_for_sasrec_runs(tmp_path: Path, capsys) -> None:
    (tmp_path / "tiger").mkdir()
    (tmp_path / "tiger" / "config.json").write_text(json.dumps({"model_type": "tiger", "model": {}}))
    code, _, err = run(["export-embeddings", tmp_path / "tiger", "-o", tmp_path / "v.parquet"], capsys)
    assert code == 1
    assert error_line(err) == (
        f"Error: {tmp_path / 'tiger'} holds a tiger run; only SASRec learns one vector per item "
        "(semid train sasrec DATA -o RUN)"
    )
    assert not (tmp_path / "v.parquet").exists()


def test_imputing_fills_the_unknown_rows_from_the_text_and_keeps_the_known_ones() -> None:
    rng = np.random.default_rng(0)
    X = clustered(n=500, dim=16, centres=8)
    C = (X @ rng.normal(size=(16, 6)) + 0.05 * rng.normal(size=(500, 6))).astype(np.float32)  # linear in text
    known = np.ones(500, dtype=bool)
    known[:50] = False
    noise = rng.normal(size=(50, 6)).astype(np.float32)  # what SASRec leaves in a row it never trained
    filled, report = impute_from_text(X, np.vstack([noise, C[50:]]), known)
    np.testing.assert_array_equal(filled[50:], C[50:])  # known rows untouched
    cos = (
        np.sum(filled[:50] * C[:50], axis=1)
        / np.linalg.norm(filled[:50], axis=1)
        / np.linalg.norm(C[:50], axis=1)
    )
    assert cos.mean() > 0.95  # the noise rows are replaced by the text's prediction
    np.testing.assert_allclose(
        np.linalg.norm(filled[:50], axis=1), np.median(np.linalg.norm(C[50:], axis=1)), rtol=1e-5
    )
    assert (report.n_known, report.n_imputed) == (450, 50) and report.alpha in IMPUTE_ALPHAS
    assert report.held_out_cosine > 0.95 > report.mean_vector_cosine and report.held_out_r2 > 0.9
    again, _ = impute_from_text(X, np.vstack([noise, C[50:]]), known)
    np.testing.assert_array_equal(again, filled)  # seeded


def test_imputing_needs_known_rows_and_one_flag_per_row() -> None:
    X = clustered(n=10, dim=4, centres=2)
    with pytest.raises(
        SemidError, match=r"^2 rows have a collaborative vector: too few to learn one from the text$"
    ):
        impute_from_text(X, X, np.arange(10) < 2)
    with pytest.raises(
        SemidError, match=r"^known should be a bool array of 10 values \(one per row of X\), got \(9,\)$"
    ):
        impute_from_text(X, X, np.ones(9, dtype=bool))


def test_export_imputes_untrained_and_new_items_from_their_text(shop: Path, tmp_path: Path, capsys) -> None:
    ids, X = read_embeddings(shop / "emb.parquet")
    new = clustered(n=2, dim=16, centres=2, seed=1)
    text = write_embeddings(tmp_path / "text.parquet", [*ids.tolist(), "new1", "new0"], np.vstack([X, new]))
    code, out, err = run(
        ["export-embeddings", shop / "runs" / "sasrec", "-o", tmp_path / "c.parquet", "--impute-from", text],
        capsys,
    )
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith(f"{N_ITEMS + 2} x 16 item vectors of ") and lines[0].endswith(
        "(untrained, in no training sequence: 1)"
    )
    assert lines[1].startswith("2 new items; 3 rows imputed from the text by ridge regression (alpha ")
    got_ids, C = read_embeddings(tmp_path / "c.parquet")
    plain_ids, plain = read_embeddings(shop / "sasrec-items.parquet")
    assert got_ids.tolist() == [*plain_ids.tolist(), "new1", "new0"]  # new items in the text file's order
    trained = np.array([i != f"i{N_WALKED}" for i in plain_ids])
    np.testing.assert_array_equal(C[:N_ITEMS][trained], plain[trained])  # learned rows as exported
    assert not np.allclose(C[N_WALKED], plain[N_WALKED])  # the item nobody bought: predicted, not untrained
    meta = read_metadata(tmp_path / "c.parquet")
    assert (meta["untrained_items"], meta["imputed_items"], meta["new_items"]) == ("1", "3", "2")
    # the new items get fused IDs from a model fitted on the catalogue (assign takes a wider table): fit
    # needs the same items, so a fit on the run's text alone is refused, and one on every item's text works
    fit = [
        "-o",
        tmp_path / "fused",
        "--levels",
        "2",
        "--codebook-size",
        "4",
        "--fuse",
        tmp_path / "c.parquet",
    ]
    code, _, err = run(["fit", shop / "emb.parquet", *fit], capsys)
    assert code == 1 and "2 are not in" in error_line(err)
    code, _, err = run(["fit", text, *fit], capsys)
    assert code == 0, err
    new_emb = write_embeddings(tmp_path / "new.parquet", ["new0", "new1"], new[::-1])
    code, _, err = run(
        [
            "assign",
            tmp_path / "fused",
            new_emb,
            "--fuse",
            tmp_path / "c.parquet",
            "-o",
            tmp_path / "ids.parquet",
            "--dedup",
            "none",
        ],
        capsys,
    )
    assert code == 0, err
    assert read_ids(tmp_path / "ids.parquet").item_ids.tolist() == ["new0", "new1"]


def test_export_refuses_text_that_misses_an_item_of_the_run(shop: Path, tmp_path: Path, capsys) -> None:
    ids, X = read_embeddings(shop / "emb.parquet")
    text = write_embeddings(tmp_path / "text.parquet", ids[1:], X[1:])
    code, _, err = run(
        ["export-embeddings", shop / "runs" / "sasrec", "-o", tmp_path / "c.parquet", "--impute-from", text],
        capsys,
    )
    assert code == 1
    assert error_line(err) == (
        f"Error: {text} has {N_ITEMS - 1} items, the run has {N_ITEMS} (1 of the run's items are missing, e.g. 'i0')"
    )
    assert not (tmp_path / "c.parquet").exists()


def test_export_never_overwrites_a_file_of_the_run_it_reads(shop: Path, tmp_path: Path, capsys) -> None:
    run_dir = tmp_path / "sasrec"
    shutil.copytree(shop / "runs" / "sasrec", run_dir)
    before = (run_dir / "sequences.parquet").read_bytes()
    code, _, err = run(["export-embeddings", run_dir, "-o", run_dir / "sequences.parquet"], capsys)
    assert code == 1
    assert error_line(err) == (
        f"Error: {run_dir / 'sequences.parquet'}: the output would replace sequences.parquet inside the input "
        f"directory {run_dir}; write to another path"
    )
    assert (run_dir / "sequences.parquet").read_bytes() == before
    # a new file beside the run's own is fine
    code, _, err = run(["export-embeddings", run_dir, "-o", run_dir / "vectors.parquet"], capsys)
    assert code == 0, err


def test_fit_refuses_to_resume_a_recommender_run_as_an_rq_vae(shop: Path, tmp_path: Path, capsys) -> None:
    run_dir = shop / "runs" / "sasrec"
    code, _, err = run(
        ["fit", shop / "emb.parquet", "--method", "rq-vae", "-o", tmp_path / "m", "--resume", run_dir], capsys
    )
    assert code == 1
    line = error_line(err)
    assert line.startswith(f"Error: {run_dir}: not an RQ-VAE run (its checkpoint ")
    assert line.endswith("holds no RQ-VAE configuration)") and not (tmp_path / "m").exists()


def test_fit_resume_refuses_a_recipe_it_would_ignore(shop: Path, tmp_path: Path, capsys) -> None:
    from semid.quantize.rq_vae import RQVAE

    _, X = read_embeddings(shop / "emb.parquet")
    run_dir = tmp_path / "m.run"
    RQVAE(**TINY_RQVAE, run_dir=str(run_dir)).fit(X, stop_after_epochs=1)  # as a kill leaves it
    fit = ["fit", shop / "emb.parquet", "--method", "rq-vae", "-o", tmp_path / "m", "--resume", run_dir]
    code, _, err = run([*fit, "--config", shop / "rqvae.json"], capsys)
    assert (code, error_line(err)) == (
        1,
        f"Error: --resume continues the recipe stored in {run_dir}; --config cannot change it "
        "(start a new run to train another recipe)",
    )
    code, _, err = run([*fit, "--levels", "3", "--codebook-size", "8"], capsys)
    assert (code, error_line(err)) == (
        1,
        f"Error: --levels/--codebook-size differ from the run's (2 levels, codebook sizes 8,8); "
        f"--resume continues the recipe stored in {run_dir}",
    )
    assert not (tmp_path / "m").exists()
    code, _, err = run([*fit, "--levels", "2", "--codebook-size", "8"], capsys)  # the run's own: resumes
    assert code == 0, err
    assert load_quantizer(tmp_path / "m").codebook_sizes_ == [8, 8]


def test_export_refuses_to_impute_from_a_npy_that_has_no_item_ids(shop: Path, tmp_path: Path, capsys) -> None:
    _, X = read_embeddings(shop / "emb.parquet")
    np.save(tmp_path / "text.npy", X)
    code, _, err = run(
        [
            "export-embeddings",
            shop / "runs" / "sasrec",
            "-o",
            tmp_path / "c.parquet",
            "--impute-from",
            tmp_path / "text.npy",
        ],
        capsys,
    )
    assert code == 1
    assert error_line(err) == (
        f"Error: {tmp_path / 'text.npy'}: a .npy file holds no item ids; imputing from text needs a .parquet "
        "file with item_id and embedding columns (semid embed writes one)"
    )
    assert not (tmp_path / "c.parquet").exists()


def test_the_bench_moves_untrained_items_to_their_new_prefix_with_the_smallest_free_suffix() -> None:
    bench = load_bench("cold_impute")
    codes = np.array([[0, 0, 0], [0, 0, 1], [1, 2, 0], [3, 3, 0], [3, 3, 1]])  # (n, L + 1): prefix + suffix
    untrained = np.array([False, False, False, True, True])
    assert [bench.shared_prefixes(codes, untrained, k) for k in (1, 2)] == [0, 0]
    # item 3 joins prefix 0-0 (suffixes 0 and 1 taken: it gets 2), item 4 joins 1-2 (it gets 1)
    moved, kept = bench.reassign(codes, np.array([3, 4]), np.array([[0, 0], [1, 2]]), suffix_size=3)
    assert moved.tolist() == [[0, 0, 0], [0, 0, 1], [1, 2, 0], [0, 0, 2], [1, 2, 1]] and kept == 0
    assert [bench.shared_prefixes(moved, untrained, k) for k in (1, 2)] == [2, 2]
    # with 2 suffixes, prefix 0-0 has no room: item 3 keeps its codes, and item 4 still moves
    moved, kept = bench.reassign(codes, np.array([3, 4]), np.array([[0, 0], [1, 2]]), suffix_size=2)
    assert moved.tolist() == [[0, 0, 0], [0, 0, 1], [1, 2, 0], [3, 3, 0], [1, 2, 1]] and kept == 1
    # a row that cannot move keeps codes no moved row took: item 4 moves first, under item 3's prefix 5-5,
    # and gets suffix 1; item 3 then finds 0-0 full and keeps 5-5-0
    codes[3] = [5, 5, 0]
    moved, kept = bench.reassign(codes, np.array([4, 3]), np.array([[5, 5], [0, 0]]), suffix_size=2)
    assert moved.tolist()[3:] == [[5, 5, 0], [5, 5, 1]] and kept == 1
    assert len({tuple(r) for r in moved.tolist()}) == len(moved)  # still unique


# --- end to end: SASRec -> IDs -> TIGER ------------------------------------------------------------------

PATHS = {
    "rq-vae-collab": ["--method", "rq-vae", "--config", "{root}/rqvae.json"]
    + ["--collab", "{root}/sasrec-items.parquet", "--collab-weight", "0.5"],
    "fused": ["--levels", "2", "--codebook-size", "6", "--fuse", "{root}/sasrec-items.parquet"],
}


@pytest.mark.parametrize("path", list(PATHS))
def test_each_collaborative_id_path_runs_end_to_end(path: str, shop: Path, tmp_path: Path, capsys) -> None:
    model_dir = tmp_path / "model"
    fit_args = [a.format(root=shop) for a in PATHS[path]]
    code, out, err = run(["fit", shop / "emb.parquet", "-o", model_dir, *fit_args], capsys)
    assert code == 0, err
    assert (
        f"joined {N_ITEMS} x 16 collaborative vectors from {shop / 'sasrec-items.parquet'} by item_id" in err
    )
    config = json.loads((model_dir / "config.json").read_text())
    if path == "fused":  # the model records how its input was built, and encodes 16 + 16 values
        assert config["fusion"] == {
            "weight": 1.0,
            "text_dim": 16,
            "collab_dim": 16,
            "source": str(shop / "sasrec-items.parquet"),
        }
        assert config["n_features_in"] == 32 and "on 16 text + 16 collaborative values (weight 1)" in out
        assign_extra = ["--fuse", shop / "sasrec-items.parquet"]
    else:  # the collaborative term shaped the training; the IDs encode the text embedding alone
        assert config["collab_weight"] == 0.5 and config["n_features_in"] == 16 and "fusion" not in config
        assert all("collab_loss" in epoch for epoch in config["history"])
        assert "with a collaborative term (weight 0.5)" in out
        assign_extra = []
    ids_path = tmp_path / "ids.parquet"
    code, _, err = run(["assign", model_dir, shop / "emb.parquet", "-o", ids_path, *assign_extra], capsys)
    assert code == 0, err
    assert len(read_ids(ids_path)) == N_ITEMS
    code, out, err = run(
        ["train", "tiger", shop / "data", "--ids", ids_path, "-o", tmp_path / "tiger"]
        + ["--config", shop / "tiger.json", "-q"],
        capsys,
    )
    assert code == 0, err
    assert "tiger (validation)" in out
    code, out, err = run(["evaluate", tmp_path / "tiger", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["model"]["invalid_rate"] == 0.0


def test_a_fused_model_assigns_a_batch_of_the_catalogue_against_the_whole_collaborative_table(
    shop: Path, tmp_path: Path, capsys
) -> None:
    model_dir = tmp_path / "fused"
    fit_args = [a.format(root=shop) for a in PATHS["fused"]]
    code, _, err = run(["fit", shop / "emb.parquet", "-o", model_dir, *fit_args], capsys)
    assert code == 0, err
    item_ids, X = read_embeddings(shop / "emb.parquet")
    batch = write_embeddings(tmp_path / "batch.parquet", item_ids[5:20][::-1], X[5:20][::-1])  # 15, reordered
    items = shop / "sasrec-items.parquet"
    for emb, out_path in (
        (shop / "emb.parquet", tmp_path / "all.parquet"),
        (batch, tmp_path / "some.parquet"),
    ):
        code, _, err = run(
            ["assign", model_dir, emb, "--fuse", items, "-o", out_path, "--dedup", "none"], capsys
        )
        assert code == 0, err
    every, some = read_ids(tmp_path / "all.parquet"), read_ids(tmp_path / "some.parquet")
    codes = dict(zip(every.item_ids.tolist(), every.codes.tolist(), strict=True))
    assert len(some) == 15
    assert all(codes[i] == c for i, c in zip(some.item_ids.tolist(), some.codes.tolist(), strict=True))


# --- fused IDs ---------------------------------------------------------------------------------------------


def test_fused_fit_quantizes_the_unit_text_beside_the_weighted_unit_collaborative_vector(
    shop: Path, tmp_path: Path, capsys
) -> None:
    item_ids, X = read_embeddings(shop / "emb.parquet")
    cids, C = read_embeddings(shop / "sasrec-items.parquet")
    C = align_by_item_id(item_ids, cids, C)
    fused = fuse(X, C, weight=0.5)
    np.testing.assert_allclose(np.linalg.norm(fused[:, :16], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(fused[:, 16:], axis=1), 0.5, rtol=1e-6)
    expected = RQKMeans(n_levels=2, codebook_size=6, random_state=0).fit(fused).encode(fused)

    argv = ["fit", shop / "emb.parquet", "-o", tmp_path / "m", "--levels", "2", "--codebook-size", "6"]
    code, _, err = run([*argv, "--fuse", shop / "sasrec-items.parquet", "--fuse-weight", "0.5"], capsys)
    assert code == 0, err
    model = load_quantizer(tmp_path / "m")
    assert model.fusion_ == Fusion(0.5, 16, 16, str(shop / "sasrec-items.parquet"))
    np.testing.assert_array_equal(model.encode(model.fusion_.apply(X, C)), expected)
    # the library's one-call form gives the same model
    same = fit_fused(RQKMeans(n_levels=2, codebook_size=6, random_state=0), X, C, 0.5)
    np.testing.assert_array_equal(same.encode(fused), expected)


def test_fused_assign_reproduces_the_fitted_ids_whatever_the_collaborative_row_order(
    shop: Path, tmp_path: Path, capsys
) -> None:
    shuffled = shuffled_copy(shop / "sasrec-items.parquet", tmp_path / "shuffled.parquet")
    for name, collab in (("m", shop / "sasrec-items.parquet"), ("m2", shuffled)):
        argv = ["fit", shop / "emb.parquet", "-o", tmp_path / name, "--levels", "2", "--codebook-size", "6"]
        code, _, err = run([*argv, "--fuse", collab], capsys)
        assert code == 0, err
    fingerprints = [
        json.loads((tmp_path / m / "config.json").read_text())["fingerprint"] for m in ("m", "m2")
    ]
    assert fingerprints[0] == fingerprints[1]  # the same model from either row order

    tables = []
    for name, collab in (("a", shop / "sasrec-items.parquet"), ("b", shuffled)):
        out = tmp_path / f"ids-{name}.parquet"
        code, _, err = run(
            ["assign", tmp_path / "m", shop / "emb.parquet", "-o", out, "--fuse", collab], capsys
        )
        assert code == 0, err
        tables.append(read_ids(out))
    assert tables[0].item_ids.tolist() == tables[1].item_ids.tolist() == item_names(N_ITEMS)
    np.testing.assert_array_equal(tables[0].codes, tables[1].codes)
    assert tables[0].semantic_ids == tables[1].semantic_ids
    # and they are the codes the fitted model gives its fused training input
    model = load_quantizer(tmp_path / "m")
    item_ids, X = read_embeddings(shop / "emb.parquet")
    cids, C = read_embeddings(shuffled)
    np.testing.assert_array_equal(
        tables[0].base_codes, model.encode(fuse(X, align_by_item_id(item_ids, cids, C)))
    )


def test_collab_rq_vae_joins_by_item_id_not_row_order(shop: Path, tmp_path: Path, capsys) -> None:
    shuffled = shuffled_copy(shop / "sasrec-items.parquet", tmp_path / "shuffled.parquet", seed=1)
    fingerprints = []
    for name, collab in (("a", shop / "sasrec-items.parquet"), ("b", shuffled)):
        argv = ["fit", shop / "emb.parquet", "-o", tmp_path / name, "--method", "rq-vae"]
        code, _, err = run([*argv, "--config", shop / "rqvae.json", "--collab", collab], capsys)
        assert code == 0, err
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert config["collab_weight"] == 0.1  # the default weight
        fingerprints.append(config["fingerprint"])
    assert fingerprints[0] == fingerprints[1]


def test_stats_measures_a_fused_model_on_its_fused_input(shop: Path, tmp_path: Path, capsys) -> None:
    argv = ["fit", shop / "emb.parquet", "-o", tmp_path / "m", "--levels", "2", "--codebook-size", "6"]
    code, _, err = run([*argv, "--fuse", shop / "sasrec-items.parquet"], capsys)
    assert code == 0, err
    code, out, err = run(
        [
            "stats",
            tmp_path / "m",
            "--emb",
            shop / "emb.parquet",
            "--fuse",
            shop / "sasrec-items.parquet",
            "--json",
        ],
        capsys,
    )
    assert code == 0, err
    res = json.loads(out)
    assert res["dim"] == 32 and res["fusion"]["collab_dim"] == 16 and res["n_items"] == N_ITEMS
    assert 0 < res["reconstruction_error"] < 1


# --- errors ----------------------------------------------------------------------------------------------


def test_a_collaborative_table_with_other_items_is_one_library_error() -> None:
    X = clustered(n=N_ITEMS, dim=8)
    catalogue = item_names(N_ITEMS)
    with pytest.raises(SemidError) as e:
        align_by_item_id(catalogue, catalogue[:30], X[:30])
    assert (
        str(e.value)
        == "collab has 30 items, the catalogue has 41 (11 of the catalogue's items are missing, e.g. 'i30')"
    )
    with pytest.raises(SemidError) as e:
        align_by_item_id(catalogue, [*catalogue[1:], "x1", "x2"], np.vstack([X[1:], X[:2]]))
    assert str(e.value) == (
        "collab has 42 items, the catalogue has 41 "
        "(1 of the catalogue's items are missing, e.g. 'i0'; 2 are not in the catalogue, e.g. 'x1')"
    )
    np.testing.assert_array_equal(align_by_item_id(catalogue, catalogue[::-1], X[::-1]), X)


@pytest.mark.parametrize("option", ["--fuse", "--collab"])
@pytest.mark.parametrize(
    ("rows", "why"),
    [
        (slice(0, 30), "11 of {emb}'s items are missing, e.g. 'i30'"),
        ("extra", "2 are not in {emb}, e.g. 'x1'"),
    ],
    ids=["missing-items", "extra-items"],
)
def test_a_collaborative_table_with_other_items_is_one_cli_error_and_no_output(
    option: str, rows, why: str, shop: Path, tmp_path: Path, capsys
) -> None:
    ids, X = read_embeddings(shop / "sasrec-items.parquet")
    if rows == "extra":
        ids, X = np.concatenate([ids, ["x1", "x2"]]), np.vstack([X, X[:2]])
    else:
        ids, X = ids[rows], X[rows]
    bad = write_embeddings(tmp_path / "bad.parquet", ids, X)
    method = ["--method", "rq-vae", "--config", shop / "rqvae.json"]
    code, _, err = run(["fit", shop / "emb.parquet", "-o", tmp_path / "model", *method, option, bad], capsys)
    assert code == 1
    emb = shop / "emb.parquet"
    assert error_line(err) == f"Error: {bad} has {len(ids)} items, {emb} has 41 ({why.format(emb=emb)})"
    assert not (tmp_path / "model").exists() and not (tmp_path / "model.run").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["fit", "{emb}", "-o", "{tmp}/m", "--collab", "{items}"],
            "--collab applies to --method rq-vae only (a term of its loss); --fuse works with every method",
        ),
        (
            ["fit", "{emb}", "-o", "{tmp}/m", "--collab-weight", "0.5"],
            "--collab-weight needs --collab ITEMS.parquet",
        ),
        (["fit", "{emb}", "-o", "{tmp}/m", "--fuse-weight", "2"], "--fuse-weight needs --fuse ITEMS.parquet"),
        (
            ["fit", "{emb}", "-o", "{tmp}/m", "--fuse", "{items}", "--fuse-weight", "0"],
            "--fuse-weight 0 should be > 0",
        ),
        (
            ["assign", "{fused}", "{emb}", "-o", "{tmp}/ids.parquet"],
            "{fused} was fitted on 16 text + 16 collaborative values (weight 1) ({items}): "
            "give the collaborative vectors with --fuse",
        ),
        (
            ["assign", "{plain}", "{emb}", "-o", "{tmp}/ids.parquet", "--fuse", "{items}"],
            "--fuse: {plain} was fitted on embeddings alone, not fused ones",
        ),
        (
            ["assign", "{fused}", "{emb}", "-o", "{tmp}/ids", "--fuse", "{items}"],
            "--fuse joins the collaborative vectors in memory: write -o ids.parquet",
        ),
        (
            ["assign", "{fused}", "{emb}", "-o", "{tmp}/ids"],
            "{fused} was fitted on 16 text + 16 collaborative values (weight 1); a streamed assign "
            "encodes the embeddings alone: assign it in memory "
            "(semid assign MODEL EMB --fuse ITEMS.parquet -o ids.parquet)",
        ),
        (
            ["assign", "{fused}", "{emb}", "-o", "{tmp}/ids.parquet", "--fuse", "{emb8}"],
            "{emb8}: 8 values per row, but the model was fitted on 16 text values fused with 16 "
            "collaborative ones",
        ),
        (
            ["stats", "{fused}", "--emb", "{emb}"],
            "{fused} was fitted on 16 text + 16 collaborative values (weight 1) ({items}): "
            "give the collaborative vectors with --fuse",
        ),
        (
            ["report", "{fused}", "--emb", "{emb}", "-o", "{tmp}/r.html"],
            "{fused} was fitted on 16 text + 16 collaborative values (weight 1): report the IDs it assigned "
            "(semid assign --fuse ... -o ids.parquet; semid report ids.parquet --emb EMB)",
        ),
    ],
    ids=[
        "collab-needs-rq-vae",
        "collab-weight-alone",
        "fuse-weight-alone",
        "fuse-weight-zero",
        "fused-model-without-fuse",
        "fuse-for-a-plain-model",
        "fuse-streamed",
        "fused-model-streamed",
        "fuse-of-another-width",
        "stats-of-a-fused-model-without-fuse",
        "report-of-a-fused-model",
    ],
)
def test_user_errors(argv: list[str], message: str, shop: Path, tmp_path: Path, capsys) -> None:
    fused, plain = tmp_path / "fused", tmp_path / "plain"
    for model_dir, extra in ((fused, ["--fuse", shop / "sasrec-items.parquet"]), (plain, [])):
        code, _, err = run(
            ["fit", shop / "emb.parquet", "-o", model_dir, "--levels", "2", "--codebook-size", "4", *extra],
            capsys,
        )
        assert code == 0, err
    write_embeddings(tmp_path / "emb8.parquet", item_names(N_ITEMS), clustered(n=N_ITEMS, dim=8))
    names = {"emb": shop / "emb.parquet", "items": shop / "sasrec-items.parquet", "tmp": tmp_path}
    names.update(fused=fused, plain=plain, emb8=tmp_path / "emb8.parquet")
    code, _, err = run([a.format(**names) for a in argv], capsys)
    assert code == 1
    assert error_line(err) == f"Error: {message.format(**names)}"
    assert (
        not (tmp_path / "m").exists()
        and not (tmp_path / "ids.parquet").exists()
        and not (tmp_path / "ids").exists()
    )
