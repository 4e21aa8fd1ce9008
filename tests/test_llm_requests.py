"""Flexible requests: relevance is every item satisfying the constraint, metrics are set-based, a request set
round-trips through JSONL, and generated requests never repeat a training query."""

import json
import math
from collections import Counter

import numpy as np
import pytest

from semid.data import Catalogue, make_demo_dataset
from semid.errors import SemidError
from semid.ids.table import IdTable
from semid.llm.examples import ExampleConfig, prepare_dataset, read_jsonl
from semid.llm.requests import (
    Constraint,
    Request,
    RequestLexicon,
    assign_splits,
    brand_spellings,
    catalogue_fields,
    hit_at_k,
    load_requests,
    make_requests,
    ndcg_at_k,
    normalize_text,
    precision_at_k,
    save_requests,
    score_requests,
    typo,
)

# ------------------------------------------------------------------------------------------------------
# Relevance on hand-built items
# ------------------------------------------------------------------------------------------------------

SHOP = Catalogue.from_pydict(
    {
        "item_id": ["dryer", "straightener", "shampoo", "lipstick", "cologne", "mystery", "oily"],
        "title": [
            "Ionic Hair Dryer 1875W",
            "Ceramic Flat Iron for Curly Hair",
            "Argan Oil Shampoo with Tea Tree",
            "Matte Lipstick, Ruby",
            "Oud Eau de Cologne",
            None,
            "Shine Control Gel for Oily Skin (tree tea extract)",
        ],
        "brand": ["Conair", "BaBylissPRO", "L'Oréal Paris", "Burt&#39;s Bees", "None", None, "loreal paris"],
        "categories": [
            ["Beauty", "Hair Care", "Styling Tools", "Hair Dryers"],
            ["Beauty", "Hair Care", "Styling Tools", "Irons", "Flattening Irons"],
            ["Beauty", "Hair Care", "Shampoos"],
            ["Beauty", "Makeup", "Lips", "Lipstick"],
            ["Beauty", "Fragrance", "Men's", "Cologne"],
            None,
            ["Beauty", "Skin Care", "Face", "Oils & Serums"],
        ],
        "price": [24.99, 60.0, 10.0, 9.99, None, 15.0, float("nan")],
    }
)
ROW = {item: i for i, item in enumerate(SHOP.item_ids)}


def matches(**constraint) -> set[str]:
    rows = Request("q", "test", Constraint(**constraint)).relevant(SHOP)
    return {SHOP.item_ids[r] for r in rows}


def test_a_category_matches_any_node_of_the_path_or_a_run_of_consecutive_nodes():
    assert matches(categories=("Hair Dryers",)) == {"dryer"}
    assert matches(categories=("Hair Care",)) == {"dryer", "straightener", "shampoo"}  # an inner node
    assert matches(categories=("styling tools > hair dryers",)) == {"dryer"}  # case does not matter
    assert matches(categories=("Fragrance > Mens",)) == {"cologne"}  # nor the apostrophe
    assert matches(categories=("Hair Care > Hair Dryers",)) == set()  # not consecutive in the path
    assert matches(categories=("Hair",)) == set()  # a node matches whole, not a word of it
    assert matches(categories=("Hair Dryers", "Lipstick")) == {"dryer", "lipstick"}  # any of them


def test_category_paths_written_as_text_match_like_lists():
    as_text = Catalogue.from_pydict(
        {"item_id": ["a", "b"], "categories": ["Beauty > Hair Care > Shampoos", "Beauty > Makeup"]}
    )
    rows = Request("q", "f", Constraint(("Hair Care > Shampoos",))).relevant(as_text)
    assert rows.tolist() == [0]


@pytest.mark.parametrize(
    "spelling", ["L'Oréal Paris", "loreal paris", "L’OREAL PARIS", "L'Oreal Paris", "Loréal  Paris!"]
)
def test_brands_match_whatever_the_case_apostrophes_and_accents(spelling):
    assert matches(brand=spelling) == {"shampoo", "oily"}


def test_brand_names_with_html_entities_match_their_plain_spelling():
    assert matches(brand="burts bees") == {"lipstick"}
    assert matches(brand="Burt's Bees") == {"lipstick"}


def test_request_strings_and_catalogue_columns_are_normalised_alike():
    names = ["L'Oréal  Paris", "Burt&#39;s Bees", "Bath &amp; Body Works", "Lanc&ocirc;me", "ﬁne Straße",
             "Ⅻ ½ 3-in-1", "日本語 テスト", "x_y", "Ωmega", "  --  ", "İstanbul"]  # fmt: skip
    cat = Catalogue.from_pydict({"item_id": [str(i) for i in range(len(names))], "brand": names})
    column = catalogue_fields(cat).brand.to_pylist()
    assert column == [normalize_text(n) or None for n in names]  # empty names are missing brands
    assert column[:4] == ["loreal paris", "burts bees", "bath body works", "lancome"]


def test_an_apostrophe_joins_letters_so_a_space_in_its_place_is_another_name():
    assert normalize_text("L'Oreal") == "loreal"
    assert matches(brand="L Oreal Paris") == set()


def test_items_without_a_brand_never_match_a_brand_even_a_placeholder_one():
    assert matches(brand="None") == set()  # "None" in the data means no brand, not a brand called None
    assert "mystery" not in matches(categories=("Beauty",))  # no path: no category matches


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (None, 10.0, {"lipstick"}),  # open below; 10.00 is not under 10
        (10.0, None, {"dryer", "straightener", "shampoo", "mystery"}),  # open above; 10.00 is from 10
        (10.0, 25.0, {"dryer", "shampoo", "mystery"}),  # [10, 25)
        (24.99, 60.0, {"dryer"}),  # the lower bound is included, the upper one is not
    ],
    ids=["under", "from", "closed", "bounds"],
)
def test_price_ranges_are_half_open_and_may_be_open_at_either_end(lo, hi, expected):
    assert matches(price_min=lo, price_max=hi) == expected


def test_items_with_a_missing_or_nan_price_never_match_a_price_range():
    everything = matches(price_min=0.0)
    assert {"cologne", "oily"}.isdisjoint(everything)  # None and NaN
    assert everything == {"dryer", "straightener", "shampoo", "lipstick", "mystery"}


def test_title_words_are_whole_words_phrases_are_adjacent_and_a_star_is_a_prefix():
    assert matches(title_words=("oil",)) == {"shampoo"}  # not "Oily"
    assert matches(title_words=("oil*",)) == {"shampoo", "oily"}
    assert matches(title_words=("tea tree",)) == {"shampoo"}  # "tree tea" is not the phrase
    assert matches(title_words=("tea", "tree")) == {"shampoo", "oily"}  # words alone, any order
    assert matches(title_words=("curl*", "hair")) == {"straightener"}  # all of them


def test_parts_of_a_constraint_must_all_hold():
    assert matches(categories=("Hair Care",), price_max=30.0) == {"dryer", "shampoo"}
    assert matches(categories=("Hair Care",), brand="loreal paris", price_max=30.0) == {"shampoo"}
    assert matches(categories=("Hair Care",), brand="loreal paris", title_words=("dryer",)) == set()
    combined = Constraint(categories=("Hair Care",)) & Constraint(price_min=5.0, price_max=30.0)
    assert combined == Constraint(categories=("Hair Care",), price_min=5.0, price_max=30.0)


def test_a_constraint_on_a_field_the_catalogue_lacks_matches_nothing():
    titles_only = Catalogue.from_pydict({"item_id": ["a"], "title": ["Red Lipstick"]})
    for c in (Constraint(brand="Acme"), Constraint(price_max=100.0), Constraint(("Makeup",))):
        assert Request("q", "f", c).relevant(titles_only).size == 0


def test_relevant_is_the_same_from_a_catalogue_its_table_or_prepared_fields():
    req = Request("q", "f", Constraint(("Hair Care",), price_max=30.0))
    rows = req.relevant(SHOP)
    assert rows.dtype == np.int64 and np.all(np.diff(rows) > 0)
    assert rows.tolist() == req.relevant(SHOP.table).tolist() == req.relevant(catalogue_fields(SHOP)).tolist()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "at least one of"),
        ({"price_min": 20.0, "price_max": 10.0}, "empty"),
        ({"price_max": -1.0}, "non-negative"),
        ({"brand": " ' "}, "brand"),
        ({"categories": ("Hair Care > ",)}, "empty node"),
        ({"title_words": ("cu*rl",)}, "trailing"),
    ],
    ids=["nothing", "empty-range", "negative", "blank-brand", "empty-node", "inner-star"],
)
def test_constraints_that_cannot_mean_anything_are_errors(kwargs, message):
    with pytest.raises(SemidError, match=message):
        Constraint(**kwargs)


# ------------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------------


def test_metrics_on_a_hand_computed_list():
    ranked, relevant = [5, 1, 9, 2], [1, 2, 7]
    assert hit_at_k(ranked, relevant, 1) == 0.0
    assert hit_at_k(ranked, relevant, 2) == 1.0
    assert precision_at_k(ranked, relevant, 4) == pytest.approx(2 / 4)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)  # relevant at ranks 2 and 4
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)  # 3 relevant items, all in front
    assert ndcg_at_k(ranked, relevant, 4) == pytest.approx(dcg / ideal)


def test_ndcg_ideal_counts_only_as_many_relevant_items_as_fit_in_k():
    # one relevant item among 100 candidates: finding it first is perfect, whatever k
    assert ndcg_at_k([3, 4, 5], [3], 3) == 1.0
    # two relevant, k=1: the ideal list holds one, so a relevant first item is perfect
    assert ndcg_at_k([8, 1], [1, 8], 1) == 1.0
    assert ndcg_at_k([0, 8], [1, 8], 2) == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))


def test_repeats_and_missing_answers_do_not_earn_gains():
    assert precision_at_k([4, 4, 4], [4], 3) == pytest.approx(1 / 3)
    assert ndcg_at_k([4, 4], [4, 6], 2) == pytest.approx(1 / (1 + 1 / math.log2(3)))
    assert precision_at_k([-1, 2], [2], 2) == 0.5
    assert hit_at_k([-1, -1], [0], 2) == 0.0
    # a list shorter than k: the missing places are misses
    assert precision_at_k([2], [2, 3], 4) == 0.25
    assert ndcg_at_k([], [2], 4) == 0.0
    assert ndcg_at_k([1, 2], [], 2) == 0.0


def test_k_must_be_a_positive_integer():
    with pytest.raises(SemidError, match="k=0"):
        hit_at_k([1], [1], 0)


def requests_for(*families: str) -> list[Request]:
    return [Request(f"q{i}", fam, Constraint(brand="x")) for i, fam in enumerate(families)]


def test_score_requests_gives_per_request_and_per_family_means():
    reqs = requests_for("a", "a", "b")
    ranked = np.array([[0, 1], [5, 6], [9, 2]])
    relevant = [np.array([1]), np.array([7]), np.array([2, 9])]
    s = score_requests(ranked, reqs, relevant=relevant, ks=(1, 2))
    assert s.per_request["hit@1"].tolist() == [0.0, 0.0, 1.0]
    assert s.per_request["hit@2"].tolist() == [1.0, 0.0, 1.0]
    assert s.per_request["precision@2"].tolist() == [0.5, 0.0, 1.0]
    assert s.per_family["a"]["hit@2"] == 0.5 and s.per_family["a"]["requests"] == 2
    assert s.per_family["b"]["ndcg@2"] == 1.0
    assert s.per_family["all"]["hit@2"] == pytest.approx(2 / 3)
    assert list(s.per_family) == ["all", "a", "b"]
    assert [r["family"] for r in s.rows(method="m")] == ["all", "a", "b"]


def test_score_requests_computes_relevant_sets_from_the_catalogue():
    reqs = [Request("hair", "f", Constraint(("Hair Care",))), Request("lips", "f", Constraint(("Lips",)))]
    ranked = np.array([[ROW["lipstick"], ROW["dryer"]], [ROW["lipstick"], -1]])
    s = score_requests(ranked, reqs, SHOP, ks=(2,))
    assert s.n_relevant.tolist() == [3, 1]
    assert s.per_request["precision@2"].tolist() == [0.5, 0.5]
    assert s.per_request["ndcg@2"][1] == 1.0


def test_a_benchmark_for_another_catalogue_is_an_error():
    empty = [Request("nothing", "f", Constraint(brand="Acme"))]
    with pytest.raises(SemidError, match="'nothing' has no relevant item"):
        score_requests(np.zeros((1, 2), int), empty, SHOP)
    stale = [Request("hair", "f", Constraint(("Hair Care",)), n_relevant=5)]
    with pytest.raises(SemidError, match="3 relevant items here but 5"):
        score_requests(np.zeros((1, 2), int), stale, SHOP)
    with pytest.raises(SemidError, match="2 rows for 1 requests"):
        score_requests(np.zeros((2, 2), int), stale, relevant=[np.array([0])])


# ------------------------------------------------------------------------------------------------------
# JSONL
# ------------------------------------------------------------------------------------------------------


def test_a_request_set_round_trips_through_jsonl(tmp_path):
    reqs = [
        Request("cheap blow dryers", "price", Constraint(("Hair Dryers",), price_max=20.0), "dev", 4),
        Request("lòreal", "brand_spelling", Constraint(brand="L'Oréal Paris"), "test", 12),
        Request("argan shampoo", "ingredient", Constraint(("Shampoos",), title_words=("argan", "oil*"))),
    ]
    path = save_requests(tmp_path / "r.jsonl", reqs)
    assert load_requests(path) == reqs
    assert load_requests(path, split="test") == [reqs[1]]
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    assert json.loads(lines[0]) == {
        "text": "cheap blow dryers",
        "family": "price",
        "split": "dev",
        "categories": ["Hair Dryers"],
        "brand": None,
        "price_min": None,
        "price_max": 20.0,
        "title_words": [],
        "n_relevant": 4,
    }


def test_a_bad_line_is_an_error_naming_it(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(
        '{"text": "a", "family": "f", "brand": "x"}\n{"text": "b", "family": "f", "colour": "red"}\n'
    )
    with pytest.raises(SemidError, match=r"r.jsonl line 2: unknown request field 'colour'"):
        load_requests(path)
    path.write_text('{"text": "a", "family": "f"}\n')
    with pytest.raises(SemidError, match=r"r.jsonl line 1: a constraint needs at least one"):
        load_requests(path)


# ------------------------------------------------------------------------------------------------------
# Generating requests
# ------------------------------------------------------------------------------------------------------


def edits(a: str, b: str) -> int:
    """Damerau-Levenshtein distance (with adjacent swaps), for short strings."""
    d = np.zeros((len(a) + 1, len(b) + 1), int)
    d[:, 0], d[0, :] = range(len(a) + 1), range(len(b) + 1)
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i, j] = min(d[i, j], d[i - 2, j - 2] + 1)
    return int(d[-1, -1])


def test_a_typo_is_one_seeded_edit_of_the_longest_word_keeping_its_first_letter():
    for seed in range(30):
        out = typo("hair straighteners", np.random.default_rng(seed))
        assert out.startswith("hair s") and out != "hair straighteners"
        assert edits(out, "hair straighteners") == 1
        assert out == typo("hair straighteners", np.random.default_rng(seed))
    assert typo("a bb", np.random.default_rng(0)) is None


def test_brand_spellings_differ_from_the_brand_but_name_the_same_brand():
    spellings = brand_spellings("L'Oréal Paris")
    assert spellings[0] == "loreal paris"
    assert "L'Oréal Paris" not in spellings and len(set(spellings)) == len(spellings) >= 3
    assert {normalize_text(s) for s in spellings} == {normalize_text("L'Oréal Paris")}
    assert brand_spellings("nars") == []


def test_splits_keep_a_constraint_on_one_side_and_balance_each_family():
    same = Constraint(("Lips",))
    reqs = [Request(f"lips {i}", "synonym", same) for i in range(3)]
    reqs += [Request(f"brand {i}", "brand", Constraint(brand=f"b{i}")) for i in range(10)]
    out = assign_splits(reqs, seed=0, dev_fraction=0.5)
    assert len({r.split for r in out if r.constraint == same}) == 1
    brands = Counter(r.split for r in out if r.family == "brand")
    assert brands == {"dev": 5, "test": 5}
    assert [r.text for r in out] == [r.text for r in reqs]


DEMO = make_demo_dataset(n_items=120, n_users=5, seed=0).catalogue
LEXICON = RequestLexicon(
    categories={"lippy": ("Lipstick",), "lip stuff": ("Makeup > Lips",), "blow dryers": ("Hair Dryer",),
                "face products": ("Skin Care > Face",), "things for hair": ("Hair Care",)},
    needs={"for dry hair": Constraint(("Hair Care",), title_words=("dry hair",)),
           "to smell nice": Constraint(("Fragrance",))},
    ingredients={"lavender": ("lavender",), "rose": ("rose",), "vanilla": ("vanilla",)},
    qualities={"matte": ("matte",), "waterproof": ("waterproof",)},
    extra={"audience": {"a present for my wife": Constraint(("Makeup",))}},
)  # fmt: skip


@pytest.fixture(scope="module")
def generated():
    return make_requests(DEMO, seed=3, lexicon=LEXICON, per_family=6)


def test_generated_requests_are_reproducible_and_depend_on_the_seed(generated):
    assert make_requests(DEMO, seed=3, lexicon=LEXICON, per_family=6) == generated
    assert make_requests(DEMO, seed=4, lexicon=LEXICON, per_family=6) != generated


def test_every_generated_request_has_relevant_items_and_a_unique_text(generated):
    fields = catalogue_fields(DEMO)
    for r in generated:
        assert r.n_relevant == len(r.relevant(fields)) >= 1
        assert r.split in ("dev", "test")
    texts = [normalize_text(r.text) for r in generated]
    assert len(set(texts)) == len(texts)


def test_generated_families_cover_words_brands_prices_typos_and_combinations(generated):
    counts = Counter(r.family for r in generated)
    assert set(counts) == {
        "synonym", "need", "price", "brand_spelling", "brand_typo", "category_typo", "brand_category",
        "brand_price", "ingredient", "quality", "combo3", "audience",
    }  # fmt: skip
    assert max(counts.values()) <= 6
    assert all(r.constraint.n_parts == 3 for r in generated if r.family == "combo3")
    for r in generated:
        if r.family in ("brand_spelling", "brand_typo"):
            assert r.constraint.brand is not None and r.constraint.brand not in r.text
    for fam, n in counts.items():  # stratified: each family about half in dev
        dev = sum(r.split == "dev" for r in generated if r.family == fam)
        assert abs(dev - n / 2) <= 1, fam


def test_without_a_lexicon_leaf_categories_stand_in_for_category_words():
    reqs = make_requests(DEMO, seed=0, per_family=4)
    fams = {r.family for r in reqs}
    assert {"price", "brand_spelling", "brand_typo", "category_typo", "brand_category", "combo3"} <= fams
    assert not fams & {"synonym", "need", "ingredient", "quality"}


def test_no_request_nor_test_relevant_pair_appears_in_the_training_examples(generated, tmp_path):
    n = len(DEMO)
    codes = np.stack([np.arange(n) // 16, np.arange(n) % 16], axis=1)
    ids = IdTable(DEMO.item_ids, [f"{a}-{b}" for a, b in codes], codes, codes, {})
    # every training template for every item, so that all training phrasings are there
    prepare_dataset(DEMO, ids, tmp_path / "data", ExampleConfig(n_per_item=8, seed=0))
    train = read_jsonl(tmp_path / "data" / "train.jsonl")
    queries = {normalize_text(e["messages"][1]["content"]) for e in train}
    assert not {normalize_text(r.text) for r in generated} & queries
    trained_pairs = {(e["item"], e["template"]) for e in train} | {
        (e["item"], normalize_text(e["messages"][1]["content"])) for e in train
    }
    fields = catalogue_fields(DEMO)
    test_pairs = {
        (int(item), key)
        for r in generated
        if r.split == "test"
        for item in r.relevant(fields)
        for key in (r.family, normalize_text(r.text))
    }
    assert test_pairs and not test_pairs & trained_pairs


def test_a_catalogue_of_another_type_is_an_error():
    with pytest.raises(SemidError, match="expected a Catalogue or a pyarrow Table"):
        make_requests({"item_id": ["a"]}, seed=0)
