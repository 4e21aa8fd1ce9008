"""Million-item catalogues (issue #23 part 4): compact lookups that answer exactly as the dicts did, a trie
whose memory stays within a bound per item, and constrained decoding over a few hundred thousand items.

The dict-based catalogue of before is rebuilt here (``TodayCatalogue``) as the reference.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from semid.errors import SemidError
from semid.ids.trie import PrefixTrie
from semid.rec.beam import CodeIndex, beam_search
from semid.serve.service import Catalogue, KeyIndex, RequestError, Service

K = 256


def random_codes(n: int, levels: int, seed: int) -> np.ndarray:
    """``(n, levels)`` random unique codes of ``K`` per level, in random order."""
    flat = np.random.default_rng(seed).choice(K**levels, size=n, replace=False)
    return np.stack([(flat // K ** (levels - 1 - lv)) % K for lv in range(levels)], axis=1).astype(np.int64)


class TodayCatalogue(Catalogue):
    """The catalogue's lookups before issue #23 part 4: two dicts, prefix queries by a scan of every row."""

    def __post_init__(self) -> None:
        self.item_ids = np.asarray([str(i) for i in self.item_ids], dtype=object)
        self.index = {item: i for i, item in enumerate(self.item_ids)}  # type: ignore[assignment]
        if len(self.index) != len(self.item_ids):
            raise SemidError("the catalogue repeats an item id")
        sids = [] if self.semantic_ids is None else self.semantic_ids
        self.by_semantic_id = {str(s): i for i, s in enumerate(sids) if s is not None}  # type: ignore[assignment]


def outcome(fn, *args):
    """``("ok", answer)`` or ``(error type, message)``: what a caller of ``fn(*args)`` sees."""
    try:
        return "ok", fn(*args)
    except (SemidError, KeyError, TypeError) as e:
        return type(e).__name__, str(e)


# ---------------------------------------------------------------------------------------------------------
# A catalogue with the awkward cases: repeated and missing Semantic IDs, repeated codes, non-str values


def awkward_parts(n: int = 3000, seed: int = 0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 6, size=(n, 3)).astype(np.int64)  # 216 IDs for 3000 items: many repeats
    item_ids = np.asarray([f"I{i * 7919 % 100_003}" for i in range(n)], dtype=object)
    item_ids[:5] = [11, 12, 13, 14, 15]  # ints: stored as "11", ...
    sids = np.asarray(["-".join(map(str, r)) for r in codes.tolist()], dtype=object)
    sids[rng.random(n) < 0.1] = None  # items without a Semantic ID string
    sids[10:15] = [np.str_(s) if s is not None else None for s in sids[10:15]]  # a str subclass
    titles = np.asarray([f"title {i}" for i in range(n)], dtype=object)
    return item_ids, titles, sids, codes


@pytest.fixture(scope="module")
def catalogues():
    parts = awkward_parts()
    return Catalogue(*parts), TodayCatalogue(*parts)


def test_item_lookups_answer_like_the_dict(catalogues):
    new, old = catalogues
    present = [str(i) for i in old.item_ids[::37]]
    missing = ["", "I", "missing", "11 ", "x" * 300, "I0\x00", "é"]
    for q in present + missing:
        assert outcome(new.row_of, q) == outcome(old.row_of, q)
        assert new.index.get(q) == old.index.get(q)
        assert (q in new.index) == (q in old.index)
        assert outcome(new.index.__getitem__, q) == outcome(old.index.__getitem__, q)
    assert outcome(new.row_of, "missing")[0] == "NotFoundError"
    for q in (11, None, 3.5, ("I1",)):  # not strings: never a key
        assert new.index.get(q) is None and q not in new.index
    for fn in ("get", "__getitem__", "__contains__"):  # unhashable: TypeError, as from the dict
        assert outcome(getattr(new.index, fn), ["a list"]) == outcome(getattr(old.index, fn), ["a list"])
    assert len(new.index) == len(old.index) == len(new)
    assert list(new.index) == list(old.index)
    queries = present + missing + ["11", "15", ("I1", "I2")]
    assert new.index.get_many(queries).tolist() == [old.index.get(q, -1) for q in queries]
    assert new.index.get_many(np.asarray(present, dtype=object)).tolist() == [old.index[q] for q in present]
    assert new.index.get_many([]).tolist() == []


def test_semantic_id_lookups_answer_like_the_dict(catalogues):
    new, old = catalogues
    keys = [str(s) for s in old.semantic_ids if s is not None]
    assert len(set(keys)) < len(keys)  # the catalogue repeats Semantic IDs: the last row wins
    queries = keys[::11] + ["0-0", "9-9-9", "0-0-0-0", "", "<a_0><b_0><c_0>"]
    for q in queries:
        assert new.by_semantic_id.get(q) == old.by_semantic_id.get(q)
    assert len(new.by_semantic_id) == len(old.by_semantic_id)
    assert dict(new.by_semantic_id) == old.by_semantic_id
    assert list(new.by_semantic_id) == list(old.by_semantic_id)  # first-appearance order, as a dict
    assert new.by_semantic_id.get_many(queries).tolist() == [old.by_semantic_id.get(q, -1) for q in queries]


def test_service_answers_and_errors_match(catalogues):
    new, old = catalogues
    services = Service(new), Service(old)
    item_queries = [str(i) for i in old.item_ids[::97]] + ["missing", "x" * 300]
    sids = [s for s in old.semantic_ids[::53] if s is not None]
    sid_queries = sids + [
        "<a_1><b_2><c_3>",  # another spelling: parsed, then found through the trie
        "[SEM_START][SEM_0_5][SEM_1_5][SEM_2_5][SEM_END]",
        "9-9-9",  # a valid spelling of no item
        "1-2",  # too few levels
        "1-2-3-4",
        "99999999999999999999-0-0",  # beyond int64
        "not an id",
        "x" * 300,
    ]
    prefixes = ["1", "1-2", "5-5", "9", "1-2-3", "1-2-3-4", "", "-1", "99999999999999999999", "1-9"]
    for q in item_queries:
        assert outcome(services[0].item, q) == outcome(services[1].item, q)
    for q in sid_queries:
        assert outcome(services[0].by_semantic_id, q) == outcome(services[1].by_semantic_id, q)
    for q in prefixes:
        assert outcome(services[0].prefix, q) == outcome(services[1].prefix, q)
    kinds = {outcome(services[0].by_semantic_id, q)[0] for q in sid_queries}
    assert {"ok", "NotFoundError", "RequestError"} <= kinds  # every path was taken


def test_rows_under_matches_the_scan(catalogues):
    new, old = catalogues
    rng = np.random.default_rng(1)
    prefixes = [list(new.codes[r, :d]) for r in rng.integers(0, len(new), 30).tolist() for d in (1, 2, 3)]
    prefixes += [[], [7], [0, 7], [-1], [0, -1, 0], [2**63 - 1], [2**64], [1, 2, 3, 4]]
    for p in prefixes:
        if len(p) > new.n_levels:  # longer than an ID: no item (the scan broadcast the comparison)
            assert len(new.rows_under(p)) == 0
            continue
        rows = new.rows_under(p)
        assert rows.dtype == np.int64
        assert rows.tolist() == old.rows_under(p).tolist()
        assert new.count_under(p) == len(rows)
    assert new._trie is not None and old._trie is None


def test_repeated_item_ids_and_empty_catalogues():
    ids = np.asarray(["a", "b", "a"], dtype=object)
    for cls in (Catalogue, TodayCatalogue):
        with pytest.raises(SemidError, match="^the catalogue repeats an item id$"):
            cls(ids, None, None, None)
        with pytest.raises(SemidError, match="^the catalogue repeats an item id$"):
            cls(np.asarray([1, "1"], dtype=object), None, None, None)  # equal once made strings
    empty = [np.zeros(0, dtype=object), None, None, np.zeros((0, 3), dtype=np.int64)]
    new, old = Catalogue(*empty), TodayCatalogue(*empty)
    assert outcome(new.row_of, "a") == outcome(old.row_of, "a")
    assert len(new.index) == 0 and len(new.by_semantic_id) == 0
    assert new.rows_under([1]).tolist() == old.rows_under([1]).tolist() == []
    negative = Catalogue(np.asarray(["a", "b"]), None, None, np.array([[-1, 2], [0, 2]]))  # no trie: scans
    assert negative._trie is None and negative.rows_under([-1]).tolist() == [0]


class CollidingIndex(KeyIndex):
    """Only 3 distinct hashes: every lookup walks a run of equal hashes."""

    _hash = staticmethod(lambda key: len(key) % 3 if isinstance(key, str) else 7)


def test_hash_collisions_cost_time_never_a_wrong_row():
    rng = np.random.default_rng(2)
    keys = np.asarray([f"k{v}" for v in rng.integers(0, 400, 1000)], dtype=object)  # repeats
    keys[rng.random(1000) < 0.1] = None
    reference = {str(k): i for i, k in enumerate(keys) if k is not None}
    index = CollidingIndex(keys)
    queries = [*reference, "k", "k1000", "zzz", 5]
    assert [index.get(q) for q in queries] == [reference.get(q) for q in queries]
    assert index.get_many(queries).tolist() == [reference.get(q, -1) for q in queries]
    assert len(index) == len(reference) and list(index) == list(reference)
    with pytest.raises(SemidError, match="^dup$"):
        CollidingIndex(np.asarray(["ab", "cd", "ab"], dtype=object), unique="dup")
    assert pickle.loads(pickle.dumps(index)).get("k1") == reference.get("k1")


def test_key_index_memory_per_key():
    n = 50_000
    index = KeyIndex(np.asarray([f"B{i:010d}" for i in range(n)], dtype=object))
    assert index.nbytes <= 12 * n  # int64 hash + int32 row per key, against ~70+ for a dict entry and its int


# ---------------------------------------------------------------------------------------------------------
# The trie at a few hundred thousand items

# Bytes of the trie's arrays per item, random unique IDs (bench/results/catalogue_scale.txt). Int32 arrays;
# a fixed ~0.8 MB for the 65,536 nodes of depth 2 adds ~2.6 bytes per item at 300k.
TRIE_BYTES_PER_ITEM = {3: 12, 4: 24}


@pytest.mark.parametrize("levels", [3, 4])
def test_trie_of_300k_items_fits_its_memory_bound(levels):
    n = 300_000
    codes = random_codes(n, levels, seed=levels)
    trie = PrefixTrie(codes, [K] * levels)
    assert len(trie) == n and trie.n_nodes[-1] == n
    assert trie.nbytes <= TRIE_BYTES_PER_ITEM[levels] * n
    order = trie.order
    assert not order.flags.writeable
    sorted_codes = codes[order]  # (n, L) in ID order: strictly increasing rows
    later = (sorted_codes[1:] - sorted_codes[:-1]) * (K ** np.arange(levels - 1, -1, -1))  # (n - 1, L)
    assert (later.sum(axis=1) > 0).all()
    rng = np.random.default_rng(0)
    for row in rng.integers(0, n, 4).tolist():
        for depth in range(1, levels + 1):
            prefix = codes[row, :depth]
            match = np.flatnonzero((codes[:, :depth] == prefix).all(axis=1))
            assert trie.count(prefix) == trie.count(prefix, distinct=True) == len(match)
            assert np.array_equal(trie.items_with_prefix(prefix), match)
            by_id = match[np.lexsort(codes[match].T[::-1])]
            assert np.array_equal(trie.items_with_prefix(prefix, id_order=True), by_id)
    assert trie.count() == n
    leaves = trie.walk(codes[:100])
    assert trie.rows_of_leaves(leaves).tolist() == list(range(100))


def test_trie_keeps_int64_where_int32_would_overflow():
    big = 2**31 - 1
    codes = np.array([[0, big], [1, 5], [1, big - 1]])
    trie = PrefixTrie(codes, vocab_sizes=[2, 2**31])  # depth-1 keys reach 2 * 2**31: int64
    assert (0, big) in trie and (1, big - 1) in trie and (1, 5) in trie
    assert (0, big - 1) not in trie and (1, big) not in trie
    assert trie.step(torch.tensor([0, 1]), 1, torch.tensor([big, big])).tolist()[1] == -1
    assert trie.items_with_prefix([1], id_order=True).tolist() == [1, 2]


def test_repeated_ids_keep_explicit_leaf_rows():
    codes = np.array([[1, 2], [0, 3], [1, 2], [1, 2]])
    trie = PrefixTrie(codes)
    assert trie.count([1, 2]) == 3 and trie.count([1, 2], distinct=True) == 1
    assert trie.count([1], distinct=True) == 1 and trie.count(distinct=True) == 2
    assert trie.rows_of_leaves(trie.walk([[1, 2], [0, 3], [0, 2]])).tolist() == [0, 1, -1]


def prefix_logits(prefix: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``(B, W, K)`` logits that depend on each beam's prefix ``(B, W, t)`` (a hash into ``table``)."""
    t = prefix.shape[-1]
    weights = torch.tensor([1_000_003**i for i in range(t)], dtype=torch.long)
    rows = (prefix * weights).sum(-1) % table.shape[1]  # (B, W); 0 for the empty prefix
    return table[t][rows]  # (B, W, K)


def reference_beam(
    codes: np.ndarray, table: torch.Tensor, beam: int, k: int
) -> tuple[list[int], list[float]]:
    """One user's constrained beam search by brute force: the allowed next codes of a beam are those of the
    rows of ``codes`` that start with its prefix (found by scanning, no trie)."""
    n_levels = codes.shape[1]
    beams = [((), 0.0, np.arange(len(codes)))]  # (prefix, score, rows starting with the prefix)
    for level in range(n_levels):
        cands = []
        for prefix, score, rows in beams:
            prefix_t = torch.tensor(prefix, dtype=torch.long).reshape(1, 1, level)
            logp = torch.log_softmax(prefix_logits(prefix_t, table)[0, 0].float(), -1).numpy()
            for c in np.unique(codes[rows, level]).tolist():
                cands.append((prefix + (c,), score + float(logp[c]), rows[codes[rows, level] == c]))
        cands.sort(key=lambda cand: -cand[1])
        beams = cands[: (k if level == n_levels - 1 else beam)]
    assert all(len(rows) == 1 for _, _, rows in beams)  # unique IDs: one row per full ID
    return [int(rows[0]) for _, _, rows in beams], [score for _, score, _ in beams]


def test_code_index_of_200k_items_matches_brute_force():
    n, levels = 200_000, 3
    codes = random_codes(n, levels, seed=7)
    index = CodeIndex(codes, [K] * levels)
    gen = torch.Generator().manual_seed(0)
    users = 3
    # per user: level -> hashed prefix -> logits
    tables = torch.randn(users, levels, 97, K, generator=gen) * 3  # (users, L, 97, K)

    def step(prefix: torch.Tensor, parent: torch.Tensor | None) -> torch.Tensor:
        return torch.stack([prefix_logits(prefix[u : u + 1], tables[u])[0] for u in range(users)])

    result = beam_search(step, index, users, beam_size=20, k=10)
    assert result.items.dtype == torch.int64
    for u in range(users):
        items, scores = reference_beam(codes, tables[u], beam=20, k=10)
        assert result.items[u].tolist() == items
        np.testing.assert_allclose(result.scores[u].numpy(), scores, rtol=1e-5, atol=1e-5)
        assert (codes[result.items[u].numpy()] == result.codes[u].numpy()).all()


def test_constrained_beam_over_300k_items_returns_real_distinct_items():
    n, levels = 300_000, 4
    codes = random_codes(n, levels, seed=11)
    index = CodeIndex(codes, [K] * levels)
    gen = torch.Generator().manual_seed(1)

    def step(prefix: torch.Tensor, parent: torch.Tensor | None) -> torch.Tensor:
        return torch.randn(prefix.shape[0], prefix.shape[1], K, generator=gen) * 4  # (B, W, K)

    result = beam_search(step, index, 16, beam_size=20, k=10)
    items = result.items.numpy()
    assert ((items >= 0) & (items < n)).all() and result.invalid_rate == 0
    assert all(len(set(row)) == len(row) for row in items.tolist())
    assert (codes[items] == result.codes.numpy()).all()  # each item has the ID the search wrote
    assert torch.isfinite(result.scores).all() and (result.scores[:, :-1] >= result.scores[:, 1:]).all()
    free = beam_search(step, index, 16, beam_size=20, k=10, constrained=False)
    assert free.invalid_rate > 0.5  # 300k of 4.3e9 IDs exist: unconstrained decoding mostly misses


def test_request_error_is_still_raised_for_long_ids(catalogues):
    new, _ = catalogues
    with pytest.raises(RequestError, match="characters long"):
        Service(new).item("x" * 300)
