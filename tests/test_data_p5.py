"""P5-style sequences (sequential_data.txt + datamaps.json), alone and joined with a RecBole item file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from semid.data import ParseReport, load_dataset
from semid.data.p5 import read_datamaps, read_p5
from semid.errors import SemidError

ASINS = ["B004756YJA", "B004ZT0SSG", "B0020YLEYK", "7806397051", "B002WLWX82"]
USERS = ["A1YJEY40YUW4SE", "A60XNB876KYML", "A3G6XNM240RMWA"]


def write_p5(root: Path, lines: list[str], *, with_user_map: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "sequential_data.txt").write_text("\n".join(lines) + "\n")
    maps = {
        "item2id": {a: str(i + 1) for i, a in enumerate(ASINS)},
        "id2item": {str(i + 1): a for i, a in enumerate(ASINS)},
        "attribute2id": {"COKA": 1},
    }
    if with_user_map:
        maps["user2id"] = {u: str(i + 1) for i, u in enumerate(USERS)}
        maps["id2user"] = {str(i + 1): u for i, u in enumerate(USERS)}
    (root / "datamaps.json").write_text(json.dumps(maps))
    return root


def test_maps_ids_to_asins_and_reviewer_ids(tmp_path: Path) -> None:
    root = write_p5(tmp_path, ["1 1 2 3", "2 4 5 4", "3 2 1"])
    inter = read_p5(root / "sequential_data.txt", root / "datamaps.json")
    assert inter.users.tolist() == USERS
    offsets, items = inter.sequences()
    assert offsets.tolist() == [0, 3, 6, 8]
    assert inter.items[items].tolist() == [
        "B004756YJA", "B004ZT0SSG", "B0020YLEYK",
        "7806397051", "B002WLWX82", "7806397051",
        "B004ZT0SSG", "B004756YJA",
    ]  # fmt: skip
    assert inter.timestamps is None
    assert inter.origin.where(3) == "sequential_data.txt line 2"


def test_without_datamaps_the_ids_stay_integers(tmp_path: Path) -> None:
    root = write_p5(tmp_path, ["1 1 2 3", "2 4 5"])
    inter = read_p5(root / "sequential_data.txt")
    assert inter.user_ids.tolist() == ["1", "1", "1", "2", "2"]
    assert inter.item_ids.tolist() == ["1", "2", "3", "4", "5"]


def test_item_map_given_only_as_item2id_is_inverted(tmp_path: Path) -> None:
    (tmp_path / "datamaps.json").write_text(json.dumps({"item2id": {"X": "1", "Y": "2"}}))
    assert read_datamaps(tmp_path / "datamaps.json") == {"id2item": {"1": "X", "2": "Y"}}


def test_malformed_lines_are_counted_not_dropped_silently(tmp_path: Path) -> None:
    lines = [f"{1 + i % 3} 1 2 3" for i in range(300)]
    lines[9] = "2 4 x5"
    lines[19] = "3"
    root = write_p5(tmp_path, lines)
    report = ParseReport()
    inter = read_p5(
        root / "sequential_data.txt", root / "datamaps.json", report=report, max_bad_fraction=0.01
    )
    assert inter.n_interactions == 298 * 3
    assert [str(i) for i in report.skipped] == [
        "sequential_data.txt line 10: id 'x5' is not a positive integer",
        "sequential_data.txt line 20: user '3' has no items",
    ]


def test_too_many_malformed_lines_is_an_error(tmp_path: Path) -> None:
    root = write_p5(tmp_path, ["1 1 2", "2 4 five", "3 2 1"])
    with pytest.raises(
        SemidError, match=r"^sequential_data\.txt line 2: id 'five' is not a positive integer \(1 of 3 rows"
    ):
        read_p5(root / "sequential_data.txt")


def test_an_id_missing_from_the_datamaps_is_an_error(tmp_path: Path) -> None:
    root = write_p5(tmp_path, ["1 1 2", "2 4 99"])
    with pytest.raises(
        SemidError,
        match=r"^sequential_data\.txt line 2: item id '99' is not in datamaps\.json id2item \(1 ids unmapped\)$",
    ):
        read_p5(root / "sequential_data.txt", root / "datamaps.json")


def test_joins_with_a_recbole_item_file_keyed_by_asin(tmp_path: Path) -> None:
    items = tmp_path / "recbole_item"
    items.mkdir()
    rows = [f"{a}\tTitle of {a}\t'Beauty', 'Makeup'\t{i}.5\tBrand{i}" for i, a in enumerate(ASINS)]
    header = "item_id:token\ttitle:token\tcategories:token_seq\tprice:float\tbrand:token"
    (items / "Amazon_Beauty.item").write_text("\n".join([header, *rows]) + "\n")
    (items / "LICENSE.RecBole_SAE").write_text("MIT\n")
    p5 = write_p5(tmp_path / "p5", ["1 1 2 3", "2 4 5 4 1", "3 2 1 5"])
    ds = load_dataset([items, p5])
    st = ds.stats()
    assert (st.n_users, st.n_items, st.n_interactions) == (3, 5, 10)
    assert (st.seq_len_min, st.seq_len_max) == (3, 4)
    seqs = ds.sequences()  # item indices are catalogue rows
    assert ds.catalogue.item_ids[seqs.row(0)].tolist() == ASINS[:3]
    assert ds.report.notes == ["ignored 1 other file(s): LICENSE.RecBole_SAE"]
