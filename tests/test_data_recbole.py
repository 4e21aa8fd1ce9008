"""RecBole atomic files, with the quirks of the real Amazon files (quoted values, raw newlines, None)."""

from __future__ import annotations

from pathlib import Path

import pytest

from semid.data import ParseReport
from semid.data.recbole import read_recbole, split_token_seq
from semid.embed.text import default_template, render_texts
from semid.errors import SemidError

HEADER = "item_id:token\ttitle:token\tsales_type:token\tsales_rank:float\tcategories:token_seq\tprice:float\tbrand:token\n"
# Lines in the exact form of Amazon_Beauty.item (pandas to_csv, tab-separated): a title with a raw newline
# inside quotes (lines 4-5), a title holding a tab inside quotes, a doubled quote in a quoted token_seq,
# empty fields and "None".
BEAUTY_LIKE = (
    HEADER
    + "7806397051\tWAWO 15 Color Professionl Makeup Eyeshadow Palette\tBeauty\t10486.0\t'Beauty', 'Makeup', 'Face', 'Concealers & Neutralizers'\t5.04\tCOKA\n"
    + "9788072216\tPrada Candy By Prada Eau De Parfum Spray 1.7 Oz For Women\tBeauty\t78916.0\t\"'Beauty', 'Fragrance', \"\"Women's\"\", 'Eau de Parfum'\"\t65.86\tPrada\n"
    + "B0001ZYL3Q\t\"TheraNeem Cream - Original Organix South 2 oz Cream \nVanilla\"\t\t\t'Beauty', 'Skin Care', 'Body', 'Moisturizers', 'Lotions'\t11.28\tOrganix\n"
    + "B000SDI6MI\t\"- \t DESIGNER SKIN ANGEL KIWI PEAR LOTION 20 OZ\"\tToys & Games\t1679205.0\t'Beauty', 'Skin Care'\t7.97\tDesigner Skin\n"
    + "B000GZES7A\t\tHealth & Personal Care\t15944.0\t'Beauty', 'Skin Care', 'Eyes', 'Creams'\t\t\n"
    + "B00XNONE00\tPlain Title\tNone\tNone\t'Beauty'\tNone\tNone\n"
)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_the_beauty_item_file_quirks(tmp_path: Path) -> None:
    report = ParseReport()
    cat = read_recbole(write(tmp_path / "Amazon_Beauty.item", BEAUTY_LIKE), report=report)
    assert cat.item_ids.tolist() == [
        "7806397051",
        "9788072216",
        "B0001ZYL3Q",
        "B000SDI6MI",
        "B000GZES7A",
        "B00XNONE00",
    ]
    assert cat.fields == ["title", "sales_type", "sales_rank", "categories", "price", "brand"]
    titles = cat.column("title").to_pylist()
    assert titles[2] == "TheraNeem Cream - Original Organix South 2 oz Cream \nVanilla"
    assert titles[3] == "- \t DESIGNER SKIN ANGEL KIWI PEAR LOTION 20 OZ"
    assert titles[4] is None
    cats = cat.column("categories").to_pylist()
    assert cats[0] == ["Beauty", "Makeup", "Face", "Concealers & Neutralizers"]
    assert cats[1] == ["Beauty", "Fragrance", "Women's", "Eau de Parfum"]
    assert cats[5] == ["Beauty"]
    assert cat.column("price").to_pylist() == [5.04, 65.86, 11.28, 7.97, None, None]
    assert cat.column("brand").to_pylist()[4:] == [None, None]  # empty and "None" are missing
    assert cat.coverage() == pytest.approx(
        {
            "title": 5 / 6,
            "sales_type": 4 / 6,
            "sales_rank": 4 / 6,
            "categories": 1.0,
            "price": 4 / 6,
            "brand": 4 / 6,
        }
    )
    # The newline was repaired, and said so with the lines and the item.
    assert (report.n_skipped, report.n_repaired) == (0, 1)
    (issue,) = report.repaired
    assert issue.where == "Amazon_Beauty.item lines 4-5"
    assert "B0001ZYL3Q" in issue.message and 'Vanilla"' in issue.message
    # Rows know their lines: the row after the two-line title starts at line 6.
    assert cat.origin.where(3) == "Amazon_Beauty.item line 6"


def test_rejoins_a_value_broken_by_an_unquoted_newline(tmp_path: Path) -> None:
    text = "item_id:token\ttitle:token\tbrand:token\nA1\tFirst\tX\nA2\tBroken title\nsecond half\tY\nA3\tThird\tZ\n"
    report = ParseReport()
    cat = read_recbole(write(tmp_path / "x.item", text), report=report)
    assert cat.item_ids.tolist() == ["A1", "A2", "A3"]
    assert cat.column("title").to_pylist()[1] == "Broken title\nsecond half"
    assert report.n_repaired == 1
    assert report.repaired[0].where == "x.item lines 3-4"


def test_skips_and_reports_a_line_with_a_wrong_field_count_in_a_large_file(tmp_path: Path) -> None:
    rows = "".join(f"I{i}\tTitle {i}\tBrand\n" for i in range(300))
    text = (
        "item_id:token\ttitle:token\tbrand:token\n"
        + rows[: rows.index("I150")]
        + "junk line\n"
        + rows[rows.index("I150") :]
    )
    report = ParseReport()
    cat = read_recbole(write(tmp_path / "big.item", text), report=report)
    assert len(cat) == 300
    assert report.n_skipped == 1
    assert str(report.skipped[0]) == "big.item line 152: 1 fields, expected 3: junk line"


def test_a_bad_float_in_a_small_file_is_an_error_with_file_and_line(tmp_path: Path) -> None:
    text = "item_id:token\ttitle:token\tprice:float\nA\tx\t1.5\nB\ty\tabc\nC\tz\t2\n"
    with pytest.raises(
        SemidError,
        match=r"^p\.item line 3: price 'abc' is not a number \(1 of 3 rows of p\.item unreadable, more than max_bad_fraction=0\.01\)$",
    ):
        read_recbole(write(tmp_path / "p.item", text))
    report = ParseReport()
    cat = read_recbole(tmp_path / "p.item", report=report, max_bad_fraction=0.5)
    assert cat.item_ids.tolist() == ["A", "C"]
    assert report.n_skipped == 1


def test_a_repeated_item_id_is_left_out_and_reported(tmp_path: Path) -> None:
    text = "item_id:token\ttitle:token\n" + "".join(f"I{i}\tt{i}\n" for i in range(200)) + "I7\tagain\n"
    report = ParseReport()
    cat = read_recbole(write(tmp_path / "d.item", text), report=report)
    assert len(cat) == 200 and cat.column("title").to_pylist()[7] == "t7"
    assert str(report.skipped[0]) == "d.item line 202: item_id 'I7' repeats an earlier row, left out"


def test_fields_selects_columns(tmp_path: Path) -> None:
    cat = read_recbole(write(tmp_path / "a.item", BEAUTY_LIKE), fields=["title", "brand"])
    assert cat.fields == ["title", "brand"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("item_id\ttitle:token\nA\tx\n", r"^h\.item line 1: header field 'item_id' has no type"),
        ("item_id:token\ttitle:text\nA\tx\n", r"^h\.item line 1: header field 'title:text' has type 'text'"),
        ("item_id:token\tprice:float\nA\t1\n", r"^h\.item: catalogue has no text fields"),
        (
            "id:token\ttitle:token\nA\tx\n",
            r"^h\.item: no column 'item_id' for item_id \(columns: id, title\)",
        ),
        ("", r"^h\.item: the file is empty"),
    ],
    ids=["untyped-header", "unknown-type", "no-text-field", "no-item-id", "empty"],
)
def test_bad_item_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(SemidError, match=message):
        read_recbole(write(tmp_path / "h.item", text))


def test_reads_an_inter_file(tmp_path: Path) -> None:
    text = (
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "u1\tB\t5.0\t1400000200.0\nu1\tA\t4.0\t1400000100.0\nu2\tA\t3.0\t1300000000.0\n"
    )
    inter = read_recbole(write(tmp_path / "Amazon_Beauty.inter", text))
    assert inter.n_interactions == 3
    assert inter.timestamps.dtype.kind == "i"
    offsets, items = inter.sequences(["A", "B"])
    assert offsets.tolist() == [0, 2, 3] and items.tolist() == [0, 1, 0]
    assert inter.ratings.tolist() == [5.0, 4.0, 3.0]


def test_inter_file_needs_user_and_item_columns(tmp_path: Path) -> None:
    with pytest.raises(SemidError, match=r"^x\.inter: no column 'user_id' for user_id"):
        read_recbole(write(tmp_path / "x.inter", "uid:token\titem_id:token\nu\ta\n"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("'Beauty', 'Makeup'", ["Beauty", "Makeup"]),
        ("'Beauty', \"Women's\", 'Eau de Parfum'", ["Beauty", "Women's", "Eau de Parfum"]),
        ("'Creams, Gels & Lotions', 'x'", ["Creams, Gels & Lotions", "x"]),
        ('\'It\\\'s\', "a \\"quote\\""', ["It's", 'a "quote"']),
        ("rock pop  jazz", ["rock", "pop", "jazz"]),
        ("None", None),
        ("", None),
    ],
    ids=["literal", "apostrophe", "comma-inside", "escapes", "space-separated", "none", "empty"],
)
def test_token_seq_values(value: str, expected: list[str] | None) -> None:
    import pyarrow as pa

    assert split_token_seq(pa.array([value])).to_pylist() == [expected]


def test_float_seq_fields(tmp_path: Path) -> None:
    text = "item_id:token\ttitle:token\temb:float_seq\nA\tx\t1.5 2 3\nB\ty\t\nC\tz\t-7 8e2\n"
    cat = read_recbole(write(tmp_path / "f.item", text))
    assert cat.column("emb").to_pylist() == [[1.5, 2.0, 3.0], None, [-7.0, 800.0]]
    bad = text + "".join(f"D{i}\tw\t1\n" for i in range(200)) + "E\tv\t1 x\n"
    report = ParseReport()
    assert len(read_recbole(write(tmp_path / "g.item", bad), report=report)) == 203
    assert str(report.skipped[0]) == "g.item line 205: emb '1 x' holds a value that is no number"


def test_free_text_token_seq_joins_with_spaces_and_lists_with_commas(tmp_path: Path) -> None:
    text = (
        "item_id:token\ttitle:token_seq\tcategories:token_seq\tnotes:token_seq\n"
        "A\tHair Dryer\tBeauty Hair\t'Travel', 'Compact'\n"
        "B\tTravel  Kit\t\t\n"
    )
    cat = read_recbole(write(tmp_path / "t.item", text))
    assert cat.column("title").to_pylist() == ["Hair Dryer", "Travel Kit"]
    assert cat.column("categories").to_pylist() == [["Beauty", "Hair"], None]
    assert cat.column("notes").to_pylist() == [["Travel", "Compact"], None]  # written as a Python list
    assert render_texts(cat, "Title: {title}; Categories: {categories}; Notes: {notes}") == [
        "Title: Hair Dryer; Categories: Beauty, Hair; Notes: Travel, Compact",
        "Title: Travel Kit",
    ]


def test_a_catalogue_with_name_description_and_tags_reads_by_default(tmp_path: Path) -> None:
    text = (
        "item_id:token\tname:token_seq\tdescription:token_seq\ttag_list:token_seq\tyear:token\n"
        "A\tHair Dryer\tcompact travel dryer\tbeauty hair\t2019\n"
        "B\tLip Balm\tfor dry lips\tbeauty lips\t2020\n"
    )
    cat = read_recbole(write(tmp_path / "shop.item", text))
    tpl = default_template(cat)
    assert tpl.fields == ["name", "tag_list", "description"]  # year: digits only, no item text
    assert tpl.render(cat) == [
        "Name: Hair Dryer; Tag list: beauty, hair; Description: compact travel dryer",
        "Name: Lip Balm; Tag list: beauty, lips; Description: for dry lips",
    ]
