"""Constrained generation: every answer after [REC] is a real item, whatever the model's weights."""

import numpy as np
import pytest
import torch

from conftest import TINY_LLM_CODES as CODES
from conftest import TINY_LLM_SIZES as SIZES
from conftest import TINY_LLM_TEXTS as TEXTS
from semid.errors import SemidError
from semid.ids import PrefixTrie
from semid.llm.examples import REC_TOKEN
from semid.llm.generate import QueryRecommender, SemanticIdLogitsProcessor
from semid.llm.model import ScratchConfig, add_semantic_tokens, scratch_model, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    return tok


@pytest.fixture(scope="module")
def random_recommender(tokenizer):
    """An untrained (random) tiny Llama: the constraint alone must keep its answers valid."""
    vocab = add_semantic_tokens(tokenizer, SIZES)
    model = scratch_model(
        tokenizer, ScratchConfig(hidden_size=32, n_layers=1, n_heads=2, intermediate_size=64), seed=0
    )
    return QueryRecommender(model, tokenizer, vocab, CODES, system_prompt="Recommend.")


def test_id_tokens_round_trip_and_keep_existing_ids(tokenizer):
    before = dict(tokenizer.get_vocab())
    encoded_before = tokenizer("a matte red lipstick", add_special_tokens=False)["input_ids"]
    vocab = add_semantic_tokens(tokenizer, SIZES)
    after = tokenizer.get_vocab()
    assert all(after[t] == i for t, i in before.items())  # no existing token moved
    assert tokenizer("a matte red lipstick", add_special_tokens=False)["input_ids"] == encoded_before
    ids = tokenizer(f"{REC_TOKEN}<a_3><b_2><c_1>", add_special_tokens=False)["input_ids"]
    assert ids == [vocab.rec_id, *vocab.id_token_ids([3, 2, 1])]  # one token per level
    assert tokenizer.decode(ids) == "[REC]<a_3><b_2><c_1>"
    assert add_semantic_tokens(tokenizer, SIZES).token_ids.equal(vocab.token_ids)  # adding twice is a no-op


def test_resizing_a_model_keeps_existing_embeddings():
    tok = train_tokenizer(TEXTS, vocab_size=300)
    model = scratch_model(tok, ScratchConfig(hidden_size=32, n_layers=1, n_heads=2, intermediate_size=64))
    old = model.get_input_embeddings().weight.detach().clone()
    vocab = add_semantic_tokens(tok, SIZES, model)
    new = model.get_input_embeddings().weight.detach()
    assert new.shape[0] == len(tok) == old.shape[0] + 1 + sum(SIZES)
    assert torch.equal(new[: old.shape[0]], old)
    assert vocab.vocab_size == new.shape[0]


@pytest.mark.parametrize("do_sample", [False, True], ids=["greedy", "sampling"])
def test_random_model_generates_only_valid_ids(random_recommender, do_sample):
    queries = ["a matte red lipstick", "anything at all", "blue mascara"]
    n = 8 if do_sample else 1
    items = random_recommender.generate(
        queries, do_sample=do_sample, num_return_sequences=n, temperature=3.0, seed=0
    )
    assert items.shape == (3, n)
    assert ((items >= 0) & (items < len(CODES))).all()
    if do_sample:  # a hot random model spreads over several items, all of them real
        assert len(np.unique(items)) > 2


def test_beam_search_returns_k_distinct_real_items(random_recommender):
    res = random_recommender.recommend(["a matte red lipstick", "citrus perfume"], k=10, beam_size=12)
    assert res.items.shape == (2, 10)
    for row, scores in zip(res.items, res.scores, strict=True):
        assert len(set(row.tolist())) == 10
        assert ((row >= 0) & (row < len(CODES))).all()
        assert (np.diff(scores) <= 1e-6).all()  # best first
        assert np.isfinite(scores).all()


def test_k_equal_to_catalogue_size_returns_every_item(random_recommender):
    res = random_recommender.recommend(["x"], k=len(CODES), beam_size=len(CODES))
    assert sorted(res.items[0].tolist()) == list(range(len(CODES)))


def test_processor_masks_after_rec_and_forces_eos_at_the_end(random_recommender):
    proc, vocab = random_recommender.processor, random_recommender.vocab
    text_token = 5
    rows = torch.tensor(
        [
            [text_token, text_token, text_token, vocab.rec_id],  # level 0 next
            [text_token, vocab.rec_id, *vocab.id_token_ids([2, 0])],  # level 2 after prefix 2-0
            [vocab.rec_id, *vocab.id_token_ids([0, 0, 1])],  # complete ID
            [text_token] * 4,  # no [REC]: free text, but no ID tokens
        ]
    )
    scores = torch.zeros(4, vocab.vocab_size)
    out = proc(rows, scores)
    allowed = torch.isfinite(out)
    assert allowed[0].nonzero().squeeze(1).tolist() == vocab.token_ids[0, :4].tolist()  # codes 0..3 all used
    assert allowed[1].nonzero().squeeze(1).tolist() == vocab.id_token_ids([0, 0, 0])[:0] + [
        int(vocab.token_ids[2, 0]),
        int(vocab.token_ids[2, 2]),
    ]  # 2-0-0 and 2-0-2 exist
    assert allowed[2].nonzero().squeeze(1).tolist() == [vocab.eos_id]
    assert allowed[3, vocab.eos_id] and allowed[3, text_token]
    assert not allowed[3, vocab.token_ids[vocab.token_ids >= 0]].any()


def test_processor_raises_on_an_empty_allowed_set(random_recommender):
    proc, vocab = random_recommender.processor, random_recommender.vocab
    # 3-3 is a prefix of 3-3-3, but 1-2 is no prefix of any ID: nothing may follow it.
    rows = torch.tensor([[vocab.rec_id, *vocab.id_token_ids([1, 2, 0])[:2]]])
    with pytest.raises(
        SemidError, match=r"row 0: no Semantic ID continues the 2 code\(s\) written after \[REC\]"
    ):
        proc(rows, torch.zeros(1, vocab.vocab_size))


def test_processor_checks_the_trie_fits_the_vocabulary(random_recommender):
    with pytest.raises(SemidError, match="the trie has 2 levels but the vocabulary 3"):
        SemanticIdLogitsProcessor(PrefixTrie(CODES[:, :2]), random_recommender.vocab)


@pytest.mark.parametrize("query", ["", "   "], ids=["empty", "blank"])
def test_empty_query_is_an_error(random_recommender, query):
    with pytest.raises(SemidError, match="query 1 is empty"):
        random_recommender.recommend(["lipstick", query], k=3)


def test_sampling_defaults_in_the_model_config_do_not_leak(random_recommender):
    """A generation_config.json asking for sampling and a repetition penalty must not change greedy answers."""
    model = random_recommender.model
    greedy = random_recommender.generate(["blue mascara"] * 4)
    model.generation_config.do_sample = True
    model.generation_config.temperature = 5.0
    model.generation_config.repetition_penalty = 50.0
    try:
        again = random_recommender.generate(["blue mascara"] * 4)
    finally:
        model.generation_config.do_sample = False
        model.generation_config.temperature = 1.0
        model.generation_config.repetition_penalty = 1.0
    assert (again == greedy).all() and (greedy == greedy[0, 0]).all()


def test_allowed_items_come_first_and_backfill_completes_k(random_recommender):
    # Query 0 may only get items 1, 4 and 7 (fewer than k=5): those three come first, in the model's own
    # order, then the unrestricted beam's best others; query 1 allows 6 items, so it needs no backfill.
    n = len(CODES)
    allow = np.zeros((2, n), bool)
    allow[0, [1, 4, 7]] = True
    allow[1, :6] = True
    free = random_recommender.recommend(["lipstick", "perfume"], k=5, beam_size=n)
    res = random_recommender.recommend(["lipstick", "perfume"], k=5, beam_size=n, allow=allow)
    first = res.items[0, :3].tolist()
    assert sorted(first) == [1, 4, 7]
    exact = random_recommender.recommend(["lipstick"], k=n, beam_size=n)  # the model's full order
    rank = {int(i): r for r, i in enumerate(exact.items[0])}
    assert first == sorted(first, key=rank.get)
    rest = [i for i in free.items[0].tolist() if i not in first][:2]
    assert res.items[0, 3:].tolist() == rest
    assert set(res.items[1].tolist()) <= set(range(6)) and len(set(res.items[1].tolist())) == 5
    kept = random_recommender.recommend(["lipstick"], k=5, beam_size=n, allow=allow[:1], backfill=False)
    assert kept.items[0, 3:].tolist() == [-1, -1] and np.isneginf(kept.scores[0, 3:]).all()


def test_allow_must_match_the_queries_and_items(random_recommender):
    with pytest.raises(SemidError, match=rf"allow should be a bool array of shape \(1, {len(CODES)}\)"):
        random_recommender.recommend(["x"], k=2, allow=np.ones((1, 3), bool))


@pytest.mark.parametrize("kwargs", [{"lm_weight": -1.0}, {"head_weight": float("nan")}, {"lm_weight": True}])
def test_ablation_weights_must_be_finite_and_non_negative(random_recommender, kwargs):
    with pytest.raises(SemidError, match=r"_weight=.* should be a finite number >= 0"):
        random_recommender.recommend(["x"], k=2, **kwargs)
