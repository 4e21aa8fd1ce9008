"""ProductQuantizer: codes, reconstruction, OPQ, determinism, persistence, errors, and the `semid fit` path."""

import sys

import numpy as np
import pytest

from conftest import clustered
from semid.cli import main
from semid.errors import NotFittedError, SemidError
from semid.ids.table import read_ids
from semid.quantize import ProductQuantizer, RQKMeans, load_quantizer
from semid.quantize.metrics import relative_reconstruction_error


def rel_error(model, X):
    return relative_reconstruction_error(X, model.decode(model.encode(X)))


def test_codes_hold_one_digit_per_subvector_inside_its_codebook(X):
    model = ProductQuantizer(n_subvectors=4, codebook_size=[8, 4, 8, 2], random_state=0)
    assert model.fit(X) is model
    codes = model.encode(X)
    assert codes.shape == (len(X), 4) and codes.dtype == np.int32
    assert codes.min() >= 0 and codes.max(axis=0).tolist() == [7, 3, 7, 1]  # every code used, none beyond
    assert model.codebook_sizes_ == [8, 4, 8, 2]
    assert [c.shape for c in model.centroids_] == [(8, 4), (4, 4), (8, 4), (2, 4)]
    assert model.rotation_ is None and model.n_features_in_ == 16 and len(model.n_iter_) == 4
    np.testing.assert_array_equal(model.fit_encode(X), codes)


def test_hand_computed_case_each_subvector_is_quantized_on_its_own():
    # Sub-vector 0 is feature 0 (values -1 / +1), sub-vector 1 is feature 1 (-10 / +10): 2 x 2 codes
    # describe the 4 points exactly, and a digit depends on its own feature only.
    X = np.array([[-1, -10], [-1, 10], [1, -10], [1, 10]] * 5, dtype=np.float32)
    model = ProductQuantizer(2, 2, random_state=0, sample_size=0).fit(X)
    assert sorted(model.centroids_[0].ravel().tolist()) == [-1.0, 1.0]
    assert sorted(model.centroids_[1].ravel().tolist()) == [-10.0, 10.0]
    codes = model.encode(X)
    np.testing.assert_array_equal(model.decode(codes), X)
    assert codes[0, 0] == codes[1, 0] != codes[2, 0] and codes[0, 1] == codes[2, 1] != codes[1, 1]
    assert model.inertia_ == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("opq", [False, True], ids=["pq", "opq"])
def test_reconstruction_error_falls_with_more_centroids(X, opq):
    errors = [rel_error(ProductQuantizer(4, K, opq=opq, random_state=0).fit(X), X) for K in (4, 16, 64)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.05


def test_opq_learns_an_orthonormal_rotation_that_reconstructs_better(X):
    plain = ProductQuantizer(4, 4, random_state=0).fit(X)
    opq = ProductQuantizer(4, 4, opq=True, random_state=0).fit(X)
    R = opq.rotation_
    assert R.shape == (16, 16) and R.dtype == np.float32
    np.testing.assert_allclose(R @ R.T, np.eye(16), atol=1e-5)
    # the clustered data spreads its variance unevenly over features; the rotation balances it
    assert rel_error(opq, X) < 0.7 * rel_error(plain, X)
    # decode maps back from the rotated space: the centroids side by side, times R
    codes = opq.encode(X[:5])
    Y = np.concatenate([C[codes[:, m]] for m, C in enumerate(opq.centroids_)], axis=1)
    np.testing.assert_allclose(opq.decode(codes), Y @ R, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opq", [False, True], ids=["pq", "opq"])
def test_same_seed_same_codes_and_another_seed_differs(X, opq):
    a = ProductQuantizer(4, 16, opq=opq, random_state=3).fit(X)
    b = ProductQuantizer(4, 16, opq=opq, random_state=3).fit(X)
    c = ProductQuantizer(4, 16, opq=opq, random_state=4).fit(X)
    np.testing.assert_array_equal(a.encode(X), b.encode(X))
    assert a.fingerprint_ == b.fingerprint_
    assert not np.array_equal(a.encode(X), c.encode(X))


@pytest.mark.parametrize("opq", [False, True], ids=["pq", "opq"])
def test_save_load_round_trip_gives_identical_codes(tmp_path, X, opq):
    model = ProductQuantizer(4, [16, 8, 16, 8], opq=opq, random_state=0).fit(X)
    model.save_pretrained(tmp_path / "pq")
    assert sorted(p.name for p in (tmp_path / "pq").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_quantizer(tmp_path / "pq", device="cpu")
    assert isinstance(loaded, ProductQuantizer) and loaded.fingerprint_ == model.fingerprint_
    assert loaded.opq == opq and loaded.codebook_sizes_ == [16, 8, 16, 8]
    np.testing.assert_array_equal(loaded.encode(X), model.encode(X))
    codes = model.encode(X)
    np.testing.assert_array_equal(loaded.decode(codes), model.decode(codes))
    with pytest.raises(SemidError, match=r"holds a 'pq' model, not a RQKMeans$"):
        RQKMeans.from_pretrained(tmp_path / "pq")


def test_encoding_does_not_depend_on_the_chunk_size_and_has_no_balanced_mode(X):
    model = ProductQuantizer(4, 8, opq=True, random_state=0).fit(X)
    np.testing.assert_array_equal(model.encode(X, batch_size=7), model.encode(X))
    np.testing.assert_array_equal(model.encode(X, balanced=False), model.encode(X))
    with pytest.raises(SemidError, match=r"^product quantization has no balanced assignment"):
        model.encode(X, balanced=True)


def test_rank_last_level_orders_the_last_codebook_by_distance(X):
    model = ProductQuantizer(4, 8, opq=True, random_state=0).fit(X)
    ranks = model.rank_last_level(X[:30])
    assert ranks.shape == (30, 8) and ranks.dtype == np.int32
    np.testing.assert_array_equal(ranks[:, 0], model.encode(X[:30])[:, -1])  # nearest first
    assert all(sorted(r) == list(range(8)) for r in ranks.tolist())


def test_pca_dim_cuts_the_sub_vectors_from_the_leading_principal_components(X):
    # X (n, 16) lives near a 4-d subspace plus small noise: 4 components keep almost all its variance
    rng = np.random.default_rng(0)
    low = X[:, :4] @ rng.standard_normal((4, 16)).astype(np.float32) + 3.0  # (n, 16), rank 4, off-centre
    Z = low + 0.01 * rng.standard_normal(low.shape).astype(np.float32)
    model = ProductQuantizer(2, 8, pca_dim=4, opq=True, random_state=0).fit(Z)
    P, mu = model.pca_components_, model.pca_mean_
    assert P.shape == (4, 16) and mu.shape == (16,) and model.n_features_in_ == 16
    np.testing.assert_allclose(P @ P.T, np.eye(4), atol=1e-5)  # orthonormal components
    np.testing.assert_allclose(mu, Z.mean(axis=0), atol=1e-5)
    assert model.pca_explained_ > 0.999
    assert [c.shape for c in model.centroids_] == [(8, 2), (8, 2)]  # 4 components / 2 sub-vectors
    assert model.rotation_.shape == (4, 4)
    # each component's largest entry is positive (the SVD's sign fixed), so a seed gives one model
    assert all(row[np.abs(row).argmax()] > 0 for row in P)
    # the codes are those of the reduced, rotated vectors; decode maps back through R, P and the mean
    codes = model.encode(Z)
    Y = np.concatenate([C[codes[:, m]] for m, C in enumerate(model.centroids_)], axis=1)  # (n, 4)
    np.testing.assert_allclose(model.decode(codes), Y @ model.rotation_ @ P + mu, rtol=1e-4, atol=1e-4)
    plain = ProductQuantizer(2, 8, random_state=0).fit(Z)  # 8 features per sub-vector, 6 of them noise
    assert rel_error(model, Z) < rel_error(plain, Z)


def test_pca_model_round_trips_and_gives_the_same_codes_for_the_same_seed(tmp_path, X):
    model = ProductQuantizer(4, 8, pca_dim=8, random_state=0).fit(X)
    again = ProductQuantizer(4, 8, pca_dim=8, random_state=0).fit(X)
    np.testing.assert_array_equal(again.encode(X), model.encode(X))
    model.save_pretrained(tmp_path / "pq")
    loaded = load_quantizer(tmp_path / "pq", device="cpu")
    assert loaded.pca_dim == 8 and loaded.n_features_in_ == 16
    assert loaded.pca_explained_ == pytest.approx(model.pca_explained_)
    np.testing.assert_array_equal(loaded.encode(X), model.encode(X))
    np.testing.assert_array_equal(loaded.rank_last_level(X[:20]), model.rank_last_level(X[:20]))
    codes = model.encode(X)
    np.testing.assert_array_equal(loaded.decode(codes), model.decode(codes))
    with pytest.raises(SemidError, match=r"^X has 8 features, but ProductQuantizer was fitted with 16$"):
        loaded.encode(X[:, :8])


def test_a_model_saved_before_pca_dim_existed_still_loads_and_encodes_alike(tmp_path, X):
    import json

    model = ProductQuantizer(4, 8, opq=True, random_state=0).fit(X)
    model.save_pretrained(tmp_path / "pq")
    config = json.loads((tmp_path / "pq" / "config.json").read_text())
    assert config["pca_dim"] is None
    for key in ("pca_dim", "pca_explained"):  # the config of an older semid
        del config[key]
    (tmp_path / "pq" / "config.json").write_text(json.dumps(config))
    loaded = load_quantizer(tmp_path / "pq", device="cpu")
    assert loaded.pca_dim is None and loaded.pca_components_ is None
    np.testing.assert_array_equal(loaded.encode(X), model.encode(X))


@pytest.mark.parametrize(
    "kwargs, data, message",
    [
        ({"n_subvectors": 3}, np.zeros((50, 16)), r"^X has 16 features, which n_subvectors=3 does not divide"),
        ({"codebook_size": 64}, np.zeros((50, 16)), r"^n_samples=50 should be >= codebook_size=64$"),
        ({}, np.full((50, 16), np.nan), r"^X row 0: contains NaN$"),
        ({}, np.zeros((0, 16)), r"^X has no rows$"),
        ({"n_subvectors": 0}, np.zeros((50, 16)), r"^n_subvectors=0 should be an integer >= 1$"),
        ({"codebook_size": 1}, np.zeros((50, 16)), r"^codebook_size=1 should be >= 2$"),
        (
            {"codebook_size": [4, 4]},
            np.zeros((50, 16)),
            r"^codebook_size has 2 entries \(\[4, 4\]\), expected one per sub-vector \(n_subvectors=4\)$",
        ),
        ({"opq": "yes"}, np.zeros((50, 16)), r"^opq='yes' should be True or False$"),
        ({"opq_iter": 0}, np.zeros((50, 16)), r"^opq_iter=0 should be an integer >= 1$"),
        ({"random_state": -1}, np.zeros((50, 16)), r"^random_state=-1 should be a non-negative integer"),
        ({"pca_dim": 0}, np.zeros((50, 16)), r"^pca_dim=0 should be None or an integer >= 1$"),
        ({"pca_dim": 32}, np.zeros((50, 16)), r"^pca_dim=32 is more than the 16 features of X$"),
        ({"pca_dim": 6}, np.zeros((50, 16)), r"^pca_dim=6, which n_subvectors=4 does not divide"),
        (
            {"pca_dim": 8, "n_subvectors": 2, "codebook_size": 2},
            np.zeros((4, 16)),
            r"^pca_dim=8 is more than the 4 rows of X$",
        ),
    ],
    ids=["indivisible", "too-few-rows", "nan", "empty", "zero-subvectors", "codebook-1", "sizes", "opq",
         "opq-iter", "seed", "pca-0", "pca-too-wide", "pca-indivisible", "pca-too-few-rows"],
)  # fmt: skip
def test_bad_input_is_one_clear_error(kwargs, data, message):
    with pytest.raises(SemidError, match=message):
        ProductQuantizer(**{"n_subvectors": 4, "codebook_size": 4, **kwargs}).fit(data)


def test_not_fitted_and_wrong_dimension_and_codes_out_of_range(X):
    with pytest.raises(NotFittedError, match="not fitted yet"):
        ProductQuantizer(4, 4).encode(X)
    model = ProductQuantizer(4, 4, random_state=0).fit(X)
    with pytest.raises(SemidError, match=r"^X has 12 features, but ProductQuantizer was fitted with 16$"):
        model.encode(X[:, :12])
    with pytest.raises(SemidError, match=r"^codes row 1: level 2 code 4 is outside \[0, 4\)$"):
        model.decode(np.array([[0, 0, 0, 0], [0, 0, 4, 0]]))


def test_opq_without_faiss_is_one_error_naming_the_extra_and_plain_pq_needs_no_faiss(X, monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` now raises ImportError
    with pytest.raises(SemidError, match=r"^opq=True needs faiss: pip install 'semid\[faiss\]'$"):
        ProductQuantizer(4, 4, opq=True).fit(X)
    assert ProductQuantizer(4, 4, random_state=0).fit(X).encode(X).shape == (len(X), 4)


# --- `semid fit --method pq` -> `semid assign` -------------------------------------------------------------


def run(capsys, *argv):
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    cap = capsys.readouterr()
    return e.value.code, cap.out, cap.err


def test_cli_fits_opq_and_assigns_unique_ids_with_a_suffix_level(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    X = clustered(n=300, dim=16)
    emb = tmp_path / "emb.parquet"
    ids = [f"item{i:03d}" for i in range(300)]
    pq.write_table(
        pa.table({"item_id": ids, "embedding": pa.array(list(X), type=pa.list_(pa.float32()))}), emb
    )
    argv = [
        "fit",
        str(emb),
        "-o",
        str(tmp_path / "pq"),
        "--method",
        "pq",
        "--levels",
        "4",
        "--codebook-size",
        "4",
    ]
    code, out, err = run(capsys, *argv, "--opq")
    assert code in (0, None), err
    assert "OPQ fitted in" in out and "unique IDs before dedup" in out
    assert isinstance(load_quantizer(tmp_path / "pq"), ProductQuantizer)
    code, out, err = run(
        capsys, "assign", str(tmp_path / "pq"), str(emb), "-o", str(tmp_path / "ids.parquet")
    )
    assert code in (0, None), err
    t = read_ids(tmp_path / "ids.parquet")
    assert t.codes.shape == (300, 5) and t.base_codes.shape == (300, 4)  # 4 digits + the suffix level
    assert len(set(t.semantic_ids)) == 300 and t.meta["model_type"] == "pq"

    code, _, err = run(capsys, *argv[:4], "--opq")  # --method rq-kmeans (the default)
    assert code == 1 and err == "Error: --opq applies to --method pq only\n"
    code, _, err = run(capsys, *argv[:4], "--pca-dim", "8")
    assert code == 1 and err == "Error: --pca-dim applies to --method pq only\n"
    code, out, err = run(capsys, *argv[:3], str(tmp_path / "pca"), *argv[4:], "--pca-dim", "8")
    assert code in (0, None), err
    assert "PQ on 8 principal components (" in out
    assert load_quantizer(tmp_path / "pca").pca_components_.shape == (8, 16)
    code, _, err = run(
        capsys, "fit", str(emb), "-o", str(tmp_path / "pq3"), "--method", "pq", "--levels", "3"
    )
    assert code == 1
    assert err.splitlines()[-1] == (
        "Error: X has 16 features, which n_subvectors=3 does not divide "
        "(every sub-vector needs the same number of features)"
    )
    assert not (tmp_path / "pq3").exists()


def test_a_fitted_opq_model_loads_and_encodes_without_faiss(tmp_path, monkeypatch) -> None:
    pytest.importorskip("faiss")
    import sys

    from semid.quantize import ProductQuantizer, load_quantizer

    X = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    model = ProductQuantizer(n_subvectors=2, codebook_size=4, opq=True, random_state=0).fit(X)
    model.save_pretrained(tmp_path / "opq")
    monkeypatch.setitem(sys.modules, "faiss", None)  # a serving machine without faiss
    np.testing.assert_array_equal(load_quantizer(tmp_path / "opq").encode(X), model.encode(X))
