"""Item text templates: which parts are kept, how values read, and what a bad template says."""

from __future__ import annotations

import pyarrow as pa
import pytest

from semid.data import Catalogue
from semid.embed.text import (
    DEFAULT_TEMPLATE,
    SHORT_TEXT_MAX_CHARS,
    TextTemplate,
    default_template,
    item_text_fields,
    render_texts,
)
from semid.errors import SemidError


def one(**fields) -> str:
    """The default text of one item with these fields."""
    return render_texts({k: [v] for k, v in fields.items()})[0]


FULL = dict(title="Red Lipstick", brand="Acme", categories=["Beauty", "Makeup"], price=9.5)


def test_default_template_reads_like_tiger_item_text():
    assert DEFAULT_TEMPLATE == "Title: {title}; Brand: {brand}; Categories: {categories}; Price: {price}"
    assert one(**FULL) == "Title: Red Lipstick; Brand: Acme; Categories: Beauty, Makeup; Price: 9.5"


@pytest.mark.parametrize(
    "brand", [None, "", "   ", "None", "nan"], ids=["null", "empty", "blank", "None-string", "nan-string"]
)
def test_a_part_with_a_missing_value_is_left_out_entirely(brand):
    assert one(**{**FULL, "brand": brand}) == "Title: Red Lipstick; Categories: Beauty, Makeup; Price: 9.5"


def test_missing_first_and_last_parts_leave_no_stray_separators():
    assert one(title=None, brand="Acme", categories=[], price=float("nan")) == "Brand: Acme"


def test_an_item_with_nothing_renders_as_empty_text():
    assert one(title=None, brand=None, categories=None, price=None) == ""


@pytest.mark.parametrize(
    "price, text",
    [(10.0, "10.0"), (5.04, "5.04"), (0.1 + 0.2, "0.30000000000000004"), (12, "12"), ("19.99", "19.99")],
    ids=["whole-float", "float", "long-float", "int", "string"],
)
def test_numbers_read_as_python_prints_them(price, text):
    assert render_texts({"price": [price]}, "Price: {price}") == [f"Price: {text}"]


@pytest.mark.parametrize(
    "categories",
    [
        ["Beauty", "Women's", "Eau de Parfum"],
        ["'Beauty'", '"Women\'s"', " 'Eau de Parfum' "],
        "'Beauty', \"Women's\", 'Eau de Parfum'",
    ],
    ids=["list", "list-of-quoted", "token-seq-string"],
)
def test_lists_and_token_seq_strings_join_without_their_quotes(categories):
    assert render_texts({"categories": [categories]}, "Categories: {categories}") == [
        "Categories: Beauty, Women's, Eau de Parfum"
    ]


@pytest.mark.parametrize(
    "categories",
    [["Beauty", "Women's"], "'Beauty', \"Women's\""],
    ids=["list", "token-seq-string"],
)
def test_single_quote_mode_reproduces_the_reference_beauty_text(categories):
    # The reference vectors were made from str(list).replace("'", ""): Women's -> "Womens".
    tpl = TextTemplate("Categories: {categories}", strip_quotes="single")
    assert tpl.render({"categories": [categories]}) == ['Categories: Beauty, "Womens"']


def test_empty_list_elements_are_dropped():
    assert render_texts({"c": [["a", "", "None", "b"]]}, "C: {c}") == ["C: a, b"]


def test_strings_outside_list_fields_keep_their_quotes():
    assert render_texts({"title": ["'Tis the 'Season'"]}, "T: {title}") == ["T: 'Tis the 'Season'"]


def test_a_part_is_kept_only_if_all_its_fields_are_present():
    tpl = "Made by {brand} in {country}; Title: {title}"
    rows = {"brand": ["Acme", "Acme"], "country": ["France", None], "title": ["Soap", "Soap"]}
    assert render_texts(rows, tpl) == ["Made by Acme in France; Title: Soap", "Title: Soap"]


def test_literal_braces_and_a_part_without_fields():
    rows = {"title": ["Soap"]}
    assert render_texts(rows, "Item {{new}}; Title: {title}") == ["Item {new}; Title: Soap"]


def test_every_kind_of_catalogue_input_renders_the_same():
    columns = {"item_id": ["a", "b"], "title": ["Soap", "Gel"], "brand": ["Acme", None]}
    rows = [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]
    expected = ["Title: Soap; Brand: Acme", "Title: Gel"]
    tpl = "Title: {title}; Brand: {brand}"
    assert render_texts(columns, tpl) == expected
    assert render_texts(rows, tpl) == expected
    assert render_texts(pa.table(columns), tpl) == expected
    assert render_texts(Catalogue.from_pydict(columns), tpl) == expected


def test_dictionary_encoded_columns_render_as_their_values():
    brand = pa.array(["Acme", None, "Acme"]).dictionary_encode()
    assert render_texts(pa.table({"brand": brand}), "Brand: {brand}") == ["Brand: Acme", "", "Brand: Acme"]


def test_template_lists_its_fields_in_order():
    assert TextTemplate().fields == ["title", "brand", "categories", "price"]


@pytest.mark.parametrize(
    "template, message",
    [
        ("Title: {nope}", "template field {nope} is not in the catalogue (fields: title, brand, price)"),
        ("Price: {price:.2f}", "template 'Price: {price:.2f}': field {price} has a format spec or conversion; "
         "only plain {field} placeholders are supported"),
        ("Title: {title.upper}", "template 'Title: {title.upper}': field {title.upper} should be a plain column name"),
        ("Just text", "template 'Just text' has no {field} placeholders"),
        ("Title: {title", "template 'Title: {title': expected '}' before end of string"),
    ],
    ids=["unknown-field", "format-spec", "attribute", "no-fields", "unclosed-brace"],
)  # fmt: skip
def test_a_bad_template_says_what_is_wrong(template, message):
    with pytest.raises(SemidError) as e:
        render_texts({"item_id": ["a"], "title": ["x"], "brand": ["y"], "price": [1.0]}, template)
    assert str(e.value) == message


def test_a_field_of_an_unrenderable_type_is_named():
    table = pa.table({"dims": pa.array([{"w": 1}])})
    with pytest.raises(SemidError, match=r"^field 'dims' has type struct<w: int64>, which a text template"):
        render_texts(table, "Size: {dims}")


# -- the default item text: built from the fields the catalogue has ------------------------------------------


def test_default_template_reads_the_fields_a_title_and_brand_catalogue_has():
    items = {"item_id": ["a", "b"], "title": ["Red Lipstick", "Shampoo"], "brand": ["Acme", None]}
    tpl = default_template(items)
    assert tpl.template == "Title: {title}; Brand: {brand}"
    assert tpl.fields == ["title", "brand"]
    assert render_texts(items) == ["Title: Red Lipstick; Brand: Acme", "Title: Shampoo"]


def test_an_amazon_catalogue_gets_exactly_the_reference_template():
    # sales_type (the category of the sales rank) and sales_rank (a number) are no item text
    items = {"item_id": ["a"], "title": ["Palette"], "sales_type": ["Beauty"], "sales_rank": [10486.0],
             "categories": [["Beauty", "Makeup"]], "price": [5.04], "brand": ["COKA"]}  # fmt: skip
    assert default_template(items).template == DEFAULT_TEMPLATE


def test_other_names_fill_the_parts_in_order_then_other_short_text():
    items = {
        "item_id": ["a"],
        "colour": ["red"],
        "genres": ["'Drama', 'Comedy'"],  # a token-seq string, read as a list
        "price": [12],
        "manufacturer": ["Acme"],
        "name": ["Hair Dryer"],
    }
    tpl = default_template(items)
    assert (
        tpl.template
        == "Name: {name}; Manufacturer: {manufacturer}; Genres: {genres}; Price: {price}; Colour: {colour}"
    )
    assert tpl.render(items) == [
        "Name: Hair Dryer; Manufacturer: Acme; Genres: Drama, Comedy; Price: 12; Colour: red"
    ]


@pytest.mark.parametrize(
    "column, values",
    [
        ("product_id", ["P1", "P2", "P3"]),
        ("imUrl", ["http://x/1.jpg", "http://x/2.jpg", "http://x/3.jpg"]),
        ("release_date", ["01-Jan-1995", "02-Feb-1996", "03-Mar-1997"]),
        ("year", ["1995", "1996", "1997"]),
        ("added", ["874965758", "874965759", "874965760"]),
        ("rank", [3, 1, 2]),
        ("in_stock", [True, False, True]),
        ("description", ["d" * 101, "short", "d" * 150]),  # median 101 characters
    ],
    ids=["id-name", "link-name", "date-name", "digits", "timestamp-text", "number", "bool", "long-text"],
)  # fmt: skip
def test_ids_links_times_numbers_and_long_text_stay_out_of_the_default_text(column, values):
    items = {"item_id": ["a", "b", "c"], "title": ["x", "y", "z"], column: values}
    assert item_text_fields(items) == ["title"]


def test_short_free_text_at_the_limit_is_taken():
    items = {"item_id": ["a"], "title": ["x"], "description": ["d" * SHORT_TEXT_MAX_CHARS]}
    assert item_text_fields(items) == ["title", "description"]


def test_a_catalogue_with_no_usable_field_asks_for_a_template():
    items = {"item_id": ["a"], "description": ["word " * 40], "sku": ["AB-1"]}
    with pytest.raises(SemidError) as e:
        default_template(items)
    assert str(e.value) == (
        "no field for the default item text: no title-, brand-, category- or price-like field and no short "
        "text field (fields: description, sku); pass a template naming the fields to read, e.g. "
        "'Description: {description}' (--template on the command line)"
    )


def test_a_template_or_separator_that_is_no_string_is_one_error() -> None:
    from semid.embed.text import TextTemplate
    from semid.errors import SemidError

    with pytest.raises(SemidError, match=r"^template=None should be a string$"):
        TextTemplate(None)  # type: ignore[arg-type]
    with pytest.raises(SemidError, match=r"^list_sep=None should be a string$"):
        TextTemplate("{title}", list_sep=None)  # type: ignore[arg-type]
