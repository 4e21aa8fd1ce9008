"""Amazon reviews and metadata, 2014 (Python-literal meta lines) and 2018 (JSON), gzipped as distributed."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from semid.data import ParseReport, load_dataset
from semid.data.amazon import read_amazon_meta, read_amazon_reviews, sniff_meta_version
from semid.errors import SemidError


def review(user: str, asin: str, rating: float = 5.0, t: int = 1391040000, **extra: object) -> str:
    return json.dumps(
        {
            "reviewerID": user,
            "asin": asin,
            "reviewerName": "Andrea",
            "helpful": [3, 4],
            "reviewText": "Very oily, dries out quickly.",
            "overall": rating,
            "summary": "Don't waste your money",
            "unixReviewTime": t,
            "reviewTime": "01 30, 2014",
            **extra,
        }
    )


def gz(path: Path, lines: list[str]) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return path


# 2014 metadata lines are Python literals (single quotes; a double-quoted string when it holds an apostrophe).
META_2014 = [
    "{'asin': '7806397051', 'title': 'WAWO 15 Color Professionl Makeup Eyeshadow Camouflage', 'price': 5.04, "
    "'imUrl': 'http://ecx.images-amazon.com/images/I/31ta.jpg', 'related': {'also_bought': ['B00AB', 'B00CD'], "
    "'bought_together': ['B00EF']}, 'salesRank': {'Beauty': 10486}, "
    "'categories': [['Beauty', 'Makeup', 'Face', 'Concealers & Neutralizers']], 'brand': 'COKA'}",
    "{'asin': 'B00L0RIDZ', 'title': \"L'Oreal Paris Elvive Shampoo\", 'description': 'Gentle daily shampoo.', "
    "'categories': [['Beauty', 'Hair Care', 'Shampoos'], ['Beauty', 'Hair Care', 'Conditioners']]}",
    "{'asin': 'B000NOREVU', 'title': 'Nobody reviewed me', 'categories': [['Beauty']]}",
]


@pytest.fixture
def amazon2014(tmp_path: Path) -> Path:
    gz(
        tmp_path / "reviews_Beauty_5.json.gz",
        [
            review("A1", "7806397051", 1.0, 1391040000),
            review("A1", "B00L0RIDZ", 4.0, 1390000000),
            review("A2", "B00L0RIDZ", 5.0, 1400000000),
        ],
    )
    gz(tmp_path / "meta_Beauty.json.gz", META_2014)
    return tmp_path


def test_reads_2014_reviews_and_literal_meta(amazon2014: Path) -> None:
    ds = load_dataset(amazon2014)
    cat, inter = ds.catalogue, ds.interactions
    assert cat.item_ids.tolist() == ["7806397051", "B00L0RIDZ"]  # the unreviewed item is left out...
    assert ds.report.notes == ["meta_Beauty.json.gz: 1 items without interactions left out"]  # ...and said so
    assert cat.column("title").to_pylist() == [
        "WAWO 15 Color Professionl Makeup Eyeshadow Camouflage",
        "L'Oreal Paris Elvive Shampoo",
    ]
    # 2014 categories are a list of paths: flattened, first occurrence kept
    assert cat.column("categories").to_pylist() == [
        ["Beauty", "Makeup", "Face", "Concealers & Neutralizers"],
        ["Beauty", "Hair Care", "Shampoos", "Conditioners"],
    ]
    assert cat.column("price").to_pylist() == [5.04, None]
    assert cat.column("brand").to_pylist() == ["COKA", None]
    assert cat.column("description").to_pylist() == [None, "Gentle daily shampoo."]
    offsets, items = inter.sequences(cat)
    assert inter.users.tolist() == ["A1", "A2"]
    assert offsets.tolist() == [0, 2, 3]
    assert items.tolist() == [1, 0, 1]  # A1 reviewed B00L0RIDZ first (earlier unixReviewTime)
    assert inter.ratings.tolist() == [1.0, 4.0, 5.0]


def test_meta_format_is_sniffed(amazon2014: Path, tmp_path: Path) -> None:
    assert sniff_meta_version(amazon2014 / "meta_Beauty.json.gz") == "amazon2014"
    gz(tmp_path / "meta_All_Beauty.json.gz", [json.dumps({"asin": "X", "title": "t"})])
    assert sniff_meta_version(tmp_path / "meta_All_Beauty.json.gz") == "amazon2018"


def meta2018(asin: str, title: str, price: str, **extra: object) -> str:
    base = {
        "category": ["All Beauty", "Skin Care"],
        "tech1": "",
        "description": ["Loud 'N Clear Personal Sound Amplifier.", "Second paragraph."],
        "fit": "",
        "title": title,
        "also_buy": [],
        "brand": "idea village",
        "feature": [],
        "rank": "2,938,573 in Beauty & Personal Care (",
        "details": {"Shipping Weight:": "1.2 pounds"},
        "main_cat": "All Beauty",
        "price": price,
        "asin": asin,
        "imageURL": [],
    }
    base.update(extra)
    return json.dumps(base)


def test_reads_2018_reviews_and_json_meta(tmp_path: Path) -> None:
    gz(
        tmp_path / "All_Beauty_5.json.gz",
        [
            review("U1", "P1", 5.0, 100, verified=True, vote="2", style={"Size:": " 7.0 oz"}),
            review("U1", "P2", 3.0, 200),
            review("U2", "P3", 4.0, 150),
            review("U2", "P4", 4.0, 160),
        ],
    )
    gz(
        tmp_path / "meta_All_Beauty.json.gz",
        [
            meta2018("P1", "Shea Butter Cream", "$12.99"),
            meta2018("P2", "Argan Oil", "$1,299.00"),
            meta2018("P3", "Range Priced", "$5.00 - $10.00", brand=""),
            meta2018("P4", "No Price", "", category=[]),
            meta2018("P2", "Argan Oil (repeated row)", "$1,299.00"),
            meta2018("P9", "Not reviewed", "$1.00"),
        ],
    )
    ds = load_dataset(tmp_path)
    cat = ds.catalogue
    assert cat.item_ids.tolist() == ["P1", "P2", "P3", "P4"]
    assert cat.column("price").to_pylist() == [12.99, 1299.0, 5.0, None]
    assert cat.column("title").to_pylist()[1] == "Argan Oil"  # the first of the repeated rows
    assert cat.column("brand").to_pylist() == ["idea village", "idea village", None, "idea village"]
    assert cat.column("categories").to_pylist()[3] == []
    assert (
        cat.column("description").to_pylist()[0]
        == "Loud 'N Clear Personal Sound Amplifier. Second paragraph."
    )
    assert ds.report.notes == [
        "meta_All_Beauty.json.gz: 1 rows repeat an earlier asin; the first row of each asin is kept",
        "meta_All_Beauty.json.gz: 1 items without interactions left out",
    ]
    assert cat.coverage()["categories"] == 0.75
    assert ds.interactions.timestamps.tolist() == [100, 200, 150, 160]


def test_a_few_malformed_review_lines_are_reported_with_their_line(tmp_path: Path) -> None:
    lines = [review(f"U{i % 20}", f"P{i % 7}", t=i) for i in range(300)]
    lines[41] = lines[41].replace('"overall": 5.0', '"overall": "abc"')
    lines[99] = lines[99][:40]  # a line cut short
    report = ParseReport()
    inter = read_amazon_reviews(gz(tmp_path / "reviews_X_5.json.gz", lines), report=report)
    assert inter.n_interactions == 298
    assert [str(i) for i in report.skipped] == [
        "reviews_X_5.json.gz line 42: overall 'abc' is not a number",
        "reviews_X_5.json.gz line 100: not valid JSON (Unterminated string starting at)",
    ]
    assert inter.origin.where(41) == "reviews_X_5.json.gz line 43"


def test_a_malformed_review_in_a_small_file_is_an_error(tmp_path: Path) -> None:
    lines = [review("U", f"P{i}") for i in range(10)]
    lines[4] = json.dumps({"reviewerID": "U", "asin": "P", "overall": 5.0})
    with pytest.raises(SemidError, match=r"^reviews_X_5\.json\.gz line 5: no unixReviewTime \(1 of 10 rows"):
        read_amazon_reviews(gz(tmp_path / "reviews_X_5.json.gz", lines))


def test_a_truncated_gzip_file_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = gz(tmp_path / "reviews_X_5.json.gz", [review(f"U{i}", f"P{i}") for i in range(2000)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        SemidError,
        match=r"^reviews_X_5\.json\.gz line \d+: truncated gzip file, the compressed data ends inside this line",
    ):
        read_amazon_reviews(path)
    with pytest.raises(SemidError, match=r"truncated gzip file"):
        load_dataset(tmp_path)


def test_a_malformed_meta_literal_is_reported(tmp_path: Path) -> None:
    lines = (
        META_2014[:1]
        + [f"{{'asin': 'Q{i}', 'title': 'T{i}'}}" for i in range(200)]
        + ["{'asin': 'BROKEN', 'title': 'x'"]
    )
    report = ParseReport()
    cat = read_amazon_meta(gz(tmp_path / "meta_X.json.gz", lines), report=report)
    assert len(cat) == 201
    assert report.skipped[0].where == "meta_X.json.gz line 202"
    assert report.skipped[0].message.startswith("not a JSON object or Python literal (SyntaxError)")


def test_reviews_naming_an_item_missing_from_meta_is_an_error(amazon2014: Path) -> None:
    gz(amazon2014 / "reviews_Beauty_5.json.gz", [review("A1", "7806397051"), review("A1", "B0MISSING")])
    with pytest.raises(
        SemidError,
        match=r"^reviews_Beauty_5\.json\.gz line 2: item 'B0MISSING' is not in the catalogue \(meta_Beauty\.json\.gz\)",
    ):
        load_dataset(amazon2014)
