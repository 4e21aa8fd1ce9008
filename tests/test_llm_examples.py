"""Training examples: deterministic under a seed, held-out templates never trained on, IDs must cover items."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from semid.cli import main
from semid.data import Catalogue, make_demo_dataset
from semid.errors import SemidError
from semid.ids.table import IdTable, write_ids
from semid.llm.examples import (
    HELD_OUT_TEMPLATES,
    TRAIN_TEMPLATES,
    ExampleConfig,
    build_examples,
    id_text,
    prepare_dataset,
    price_band,
    read_jsonl,
)


@pytest.fixture(scope="module")
def demo():
    return make_demo_dataset(n_items=30, n_users=12, seed=0)


def codes_for(n: int) -> np.ndarray:
    return np.stack([np.arange(n) // 9, (np.arange(n) // 3) % 3, np.arange(n) % 3], axis=1)


def test_same_seed_same_examples_other_seed_other_examples(demo):
    cat, codes = demo.catalogue, codes_for(30)
    a = build_examples(cat, cat.item_ids, codes, ExampleConfig(seed=1))
    b = build_examples(cat, cat.item_ids, codes, ExampleConfig(seed=1))
    c = build_examples(cat, cat.item_ids, codes, ExampleConfig(seed=2))
    assert json.dumps(a.train) == json.dumps(b.train) and json.dumps(a.valid) == json.dumps(b.valid)
    assert json.dumps(a.train) != json.dumps(c.train)


def test_examples_are_chats_answering_with_rec_and_the_items_id(demo):
    cat, codes = demo.catalogue, codes_for(30)
    ex = build_examples(cat, cat.item_ids, codes, ExampleConfig(n_per_item=3, seed=0))
    recs = [e for e in ex.train if e["task"] == "predict_semantic_id"]
    assert len(recs) == 3 * 30  # every demo item has the fields of at least 3 templates
    for e in recs:
        roles = [m["role"] for m in e["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert e["messages"][2]["content"] == "[REC]" + id_text(codes[e["item"]])
        assert e["item_id"] == cat.item_ids[e["item"]]
    # per item, the templates are distinct draws
    per_item = {}
    for e in recs:
        per_item.setdefault(e["item"], []).append(e["template"])
    assert all(len(set(t)) == 3 for t in per_item.values())


def test_held_out_templates_only_in_validation(demo):
    cat = demo.catalogue
    ex = build_examples(cat, cat.item_ids, codes_for(30), ExampleConfig(seed=0))
    train_templates = {e["template"] for e in ex.train if e["task"] == "predict_semantic_id"}
    valid_templates = {e["template"] for e in ex.valid if e["task"] == "predict_semantic_id"}
    assert train_templates <= set(TRAIN_TEMPLATES)
    assert valid_templates == set(HELD_OUT_TEMPLATES)
    assert not train_templates & valid_templates


def test_attribute_questions_quote_the_id_and_answer_the_value(demo):
    cat = demo.catalogue
    ex = build_examples(cat, cat.item_ids, codes_for(30), ExampleConfig(seed=0))
    brand = next(e for e in ex.train if e["task"] == "predict_attribute" and e["template"] == "brand")
    item = brand["item"]
    assert brand["messages"][1]["content"] == f"What is the brand of {id_text(codes_for(30)[item])}?"
    assert brand["messages"][2]["content"] == cat.column("brand").to_pylist()[item]


def test_next_item_examples_leave_the_last_item_out(demo):
    cat = demo.catalogue
    seqs = demo.sequences()
    ex = build_examples(
        cat, cat.item_ids, codes_for(30), ExampleConfig(seed=0, max_history=3), sequences=seqs
    )
    user0 = seqs.items[seqs.offsets[0] : seqs.offsets[1]]
    valid0 = [e for e in ex.valid if e["task"] == "next_item"][0]
    assert valid0["item"] == user0[-1]
    shown = [id_text(codes_for(30)[i]) for i in user0[-4:-1]]  # the 3 items before the last
    assert valid0["messages"][1]["content"] == "I bought " + ", ".join(shown) + ". What next?"
    assert sum(e["task"] == "next_item" for e in ex.train) == sum(np.diff(seqs.offsets) >= 3)


@pytest.mark.parametrize(
    ("price", "band"),
    [
        (4.99, "under $10"),
        (10.0, "between $10 and $25"),
        (49.99, "between $25 and $50"),
        (120, "over $50"),
        (None, None),
    ],
    ids=["cheap", "edge-10", "mid", "luxury", "missing"],
)
def test_price_bands(price, band):
    assert price_band(price) == band


def test_ids_that_do_not_cover_the_catalogue_are_an_error(demo, tmp_path):
    cat = demo.catalogue
    codes = codes_for(30)[:28]
    ids = IdTable(cat.item_ids[:28], ["x"] * 28, codes, codes, {})
    with pytest.raises(
        SemidError, match=r"^ids.parquet: 2 of 30 catalogue items have no Semantic ID \(first: 'D00028'\)$"
    ):
        prepare_dataset(cat, ids, tmp_path / "d", ids_path="ids.parquet")
    assert not (tmp_path / "d").exists()


def test_prepare_writes_jsonl_items_and_codebook_sizes(tmp_path):
    cat = Catalogue.from_pydict(
        {
            "item_id": ["b", "a"],
            "title": ["Blue Mascara 8 ml", "Red Lipstick 4 g"],
            "brand": ["Nocturne", "Lumière"],
        }
    )
    codes = np.array([[0, 5], [1, 0]])  # rows follow the ID table: a -> 1-0, b -> 0-5
    ids = IdTable(
        np.array(["a", "b"], dtype=object),
        ["1-0", "0-5"],
        codes[::-1],
        codes[::-1],
        {"codebook_sizes": [4, 4]},
    )
    prepare_dataset(cat, ids, tmp_path, ExampleConfig(n_per_item=2, seed=0))
    meta = json.loads((tmp_path / "llm_data.json").read_text())
    assert meta["codebook_sizes"] == [4, 6]  # dedup went past the quantizer's 4 codes at level 1
    train = read_jsonl(tmp_path / "train.jsonl")
    assert {e["item_id"] for e in train} == {"a", "b"}
    b = next(e for e in train if e["item_id"] == "b" and e["task"] == "predict_semantic_id")
    assert b["messages"][2]["content"] == "[REC]<a_0><b_5>"


def test_a_failed_prepare_leaves_the_earlier_directory_whole_and_nothing_half_written(tmp_path, monkeypatch):
    """The directory is written beside its place and renamed in at the end: a kill or an error midway never
    leaves new examples beside the old metadata (which `semid llm train` would accept)."""
    cat = Catalogue.from_pydict({"item_id": ["a", "b"], "title": ["Red Lipstick 4 g", "Blue Mascara 8 ml"]})
    codes = np.array([[1, 0], [0, 5]])
    ids = IdTable(
        np.array(["a", "b"], dtype=object), ["1-0", "0-5"], codes, codes, {"codebook_sizes": [4, 6]}
    )
    out = tmp_path / "prepared"
    prepare_dataset(cat, ids, out, ExampleConfig(n_per_item=1, seed=0))
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", fail)  # after train.jsonl and valid.jsonl were written
    with pytest.raises(OSError, match="disk full"):
        prepare_dataset(cat, ids, out, ExampleConfig(n_per_item=3, seed=7))
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]  # no temporary left beside it


def test_bad_jsonl_names_the_line(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"messages": []}\nnot json\n')
    with pytest.raises(SemidError, match=r"train.jsonl line 2: not valid JSON"):
        read_jsonl(tmp_path / "train.jsonl")


def test_item_texts_follow_the_default_text_of_the_catalogues_own_fields(tmp_path):
    cat = Catalogue.from_pydict(
        {"item_id": ["a", "b"], "name": ["Hair Dryer", "Lip Balm"], "manufacturer": ["Acme", None]}
    )
    codes = np.array([[0, 0], [1, 0]])
    ids = IdTable(np.array(["a", "b"], dtype=object), ["0-0", "1-0"], codes, codes, {})
    prepare_dataset(cat, ids, tmp_path, ExampleConfig(n_per_item=1, seed=0))
    items = pq.read_table(tmp_path / "items.parquet")
    assert items.column("text").to_pylist() == ["Name: Hair Dryer; Manufacturer: Acme", "Name: Lip Balm"]


def test_items_keep_the_brand_and_price_a_request_filter_reads(tmp_path):
    from semid.llm.constraints import RequestFilter

    cat = Catalogue.from_pydict(
        {
            "item_id": ["a", "b"],
            "title": ["Hair Dryer", "Lip Balm"],
            "brand": ["Acme", None],
            "price": [30.0, 4.5],
        }
    )
    codes = np.array([[0, 0], [1, 0]])
    ids = IdTable(np.array(["a", "b"], dtype=object), ["0-0", "1-0"], codes, codes, {})
    prepare_dataset(cat, ids, tmp_path, ExampleConfig(n_per_item=1, seed=0))
    items = pq.read_table(tmp_path / "items.parquet")
    assert items.column("brand").to_pylist() == ["Acme", None]
    assert items.column("price").to_pylist() == [30.0, 4.5]
    assert "categories" not in items.column_names  # only the fields the catalogue has
    flt = RequestFilter().fit(items)
    assert flt.mask("acme under $50").tolist() == [True, False]


def test_prepare_cli_reads_a_latin1_catalogue_with_encoding(tmp_path, capsys):
    path = tmp_path / "items.csv"
    path.write_bytes("item_id,title,brand\na,Crème brûlée candle,Lumière\nb,Thé vert,\n".encode("latin-1"))
    codes = np.array([[0, 0], [1, 0]])
    write_ids(
        tmp_path / "ids.parquet",
        IdTable(np.array(["a", "b"], dtype=object), ["0-0", "1-0"], codes, codes, {}),
    )
    argv = ["llm", "prepare", str(path), "--ids", str(tmp_path / "ids.parquet"), "-o", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 1
    assert capsys.readouterr().err.startswith("Error: items.csv line 2: byte 0xe8 is not valid utf-8 text; ")
    with pytest.raises(SystemExit) as e:
        main([*argv, "--encoding", "latin-1"])
    assert e.value.code in (0, None), capsys.readouterr().err
    items = pq.read_table(tmp_path / "out" / "items.parquet")
    assert items.column("text").to_pylist() == [
        "Title: Crème brûlée candle; Brand: Lumière",
        "Title: Thé vert",
    ]
