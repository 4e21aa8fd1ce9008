"""Brand and price constraints read from a request, and the item filter they make."""

from __future__ import annotations

import numpy as np
import pytest

from semid.data import Catalogue
from semid.errors import SemidError
from semid.llm.constraints import RequestFilter

# Nine items: two Gelish polishes that Hand & Nail Harmony also names in its titles (a product line, still
# a brand), L'Oréal Paris, CoverGirl (spelt with no space), a brand "Pure" that is mostly a title word of
# three other brands (a common word, never a brand), one item with neither brand nor price, and a
# GelPolish whose name is also an everyday phrase.
CATALOGUE = Catalogue.from_pydict(
    {
        "item_id": [f"i{k}" for k in range(9)],
        "title": [
            "Gelish Soak Off Gel Polish Red",
            "Gelish Top Coat",
            "Harmony Gelish Base Coat",
            "Voluminous Mascara",
            "Pure Clean Lipstick Nude",
            "Pure Argan Oil",
            "Pure Rosehip Serum",
            "Pure Coconut Soap",
            "Shine Gel Polish Clear",
        ],
        "brand": [
            "Gelish",
            "Gelish",
            "Hand & Nail Harmony",
            "L'Oréal Paris",
            "CoverGirl",
            "Pure",
            "Acme",
            None,
            "GelPolish",
        ],
        "categories": [["Beauty", "Nails"]] * 3
        + [["Beauty", "Makeup"]] * 2
        + [["Beauty", "Skin"]] * 3
        + [["Beauty", "Nails"]],
        "price": [9.5, 12.0, 20.0, 8.0, 6.0, 30.0, 45.0, None, 5.0],
    }
)


@pytest.fixture(scope="module")
def flt() -> RequestFilter:
    return RequestFilter(ambiguity=1.0).fit(CATALOGUE)


def rows(mask) -> list[int]:
    return np.flatnonzero(mask).tolist()


@pytest.mark.parametrize(
    ("text", "brands"),
    [
        ("anything by gelish?", ("gelish",)),
        ("LOREAL PARIS mascara", ("loreal paris",)),
        ("l'oreal paris please", ("loreal paris",)),
        ("covergirl lipstick", ("covergirl",)),
        ("handnailharmony top coat", ("hand nail harmony",)),  # one word for a spaced name
        ("hand nail harmony base", ("hand nail harmony",)),
        ("pure argan oil", ()),  # "pure" is a common word here, not the brand
    ],
)
def test_brands_are_named_after_normalisation(flt, text, brands):
    assert flt.parse(text).brands == brands


def test_words_are_not_joined_into_a_name():
    # "gel polish" is a phrase, not the brand GelPolish ("acne free" is no AcneFree); exact reading only
    # (in this tiny catalogue every word is rare enough for the misspelling path to try it)
    flt = RequestFilter(ambiguity=1.0, fuzzy=False).fit(CATALOGUE)
    assert flt.parse("shine gel polish").brands == ()
    assert flt.parse("gelpolish please").brands == ("gelpolish",)


def test_a_misspelt_brand_is_found_by_edit_distance_only_when_a_word_is_unknown(flt):
    typo = flt.parse("gelsih top coat")  # a swap of neighbours: one edit
    assert typo.brands == ("gelish",) and typo.fuzzy and typo.spans == ("gelsih",)
    assert flt.parse("gelishes").brands == ()  # two edits for a 6-letter name: too far
    assert flt.parse("coat polish").brands == ()  # every word is a catalogue word: no fuzzy reading
    joined = flt.parse("cover girl lipstick")  # "girl" is no word of this catalogue: a misspelt CoverGirl
    assert joined.brands == ("covergirl",) and joined.fuzzy
    # "&" is dropped by normalisation; the unknown "and" makes "and nail harmony" one edit from the name
    spelt = flt.parse("hand and nail harmony")
    assert spelt.brands == ("hand nail harmony",) and spelt.fuzzy


@pytest.mark.parametrize(
    ("text", "bounds"),
    [
        ("mascara under $10", (None, 10.0, True, False)),
        ("mascara below 10 dollars", (None, 10.0, True, False)),
        ("for less than 15 bucks", (None, 15.0, True, False)),
        ("under thirty five dollars", (None, 35.0, True, False)),
        ("up to $12", (None, 12.0, True, True)),
        ("over $40", (40.0, None, False, False)),
        ("at least 20 dollars", (20.0, None, True, False)),
        ("between $20 and $40", (20.0, 40.0, True, True)),
        ("from twenty to forty bucks", (20.0, 40.0, True, True)),
        ("$5-$15", (5.0, 15.0, True, True)),
        ("around $30", (24.0, 36.0, True, True)),
        ("a 2 pack under 100 ml", (None, None, True, False)),  # numbers without a currency are no prices
        ("spf 30-50 sunscreen under $15", (None, 15.0, True, False)),
        ("3-4 oz for $10", (None, None, True, False)),  # the currency must sit beside the amount
        ("over 100 ml for $20", (None, None, True, False)),
        ("more than $10 but less than $30", (10.0, 30.0, False, False)),  # both bounds, in reading order
        ("$20 and under", (None, 20.0, True, True)),
        ("$15 or more", (15.0, None, True, False)),
        ("under $1,000", (None, 1000.0, True, False)),
        ("not expensive lotion", (None, None, True, False)),  # a negated price word states nothing
    ],
)
def test_prices_are_read_with_their_bounds(flt, text, bounds):
    p = flt.parse(text)
    assert (p.price_min, p.price_max, p.min_inclusive, p.max_inclusive) == pytest.approx(bounds)


def test_price_words_are_quantiles_of_the_catalogues_prices(flt):
    prices = np.array([9.5, 12.0, 20.0, 8.0, 6.0, 30.0, 45.0, 5.0])
    cheap = flt.parse("cheap polish")
    assert cheap.price_max == pytest.approx(np.quantile(prices, 0.25)) and cheap.price_min is None
    lux = flt.parse("luxury serum")
    assert lux.price_min == pytest.approx(np.quantile(prices, 0.9))
    assert flt.parse("luxury serum under $50").price_max == 50.0  # a stated number wins
    assert RequestFilter(vague_prices=False).fit(CATALOGUE).parse("cheap polish").empty


def test_the_mask_holds_exactly_the_items_that_satisfy_every_stated_constraint(flt):
    assert rows(flt.mask("gelish under $10")) == [0]
    assert rows(flt.mask("gelish up to $12")) == [0, 1]
    assert rows(flt.mask("anything over $25")) == [5, 6]  # item 7 has no price: never inside a range
    assert flt.mask("a nice lipstick") is None  # nothing stated: nothing to filter
    both = flt.masks(["gelish", "something nice"])
    assert both.shape == (2, 9) and rows(both[0]) == [0, 1] and both[1].all()


def test_item_ids_order_the_columns_and_unknown_items_satisfy_nothing():
    flt = RequestFilter(ambiguity=1.0).fit(CATALOGUE, item_ids=["i1", "zz", "i0"])
    assert flt.mask("gelish").tolist() == [True, False, True]
    assert flt.mask("under $100").tolist() == [True, False, True]


def test_switches_turn_each_reading_off():
    assert RequestFilter(brands=False).fit(CATALOGUE).parse("gelish under $10").brands == ()
    assert RequestFilter(prices=False).fit(CATALOGUE).parse("gelish under $10").price_max is None
    assert RequestFilter(fuzzy=False, ambiguity=1.0).fit(CATALOGUE).parse("gelsih").brands == ()


@pytest.mark.parametrize("text", ["口紅 ¥2000以下", "rouge à lèvres pas cher", "", "   ", "$" * 10_000])
def test_requests_in_other_languages_or_of_no_words_state_nothing(flt, text):
    assert flt.parse(text).empty and flt.mask(text) is None


def test_an_unfitted_filter_and_a_non_string_request_are_errors(flt):
    with pytest.raises(SemidError, match=r"not fitted: call fit\(catalogue\) first"):
        RequestFilter().parse("x")
    with pytest.raises(SemidError, match="a request should be a string, got int"):
        flt.parse(3)
