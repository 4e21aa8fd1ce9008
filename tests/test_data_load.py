"""load_dataset: format detection from file names, several paths, and the errors users meet."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from semid.data import detect, load_dataset, make_demo_dataset
from semid.errors import SemidError


def touch(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("Amazon_Beauty.item", "", ("recbole", "items")),
        ("Amazon_Beauty.inter", "", ("recbole", "interactions")),
        ("sequential_data.txt", "", ("p5", "interactions")),
        ("datamaps.json", "{}", ("p5", "maps")),
        ("reviews_Beauty_5.json.gz", '{"reviewerID": "A", "asin": "B"}\n', ("amazon2014", "interactions")),
        ("meta_Beauty.json.gz", "{'asin': 'B', 'title': 'x'}\n", ("amazon2014", "items")),
        ("meta_All_Beauty.json.gz", '{"asin": "B", "title": "x"}\n', ("amazon2018", "items")),
        (
            "All_Beauty_5.json.gz",
            '{"overall": 5.0, "reviewerID": "A", "asin": "B"}\n',
            ("amazon2018", "interactions"),
        ),
        ("u.data", "", ("ml-100k", "interactions")),
        ("u.item", "", ("ml-100k", "items")),
        ("u.genre", "", ("ml-100k", "genres")),
        ("ratings.dat", "", ("ml-1m", "interactions")),
        ("movies.dat", "", ("ml-1m", "items")),
        ("items.jsonl", "", ("jsonl", "table")),
        ("other.json", '{"item_id": "a"}\n', ("jsonl", "table")),
        ("ratings.csv.gz", "", ("csv", "table")),
        ("ratings.tsv", "", ("csv", "table")),
        ("items.parquet", "", ("parquet", "table")),
        ("LICENSE", "", None),
        ("README.md", "", None),
    ],
    ids=lambda v: v if isinstance(v, str) and "{" not in v and v else None,
)
def test_detect_from_file_names(
    tmp_path: Path, name: str, content: str, expected: tuple[str, str] | None
) -> None:
    got = detect(touch(tmp_path / name, content))
    assert (got.format, got.role) == expected if expected else got is None


def test_a_demo_dataset_saved_as_parquet_loads_back(tmp_path: Path) -> None:
    ds = make_demo_dataset(n_items=60, n_users=30, seed=3)
    back = load_dataset(ds.save(tmp_path / "demo"))
    assert back.catalogue.table.equals(ds.catalogue.table)
    assert back.interactions.user_ids.tolist() == ds.interactions.user_ids.tolist()
    assert back.interactions.timestamps.tolist() == ds.interactions.timestamps.tolist()
    assert back.stats().to_dict()["sequence_length"] == ds.stats().to_dict()["sequence_length"]
    assert back.name == "demo"


def test_tables_take_their_role_from_their_columns(tmp_path: Path) -> None:
    touch(tmp_path / "a.jsonl", json.dumps({"id": "x", "title": "t"}) + "\n")
    touch(tmp_path / "b.csv", "uid,id\nu1,x\n")
    ds = load_dataset(tmp_path, item_id="id", user_id="uid")
    assert ds.catalogue.item_ids.tolist() == ["x"]
    assert ds.interactions.user_ids.tolist() == ["u1"]


def test_format_picks_files_of_that_format_only(tmp_path: Path) -> None:
    touch(tmp_path / "a.jsonl", json.dumps({"item_id": "x", "title": "t"}) + "\n")
    touch(tmp_path / "b.csv", "item_id,title\ny,u\n")
    assert load_dataset(tmp_path, format="csv").catalogue.item_ids.tolist() == ["y"]
    # An explicitly named file is read as the given tabular format whatever its name.
    txt = touch(tmp_path / "items.txt", "item_id,title\nz,w\n")
    assert load_dataset(txt, format="csv").catalogue.item_ids.tolist() == ["z"]


@pytest.mark.parametrize(
    ("setup", "kwargs", "message"),
    [
        (lambda d: d / "missing", {}, r"missing: no such file or directory$"),
        (
            lambda d: touch(d / "notes.txt", "x"),
            {},
            r"notes\.txt: unknown format; pass format= one of recbole, p5,",
        ),
        (
            lambda d: touch(d / "x" / "LICENSE", "MIT").parent,
            {},
            r"x: no dataset files found \(looked for \*\.item, \*\.inter,",
        ),
        (
            lambda d: touch(d / "a.jsonl", "{}"),
            {"format": "excel"},
            r"^format='excel' is not one of auto, recbole, p5,",
        ),
        (
            lambda d: touch(d / "sequential_data.txt", "1 2 3\n"),
            {"format": "recbole"},
            r"sequential_data\.txt: not a recbole file",
        ),
        (
            lambda d: touch(d / "sequential_data.txt", "1 2 3\n"),
            {"item_id": "asin"},
            r"^item_id= only apply to jsonl/csv/parquet/recbole files",
        ),
        (
            lambda d: (
                touch(d / "a.jsonl", '{"item_id": "a", "title": "t"}\n')
                and touch(d / "b.jsonl", '{"item_id": "b", "title": "t"}\n').parent
            ),
            {},
            r"^several item files: .*a\.jsonl, .*b\.jsonl; pass one",
        ),
        (
            lambda d: [touch(d / f"part{i:03d}.csv", "user_id,item_id\nu,i\n") for i in range(300)][0].parent,
            {},
            r"^several interaction files: .*part000\.csv, .*part004\.csv, \.\.\. \(300 in all\); pass one "
            r"\(or a directory holding one; sharded interactions stream with semid train --stream\)$",
        ),
        (
            lambda d: touch(d / "a.jsonl", "{}"),
            {"max_bad_fraction": 2},
            r"^max_bad_fraction=2 should be between 0 and 1$",
        ),
    ],
    ids=[
        "missing-path",
        "unknown-file",
        "empty-dir",
        "unknown-format",
        "wrong-format",
        "mapping-not-applicable",
        "two-catalogues",
        "300-part-files",
        "bad-fraction",
    ],
)
def test_load_errors(tmp_path: Path, setup, kwargs: dict, message: str) -> None:
    path = setup(tmp_path)
    with pytest.raises(SemidError, match=message):
        load_dataset(path, **kwargs)


def test_interactions_naming_unknown_items_is_an_error_with_file_and_line(tmp_path: Path) -> None:
    touch(
        tmp_path / "items.jsonl",
        "".join(json.dumps({"item_id": i, "title": i}) for i in ["a", "b"]).replace("}{", "}\n{") + "\n",
    )
    touch(tmp_path / "ratings.csv", "user_id,item_id\nu1,a\nu1,b\nu2,c\n")
    with pytest.raises(
        SemidError,
        match=r"^ratings\.csv line 4: item 'c' is not in the catalogue \(items\.jsonl\) \(1 of 3 interactions name 1 unknown items\)$",
    ):
        load_dataset(tmp_path)


def test_a_table_whose_columns_look_like_ids_names_the_options_that_map_them(tmp_path: Path) -> None:
    touch(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.0,100\n2,10,5.0,102\n")
    with pytest.raises(SemidError) as e:
        load_dataset(tmp_path / "ratings.csv")
    assert str(e.value) == (
        "ratings.csv: no user_id or item_id column, but it looks like interactions "
        "(columns: userId, movieId, rating, timestamp); pass --user-id userId --item-id movieId"
    )
    ds = load_dataset(tmp_path / "ratings.csv", user_id="userId", item_id="movieId")  # as the message says
    assert ds.interactions is not None and len(ds.interactions) == 2
