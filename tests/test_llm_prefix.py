"""The query-embedding prefix: a sentence encoder's vector of the query, read by the LM as soft prompts.

Tiny Llamas and fake encoders (text -> fixed vectors); the packaged MiniLM is loaded by one test only, in
test_llm_train.py.
"""

import hashlib
import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from conftest import TINY_LLM_CODES as CODES
from conftest import TINY_LLM_SIZES as SIZES
from conftest import TINY_LLM_TEXTS as TEXTS
from conftest import WordHashEmbedder
from semid.errors import SemidError
from semid.ids import PrefixTrie
from semid.llm.examples import DATA_META, ITEMS_FILE, REC_TOKEN, Examples, id_text
from semid.llm.generate import QueryRecommender
from semid.llm.model import (
    ScratchConfig,
    add_semantic_tokens,
    load_llm,
    save_llm,
    scratch_model,
    train_tokenizer,
)
from semid.llm.prefix import (
    PREFIX_FILE,
    PrefixConfig,
    QueryPrefix,
    load_query_encoder,
    request_embeddings,
    request_text,
)
from semid.llm.train import TrainConfig, train_llm

TINY = ScratchConfig(vocab_size=300, hidden_size=32, n_layers=1, n_heads=2, intermediate_size=64)
QUERIES = ["a matte red lipstick", "blue mascara", "citrus perfume", "anything at all"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


class LookupEncoder:
    """A fake sentence encoder: a fixed vector per known text; its ``name`` follows the vectors."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = {t: np.asarray(v, dtype=np.float32) for t, v in table.items()}
        self.dim = len(next(iter(self.table.values())))
        h = hashlib.sha256(b"".join(t.encode() + v.tobytes() for t, v in sorted(self.table.items())))
        self.name = f"lookup@{h.hexdigest()[:12]}"
        self.calls = 0

    def encode(self, texts):
        self.calls += 1
        return np.stack([self.table[t] for t in texts])


# One title per item of CODES: the code head's item vectors are their word-hash embeddings.
TITLES = [
    "matte red lipstick", "glossy pink lipstick", "nude lip liner", "blue waterproof mascara",
    "black volume mascara", "citrus eau de parfum", "rose perfume oil", "vanilla body mist",
    "argan hair oil", "tea tree shampoo", "charcoal face mask", "aloe night cream",
]  # fmt: skip


def untrained(n_prefix: int = 3, seed: int = 0, code_head: bool = False):
    """A random tiny Llama with a random prefix over the word-hash encoder (and a code head fitted to the
    TITLES' embeddings)."""
    tok = train_tokenizer(TEXTS, vocab_size=300)
    vocab = add_semantic_tokens(tok, SIZES)
    model = scratch_model(tok, TINY, seed=seed)
    torch.manual_seed(seed)
    prefix = QueryPrefix(
        WordHashEmbedder.dim,
        32,
        PrefixConfig(n_prefix=n_prefix, code_head=code_head),
        encoder_name="WordHashEmbedder",
        codebook_sizes=SIZES,
    )
    if code_head:
        prefix.fit_items(WordHashEmbedder().encode(TITLES), CODES)
    return model, tok, vocab, prefix


@pytest.fixture(scope="module")
def prefix_recommender():
    model, tok, vocab, prefix = untrained()
    return QueryRecommender(
        model, tok, vocab, CODES, system_prompt="Recommend.", prefix=prefix, query_encoder=WordHashEmbedder()
    )


def items_table(codes, titles=None):
    n = len(codes)
    return pa.table(
        {
            "item_id": [f"I{i:03d}" for i in range(n)],
            "semantic_id": ["-".join(map(str, c)) for c in codes],
            "codes": pa.array(np.asarray(codes).tolist(), type=pa.list_(pa.int64())),
            "title": titles or [f"item {i}" for i in range(n)],
        }
    )


# --------------------------------------------------------------------------------------------------------
# The module and the texts it reads


def test_prefix_vectors_have_the_lm_width():
    prefix = QueryPrefix(16, 32, PrefixConfig(n_prefix=4))
    with torch.no_grad():
        out = prefix(torch.randn(5, 16))
    assert out.shape == (5, 4, 32)  # (B, n_prefix, hidden)
    assert torch.allclose(out.mean(-1), torch.zeros(5, 4), atol=1e-5)  # LayerNorm per vector
    with pytest.raises(SemidError, match=r"query embeddings have shape \(5, 8\), expected \(n, 16\)"):
        prefix(torch.randn(5, 8))
    with pytest.raises(SemidError, match="n_prefix=0 should be a positive integer"):
        QueryPrefix(16, 32, PrefixConfig(n_prefix=0))


@pytest.mark.parametrize(
    ("user", "expected"),
    [
        ("a matte red lipstick", "a matte red lipstick"),
        ("What is the brand of <a_1><b_2><c_3>?", None),
        ("I bought <a_1><b_2><c_3>, <a_0><b_0><c_1>. What next?", None),
    ],
    ids=["request", "attribute-question", "next-item-history"],
)
def test_the_request_is_the_user_turn_unless_it_spells_ids(user, expected):
    chat = [
        {"role": "system", "content": "Recommend."},
        {"role": "user", "content": user},
        {"role": "assistant", "content": f"{REC_TOKEN}<a_0><b_0><c_1>"},
    ]
    assert request_text(chat) == expected
    assert request_text(user) == expected


def test_request_embeddings_embed_each_text_once_and_are_cached(tmp_path):
    enc = LookupEncoder({"red": [1, 0, 0], "blue": [0, 1, 0]})
    Q = request_embeddings(enc, ["red", None, "blue", "red"], cache_dir=tmp_path)
    assert Q.tolist() == [[1, 0, 0], [0, 0, 0], [0, 1, 0], [1, 0, 0]]  # zeros where there is no request
    assert enc.calls == 1 and len(list(tmp_path.glob("query_emb-*.npy"))) == 1
    again = request_embeddings(enc, ["red", None, "blue", "red"], cache_dir=tmp_path)
    assert enc.calls == 1 and np.array_equal(again, Q)  # read back, not embedded again
    other = LookupEncoder({"red": [0, 0, 1], "blue": [0, 1, 0]})  # another encoder: another cache entry
    assert request_embeddings(other, ["red"], cache_dir=tmp_path).tolist() == [[0, 0, 1]]


# --------------------------------------------------------------------------------------------------------
# Generation with a prefix


def test_the_prefix_changes_the_answer(prefix_recommender):
    rec = prefix_recommender
    a, b = np.eye(WordHashEmbedder.dim, dtype=np.float32)[[0, 1]]
    same_words = ["a matte red lipstick"] * 2
    res = rec.recommend(same_words, k=len(CODES), beam_size=len(CODES), query_embeddings=np.stack([a, b]))
    by_item = [
        dict(zip(r.tolist(), s.tolist(), strict=True)) for r, s in zip(res.items, res.scores, strict=True)
    ]
    diffs = [abs(by_item[0][i] - by_item[1][i]) for i in range(len(CODES))]
    assert max(diffs) > 1e-3  # same words, other query vector: other probabilities


@pytest.mark.parametrize("do_sample", [False, True], ids=["greedy", "sampling"])
def test_a_random_prefix_model_answers_only_valid_distinct_items(prefix_recommender, do_sample):
    n = 8 if do_sample else 1
    items = prefix_recommender.generate(
        QUERIES, do_sample=do_sample, num_return_sequences=n, temperature=3.0, seed=0
    )
    assert items.shape == (len(QUERIES), n)
    assert ((items >= 0) & (items < len(CODES))).all()
    if do_sample:
        assert len(np.unique(items)) > 2
    res = prefix_recommender.recommend(QUERIES, k=10, beam_size=12)
    for row in res.items:
        assert len(set(row.tolist())) == 10 and ((row >= 0) & (row < len(CODES))).all()


def test_beam_search_and_generate_read_the_prefix_alike(prefix_recommender):
    """Two code paths, our beam step on inputs_embeds and transformers' generate, give one answer."""
    beam = prefix_recommender.recommend(QUERIES, k=1, beam_size=1).items[:, 0]
    greedy = prefix_recommender.generate(QUERIES)[:, 0]
    assert beam.tolist() == greedy.tolist()


def test_sampling_defaults_in_the_model_config_do_not_leak_with_a_prefix(prefix_recommender):
    model = prefix_recommender.model
    greedy = prefix_recommender.generate(QUERIES)
    model.generation_config.do_sample, model.generation_config.repetition_penalty = True, 50.0
    try:
        again = prefix_recommender.generate(QUERIES)
    finally:
        model.generation_config.do_sample, model.generation_config.repetition_penalty = False, 1.0
    assert (again == greedy).all()


def test_query_embeddings_of_the_wrong_shape_are_an_error(prefix_recommender):
    with pytest.raises(SemidError, match=r"query_embeddings has shape \(1, 3\), expected \(1, 64\)"):
        prefix_recommender.recommend(["lipstick"], k=3, query_embeddings=np.zeros((1, 3)))


# --------------------------------------------------------------------------------------------------------
# Save / load


def test_save_then_load_gives_identical_top_k(tmp_path):
    model, tok, vocab, prefix = untrained(seed=1, code_head=True)
    save_llm(
        tmp_path / "lm", model, tok, vocab, items_table(CODES), system_prompt="Recommend.", prefix=prefix
    )
    assert (tmp_path / "lm" / PREFIX_FILE).is_file()
    meta = json.loads((tmp_path / "lm" / "semid_llm.json").read_text())
    assert meta["query_prefix"] == {
        "query_encoder": None, "n_prefix": 3, "mlp": True, "code_head": True, "code_scale": 20.0,
        "code_lr_ratio": 0.1, "d_in": 64, "hidden_size": 32, "encoder_name": "WordHashEmbedder",
        "codebook_sizes": [4, 4, 4], "n_items": 12,
    }  # fmt: skip
    before = QueryRecommender(
        model, tok, vocab, CODES, system_prompt="Recommend.", prefix=prefix, query_encoder=WordHashEmbedder()
    ).recommend(QUERIES, k=5)
    llm = load_llm(tmp_path / "lm", query_encoder=WordHashEmbedder())
    assert llm.prefix is not None and llm.prefix.n_prefix == 3
    after = QueryRecommender.from_llm(llm).recommend(QUERIES, k=5)
    assert (before.items == after.items).all() and np.allclose(before.scores, after.scores, atol=1e-5)


def test_a_directory_saved_without_a_prefix_still_loads(tmp_path):
    model, tok, vocab, _ = untrained()
    save_llm(tmp_path / "lm", model, tok, vocab, items_table(CODES), system_prompt="Recommend.")
    meta = json.loads((tmp_path / "lm" / "semid_llm.json").read_text())
    assert "query_prefix" not in meta and not (tmp_path / "lm" / PREFIX_FILE).exists()
    llm = load_llm(tmp_path / "lm")
    assert llm.prefix is None and llm.query_encoder is None
    res = QueryRecommender.from_llm(llm).recommend(QUERIES, k=5)
    assert all(len(set(row.tolist())) == 5 for row in res.items)


def test_a_missing_query_encoder_is_one_clear_error(tmp_path):
    with pytest.raises(SemidError) as e:
        load_query_encoder(tmp_path / "no-encoder")
    assert str(e.value) == (
        f"query encoder: {tmp_path}/no-encoder: no such model directory (and not a hub name like org/name)"
    )


def test_an_encoder_of_another_dimension_is_an_error(tmp_path):
    model, tok, vocab, prefix = untrained()
    save_llm(
        tmp_path / "lm", model, tok, vocab, items_table(CODES), system_prompt="Recommend.", prefix=prefix
    )
    wrong = LookupEncoder({"x": np.zeros(3)})
    with pytest.raises(SemidError) as e:
        load_llm(tmp_path / "lm", query_encoder=wrong)
    assert str(e.value) == (
        f"query encoder {wrong.name}: 3-d vectors, "
        "but the model's prefix was trained on 64-d ones (WordHashEmbedder)"
    )


# --------------------------------------------------------------------------------------------------------
# Training: the prefix carries what the words cannot


def synthetic(tmp_path, n_train=6, n_valid=2, dim=16, seed=0):
    """16 items with 2-level IDs whose item vector is A[a] + 0.6 B[b]; every query is a random string, but
    its vector lies near its item's. Only the prefix can tell which item a query means."""
    rng = np.random.default_rng(seed)
    codes = np.array([[a, b] for a in range(4) for b in range(4)])
    A, B = rng.normal(size=(4, dim)), rng.normal(size=(4, dim))
    items = A[codes[:, 0]] + 0.6 * B[codes[:, 1]]
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    table, train, valid = {}, [], []
    for i, code in enumerate(codes):
        for dest, n in ((train, n_train), (valid, n_valid)):
            for _ in range(n):
                query = " ".join("".join(rng.choice(letters, 4)) for _ in range(2))
                v = items[i] + 0.15 * rng.normal(size=dim) / np.sqrt(dim)
                table[query] = v / np.linalg.norm(v)
                answer = REC_TOKEN + id_text(code)
                dest.append({
                    "task": "predict_semantic_id", "template": "random", "item": i, "item_id": f"I{i:03d}",
                    "messages": [
                        {"role": "system", "content": "R."},
                        {"role": "user", "content": query},
                        {"role": "assistant", "content": answer},
                    ],
                })  # fmt: skip
    for i in range(len(codes)):  # the items' own texts ("item 3"), which the code head embeds
        table[f"item {i}"] = items[i]
    order = rng.permutation(len(train))
    Examples(train=[train[k] for k in order], valid=valid).write(tmp_path)
    import pyarrow.parquet as pq

    pq.write_table(items_table(codes), tmp_path / ITEMS_FILE)
    (tmp_path / DATA_META).write_text(json.dumps({"codebook_sizes": [4, 4], "system_prompt": "R."}))
    return LookupEncoder(table), valid


def _synthetic_hits(tmp_path, prefix: PrefixConfig | None, steps: int, name: str) -> float:
    enc, valid = synthetic(tmp_path / "data")
    queries = [ex["messages"][1]["content"] for ex in valid]
    targets = np.array([ex["item"] for ex in valid])
    config = TrainConfig(
        scratch=TINY, query_prefix=prefix, epochs=1000, max_steps=steps, batch_size=16, lr=5e-3,
        warmup_steps=10, eval_every=0, eval_queries=8, save_every=0, progress=False, seed=0,
    )  # fmt: skip
    train_llm(tmp_path / "data", tmp_path / name, config, query_encoder=enc)
    llm = load_llm(tmp_path / name, query_encoder=enc)
    return float(QueryRecommender.from_llm(llm).recommend(queries, k=1).hits(targets).mean())


def test_the_prefix_learns_what_the_words_cannot_say(tmp_path):
    hits = {
        "prefix": _synthetic_hits(tmp_path, PrefixConfig(n_prefix=2, code_head=False), 300, "prefix"),
        "none": _synthetic_hits(tmp_path, None, 300, "none"),
    }
    assert hits["none"] <= 0.25, hits  # 1 / 16 by chance: the random strings say nothing
    assert hits["prefix"] >= 0.6, hits  # measured: 1.0 with the prefix, 0.09 without


def test_the_code_head_answers_from_the_first_steps(tmp_path):
    """The code head starts from the items' embeddings: a few steps reach what the soft prompt alone
    learns only much later."""
    hits = {
        name: _synthetic_hits(tmp_path, PrefixConfig(n_prefix=2, code_head=head), 20, name)
        for name, head in (("head", True), ("soft", False))
    }
    assert hits["head"] >= 0.9, hits
    assert hits["soft"] <= 0.5, hits


# --------------------------------------------------------------------------------------------------------
# The code head: the query embedding scores the ID tokens


def test_the_code_head_takes_unique_ids_with_vectors_of_its_width():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 8)).astype(np.float32)
    codes = np.stack([np.arange(40) % 4, np.arange(40) // 10, np.arange(40) % 10], 1)  # (40, 3) unique
    head = QueryPrefix(8, 16, codebook_sizes=[4, 4, 10])
    head.fit_items(X, codes)
    assert torch.allclose(head.item_vectors.norm(dim=1), torch.ones(40))  # kept as unit vectors
    with pytest.raises(SemidError, match=r"codes have shape \(40, 2\), expected \(40, 3\)"):
        head.fit_items(X, codes[:, :2])
    with pytest.raises(SemidError, match=r"item embeddings have shape \(40, 5\), expected \(n, 8\)"):
        head.fit_items(X[:, :5], codes)
    with pytest.raises(SemidError, match="the codes are not unique: two items share an ID"):
        head.fit_items(X, np.zeros((40, 3), dtype=np.int64))
    with pytest.raises(SemidError, match=r"codes fall outside the codebook sizes \[4, 4, 10\]"):
        head.fit_items(X, codes + 1)
    with pytest.raises(SemidError, match="this prefix has no code head"):
        QueryPrefix(8, 16).id_scores(torch.zeros(1, 8), 0, torch.zeros(1, 0, dtype=torch.long))


def test_the_levels_factorize_the_softmax_over_items():
    """Walking an ID level by level, the log-softmaxes of the head's scores over the codes each level
    allows add up to log softmax_i(scale * cos(q, x_i)): the dense retriever's distribution, exactly."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(12, 64)).astype(np.float32)
    head = QueryPrefix(64, 32, PrefixConfig(code_scale=10.0), codebook_sizes=SIZES)
    head.fit_items(X, CODES)
    q = torch.from_numpy(rng.normal(size=(3, 64)).astype(np.float32))
    trie = PrefixTrie(CODES, SIZES)
    logp = torch.zeros(3, len(CODES))
    with torch.no_grad():
        for i, row in enumerate(torch.from_numpy(CODES)):
            for lv in range(3):
                s = head.id_scores(q, lv, row[:lv].expand(3, lv))  # (3, K)
                allowed = trie.allowed_mask(row[:lv][None])[0]  # the codes some item continues with
                logp[:, i] += torch.log_softmax(s.masked_fill(~allowed, -torch.inf), 1)[:, row[lv]]
        zero = head.id_scores(torch.zeros(1, 64), 0, torch.zeros(1, 0, dtype=torch.long))
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    Qn = q.numpy() / np.linalg.norm(q.numpy(), axis=1, keepdims=True)
    dense = torch.log_softmax(torch.from_numpy(10.0 * Qn @ Xn.T), 1)
    assert torch.allclose(logp, dense, atol=1e-5)
    counts = np.bincount(CODES[:, 0], minlength=4)
    assert np.allclose(zero[0].numpy(), np.log(counts))  # a zero query: every item alike


def test_an_untrained_model_with_a_code_head_finds_items_by_their_words():
    model, tok, vocab, prefix = untrained(code_head=True)
    _, _, _, plain = untrained(code_head=False)
    targets = np.arange(len(TITLES))
    found = {}
    for name, p in (("head", prefix), ("plain", plain)):
        rec = QueryRecommender(
            model, tok, vocab, CODES, system_prompt="Recommend.", prefix=p, query_encoder=WordHashEmbedder()
        )
        found[name] = rec.recommend(TITLES, k=1, beam_size=12).hits(targets).mean()
        if name == "head":  # the other decoder adds the same scores: same answers
            assert (
                rec.generate(TITLES)[:, 0].tolist()
                == rec.recommend(TITLES, k=1, beam_size=1).items[:, 0].tolist()
            )
            sampled = rec.generate(TITLES, do_sample=True, num_return_sequences=4, temperature=5.0, seed=0)
            assert ((sampled >= 0) & (sampled < len(CODES))).all()
    assert found["head"] >= 10 / 12, found
    assert found["plain"] <= 4 / 12, found


def test_training_adds_the_code_head_where_the_answer_writes_an_id():
    from semid.llm.train import _code_bias

    _, _, vocab, head = untrained(code_head=True)
    t = vocab.token_ids  # (L, K)
    item = 7  # CODES[7] = [2, 1, 3]
    answer = [int(t[lv, c]) for lv, c in enumerate(CODES[item])] + [vocab.eos_id]
    target = torch.tensor([5, *answer])  # a text token, the ID's three tokens, EOS (all in row 1)
    row = torch.tensor([0, 1, 1, 1, 1])
    queries = torch.from_numpy(WordHashEmbedder().encode(["nothing", TITLES[item]]))
    with torch.no_grad():
        bias = _code_bias(torch.zeros(5, vocab.vocab_size), target, row, queries, head, vocab)
        for n, lv in ((1, 0), (2, 1), (3, 2)):  # the level each position writes, after the codes before it
            written = torch.from_numpy(CODES[item, :lv])[None]
            assert torch.allclose(bias[n, t[lv]], head.id_scores(queries[1:], lv, written)[0])
            assert bias[n].count_nonzero() == bias[n, t[lv]].count_nonzero() > 0  # that level's tokens only
    assert bias[0].count_nonzero() == 0 and bias[4].count_nonzero() == 0  # text and EOS get nothing


def test_a_code_head_for_another_catalogue_is_an_error():
    model, tok, vocab, prefix = untrained(code_head=True)
    with pytest.raises(SemidError) as e:
        QueryRecommender(model, tok, vocab, CODES[:6], system_prompt="R.", prefix=prefix)
    assert str(e.value) == (
        "the query prefix's code head holds 12 items with other IDs than the 6 given: "
        "use the catalogue it was trained on"
    )


def test_ablation_weights_isolate_the_language_model_and_the_code_head():
    # lm_weight=0 leaves the code head's scores alone: an untrained LM's noise no longer matters, so the
    # head finds each title's item at least as often as the full model; head_weight=0 is the LM alone,
    # which is the model without a head (same prefix vectors, same logits).
    model, tok, vocab, prefix = untrained(code_head=True)
    rec = QueryRecommender(
        model, tok, vocab, CODES, system_prompt="Recommend.", prefix=prefix, query_encoder=WordHashEmbedder()
    )
    targets = np.arange(len(TITLES))
    head_only = rec.recommend(TITLES, k=1, beam_size=12, lm_weight=0.0)
    full = rec.recommend(TITLES, k=1, beam_size=12)
    assert head_only.hits(targets).mean() >= full.hits(targets).mean()
    assert head_only.hits(targets).mean() >= 10 / 12
    lm_only = rec.recommend(TITLES, k=5, beam_size=12, head_weight=0.0)
    plain = QueryRecommender(
        model, tok, vocab, CODES, system_prompt="Recommend.", prefix=prefix, query_encoder=WordHashEmbedder()
    )
    plain._code_queries = lambda embeddings: None  # the same model, its head never consulted
    ref = plain.recommend(TITLES, k=5, beam_size=12)
    assert (lm_only.items == ref.items).all() and np.allclose(lm_only.scores, ref.scores, atol=1e-6)
