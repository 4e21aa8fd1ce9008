"""ID -> attribute: the model names an item's brand, category and price range from its Semantic ID alone,
scored against the values it was trained on, next to the majority-class baseline."""

from dataclasses import replace

import numpy as np
import pytest
import torch

import semid.llm.attributes as attributes
from conftest import TINY_LLM_CODES, TINY_LLM_SIZES, TINY_LLM_TEXTS, WordHashEmbedder
from semid.data import Catalogue, make_demo_dataset
from semid.errors import SemidError
from semid.ids.table import IdTable
from semid.llm.attributes import ATTRIBUTES, attribute_accuracy, describe
from semid.llm.examples import ExampleConfig, attribute_question, prepare_dataset
from semid.llm.model import (
    LLM,
    ScratchConfig,
    add_semantic_tokens,
    load_llm,
    prompt_ids,
    scratch_model,
    train_tokenizer,
)
from semid.llm.prefix import PrefixConfig, request_text
from semid.llm.train import TrainConfig, train_llm

N_TRAINED = 8  # items of the trained round trip: few enough to memorise in 100 steps


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    yield


# Six hand-built items: three spellings of one brand, a missing brand, a missing price.
HAND = {
    "item_id": ["i0", "i1", "i2", "i3", "i4", "i5"],
    "title": [
        "Red Lipstick",
        "Pink Lipstick",
        "Black Mascara",
        "Nude Lipstick",
        "Gold Palette",
        "Blue Liner",
    ],
    "brand": ["L'Oréal", "l'oreal", "Nyx", "LOREAL", None, "Nyx"],
    "categories": [
        ["Beauty", "Lips", "Lipstick"],
        ["Beauty", "Lips", "Lipstick"],
        ["Beauty", "Eyes", "Mascara"],
        ["Beauty", "Lips", "Lipstick"],
        ["Beauty", "Eyes", "Eyeshadow Palette"],
        ["Beauty", "Eyes", "Eyeliner"],
    ],
    "price": [5.0, 12.0, 30.0, 8.0, 60.0, None],
}


@pytest.fixture(scope="module")
def hand_catalogue():
    return Catalogue.from_pydict(HAND)


@pytest.fixture(scope="module")
def untrained():
    """An untrained tiny Llama, no query prefix, whose items are the hand-built catalogue's."""
    tok = train_tokenizer(TINY_LLM_TEXTS, vocab_size=300)
    vocab = add_semantic_tokens(tok, TINY_LLM_SIZES)
    model = scratch_model(tok, ScratchConfig(hidden_size=32, n_layers=1, n_heads=2, intermediate_size=64))
    n = len(HAND["item_id"])
    return LLM(
        model=model,
        tokenizer=tok,
        vocab=vocab,
        item_ids=np.array(HAND["item_id"], dtype=object),
        semantic_ids=[str(c) for c in TINY_LLM_CODES[:n]],
        codes=TINY_LLM_CODES[:n],
        titles=HAND["title"],
        system_prompt="Recommend.",
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny Llama with a query prefix, trained 100 steps on 8 demo items' examples (attribute questions
    included). About 8 s on one busy core."""
    cat = make_demo_dataset(n_items=N_TRAINED, n_users=5, seed=0).catalogue
    codes = np.stack([np.arange(N_TRAINED) // 4, np.arange(N_TRAINED) % 4], axis=1)
    ids = IdTable(cat.item_ids, [f"{a}-{b}" for a, b in codes], codes, codes, {"codebook_sizes": [2, 4]})
    root = tmp_path_factory.mktemp("llm_attributes")
    prepare_dataset(cat, ids, root / "data", ExampleConfig(n_per_item=1, seed=0))
    config = TrainConfig(
        scratch=ScratchConfig(vocab_size=300, hidden_size=64, n_layers=2, n_heads=2, intermediate_size=128),
        query_prefix=PrefixConfig(n_prefix=1), epochs=1000, max_steps=100, batch_size=32, lr=5e-3,
        warmup_steps=10, eval_every=0, eval_queries=4, save_every=0, progress=False, seed=0,
    )  # fmt: skip
    train_llm(root / "data", root / "model", config, query_encoder=WordHashEmbedder())
    return load_llm(root / "model", query_encoder=WordHashEmbedder()), cat


# --------------------------------------------------------------------------------------------------------
# A trained round trip


def test_trained_model_names_the_attributes_of_its_items_from_their_ids(trained):
    llm, cat = trained
    assert llm.prefix is not None  # the question spells an ID: the prefix reads a zero vector, as in training
    scores = attribute_accuracy(llm, cat)
    assert set(scores) == set(ATTRIBUTES)
    # measured: 1.0 for all three (seeds 0, 1, 2); 8 distinct leaves, 6 brands, 3 price bands
    for name, floor in (("brand", 0.75), ("category", 0.75), ("price range", 0.6)):
        s = scores[name]
        assert s.n_with_value == len(s.items) == N_TRAINED
        assert s.accuracy >= floor, (name, s.accuracy, list(zip(s.truths, s.answers, strict=True)))
        assert s.accuracy > s.majority, (name, s.accuracy, s.majority)


def test_same_seed_same_sample_and_answers_other_seed_other_sample(trained):
    llm, cat = trained
    a = attribute_accuracy(llm, cat, attributes=("brand",), n_items=5, seed=3)["brand"]
    b = attribute_accuracy(llm, cat, attributes=("brand",), n_items=5, seed=3, batch_size=2)["brand"]
    c = attribute_accuracy(llm, cat, attributes=("brand",), n_items=5, seed=4)["brand"]
    assert len(a.items) == 5 and a.items.tolist() == sorted(set(a.items.tolist()))
    assert a.items.tolist() == b.items.tolist() and a.answers == b.answers and a.accuracy == b.accuracy
    assert a.items.tolist() != c.items.tolist()


def test_an_attributes_sample_does_not_depend_on_the_others_asked(trained):
    llm, cat = trained
    alone = attribute_accuracy(llm, cat, attributes=("category",), n_items=3, seed=0)["category"]
    together = attribute_accuracy(llm, cat, n_items=3, seed=0)["category"]
    assert alone.items.tolist() == together.items.tolist() and alone.answers == together.answers


# --------------------------------------------------------------------------------------------------------
# Scoring on a hand-built catalogue


def test_majority_baseline_is_the_commonest_normalised_value_on_the_sample(untrained, hand_catalogue):
    scores = attribute_accuracy(untrained, hand_catalogue, attributes=("brand", "price range", "category"))
    brand = scores["brand"]  # L'Oréal / l'oreal / LOREAL are one brand: 3 of the 5 items with a brand
    assert brand.items.tolist() == [0, 1, 2, 3, 5] and brand.n_with_value == 5
    assert brand.majority_value == "L'Oréal" and brand.majority == pytest.approx(3 / 5)
    band = scores["price range"]  # under $10, $10-25, $25-50, under $10, over $50; item 5 has no price
    assert band.items.tolist() == [0, 1, 2, 3, 4]
    assert band.majority_value == "under $10" and band.majority == pytest.approx(2 / 5)
    assert band.truths == ["under $10", "between $10 and $25", "between $25 and $50", "under $10", "over $50"]
    category = scores["category"]  # the leaf: Lipstick x3, Mascara, Eyeshadow Palette, Eyeliner
    assert category.majority_value == "Lipstick" and category.majority == pytest.approx(3 / 6)


def test_answers_match_up_to_case_accents_and_apostrophes(untrained, hand_catalogue, monkeypatch):
    answers = [
        "LOreal",
        "L\u2019Oréal",
        "nyx ",
        "l'oreal",
        "Maybelline",
    ]  # truths: L'Oréal l'oreal Nyx LOREAL Nyx

    def fake_describe(llm, items, attribute, **kwargs):
        assert attribute == "brand" and len(items) == len(answers)
        return answers

    monkeypatch.setattr(attributes, "describe", fake_describe)
    brand = attribute_accuracy(untrained, hand_catalogue, attributes=("brand",))["brand"]
    assert brand.answers == answers and brand.accuracy == pytest.approx(4 / 5)


def test_a_sample_is_at_most_n_items_of_those_with_a_value(untrained, hand_catalogue):
    brand = attribute_accuracy(untrained, hand_catalogue, attributes="brand", n_items=2, seed=0)["brand"]
    assert len(brand.items) == len(brand.answers) == 2 and set(brand.items.tolist()) <= {0, 1, 2, 3, 5}
    assert brand.to_dict()["n_asked"] == 2 and brand.n_with_value == 5


def test_answers_are_text_even_from_a_model_that_prefers_id_tokens(untrained):
    """Output rows: ID tokens and [REC] large, the others small, so that greedy decoding would write them."""
    tok = untrained.tokenizer
    model = scratch_model(
        tok, ScratchConfig(hidden_size=32, n_layers=1, n_heads=2, intermediate_size=64, tie_embeddings=False)
    )
    vocab = untrained.vocab
    banned = torch.tensor([vocab.rec_id, *vocab.token_ids[vocab.token_ids >= 0].tolist()])
    with torch.no_grad():
        weight = model.get_output_embeddings().weight  # (V, H)
        weight.mul_(0.01)
        weight[banned] = torch.randn(len(banned), weight.shape[1], generator=torch.Generator().manual_seed(0))
    llm = replace(untrained, model=model)
    prompt = prompt_ids(tok, [{"role": "system", "content": "Recommend."}, {"role": "user", "content": "hi"}])
    assert int(model(torch.tensor([prompt])).logits[0, -1].argmax()) in banned.tolist()  # left to itself
    answers = describe(llm, range(6), "brand", batch_size=4)
    assert len(answers) == 6 and all(a.strip() for a in answers), answers
    assert not any(t in a for a in answers for t in ("<a_", "<b_", "<c_", "[REC]")), answers
    assert answers == describe(llm, range(6), "brand")  # greedy: batching does not change the answers


def test_a_query_prefix_reads_the_zero_vector_of_an_id_spelling_request(trained, monkeypatch):
    llm, _ = trained
    assert request_text(attribute_question("brand", "<a_0><b_1>")) is None  # training: a zero vector
    seen = []
    forward = llm.prefix.forward
    monkeypatch.setattr(llm.prefix, "forward", lambda q: seen.append(q.clone()) or forward(q))
    describe(llm, range(N_TRAINED), "category", batch_size=5)
    assert [tuple(q.shape) for q in seen] == [(5, llm.prefix.d_in), (3, llm.prefix.d_in)]
    assert all(bool((q == 0).all()) for q in seen)


# --------------------------------------------------------------------------------------------------------
# Errors


def test_unknown_attribute_is_an_error_naming_the_valid_ones(untrained, hand_catalogue):
    msg = r"^unknown attribute 'colour': ask for one of 'brand', 'category', 'price range'$"
    with pytest.raises(SemidError, match=msg):
        describe(untrained, [0], "colour")
    with pytest.raises(SemidError, match=msg):
        attribute_accuracy(untrained, hand_catalogue, attributes=("brand", "colour"))


@pytest.mark.parametrize("n_items", [0, -1, 2.5, True])
def test_n_items_must_be_a_positive_integer(untrained, hand_catalogue, n_items):
    with pytest.raises(SemidError, match=rf"^n_items={n_items!r} should be a positive integer$"):
        attribute_accuracy(untrained, hand_catalogue, n_items=n_items)


def test_catalogue_items_missing_from_the_model_are_an_error(untrained):
    extra = {k: [*v, v[0], v[0]] for k, v in HAND.items()} | {"item_id": [*HAND["item_id"], "x1", "x2"]}
    with pytest.raises(SemidError, match=r"^the language model: 2 of 8 catalogue items have no Semantic ID"):
        attribute_accuracy(untrained, Catalogue.from_pydict(extra))


def test_asking_for_a_field_the_catalogue_lacks_is_an_error(untrained):
    no_brand = Catalogue.from_pydict({k: v for k, v in HAND.items() if k != "brand"})
    with pytest.raises(
        SemidError, match=r"^no catalogue item has a brand to ask about: .* no 'brand' field$"
    ):
        attribute_accuracy(untrained, no_brand, attributes=("brand",))
    assert attribute_accuracy(untrained, no_brand, attributes=("category",))["category"].n_with_value == 6


def test_item_rows_outside_the_model_are_an_error(untrained):
    with pytest.raises(SemidError, match=r"^items should be rows of the model's 6 items \(0 \.\. 5\)$"):
        describe(untrained, [0, 6], "brand")


def test_a_repetition_penalty_in_the_models_own_config_does_not_change_the_answers(trained):
    llm, _ = trained
    rows = list(range(N_TRAINED))
    before = describe(llm, rows, "brand")
    config = llm.model.generation_config
    config.repetition_penalty, config.no_repeat_ngram_size = 50.0, 1
    try:
        after = describe(llm, rows, "brand")
    finally:
        config.repetition_penalty, config.no_repeat_ngram_size = 1.0, 0
    assert after == before
