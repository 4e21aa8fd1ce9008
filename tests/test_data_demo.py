"""The synthetic demo dataset: deterministic, fast, readable, and with signal for a sequence model."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from semid.data import Dataset, make_demo_dataset
from semid.errors import SemidError


@pytest.fixture(scope="module")
def demo() -> Dataset:
    return make_demo_dataset()


def test_defaults_and_sizes(demo: Dataset) -> None:
    st = demo.stats()
    assert (st.n_items, st.n_users) == (3000, 2000)
    assert (st.seq_len_min, st.seq_len_max) == (5, 30)
    assert 9.0 <= st.seq_len_mean <= 11.0
    assert demo.catalogue.fields == ["title", "brand", "categories", "colour", "finish", "size", "price"]
    assert st.coverage["title"] == 1.0 and st.coverage["categories"] == 1.0
    assert 0.2 < st.coverage["colour"] < 0.8  # only makeup and nails have colours
    assert demo.report.clean


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    paths = []
    for run in ("a", "b", "c"):
        ds = make_demo_dataset(n_items=300, n_users=200, seed=1 if run != "c" else 2)
        ds.save(tmp_path / run)
        paths.append(tmp_path / run)
    a, b, c = ([(p / f).read_bytes() for f in ("items.parquet", "interactions.parquet")] for p in paths)
    assert a == b
    assert a[0] != c[0] and a[1] != c[1]


def test_generates_the_default_size_in_under_two_cpu_seconds() -> None:
    start = time.process_time()  # CPU time: a loaded machine (CI neighbours) does not make it fail
    ds = make_demo_dataset(n_items=3000, n_users=2000, seed=7)
    assert time.process_time() - start < 2.0
    assert len(ds.catalogue) == 3000


def test_taxonomy_brands_and_titles(demo: Dataset) -> None:
    cat = demo.catalogue
    paths = cat.column("categories").to_pylist()
    assert {p[0] for p in paths} == {"Beauty"}
    assert {p[1] for p in paths} == {"Makeup", "Skin Care", "Hair Care", "Fragrance", "Nails"}
    assert 40 <= len({p[3] for p in paths}) <= 45
    assert ["Beauty", "Makeup", "Lips", "Lipstick"] in paths
    titles, brands = cat.column("title").to_pylist(), cat.column("brand").to_pylist()
    assert all(t.endswith(f" by {b}") for t, b in zip(titles, brands, strict=True))
    lipsticks = [t for t, p in zip(titles, paths, strict=True) if p[3] == "Lipstick"]
    assert all(re.fullmatch(r"[\w ]+ Lipstick - [\w ]+, [\d.]+ g by .+", t) for t in lipsticks), lipsticks[:3]
    assert len(set(titles)) > 0.9 * len(titles)  # readable and mostly distinct
    # Brands are tied to categories: each brand sells in at most two top categories.
    tops_of_brand: dict[str, set[str]] = {}
    for b, p in zip(brands, paths, strict=True):
        tops_of_brand.setdefault(b, set()).add(p[1])
    assert max(len(t) for t in tops_of_brand.values()) <= 2
    prices = cat.column("price").to_numpy()
    assert prices.min() > 0 and np.all(np.round(prices * 100) % 100 == 99)


def test_sequences_carry_signal(demo: Dataset) -> None:
    """Consecutive items share a category and a brand far more often than two random interactions do."""
    cat = demo.catalogue
    seqs = demo.sequences()
    top = np.array([p[1] for p in cat.column("categories").to_pylist()])[seqs.items]
    brand = np.array(cat.column("brand").to_pylist())[seqs.items]
    starts = np.zeros(len(seqs.items), dtype=bool)
    starts[seqs.offsets[:-1]] = True
    pairs = ~starts[1:]  # (t-1, t) within one user
    same_top = (top[1:] == top[:-1])[pairs].mean()
    same_brand = (brand[1:] == brand[:-1])[pairs].mean()
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, len(top), 20000), rng.integers(0, len(top), 20000)
    assert same_top > 0.7 > 2 * (top[a] == top[b]).mean()
    assert same_brand > 4 * (brand[a] == brand[b]).mean()
    # A little popularity: the top 10% of items get a clearly larger share than 10% of interactions.
    counts = np.sort(np.bincount(seqs.items, minlength=len(cat)))[::-1]
    assert counts[: len(cat) // 10].sum() / counts.sum() > 0.25
    # Time runs forward within every user.
    order = demo.interactions.order()
    ts = demo.interactions.timestamps[order]
    assert np.all(np.diff(ts)[pairs] > 0)


def test_small_sizes_work_and_bad_sizes_are_errors() -> None:
    ds = make_demo_dataset(n_items=10, n_users=3, seed=0)
    assert len(ds.catalogue) == 10 and ds.interactions.n_users == 3
    assert np.unique(ds.sequences().items).max() < 10
    with pytest.raises(SemidError, match=r"^n_items=0 should be an integer >= 1$"):
        make_demo_dataset(n_items=0)
