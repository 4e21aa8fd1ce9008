"""MovieLens ml-100k and ml-1m, in their distributed Latin-1 formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from semid.data import ParseReport, load_dataset
from semid.data.movielens import read_ml100k_items, read_ml100k_ratings
from semid.errors import SemidError

FLAGS_TOY_STORY = "0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0"  # Animation, Children's, Comedy
FLAGS_UNKNOWN = "1" + "|0" * 18


def write_latin1(path: Path, lines: list[str]) -> Path:
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return path


@pytest.fixture
def ml100k(tmp_path: Path) -> Path:
    root = tmp_path / "ml-100k"
    root.mkdir()
    write_latin1(root / "u.data", ["196\t1\t3\t881250949", "186\t2\t3\t891717742", "196\t2\t1\t878887116"])
    write_latin1(
        root / "u.item",
        [
            f"1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|{FLAGS_TOY_STORY}",
            f"2|Misérables, Les (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Mis%E9rables|{FLAGS_UNKNOWN}",
        ],
    )
    write_latin1(root / "u.genre", [f"{g}|{i}" for i, g in enumerate(
        ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
         "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
    )] + [""])  # fmt: skip
    write_latin1(root / "u.user", ["1|24|M|technician|85711"])  # not part of the dataset: ignored
    return root


def test_ml100k(ml100k: Path) -> None:
    ds = load_dataset(ml100k)
    cat, inter = ds.catalogue, ds.interactions
    assert cat.item_ids.tolist() == ["1", "2"]
    assert cat.column("title").to_pylist() == ["Toy Story (1995)", "Misérables, Les (1995)"]
    assert cat.column("genres").to_pylist() == [["Animation", "Children's", "Comedy"], ["unknown"]]
    assert cat.column("release_date").to_pylist() == ["01-Jan-1995", "01-Jan-1995"]
    assert inter.users.tolist() == ["196", "186"]
    offsets, items = ds.sequences()
    assert offsets.tolist() == [0, 2, 3]
    assert items.tolist() == [1, 0, 1]  # user 196: item 2 (t=878887116) before item 1 (t=881250949)
    assert inter.timestamps.dtype.kind == "i"
    assert ds.report.notes == ["ignored 1 other file(s): u.user"]


def test_ml100k_bad_genre_flag_and_bad_rating(tmp_path: Path) -> None:
    items = write_latin1(
        tmp_path / "u.item",
        [f"1|A (1990)|||x|{FLAGS_TOY_STORY}", f"2|B (1990)|||x|{FLAGS_TOY_STORY.replace('1', '2', 1)}"],
    )
    with pytest.raises(
        SemidError, match=r"^u\.item line 2: genre flag 'Animation' '2' is not 0 or 1 \(1 of 2 rows"
    ):
        read_ml100k_items(items)
    ratings = [f"{u}\t{i}\t4\t88125{u}{i}" for u in range(10, 30) for i in range(10, 20)]
    ratings[16] = "10\t17\tabc\t881250949"
    report = ParseReport()
    inter = read_ml100k_ratings(write_latin1(tmp_path / "u.data", ratings), report=report)
    assert inter.n_interactions == 199
    assert str(report.skipped[0]) == "u.data line 17: rating 'abc' is not a number"


def test_ml1m(tmp_path: Path) -> None:
    root = tmp_path / "ml-1m"
    root.mkdir()
    write_latin1(
        root / "ratings.dat", ["1::1193::5::978300760", "1::661::3::978302109", "2::1193::4::978298413"]
    )
    write_latin1(
        root / "movies.dat",
        [
            "661::James and the Giant Peach (1996)::Animation|Children's|Musical",
            "1193::One Flew Over the Cuckoo's Nest (1975)::Drama",
            "3::Misérables, Les (1995)::Drama",
        ],
    )
    write_latin1(root / "users.dat", ["1::F::1::10::48067"])
    ds = load_dataset(root)
    st = ds.stats()
    assert (st.n_users, st.n_items, st.n_interactions) == (2, 3, 3)
    assert ds.catalogue.column("genres").to_pylist()[0] == ["Animation", "Children's", "Musical"]
    assert ds.catalogue.column("title").to_pylist()[2] == "Misérables, Les (1995)"
    assert ds.interactions.ratings.tolist() == [5.0, 3.0, 4.0]
    assert ds.catalogue.item_ids[ds.sequences().row(0)].tolist() == ["1193", "661"]
