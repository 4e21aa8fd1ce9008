"""`semid data stats`: the numbers, the coverage table and the parse report, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from semid.cli import main

ASINS = ["B004756YJA", "B004ZT0SSG", "B0001ZYL3Q", "7806397051"]


@pytest.fixture
def beauty_like(tmp_path: Path) -> list[Path]:
    """A RecBole item dir (with a title broken by a quoted newline) and a P5 dir, like data/amazon-beauty."""
    items = tmp_path / "recbole_item"
    items.mkdir()
    (items / "Amazon_Beauty.item").write_text(
        "item_id:token\ttitle:token\tcategories:token_seq\tprice:float\tbrand:token\n"
        "B004756YJA\tRose Lip Balm\t'Beauty', 'Makeup', 'Lips'\t4.99\tBurt's Bees\n"
        "B004ZT0SSG\tNight Cream\t'Beauty', 'Skin Care'\t\t\n"
        "B0001ZYL3Q\t\"TheraNeem Cream - Original Organix South 2 oz Cream \nVanilla\"\t'Beauty', 'Skin Care'\t11.28\tOrganix\n"
        '7806397051\t\t"\'Beauty\', ""Women\'s"""\t5.04\tNone\n'
    )
    p5 = tmp_path / "p5"
    p5.mkdir()
    (p5 / "sequential_data.txt").write_text("1 1 2 3\n2 4 1 2 3\n3 2 4 1\n")
    (p5 / "datamaps.json").write_text(
        json.dumps(
            {
                "id2item": {str(i + 1): a for i, a in enumerate(ASINS)},
                "id2user": {"1": "UA", "2": "UB", "3": "UC"},
            }
        )
    )
    return [items, p5]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_stats_prints_counts_coverage_and_the_repair(beauty_like: list[Path], capsys) -> None:
    code, out, err = run(["data", "stats", *map(str, beauty_like)], capsys)
    assert code == 0, err
    assert "Dataset: recbole_item + p5" in out
    lines = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in out.splitlines()
        if line.count("│") == 3
    }
    assert lines["users"] == "3"
    assert lines["items"] == "4"
    assert lines["interactions"] == "10"
    assert lines["sequence length"] == "min 3 / median 3 / mean 3.33 / max 4"
    cov = {row[0]: row[1:] for row in (
        [c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if line.count("│") == 5
    )}  # fmt: skip
    assert cov["title"] == ["string", "3", "75.00%"]
    assert cov["categories"] == ["list<string>", "4", "100.00%"]
    assert cov["price"] == ["double", "3", "75.00%"]
    assert cov["brand"] == ["string", "2", "50.00%"]
    assert "Parse report: 0 lines skipped, 1 repaired" in out
    assert (
        "Amazon_Beauty.item lines 4-5: a quoted value holds a raw newline, read as one row: B0001ZYL3Q" in out
    )


def test_stats_json(beauty_like: list[Path], capsys) -> None:
    code, out, _ = run(["data", "stats", "--json", *map(str, beauty_like)], capsys)
    assert code == 0
    got = json.loads(out)
    assert (got["users"], got["items"], got["interactions"]) == (3, 4, 10)
    assert got["sequence_length"] == {"min": 3, "median": 3.0, "mean": pytest.approx(10 / 3), "max": 4}
    assert got["coverage"]["brand"] == 0.5
    assert got["parse_report"]["repaired"] == 1
    assert got["parse_report"]["repaired_examples"][0].startswith("Amazon_Beauty.item lines 4-5:")


def test_stats_on_one_directory_and_forced_format(tmp_path: Path, capsys) -> None:
    (tmp_path / "items.tsv").write_text("item\tname\nx\tShampoo\n")
    code, out, err = run(
        ["data", "stats", str(tmp_path / "items.tsv"), "--format", "csv", "--item-id", "item", "--json"],
        capsys,
    )
    assert code == 0, err
    assert json.loads(out)["items"] == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["data", "stats", "{tmp}/missing"], "Error: {tmp}/missing: no such file or directory\n"),
        (
            ["data", "stats", "{tmp}", "--format", "xls"],
            "Error: format='xls' is not one of auto, recbole, p5, amazon2014, amazon2018, ml-100k, ml-1m, jsonl, csv, parquet\n",
        ),
    ],
    ids=["missing-path", "unknown-format"],
)
def test_stats_errors_are_one_line(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    code, out, err = run([a.format(tmp=tmp_path) for a in argv], capsys)
    assert code == 1
    assert err == message.format(tmp=tmp_path)


def test_stats_reads_a_latin1_catalogue_with_encoding(tmp_path: Path, capsys) -> None:
    path = tmp_path / "items.csv"
    path.write_bytes("item_id,title\na,Café crème\nb,Thé\n".encode("latin-1"))
    code, out, err = run(["data", "stats", str(path), "--json"], capsys)
    assert code == 1
    assert err == (
        "Error: items.csv line 2: byte 0xe9 is not valid utf-8 text; if the file is Latin-1, pass --encoding "
        "latin-1 on the command line, or encoding='latin-1' in Python\n"
    )
    code, out, err = run(["data", "stats", str(path), "--json", "--encoding", "latin-1"], capsys)
    assert code == 0, err
    assert json.loads(out)["items"] == 2


def test_stats_with_an_unknown_encoding_is_one_error_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "items.csv").write_text("item_id,title\na,x\n")
    code, _, err = run(["data", "stats", str(tmp_path / "items.csv"), "--encoding", "latin-9x"], capsys)
    assert code == 1
    assert err == "Error: unknown text encoding 'latin-9x' (e.g. utf-8, latin-1, cp1252)\n"
