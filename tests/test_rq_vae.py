"""RQVAE: the RQKMeans surface, code health, the collaborative term, config checks, save/load."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from conftest import TINY_RQVAE, clustered
from semid.errors import NotFittedError, SemidError
from semid.quantize import RQKMeans, load_quantizer
from semid.quantize.metrics import codebook_usage, collision_stats
from semid.quantize.rq_vae import RQVAE, RQVAEConfig
from semid.quantize.train import TrainConfig

TINY = TINY_RQVAE


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**kw) -> RQVAE:
    return RQVAE(**{**TINY, **kw})


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return clustered(n=400, dim=16, centres=12, noise=0.3)


@pytest.fixture(scope="module")
def fitted(data) -> RQVAE:
    return tiny(n_levels=3).fit(data)


def test_fit_returns_self_and_sets_the_rq_kmeans_surface(data):
    model = tiny()
    assert model.fit(data) is model
    assert model.codebook_sizes_ == [8, 8]
    assert [c.shape for c in model.latent_codebooks_] == [(8, 4), (8, 4)]
    assert model.n_features_in_ == 16
    assert model.n_epochs_ == 6 and model.n_steps_ == 6 * 4  # 400 rows / 100 per batch
    assert len(model.history_) == 6
    codes = model.encode(data)
    assert codes.shape == (400, 2) and codes.dtype == np.int32
    assert codes.min() >= 0 and codes.max() < 8
    X_hat = model.decode(codes)
    assert X_hat.shape == (400, 16) and X_hat.dtype == np.float32


def test_decode_is_the_decoder_applied_to_the_sum_of_chosen_codewords(fitted, data):
    codes = fitted.encode(data[:20])
    zq = sum(torch.from_numpy(C[codes[:, level]]) for level, C in enumerate(fitted.latent_codebooks_))
    with torch.no_grad():
        expected = fitted.net_.decoder(zq.float()).numpy()
    np.testing.assert_allclose(fitted.decode(codes), expected, atol=1e-5)


def test_encode_is_greedy_nearest_codeword_of_the_latent(fitted, data):
    codes = fitted.encode(data)
    R = fitted.latent(data).astype(np.float64)
    for level, C in enumerate(fitted.latent_codebooks_):
        d = ((R[:, None, :] - C[None].astype(np.float64)) ** 2).sum(-1)
        np.testing.assert_array_equal(codes[:, level], d.argmin(1))
        R -= C[codes[:, level]]


def test_encoding_does_not_depend_on_the_batch(fitted, data):
    whole = fitted.encode(data)
    np.testing.assert_array_equal(whole, np.concatenate([fitted.encode(data[:7]), fitted.encode(data[7:])]))
    np.testing.assert_array_equal(whole, fitted.encode(data, batch_size=33))


def test_encode_refuses_a_batch_size_that_is_no_positive_integer(fitted, data):
    for bad in (0, -1, 2.5):
        with pytest.raises(SemidError, match=rf"^batch_size={bad!r} should be a positive integer$"):
            fitted.encode(data, batch_size=bad)


def test_fit_encode_equals_encode_after_fit(data):
    model = tiny(epochs=2)
    np.testing.assert_array_equal(model.fit_encode(data), model.encode(data))


def test_same_seed_same_model_and_a_different_seed_differs(data):
    a, b, c = (tiny(epochs=3, random_state=s).fit(data) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.encode(data), b.encode(data))
    assert a.fingerprint_ == b.fingerprint_ != c.fingerprint_
    strip = [{k: v for k, v in r.items() if not k.endswith("_s")} for r in a.history_]
    assert strip == [{k: v for k, v in r.items() if not k.endswith("_s")} for r in b.history_]


def test_fit_leaves_the_global_torch_rng_alone(data):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny(epochs=1, dropout=0.1).fit(data)
    torch.testing.assert_close(torch.rand(3), expected)


def test_defaults_use_every_code_and_tell_items_apart_like_rq_kmeans(fitted, data):
    codes = fitted.encode(data)
    assert [lv["usage"] for lv in codebook_usage(codes, fitted.codebook_sizes_)] == [1.0, 1.0, 1.0]
    # 12 clusters of ~33 similar items cannot all get distinct IDs from 8 x 8 x 8 codes; the learned codes
    # must still tell apart at least as many items as residual k-means does.
    rq_kmeans = RQKMeans(3, 8, random_state=0).fit_encode(data)
    assert collision_stats(codes)["n_unique"] >= collision_stats(rq_kmeans)["n_unique"]


def test_without_kmeans_init_and_dead_code_reset_codebooks_collapse(data):
    bare = tiny(n_levels=3, kmeans_init=False, dead_code_threshold=0, balanced_last_level=False).fit(data)
    healthy = tiny(n_levels=3).fit(data)
    u_bare = [lv["usage"] for lv in codebook_usage(bare.encode(data), [8] * 3)]
    u_healthy = [lv["usage"] for lv in codebook_usage(healthy.encode(data), [8] * 3)]
    assert min(u_bare) < 0.75 <= min(u_healthy)
    assert collision_stats(healthy.encode(data))["n_unique"] > collision_stats(bare.encode(data))["n_unique"]


def _nmi(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised mutual information of two labelings (1 = same partition, 0 = independent)."""
    a = np.unique(a, return_inverse=True)[1]
    b = np.unique(b, return_inverse=True)[1]
    P = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(P, (a, b), 1.0 / len(a))
    pa, pb = P.sum(1), P.sum(0)
    nz = P > 0
    mi = (P[nz] * np.log(P[nz] / np.outer(pa, pb)[nz])).sum()

    def h(p):
        return -(p[p > 0] * np.log(p[p > 0])).sum()

    return float(mi / np.sqrt(h(pa) * h(pb)))


def test_collaborative_term_moves_codes_toward_the_collaborative_structure():
    # Content: a strong grouping `a` plus a weaker one `b`; the collaborative vectors know only `b`.
    rng = np.random.default_rng(0)
    n = 600
    a, b = rng.integers(4, size=n), rng.integers(4, size=n)
    X = (
        rng.normal(size=(4, 16))[a] + 0.5 * rng.normal(size=(4, 16))[b] + 0.3 * rng.normal(size=(n, 16))
    ).astype(np.float32)
    M = (3 * np.eye(4)[b] + 0.3 * rng.normal(size=(n, 4))).astype(np.float32)
    opts = dict(codebook_size=4, epochs=15)
    plain = tiny(**opts).fit(X).encode(X)[:, 0]
    aligned = tiny(**opts, collab_weight=1.0).fit(X, collab=M).encode(X)[:, 0]
    assert _nmi(plain, a) > 0.3 and _nmi(plain, b) < 0.1  # without it, the first level follows content
    # with it, the first level follows the collaborative groups
    assert _nmi(aligned, b) > _nmi(plain, b) + 0.3
    assert _nmi(aligned, a) < _nmi(plain, a)


def test_collaborative_term_needs_a_row_aligned_matrix(data):
    with pytest.raises(SemidError) as e:
        tiny(collab_weight=1.0).fit(data)
    assert str(e.value) == "collab_weight=1.0 needs collaborative embeddings: fit(X, collab=M)"
    with pytest.raises(SemidError) as e:
        tiny(collab_weight=1.0).fit(data, collab=np.zeros((399, 4), np.float32))
    assert str(e.value) == "collab has 399 rows, X has 400 (one per row of X)"


def test_rank_last_level_starts_with_the_encoded_last_code(fitted, data):
    ranks = fitted.rank_last_level(data[:50])
    assert ranks.shape == (50, 8)
    np.testing.assert_array_equal(ranks[:, 0], fitted.encode(data[:50])[:, -1])
    assert all(sorted(r) == list(range(8)) for r in ranks)


def test_balanced_encode_gives_equal_sized_last_level_groups(fitted, data):
    codes = fitted.encode(data, balanced=True)
    counts = np.bincount(codes[:, -1], minlength=8)
    assert counts.min() == 50 and counts.max() == 50  # 400 rows over 8 codes
    np.testing.assert_array_equal(codes[:, :-1], fitted.encode(data)[:, :-1])


def test_save_load_gives_identical_codes_in_a_fresh_process(tmp_path, fitted, data):
    fitted.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["model_type"] == "rq-vae" and config["codebook_size"] == 8 and config["n_features_in"] == 16
    assert len(config["history"]) == 6
    np.save(tmp_path / "X.npy", data)
    script = textwrap.dedent(
        f"""
        import numpy as np
        import semid.quantize.rq_vae  # registers model_type "rq-vae" (until semid.quantize exports RQVAE)
        from semid.quantize import RQKMeans, load_quantizer
        model = load_quantizer({str(tmp_path / "m")!r}, device="cpu")
        X = np.load({str(tmp_path / "X.npy")!r})
        np.save({str(tmp_path / "codes.npy")!r}, model.encode(X))
        np.save({str(tmp_path / "decoded.npy")!r}, model.decode(model.encode(X)))
        print(type(model).__name__, model.fingerprint_)
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["RQVAE", fitted.fingerprint_]
    np.testing.assert_array_equal(np.load(tmp_path / "codes.npy"), fitted.encode(data))
    np.testing.assert_array_equal(np.load(tmp_path / "decoded.npy"), fitted.decode(fitted.encode(data)))


def test_load_quantizer_dispatches_on_model_type(tmp_path, fitted, data):
    fitted.save_pretrained(tmp_path / "m")
    loaded = load_quantizer(tmp_path / "m", device="cpu")
    assert isinstance(loaded, RQVAE)
    assert loaded.codebook_sizes_ == fitted.codebook_sizes_ and loaded.n_features_in_ == 16
    np.testing.assert_array_equal(loaded.rank_last_level(data[:10]), fitted.rank_last_level(data[:10]))
    assert loaded.config.hidden_dims == [32, 16] and loaded.config.train.epochs == 6


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"estimator": "ste"}, id="ste"),
        pytest.param({"codebook_update": "loss"}, id="loss-codebook"),
        pytest.param({"normalize_codebooks": True}, id="sphere"),
        pytest.param({"input_norm": "standardize"}, id="standardize"),
        pytest.param({"input_norm": "l2", "activation": "gelu", "dropout": 0.1}, id="l2-gelu-dropout"),
        pytest.param({"balanced_last_level": True}, id="sinkhorn"),
        pytest.param({"dead_code_threshold": 0, "kmeans_init": False}, id="plain-vq"),
        pytest.param(
            {"precision": "fp32", "batch_size": 0, "optimizer": "adagrad", "lr": 0.05}, id="fp32-full"
        ),
        pytest.param({"codebook_size": [8, 4], "warmup_steps": 3, "grad_accum": 2}, id="sizes-accum"),
    ],
)
def test_every_option_trains_and_round_trips(tmp_path, data, options):
    model = tiny(epochs=3, **options).fit(data)
    codes = model.encode(data)
    assert codes.shape == (400, 2)
    assert (codes.max(0) < np.array(model.codebook_sizes_)).all()
    assert model.history_[-1]["recon_loss"] < model.history_[0]["recon_loss"]
    model.save_pretrained(tmp_path / "m")
    loaded = load_quantizer(tmp_path / "m", device="cpu")
    np.testing.assert_array_equal(loaded.encode(data), codes)
    np.testing.assert_array_equal(loaded.decode(codes), model.decode(codes))


def test_encode_before_fit_and_wrong_dimension_are_errors(fitted, data):
    with pytest.raises(NotFittedError):
        tiny().encode(data)
    with pytest.raises(SemidError) as e:
        fitted.encode(data[:, :15])
    assert str(e.value) == "X has 15 features, but RQVAE was fitted with 16"
    with pytest.raises(SemidError) as e:
        fitted.decode(np.array([[0, 0, 8]]))
    assert str(e.value) == "codes row 0: level 2 code 8 is outside [0, 8)"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"latent_dim": 0}, "latent_dim=0 should be an integer >= 1"),
        ({"codebook_size": 1}, "codebook_size=1 should be an integer >= 2"),
        ({"codebook_size": [8, 1]}, "codebook_size=1 should be an integer >= 2"),
        (
            {"codebook_size": [8, 8, 8]},
            "codebook_size has 3 entries ([8, 8, 8]), expected one per level (n_levels=2)",
        ),
        ({"n_levels": 0}, "n_levels=0 should be an integer >= 1"),
        ({"lr": 0.0}, "lr=0.0 should be a number > 0"),
        ({"lr": -0.001}, "lr=-0.001 should be a number > 0"),
        ({"input_dim": 384}, "X has 16 features, but input_dim=384"),
        ({"hidden_dims": [32, 0]}, "hidden_dims=[32, 0]: width 0 should be an integer >= 1"),
        ({"batch_size": -1}, "batch_size=-1 should be an integer >= 0 (0 = full batch)"),
        ({"epochs": 0}, "epochs=0 should be an integer >= 1"),
        ({"dropout": 1.5}, "dropout=1.5 should be a number >= 0 and <= 0.99"),
        (
            {"activation": "swish"},
            "activation='swish' is not one of 'relu', 'gelu', 'silu', 'tanh', 'leaky_relu'",
        ),
        ({"optimizer": "sgd"}, "optimizer='sgd' is not one of 'adamw', 'adagrad'"),
        ({"estimator": "gumbel"}, "estimator='gumbel' is not one of 'ste', 'rotation'"),
        ({"ema_decay": 1.0}, "ema_decay=1.0 should be a number >= 0 and <= 0.9999"),
    ],
    ids=lambda v: next(iter(v)) if isinstance(v, dict) else None,
)
def test_bad_values_are_rejected_before_training_starts(tmp_path, data, options, message):
    run = tmp_path / "run"
    with pytest.raises(SemidError) as e:
        tiny(run_dir=str(run), **options).fit(data)
    assert str(e.value) == message
    assert not run.exists()  # nothing was trained or written


def test_too_few_rows_for_the_codebook_is_an_error(data):
    with pytest.raises(SemidError) as e:
        tiny(codebook_size=64).fit(data[:50])
    assert str(e.value) == "n_samples=50 should be >= codebook_size=64"


def test_unknown_option_is_rejected_with_the_known_ones():
    with pytest.raises(SemidError) as e:
        RQVAE(latent=8)
    assert str(e.value).startswith("options: unknown option 'latent' (known: ")


def test_config_loads_from_yaml_and_json_files(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "latent_dim: 16\nhidden_dims: [64, 32]\ntrain:\n  lr: 1e-3\n  epochs: 7\n"
    )
    cfg = RQVAEConfig.from_file(tmp_path / "c.yaml")
    assert cfg.latent_dim == 16 and cfg.hidden_dims == [64, 32]
    assert cfg.train.lr == 0.001 and cfg.train.epochs == 7  # YAML's "1e-3" string becomes a number
    (tmp_path / "c.json").write_text(json.dumps({"n_levels": 4, "batch_size": 0}))
    cfg = RQVAEConfig.from_file(tmp_path / "c.json")
    assert cfg.n_levels == 4 and cfg.train.batch_size == 0  # training options may sit at the top level
    assert RQVAE(tmp_path / "c.json").config == cfg
    assert RQVAE(train=TrainConfig(epochs=3), latent_dim=8).config.train.epochs == 3
    assert RQVAEConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("latent: 8\n", "c.yaml: unknown option 'latent' (known: "),
        ("train:\n  lr: fast\n", "c.yaml: lr='fast' should be a number"),
        ("- 1\n- 2\n", "c.yaml: expected a mapping of option names to values, got list"),
        ("a: [1\n", "c.yaml line 2: invalid YAML"),
    ],
    ids=["unknown-key", "not-a-number", "not-a-mapping", "syntax"],
)
def test_bad_config_files_name_the_file(tmp_path, text, message):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(SemidError) as e:
        RQVAEConfig.from_file(tmp_path / "c.yaml")
    assert str(e.value).startswith(
        str(tmp_path / message.split(":")[0]) + message[len(message.split(":")[0]) :]
    )


def test_cli_assign_and_stats_work_unchanged_on_an_rq_vae_model(tmp_path, capsys, fitted, data):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from semid.cli import main
    from semid.ids.table import read_ids

    fitted.save_pretrained(tmp_path / "model")
    ids = [f"item{i:03d}" for i in range(len(data))]
    table = pa.table({"item_id": ids, "embedding": pa.array(list(data), type=pa.list_(pa.float32()))})
    pq.write_table(table, tmp_path / "emb.parquet")

    def run(*argv):
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in argv])
        cap = capsys.readouterr()
        assert e.value.code in (0, None), cap.err
        return cap.out

    run("assign", tmp_path / "model", tmp_path / "emb.parquet", "-o", tmp_path / "ids.parquet")
    t = read_ids(tmp_path / "ids.parquet")
    assert t.meta["model_type"] == "rq-vae" and t.meta["fingerprint"] == fitted.fingerprint_
    np.testing.assert_array_equal(t.base_codes, fitted.encode(data))
    assert collision_stats(t.codes)["unique_share"] == 1.0
    stats = json.loads(run("stats", tmp_path / "model", "--emb", tmp_path / "emb.parquet", "--json"))
    assert stats["model_type"] == "rq-vae" and stats["codebook_sizes"] == [8, 8, 8]
    assert stats["unique_share"] == collision_stats(fitted.encode(data))["unique_share"]
    assert 0 < stats["reconstruction_error"] < 1.5
