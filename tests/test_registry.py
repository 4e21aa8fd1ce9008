"""The Semantic ID registry: unique, persistent, versioned IDs in one SQLite file."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import queue
import sqlite3
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from semid.errors import SemidError
from semid.ids.dedup import deduplicate
from semid.ids.registry import AssignResult, Registry

K_LAST = 4  # last-level codebook size in the remap examples


def nearest_last_level(base: np.ndarray, k: int = K_LAST):
    """A ranking callable for ``base``: last-level codes by distance to the row's own code, ties to lower."""

    def rank(rows: np.ndarray) -> np.ndarray:
        own = base[rows, -1][:, None]
        return np.argsort(np.abs(np.arange(k)[None, :] - own), axis=1, kind="stable")

    return rank


def fixed_ranking(table: dict[int, list[int]], calls: list[list[int]]):
    """A ranking callable that returns hand-written rows and records which batch rows it was asked about."""

    def rank(rows: np.ndarray) -> np.ndarray:
        calls.append(rows.tolist())
        return np.array([table[r] for r in rows.tolist()])

    return rank


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "ids.db"


@pytest.fixture
def reg(db: Path):
    with Registry(db, fingerprint="3f2a") as r:
        yield r


# ---------------------------------------------------------------------------------------------- suffix


def test_suffix_numbers_each_group_in_item_id_order(reg: Registry) -> None:
    res = reg.assign(["b", "a", "c", "d"], np.array([[12, 4, 9], [12, 4, 9], [1, 2, 3], [12, 4, 9]]))
    # a, b, d share 12-4-9 and are numbered a=0, b=1, d=2 whatever their rows; c is alone in 1-2-3.
    assert res.codes.tolist() == [[12, 4, 9, 1], [12, 4, 9, 0], [1, 2, 3, 0], [12, 4, 9, 2]]
    assert (res.n_new, res.n_existing, res.n_moved, res.n_changed, res.version) == (4, 0, 0, 0, 1)
    assert len(reg) == 4


@pytest.mark.parametrize("dedup", ["suffix", "none", "remap"])
def test_ids_do_not_depend_on_row_order(tmp_path: Path, dedup: str) -> None:
    rng = np.random.default_rng(0)
    if dedup == "remap":  # 2 prefixes x 4 items: every item finds a free code
        base = np.stack([np.repeat([0, 1], 4), rng.integers(0, K_LAST, size=8)], axis=1)
    else:  # 4 possible codes for 60 items: many collisions
        base = rng.integers(0, 2, size=(60, 2))
    items = [f"item{i}" for i in range(len(base))]
    perm = rng.permutation(len(items))
    mappings = []
    for name, order in (("a.db", np.arange(len(items))), ("b.db", perm)):
        rank = nearest_last_level(base[order]) if dedup == "remap" else None
        with Registry(tmp_path / name) as r:
            codes = r.assign([items[i] for i in order], base[order], dedup=dedup, rank_last_level=rank).codes
        mappings.append({items[i]: tuple(c) for i, c in zip(order.tolist(), codes.tolist(), strict=True)})
    assert mappings[0] == mappings[1]


def test_reassigning_known_items_returns_stored_ids_even_if_base_codes_changed(reg: Registry) -> None:
    first = reg.assign(["a", "b"], np.array([[1, 1], [1, 1]]))
    again = reg.assign(["b", "a"], np.array([[1, 1], [7, 7]]))  # a's base codes changed since
    assert again.codes.tolist() == first.codes[::-1].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert (again.n_new, again.n_existing, again.n_changed) == (0, 2, 1)
    assert reg.get("a").tolist() == [1, 1, 0]
    assert reg.to_arrow().column("base_codes").to_pylist() == [[1, 1], [1, 1]]  # first base codes kept


def test_a_second_batch_continues_after_the_largest_suffix(reg: Registry) -> None:
    reg.assign(["a", "b", "x"], np.array([[12, 4, 9], [12, 4, 9], [5, 5, 5]]))
    res = reg.assign(["0-first-in-string-order", "b", "z"], np.array([[12, 4, 9], [12, 4, 9], [8, 8, 8]]))
    # The new item sorts before "a" but still comes after the stored suffixes 0 and 1.
    assert res.codes.tolist() == [[12, 4, 9, 2], [12, 4, 9, 1], [8, 8, 8, 0]]
    assert (res.n_new, res.n_existing) == (2, 1)


def test_int_and_str_item_ids_are_the_same_item_and_come_back_as_str(reg: Registry) -> None:
    reg.assign([7, np.int64(8)], np.array([[0], [0]]))
    assert reg.assign(["7"], np.array([[0]])).n_existing == 1
    assert reg.find([0, 1]) == "8"
    assert 7 in reg and "8" in reg and 9 not in reg
    assert reg.to_arrow().column("item_id").to_pylist() == ["7", "8"]


# ---------------------------------------------------------------------------------------------- none


def test_none_keeps_base_codes_and_allows_duplicates(reg: Registry) -> None:
    res = reg.assign(["b", "a", "c"], np.array([[3, 1], [3, 1], [2, 2]]), dedup="none")
    assert res.codes.tolist() == [[3, 1], [3, 1], [2, 2]]
    reg.assign(["0"], np.array([[3, 1]]), dedup="none")
    # Several items share 3-1: a code lookup gives the first one assigned (a, in item_id order).
    assert reg.lookup_codes(np.array([[3, 1], [2, 2], [9, 9]])) == ["a", "c", None]
    assert reg.get("0").tolist() == [3, 1]


# ---------------------------------------------------------------------------------------------- remap


def test_remap_moves_a_collision_to_the_nearest_unused_code_and_keeps_length(reg: Registry) -> None:
    calls: list[list[int]] = []
    rank = fixed_ranking({1: [1, 2, 3, 0]}, calls)
    res = reg.assign(["a", "b", "c"], np.array([[0, 1], [0, 1], [0, 2]]), dedup="remap", rank_last_level=rank)
    # a keeps 0-1 (first in item_id order); c keeps 0-2 (nobody else wants it); b ranks 1, 2, 3: 3 is free.
    assert res.codes.tolist() == [[0, 1], [0, 3], [0, 2]]
    assert (res.n_new, res.n_moved) == (3, 1)
    assert calls == [[1]]  # only the colliding row is ranked
    assert reg.to_arrow().column("base_codes").to_pylist() == [[0, 1], [0, 1], [0, 2]]


def test_remap_avoids_codes_already_in_the_registry(reg: Registry) -> None:
    reg.assign(["a", "b"], np.array([[0, 1], [0, 3]]), dedup="remap", rank_last_level=fixed_ranking({}, []))
    calls: list[list[int]] = []
    rank = fixed_ranking({0: [3, 1, 0, 2], 2: [1, 0, 2, 3]}, calls)
    res = reg.assign(["c", "a", "d"], np.array([[0, 3], [0, 1], [0, 1]]), dedup="remap", rank_last_level=rank)
    # c wants 3 (b has it) -> 0; d wants 1 (a has it), 0 was just taken by c -> 2.
    assert res.codes.tolist() == [[0, 0], [0, 1], [0, 2]]
    assert (res.n_new, res.n_existing, res.n_moved) == (2, 1, 2)
    assert calls == [[0, 2]]


def test_remap_moves_the_second_item_of_every_base_code_before_any_third(reg: Registry) -> None:
    calls: list[list[int]] = []
    rank = fixed_ranking({1: [0, 2, 1, 3, 4], 4: [1, 2, 3, 0, 4], 2: [0, 3, 2, 4, 1]}, calls)
    base = np.array([[0, 0], [0, 0], [0, 0], [0, 1], [0, 1]])  # a, b, c share 0-0; d, e share 0-1
    res = reg.assign(list("abcde"), base, dedup="remap", rank_last_level=rank)
    # a and d keep their codes. Round 1: b -> 2, e -> 3 (2 is b's now); round 2: c -> 4 (0, 3, 2 taken).
    # (In plain item_id order c would have taken 3 before e, and e would have ended on 4.)
    assert calls == [[1, 4, 2]]
    assert res.codes.tolist() == [[0, 0], [0, 2], [0, 4], [0, 1], [0, 3]]
    assert res.n_moved == 3


@pytest.mark.parametrize("dedup", ["suffix", "remap", "none"])
def test_a_fresh_registry_agrees_with_in_memory_deduplicate(reg: Registry, dedup: str) -> None:
    rng = np.random.default_rng(3)
    base = np.stack([rng.integers(0, 3, 40), rng.integers(0, 6, 40)], axis=1)  # collisions under 3 prefixes
    items = [f"item{i}" for i in rng.permutation(40)]
    rank = nearest_last_level(base, k=16) if dedup == "remap" else None
    expected = deduplicate(base, dedup, item_ids=items, rank_last_level=rank).codes
    got = reg.assign(items, base, dedup=dedup, rank_last_level=rank).codes
    assert got.tolist() == expected.tolist()


def test_remap_raises_when_a_prefix_is_full_and_writes_nothing(reg: Registry) -> None:
    base = np.array([[5, 0], [5, 0], [5, 0]])
    with pytest.raises(SemidError) as e:
        reg.assign(["a", "b", "c"], base, dedup="remap", rank_last_level=nearest_last_level(base, k=2))
    assert str(e.value) == (
        "prefix 5 is full: all 2 last-level codes are taken; "
        "use dedup='suffix' (CLI: --dedup suffix) or a larger last-level codebook"
    )
    assert len(reg) == 0 and reg.dedup is None  # the transaction rolled back


def test_remap_checks_the_ranking_shape(reg: Registry) -> None:
    bad = fixed_ranking({1: [0, 1]}, [])
    with pytest.raises(SemidError, match=r"^rank_last_level returned shape \(2,\), expected \(1, K_last\)$"):
        reg.assign(["a", "b"], np.array([[0, 0], [0, 0]]), dedup="remap", rank_last_level=lambda r: bad(r)[0])


# ---------------------------------------------------------------------------------------------- mistakes


@pytest.mark.parametrize(
    ("item_ids", "message"),
    [
        (["a", "b", "a"], "item_ids: 'a' appears twice, at rows 0 and 2"),
        ([7, "x", "7"], "item_ids: '7' appears twice, at rows 0 and 2"),
    ],
    ids=["str", "int-and-str"],
)
def test_duplicate_item_ids_in_one_call_are_an_error(reg: Registry, item_ids: list, message: str) -> None:
    with pytest.raises(SemidError) as e:
        reg.assign(item_ids, np.zeros((3, 2), dtype=int))
    assert str(e.value) == message
    assert len(reg) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"base_codes": np.array([1, 2])},
            "base_codes should be a 2-D (n_items, n_levels) int array, got shape (2,)",
        ),
        (
            {"base_codes": np.array([[1, 2], [3, -1]])},
            "base_codes row 1: code -1 at level 1 is outside 0..2147483647",
        ),
        (
            {"base_codes": np.array([[1.0, 2.0], [3.0, 4.0]])},
            "base_codes should be integers, got dtype float64",
        ),
        ({"base_codes": np.zeros((3, 2), dtype=int)}, "2 item_ids but 3 rows of base_codes"),
        ({"item_ids": ["a", 1.5]}, "item_ids[1]: 1.5 is a float; item ids are str or int"),
        ({"item_ids": ["a", ""]}, "item_ids[1] is an empty string"),
        ({"dedup": "prefix"}, "dedup='prefix' is not one of 'suffix', 'remap', 'none'"),
        (
            {"dedup": "remap"},
            "dedup='remap' needs rank_last_level=(rows -> (len(rows), K_last) nearest codes)",
        ),
        (
            {"rank_last_level": lambda rows: rows},
            "rank_last_level is only used with dedup='remap', not dedup='suffix'",
        ),
    ],
    ids=[
        "1d",
        "negative",
        "float-codes",
        "row-count",
        "float-id",
        "empty-id",
        "unknown-dedup",
        "remap-no-rank",
        "rank-no-remap",
    ],
)
def test_assign_input_mistakes(reg: Registry, kwargs: dict, message: str) -> None:
    args = {"item_ids": ["a", "b"], "base_codes": np.array([[1, 2], [3, 4]]), **kwargs}
    with pytest.raises(SemidError) as e:
        reg.assign(**args)
    assert str(e.value) == message


def test_a_version_keeps_one_dedup_strategy_and_level_count(reg: Registry) -> None:
    reg.assign(["a"], np.array([[1, 2]]))
    with pytest.raises(SemidError) as e:
        reg.assign(["b"], np.array([[1, 2]]), dedup="none")
    assert str(e.value) == (
        "ID version 1 of ids.db uses dedup='suffix', this call asks for dedup='none'; "
        "a version keeps one strategy (new_version=True starts another)"
    )
    with pytest.raises(SemidError) as e:
        reg.assign(["b"], np.array([[1, 2, 3]]))
    assert str(e.value) == "base_codes have 3 levels, but ID version 1 of ids.db holds 2-level base codes"


# ---------------------------------------------------------------------------------------------- versions


def test_a_different_quantizer_needs_a_new_version_and_old_versions_stay_readable(db: Path) -> None:
    with Registry(db, fingerprint="3f2a") as r:
        r.assign(["a", "b"], np.array([[1, 1], [1, 1]]))
    with pytest.raises(SemidError) as e:
        Registry(db, fingerprint="9b1c")
    assert str(e.value) == (
        "ids.db is bound to quantizer 3f2a, this model is 9b1c; "
        "pass new_version=True (CLI: --new-version) to start ID version 2"
    )
    with Registry(db, fingerprint="9b1c", new_version=True) as r:
        assert (r.version, r.fingerprint, len(r), "a" in r) == (2, "9b1c", 0, False)
        res = r.assign(["a"], np.array([[2, 0]]), dedup="none")  # a new version may change strategy
        assert res.codes.tolist() == [[2, 0]]
        assert r.get("a", version=1).tolist() == [1, 1, 0]
        assert r.find("1-1-1", version=1) == "b"
    with Registry(db, fingerprint="9b1c") as r:  # the new model now opens the file without a flag
        assert r.version == 2 and r.get("a").tolist() == [2, 0]
        assert [(v.version, v.fingerprint, v.dedup, v.n_items) for v in r.versions()] == [
            (1, "3f2a", "suffix", 2),
            (2, "9b1c", "none", 1),
        ]
        with pytest.raises(SemidError, match=r"^ids.db has no ID version 3 \(versions: 1, 2\)$"):
            r.get("a", version=3)
    with pytest.raises(SemidError, match="is bound to quantizer 9b1c, this model is 3f2a; .* ID version 3$"):
        Registry(db, fingerprint="3f2a")


def test_a_failed_new_version_job_is_taken_back_and_the_previous_version_stays_current(db: Path) -> None:
    with Registry(db, fingerprint="3f2a") as r:
        r.assign(["a", "b"], np.array([[1, 1], [1, 1]]))
    full = np.array([[5, 0], [5, 0], [5, 0]])  # three items for two last-level codes: remap fails
    with (
        pytest.raises(SemidError, match="prefix 5 is full"),
        Registry(db, fingerprint="9b1c", new_version=True) as r,
    ):
        assert r.version == 2
        r.assign(["a", "b", "c"], full, dedup="remap", rank_last_level=nearest_last_level(full, k=2))
    with pytest.raises(KeyboardInterrupt), Registry(db, fingerprint="9b1c", new_version=True):
        raise KeyboardInterrupt  # Ctrl-C before the first assign
    with Registry(db, fingerprint="3f2a") as r:  # the first model opens its version 1 without a flag
        assert r.version == 1 and r.get("b").tolist() == [1, 1, 1]
        assert [(v.version, v.fingerprint, v.n_items) for v in r.versions()] == [(1, "3f2a", 2)]
    # A version that received IDs is kept, even when its block then fails; a number taken back is never
    # given again, so a handle that opened the taken-back version cannot write into another model's.
    late = None
    with pytest.raises(KeyboardInterrupt), Registry(db, fingerprint="9b1c", new_version=True) as r:
        assert r.version == 4  # 2 and 3 were taken back above
        late = Registry(db, fingerprint="9b1c")  # another process opens the new current version
        raise KeyboardInterrupt
    with pytest.raises(
        SemidError, match=r"^ids.db: ID version 4 was taken back since this registry was opened"
    ):
        late.assign(["z"], np.array([[7, 7]]))
    late.close()
    with pytest.raises(ValueError), Registry(db, fingerprint="9b1c", new_version=True) as r:
        assert r.version == 5
        r.assign(["a"], np.array([[2, 0]]))
        raise ValueError("writing the output failed")
    with Registry(db, fingerprint="9b1c") as r:
        assert r.version == 5 and [v.version for v in r.versions()] == [1, 5]
    with pytest.raises(SemidError, match=r"this model is 3f2a; .* to start ID version 6$"):
        Registry(db, fingerprint="3f2a")


def test_a_handle_on_an_old_version_cannot_assign_into_it(db: Path) -> None:
    old = Registry(db, fingerprint="3f2a")
    with Registry(db, fingerprint="9b1c", new_version=True):
        pass
    with pytest.raises(SemidError, match=r"^ids.db: ID version 2 was started since this registry was opened"):
        old.assign(["a"], np.array([[1]]))
    old.close()


def test_a_file_that_is_not_a_registry_is_a_clear_error(db: Path) -> None:
    db.write_bytes(b"item_id,codes\n" * 200)
    with pytest.raises(
        SemidError, match=r"ids.db: not a readable semid registry \(file is not a database\)$"
    ):
        Registry(db)
    assert db.read_bytes() == b"item_id,codes\n" * 200  # left as it was


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sqlite_file(path: Path, *statements: str) -> Path:
    conn = sqlite3.connect(path)
    for statement in statements:
        conn.execute(statement)
    conn.commit()
    conn.close()
    return path


OTHER_APP = (
    "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)",
    "CREATE TABLE orders (id INTEGER PRIMARY KEY, user_id INTEGER)",
    "INSERT INTO users VALUES (1, 'ada')",
)
# tables named meta, versions and ids and a schema_version row, but other columns: not ours either
LOOKALIKE = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)",
    "INSERT INTO meta VALUES ('schema_version', '1')",
    "CREATE TABLE versions (a INTEGER)",
    "CREATE TABLE ids (x TEXT)",
)


@pytest.mark.parametrize(
    ("statements", "shown"), [(OTHER_APP, "users, orders"), (LOOKALIKE, "meta, versions, ids")]
)
def test_a_database_that_is_not_a_registry_is_refused_and_left_byte_identical(
    tmp_path: Path, statements: tuple[str, ...], shown: str
) -> None:
    other = sqlite_file(tmp_path / "other.db", *statements)
    before = sha256(other)
    with pytest.raises(SemidError) as e:
        Registry(other, fingerprint="3f2a")
    assert str(e.value) == (
        f"{other} is an SQLite database of another application (tables: {shown}); "
        "give a new path or a semid registry"
    )
    assert sha256(other) == before  # not even switched to WAL mode


def test_an_empty_sqlite_file_becomes_a_registry_and_another_apps_tables_are_kept(tmp_path: Path) -> None:
    other = sqlite_file(tmp_path / "other.db", *OTHER_APP)
    with pytest.raises(SemidError):
        Registry(other, fingerprint="3f2a")
    tables = sqlite3.connect(other).execute("SELECT name FROM sqlite_master ORDER BY name").fetchall()
    assert tables == [("orders",), ("users",)]
    # An empty SQLite database holds nothing to lose: it becomes a registry.
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with Registry(empty, fingerprint="3f2a") as reg:
        assert reg.assign(["a"], np.array([[1, 2]])).codes.tolist() == [[1, 2, 0]]


def test_a_failed_job_leaves_an_unbound_version_unbound(db: Path) -> None:
    with Registry(db):  # version 1, bound to no model yet
        pass
    with pytest.raises(ValueError), Registry(db, fingerprint="3f2a"):
        raise ValueError("encoding failed before any ID was assigned")
    with Registry(db) as r:
        assert [(v.version, v.fingerprint, v.n_items) for v in r.versions()] == [(1, None, 0)]
    with Registry(db, fingerprint="9b1c") as r:  # another model can still take version 1
        r.assign(["a"], np.array([[1, 2]]))
    with pytest.raises(ValueError), Registry(db, fingerprint="9b1c") as r:
        raise ValueError("a later job failed")  # a version with IDs keeps its binding
    with Registry(db) as r:
        assert [(v.version, v.fingerprint, v.n_items) for v in r.versions()] == [(1, "9b1c", 1)]


def test_a_failed_first_job_leaves_no_registry_and_another_model_can_then_assign(tmp_path: Path) -> None:
    db = tmp_path / "new" / "ids.db"
    base = np.array([[5, 0], [5, 0], [5, 0]])
    with pytest.raises(SemidError, match="prefix 5 is full"), Registry(db, fingerprint="model-1") as reg:
        assert reg.created and db.exists()
        reg.assign(["a", "b", "c"], base, dedup="remap", rank_last_level=nearest_last_level(base, k=2))
    assert not (tmp_path / "new").exists()  # the file, its -wal/-shm and the folder the open made
    with pytest.raises(KeyboardInterrupt), Registry(db, fingerprint="model-1"):
        raise KeyboardInterrupt  # Ctrl-C before the first assign
    assert not (tmp_path / "new").exists()
    with Registry(db, fingerprint="model-2") as reg:  # no --new-version needed: nothing was left bound
        assert reg.version == 1 and reg.fingerprint == "model-2"
        reg.assign(["a"], np.array([[3, 4]]))
    # A failed block keeps a registry that holds committed IDs, or one this handle did not create.
    with pytest.raises(SemidError), Registry(db, fingerprint="model-2") as reg:
        assert not reg.created
        reg.assign(["b"], np.array([[3, 4]]), dedup="none")  # another strategy than the version's
    fresh = tmp_path / "fresh.db"
    with pytest.raises(ValueError), Registry(fresh, fingerprint="model-1") as reg:
        reg.assign(["a"], np.array([[1, 2]]))
        raise ValueError("writing the output failed")
    with Registry(db) as a, Registry(fresh) as b:
        assert (len(a), len(b)) == (1, 1)


def test_cli_assign_that_fails_in_the_registry_leaves_none_behind(tmp_path: Path, capsys) -> None:
    from conftest import clustered
    from semid.cli import main

    def run(*argv: str) -> tuple[int, str]:
        with pytest.raises(SystemExit) as e:
            main(list(argv))
        return int(e.value.code or 0), capsys.readouterr().err

    X = clustered(n=200, dim=8)
    emb = tmp_path / "emb.parquet"
    pq.write_table(
        pa.table(
            {"item_id": [f"i{i}" for i in range(200)], "embedding": pa.array(list(X), pa.list_(pa.float32()))}
        ),
        emb,
    )
    for seed in ("1", "2"):
        fit = ["fit", str(emb), "-o", str(tmp_path / f"m{seed}"), "--levels", "2", "--codebook-size", "2"]
        assert run(*fit, "--seed", seed)[0] == 0
    db = tmp_path / "reg" / "ids.db"
    # 200 items over 2 x 2 codes: a prefix overflows its 2 last-level codes inside the registry transaction
    m1, m2, a, b = (str(tmp_path / name) for name in ("m1", "m2", "a.parquet", "b.parquet"))
    code, err = run("assign", m1, str(emb), "-o", a, "--registry", str(db), "--dedup", "remap")
    assert code == 1 and err.splitlines()[-1].startswith("Error: prefix ") and "is full" in err
    assert not (tmp_path / "reg").exists() and not (tmp_path / "a.parquet").exists()
    code, err = run("assign", m2, str(emb), "-o", b, "--registry", str(db))
    assert code == 0, err
    assert f"registry {db} (version 1): 200 new, 0 known" in err
    # A failed --new-version job leaves version 1 current: the same command without the flag still runs.
    code, err = run(
        "assign", m1, str(emb), "-o", a, "--registry", str(db), "--dedup", "remap", "--new-version"
    )
    assert code == 1 and err.splitlines()[-1].startswith("Error: prefix ") and "(CLI: --dedup suffix)" in err
    code, err = run("assign", m2, str(emb), "-o", b, "--registry", str(db))
    assert code == 0 and f"registry {db} (version 1): 0 new, 200 known" in err, err


def test_open_refuses_a_path_or_timeout_of_the_wrong_type(db: Path) -> None:
    with pytest.raises(SemidError, match=r"^path=None should be a file path$"):
        Registry(None)  # type: ignore[arg-type]
    with pytest.raises(SemidError, match=r"^timeout='x' should be >= 0 seconds$"):
        Registry(db, timeout="x")  # type: ignore[arg-type]
    assert not db.exists()


def test_open_without_create_refuses_a_missing_file(db: Path) -> None:
    with pytest.raises(SemidError, match=r"ids.db: no such registry file$"):
        Registry.open(db, create=False)
    assert not db.exists()


# ---------------------------------------------------------------------------------------------- lookups


def test_lookups_both_ways(reg: Registry) -> None:
    reg.assign(["a", "b", "c"], np.array([[12, 4, 9], [12, 4, 9], [1, 2, 3]]))
    codes = reg.lookup_items(["c", "nope", "b"])
    assert codes.tolist() == [[1, 2, 3, 0], [-1, -1, -1, -1], [12, 4, 9, 1]]
    assert reg.lookup_codes(np.array([[12, 4, 9, 1], [12, 4, 9, 7], [1, 2, 3, 0]])) == ["b", None, "c"]
    assert reg.get("nope") is None
    assert reg.find("12-4-9-0") == "a" and reg.find(np.array([1, 2, 3, 0])) == "c"
    with pytest.raises(SemidError) as e:
        reg.lookup_codes(np.array([[12, 4, 9]]))
    assert str(e.value) == "codes have 3 levels, but ID version 1 of ids.db holds 4-level final codes"


def test_lookups_round_trip_on_a_larger_batch(reg: Registry) -> None:
    rng = np.random.default_rng(1)
    items = [f"i{k}" for k in range(2000)]
    codes = reg.assign(items, rng.integers(0, 3, size=(2000, 3))).codes
    assert len({tuple(c) for c in codes.tolist()}) == 2000
    assert np.array_equal(reg.lookup_items(items[::-1]), codes[::-1])
    assert reg.lookup_codes(codes) == items


# ---------------------------------------------------------------------------------------------- files


def test_ids_persist_across_reopen_in_wal_mode(db: Path) -> None:
    with Registry(db, fingerprint="3f2a") as r:
        codes = r.assign(["a", "b"], np.array([[4, 4], [4, 4]])).codes
    with Registry.open(db) as r:
        assert np.array_equal(r.lookup_items(["a", "b"]), codes)
        assert (r.fingerprint, r.dedup, r.n_levels, len(r)) == ("3f2a", "suffix", 2, 2)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_export_round_trip(reg: Registry, tmp_path: Path, suffix: str) -> None:
    base = np.array([[12, 4, 9], [12, 4, 9], [1, 2, 3]])
    codes = reg.assign([10, "b", "a"], base).codes
    out = reg.export(tmp_path / "out" / f"ids{suffix}")
    if suffix == ".parquet":
        table = pq.read_table(out)
        assert table.equals(reg.to_arrow())
        assert table.schema.field("codes").type == pa.list_(pa.int32())
        got = dict(zip(table["item_id"].to_pylist(), table["codes"].to_pylist(), strict=True))
    else:
        table = pacsv.read_csv(
            out, convert_options=pacsv.ConvertOptions(column_types={"item_id": pa.string()})
        )
        assert table.column_names == ["item_id", "codes", "base_codes", "version"]
        assert table["base_codes"].to_pylist() == ["12-4-9", "1-2-3", "12-4-9"]
        got = {
            i: [int(c) for c in s.split("-")]
            for i, s in zip(table["item_id"].to_pylist(), table["codes"].to_pylist(), strict=True)
        }
    assert got == {"10": codes[0].tolist(), "b": codes[1].tolist(), "a": codes[2].tolist()}
    assert table["version"].to_pylist() == [1, 1, 1]
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temp file left behind


def test_export_refuses_an_unknown_format(reg: Registry, tmp_path: Path) -> None:
    with pytest.raises(SemidError, match=r"ids.json: unknown export format '.json'; use .parquet or .csv$"):
        reg.export(tmp_path / "ids.json")
    assert not (tmp_path / "ids.json").exists()


def test_export_all_versions(db: Path, tmp_path: Path) -> None:
    with Registry(db, fingerprint="3f2a") as r:
        r.assign(["a"], np.array([[1, 1]]))
    with Registry(db, fingerprint="9b1c", new_version=True) as r:
        r.assign(["a"], np.array([[2, 2]]), dedup="none")
        table = r.to_arrow(version="all")
    assert table.to_pydict() == {
        "item_id": ["a", "a"],
        "codes": [[1, 1, 0], [2, 2]],
        "base_codes": [[1, 1], [2, 2]],
        "version": [1, 2],
    }


# ---------------------------------------------------------------------------------------------- processes


N_WORKERS, WINDOW, STRIDE = 4, 400, 150  # worker w assigns items [w*STRIDE, w*STRIDE + WINDOW): overlapping


def base_codes_for(items: np.ndarray) -> np.ndarray:
    """Few base codes for many items, so every batch collides with the others' groups."""
    return np.stack([items % 3, (items // 3) % 2], axis=1)


def _assign_worker(path: str, worker: int, barrier, results) -> None:
    items = np.arange(worker * STRIDE, worker * STRIDE + WINDOW)
    np.random.default_rng(worker).shuffle(items)
    got: dict[str, list[int]] = {}
    barrier.wait(timeout=120)  # everybody opens and assigns at once
    with Registry(path, fingerprint="3f2a", timeout=120) as r:
        for batch in np.array_split(items, 10):
            res: AssignResult = r.assign(batch.tolist(), base_codes_for(batch))
            got.update(zip(map(str, batch.tolist()), res.codes.tolist(), strict=True))
    results.put((worker, got))


def test_processes_assigning_at_once_agree_on_every_id(db: Path) -> None:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(N_WORKERS), ctx.Queue()
    procs = [
        ctx.Process(target=_assign_worker, args=(str(db), w, barrier, results)) for w in range(N_WORKERS)
    ]
    for p in procs:
        p.start()
    got: dict[int, dict[str, list[int]]] = {}
    deadline = time.monotonic() + 180
    while len(got) < N_WORKERS:  # fail fast if a worker dies instead of waiting out the timeout
        try:
            worker, seen = results.get(timeout=0.5)
            got[worker] = seen
        except queue.Empty:
            failed = {w: p.exitcode for w, p in enumerate(procs) if p.exitcode not in (None, 0)}
            assert not failed, f"workers failed, exit codes {failed}"
            assert time.monotonic() < deadline, "workers did not finish in 180 s"
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    with Registry(db) as r:
        table = r.to_arrow()
    stored = dict(zip(table["item_id"].to_pylist(), table["codes"].to_pylist(), strict=True))
    n_items = (N_WORKERS - 1) * STRIDE + WINDOW
    # Every item assigned exactly once (item_id is the primary key, so: all there, nothing extra) ...
    assert sorted(stored, key=int) == [str(i) for i in range(n_items)]
    # ... no two items share a final ID, and each group's suffixes are 0..count-1 without gaps ...
    assert len({tuple(c) for c in stored.values()}) == n_items
    for group in {tuple(c[:-1]) for c in stored.values()}:
        suffixes = sorted(c[-1] for c in stored.values() if tuple(c[:-1]) == group)
        assert suffixes == list(range(len(suffixes)))
    # ... and every process saw the same ID for every item it assigned.
    for worker, seen in got.items():
        assert len(seen) == WINDOW
        assert {item: stored[item] for item in seen} == seen, f"worker {worker}"


def test_a_writer_that_holds_the_lock_too_long_is_a_clear_error(db: Path) -> None:
    Registry(db).close()
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(
            SemidError, match=r"ids.db is locked by another process; gave up after timeout=0.1 s$"
        ):
            Registry(db, timeout=0.1)
    finally:
        other.execute("ROLLBACK")
        other.close()
