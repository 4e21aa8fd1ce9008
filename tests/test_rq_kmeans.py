"""RQKMeans: the sklearn-style surface, correctness on hand-made cases, determinism, persistence."""

import json

import numpy as np
import pytest
import torch

from conftest import clustered
from semid.errors import NotFittedError, SemidError
from semid.quantize import RQKMeans, load_quantizer
from semid.quantize.kmeans import balanced_assign, kmeans_parallel, kmeans_plusplus, nearest_centroid
from semid.quantize.metrics import relative_reconstruction_error


def test_fit_returns_self_and_sets_fitted_attributes(X):
    model = RQKMeans(n_levels=2, codebook_size=[8, 4], random_state=0)
    assert model.fit(X) is model
    assert [c.shape for c in model.codebooks_] == [(8, 16), (4, 16)]
    assert all(c.dtype == np.float32 for c in model.codebooks_)
    assert len(model.n_iter_) == 2 and model.inertia_ > 0
    assert model.n_features_in_ == 16


def test_hand_computed_two_level_case():
    # Four well separated points on a line, each level with two codes: level 0 splits left/right,
    # level 1 splits each side's residual (-1 / +1), so codes are exact and decoding is lossless.
    X = np.array([[-11.0], [-9.0], [9.0], [11.0]], dtype=np.float32)
    model = RQKMeans(n_levels=2, codebook_size=2, random_state=0, sample_size=0).fit(X)
    assert sorted(model.codebooks_[0].ravel().tolist()) == [-10.0, 10.0]
    assert sorted(model.codebooks_[1].ravel().tolist()) == [-1.0, 1.0]
    codes = model.encode(X)
    np.testing.assert_array_equal(model.decode(codes), X)
    assert len({tuple(c) for c in codes}) == 4
    # shared prefix = shared coarse cluster
    assert codes[0, 0] == codes[1, 0] != codes[2, 0] == codes[3, 0]
    assert model.inertia_ == pytest.approx(0.0, abs=1e-6)


def test_decode_of_encode_equals_greedy_quantization(X):
    model = RQKMeans(n_levels=3, codebook_size=8, random_state=0).fit(X)
    codes = model.encode(X)
    # Recompute the greedy residual quantization by brute force in float64.
    R = X.astype(np.float64)
    expected = np.zeros_like(R)
    for level, C in enumerate(model.codebooks_):
        d = ((R[:, None, :] - C[None].astype(np.float64)) ** 2).sum(-1)
        np.testing.assert_array_equal(codes[:, level], d.argmin(1))
        expected += C[codes[:, level]]
        R -= C[codes[:, level]]
    np.testing.assert_allclose(model.decode(codes), expected, atol=1e-5)


def test_more_levels_reconstruct_better(X):
    errs = [
        relative_reconstruction_error(X, m.decode(m.encode(X)))
        for m in (RQKMeans(n_levels=L, codebook_size=8, random_state=0).fit(X) for L in (1, 2, 3))
    ]
    assert errs[0] > errs[1] > errs[2]
    assert errs[0] < 0.5  # 8 centroids capture most of 12 clusters' structure


def test_same_seed_same_codes_and_different_seed_differs(X):
    a = RQKMeans(3, 8, random_state=1).fit_encode(X)
    b = RQKMeans(3, 8, random_state=1).fit_encode(X)
    c = RQKMeans(3, 8, random_state=2).fit_encode(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_fit_encode_equals_encode_after_fit(X):
    model = RQKMeans(3, 8, random_state=0)
    np.testing.assert_array_equal(model.fit_encode(X), model.encode(X))


def test_save_load_gives_identical_codes(tmp_path, X):
    model = RQKMeans(3, [16, 8, 8], random_state=0).fit(X)
    model.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "rq-kmeans" and config["codebook_size"] == [16, 8, 8]
    loaded = RQKMeans.from_pretrained(tmp_path / "m", device="cpu")
    for a, b in zip(model.codebooks_, loaded.codebooks_, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded.encode(X), model.encode(X))
    assert loaded.fingerprint_ == model.fingerprint_
    assert type(load_quantizer(tmp_path / "m")) is RQKMeans


def test_encode_is_chunk_size_independent(X):
    model = RQKMeans(3, 8, random_state=0).fit(X)
    np.testing.assert_array_equal(model.encode(X, batch_size=7), model.encode(X))


@pytest.mark.parametrize("batch_size", [0, -3, True, "7"])
def test_encode_refuses_a_batch_size_that_is_no_positive_integer(X, batch_size):
    model = RQKMeans(2, 4, random_state=0).fit(X)
    with pytest.raises(SemidError, match=rf"^batch_size={batch_size!r} should be a positive integer$"):
        model.encode(X, batch_size=batch_size)


def test_exact_ties_go_to_lowest_index():
    import torch

    C = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    x = torch.tensor([[0.5, 0.5], [0.0, 0.0]])  # equidistant from 0 and 1; from all three
    codes, dist = nearest_centroid(x, C)
    assert codes.tolist() == [0, 0]
    np.testing.assert_allclose(dist.numpy(), [0.5, 1.0], atol=1e-6)


@pytest.mark.parametrize("n", [600, 601, 599], ids=["divisible", "plus-one", "minus-one"])
def test_balanced_clusters_hold_n_over_k_plus_minus_one(n):
    X = clustered(n=n, centres=3, noise=0.05)  # very unbalanced natural clusters
    model = RQKMeans(n_levels=2, codebook_size=[8, 5], balanced=True, random_state=0).fit(X)
    codes = model.encode(X)
    for level, K in enumerate([8, 5]):
        sizes = np.bincount(codes[:, level], minlength=K)
        assert sizes.min() >= n // K and sizes.max() <= -(-n // K), sizes
    # encoding the training set reproduces the training codes; plain encoding is the greedy one
    np.testing.assert_array_equal(model.encode(X), model.fit_encode(X))
    plain = model.encode(X, balanced=False)
    assert np.bincount(plain[:, 0], minlength=8).max() > -(-n // 8)


def test_balanced_assignment_is_near_optimal_on_an_easy_case():
    import torch

    # Two clusters of 50 points each around two centres: the balanced assignment is the natural one.
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(-5, 0.1, (50, 2)), rng.normal(5, 0.1, (50, 2))].astype(np.float32)
    C = torch.tensor([[-5.0, -5.0], [5.0, 5.0]])
    codes = balanced_assign(torch.from_numpy(X), C).numpy()
    np.testing.assert_array_equal(codes, np.r_[np.zeros(50), np.ones(50)])


def test_balanced_fewer_better_than_random_cost():
    import torch

    X = torch.from_numpy(clustered(n=400, dim=8, centres=4))
    C = X[:10].clone()
    codes = balanced_assign(X, C)
    cost = ((X - C[codes]) ** 2).sum()
    perm = torch.randperm(400, generator=torch.Generator().manual_seed(0))
    random_cost = ((X - C[codes[perm]]) ** 2).sum()  # same sizes, random assignment
    assert cost < 0.6 * random_cost


def test_rank_last_level_orders_last_codebook_by_distance(X):
    model = RQKMeans(2, 8, random_state=0).fit(X)
    ranking = model.rank_last_level(X[:5])
    assert ranking.shape == (5, 8)
    np.testing.assert_array_equal(ranking[:, 0], model.encode(X[:5])[:, 1])
    assert all(sorted(r) == list(range(8)) for r in ranking.tolist())


def test_not_fitted():
    with pytest.raises(NotFittedError, match="not fitted yet"):
        RQKMeans().encode(np.zeros((2, 3)))


@pytest.mark.parametrize(
    "kwargs, data, message",
    [
        ({"codebook_size": 8}, np.zeros((5, 3)), r"n_samples=5 should be >= codebook_size=8"),
        ({"n_levels": 0}, np.zeros((50, 3)), r"n_levels=0 should be an integer >= 1"),
        ({"codebook_size": 1}, np.zeros((50, 3)), r"codebook_size=1 should be >= 2"),
        ({"n_levels": 2, "codebook_size": [4, 4, 4]}, np.zeros((50, 3)), r"codebook_size has 3 entries"),
        ({"init": "kmeans"}, np.zeros((50, 3)), r"init='kmeans' is not one of"),
        ({}, np.full((300, 3), np.nan), r"X row 0: contains NaN"),
        ({}, np.zeros((0, 3)), r"X has no rows"),
        ({}, np.zeros(5), r"X has shape \(5,\), expected a 2-D matrix"),
        ({}, np.zeros((50, 0)), r"X has shape \(50, 0\), expected a 2-D matrix \(n_items, dim >= 1\)"),
        ({}, np.zeros((50, 3), complex), r"X has dtype complex128, expected a real numeric matrix"),
        ({}, [[1.0, 2.0], [3.0]], r"X has rows of different lengths"),
    ],
    ids=[
        "too-few-rows",
        "zero-levels",
        "codebook-1",
        "sizes-mismatch",
        "bad-init",
        "nan",
        "empty",
        "1-d",
        "zero-width",
        "complex",
        "ragged",
    ],  # fmt: skip
)
def test_bad_input_is_rejected_with_a_clear_message(kwargs, data, message):
    params = {"n_levels": 2, "codebook_size": 4, **kwargs}
    with pytest.raises(SemidError, match=message):
        RQKMeans(**params).fit(data)


def test_inf_row_and_wrong_dimension_at_encode(X):
    model = RQKMeans(2, 4, random_state=0).fit(X)
    bad = X[:20].copy()
    bad[17, 3] = np.inf
    with pytest.raises(SemidError, match=r"X row 17: contains inf"):
        model.encode(bad)
    with pytest.raises(SemidError, match=r"X has 15 features, but RQKMeans was fitted with 16"):
        model.encode(X[:, :15])
    with pytest.raises(SemidError, match=r"codes row 1: level 0 code 9 is outside \[0, 4\)"):
        model.decode(np.array([[0, 0], [9, 0]]))


def test_load_errors(tmp_path, X):
    with pytest.raises(SemidError, match="no such model directory"):
        load_quantizer(tmp_path / "missing")
    RQKMeans(2, 4, random_state=0).fit(X).save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(SemidError, match=r"config.json line 1: invalid JSON"):
        load_quantizer(tmp_path / "m")


# --- seeding ----------------------------------------------------------------------------------------------


def _separated(n_per=40, k=24, dim=8, seed=0):
    """k tight, far-apart blobs: a good seeding puts one centre in each."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, dim)) * 10
    X = np.repeat(centres, n_per, axis=0) + 0.01 * rng.normal(size=(k * n_per, dim))
    return torch.from_numpy(X.astype(np.float32)), np.repeat(np.arange(k), n_per)


@pytest.mark.parametrize("seeder", [kmeans_parallel, kmeans_plusplus])
def test_seeding_puts_one_centre_in_every_separated_blob(seeder):
    X, blob = _separated()
    C = seeder(X, 24, np.random.default_rng(0))
    codes, _ = nearest_centroid(X, C)
    owner = [set(blob[codes.numpy() == j].tolist()) for j in range(24)]
    assert C.shape == (24, 8) and all(len(o) == 1 for o in owner)
    assert len(set().union(*owner)) == 24  # every blob has its own centre


def test_kmeans_parallel_is_deterministic_and_handles_tiny_inputs():
    X, _ = _separated(n_per=3, k=10)
    a = kmeans_parallel(X, 10, np.random.default_rng(5))
    b = kmeans_parallel(X, 10, np.random.default_rng(5))
    assert torch.equal(a, b)
    few = kmeans_parallel(X[:12], 12, np.random.default_rng(0))  # as many centres as rows: every row
    assert sorted(map(tuple, few.numpy().tolist())) == sorted(map(tuple, X[:12].numpy().tolist()))


def test_weighted_kmeans_plusplus_follows_the_weights():
    """Draws go by d^2 x weight: the heavy point first, then the near-but-weighted one, never the weightless."""
    X = torch.tensor([[0.0, 0.0], [10.0, 0.0], [-10.0, 0.0]])
    w = np.array([1.0, 1000.0, 1e-9])
    for seed in range(5):
        C = kmeans_plusplus(X, 2, np.random.default_rng(seed), sample_weight=w)
        assert C.tolist() == [[10.0, 0.0], [0.0, 0.0]]
    unweighted = {
        tuple(map(tuple, kmeans_plusplus(X, 2, np.random.default_rng(s)).tolist())) for s in range(20)
    }
    assert any((-10.0, 0.0) in c for c in unweighted)  # without weights the far point is drawn too


def test_kmeans_parallel_default_fits_as_well_as_kmeans_plusplus():
    X = clustered(3000, 16, centres=60, noise=0.3, seed=4)
    errs = {}
    for init in ("k-means||", "k-means++"):
        models = [RQKMeans(n_levels=2, codebook_size=32, init=init, random_state=s).fit(X) for s in range(5)]
        errs[init] = np.mean([relative_reconstruction_error(X, m.decode(m.encode(X))) for m in models])
    assert RQKMeans().init == "k-means||"
    assert errs["k-means||"] <= 1.02 * errs["k-means++"]  # 0.1218 vs 0.1219 when written


def test_codebook_refinement_lowers_the_reconstruction_error():
    X = clustered(4000, 16, centres=300, noise=0.3, seed=6)
    errs = []
    for n_refine in (0, 1, 2):
        m = RQKMeans(n_levels=3, codebook_size=16, n_refine=n_refine, random_state=0).fit(X)
        errs.append(relative_reconstruction_error(X, m.decode(m.encode(X))))
        assert m.inertia_ == pytest.approx(((X - m.decode(m.encode(X))) ** 2).sum(), rel=1e-4)
    assert errs[1] <= errs[0] and errs[2] <= errs[1]  # the best round is kept: never worse
    assert errs[2] < 0.99 * errs[0]


def test_one_refinement_round_never_raises_the_error_of_fixed_codes():
    from semid.quantize.rq_kmeans import refine_codebooks

    rng = np.random.default_rng(0)
    X = torch.from_numpy(clustered(1000, 8, seed=3))
    cbs = [torch.from_numpy(rng.normal(size=(6, 8)).astype(np.float32)) for _ in range(3)]

    def greedy(codebooks):
        R, codes = X.clone(), []
        for C in codebooks:
            c = nearest_centroid(R, C, return_dist=False)[0]
            R -= C[c]
            codes.append(c)
        return codes, float((R**2).sum())

    codes, before = greedy(cbs)
    error, new = refine_codebooks(X, cbs)
    assert error == pytest.approx(before, rel=1e-5)  # it reports the error of the codebooks it was given
    fixed = float(((X - sum(C[c] for C, c in zip(new, codes, strict=True))) ** 2).sum())
    assert fixed <= before * (1 + 1e-6)  # same codes, least-squares centroids


@pytest.mark.parametrize("method", ["rq-kmeans", "rq-vae"])
def test_a_negative_seed_is_a_semid_error_before_any_work(method):
    from semid.quantize.rq_vae import RQVAE

    model = (
        RQKMeans(n_levels=1, codebook_size=4, random_state=-1)
        if method == "rq-kmeans"
        else RQVAE(random_state=-1)
    )
    with pytest.raises(SemidError, match=r"random_state=-1 should be a non-negative integer"):
        model._validate_params()  # what `semid fit` calls before reading the embeddings
    with pytest.raises(SemidError, match=r"random_state=-1"):
        model.fit(np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda c: c.pop("n_levels"),
            r"config\.json: codebook_size has 2 entries \(\[4, 4\]\), expected one per level",
        ),
        (lambda c: c.update(balanced="no"), r"config\.json: balanced='no' should be True or False"),
        (lambda c: c.update(tol=None), r"config\.json: tol=None should be a number >= 0"),
        (
            lambda c: c.update(codebook_size=2.5),
            r"config\.json: codebook_size=2\.5 should be an integer or a list",
        ),
        (lambda c: c.update(model_type=["rq_kmeans"]), r"config\.json: unknown model_type \['rq_kmeans'\]"),
    ],
    ids=["missing-key", "balanced-string", "tol-none", "size-float", "type-list"],
)
def test_a_hand_edited_config_is_one_error_naming_the_file(tmp_path, edit, message) -> None:
    X = clustered(n=200, dim=8)
    RQKMeans(2, 4, random_state=0).fit(X).save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    edit(config)
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(SemidError, match=message):
        load_quantizer(tmp_path / "m")


def test_a_config_that_is_not_utf8_is_one_error(tmp_path) -> None:
    RQKMeans(2, 4, random_state=0).fit(clustered(n=200, dim=8)).save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_bytes(b'{"model_type": "rq_kmeans\xff"}')
    with pytest.raises(SemidError, match=r"config\.json"):
        load_quantizer(tmp_path / "m")
