"""PrefixTrie: which next codes keep a partial Semantic ID on the path to a real item."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semid.errors import SemidError
from semid.ids.trie import PrefixTrie

# Five IDs over vocab (3, 3, 3), drawn as a tree:
#   0 ─┬─ 1 ─┬─ 2        2 ── 0 ─┬─ 0
#      │     └─ 0                └─ 1
#      └─ 2 ── 1
TINY = np.array([[0, 1, 2], [0, 1, 0], [0, 2, 1], [2, 0, 0], [2, 0, 1]])
T, F = True, False
TINY_MASKS = [
    ([[]], [[T, F, T]]),
    ([[0], [1], [2]], [[F, T, T], [F, F, F], [T, F, F]]),
    ([[0, 1], [0, 2], [2, 0], [1, 0], [0, 0]], [[T, F, T], [F, T, F], [T, T, F], [F, F, F], [F, F, F]]),
]
DENSE_LIMITS = pytest.mark.parametrize("dense_mask_limit", [0, 2**24], ids=["scatter", "dense"])


def devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ---------------------------------------------------------------------------------------------------------
# A tiny hand-drawn trie


@DENSE_LIMITS
@pytest.mark.parametrize("level", [0, 1, 2])
def test_tiny_trie_masks_at_each_level(level, dense_mask_limit):
    trie = PrefixTrie(TINY, dense_mask_limit=dense_mask_limit)
    prefixes, expected = TINY_MASKS[level]
    prefixes = np.array(prefixes, dtype=np.int64).reshape(len(prefixes), level)
    mask = trie.allowed_mask(prefixes)
    assert mask.dtype == torch.bool
    assert mask.tolist() == expected


def test_tiny_trie_shape_and_membership():
    trie = PrefixTrie(TINY)
    assert (len(trie), trie.n_levels, trie.vocab_sizes, trie.n_nodes) == (5, 3, (3, 3, 3), (1, 2, 3, 5))
    assert (0, 2, 1) in trie
    assert [0, 2, 2] not in trie
    assert (0, 2) not in trie  # a prefix is not an ID
    assert trie.is_valid_prefix([0, 2]) and trie.is_valid_prefix([])
    assert not trie.is_valid_prefix([1])
    assert repr(trie) == "PrefixTrie(n_ids=5, n_items=5, n_levels=3, vocab_sizes=[3, 3, 3])"


def test_tiny_trie_stepping_carries_node_ids():
    trie = PrefixTrie(TINY)
    root = trie.root(3)
    assert root.tolist() == [0, 0, 0]
    depth1 = trie.step(root, 0, torch.tensor([2, 1, 0]))
    assert depth1.tolist() == [1, -1, 0]  # nodes at depth 1 are numbered in sorted order: [0] -> 0, [2] -> 1
    assert trie.allowed_mask_nodes(depth1, 1).tolist() == [[T, F, F], [F, F, F], [F, T, T]]
    depth2 = trie.step(depth1, 1, torch.tensor([0, 0, 2]))
    assert depth2.tolist() == [2, -1, 1]
    assert trie.allowed_mask_nodes(depth2, 2).tolist() == [[T, T, F], [F, F, F], [F, T, F]]
    leaves = trie.step(depth2, 2, torch.tensor([1, 0, 1]))
    assert leaves.tolist() == [4, -1, 2]
    assert torch.equal(leaves, trie.walk(np.array([[2, 0, 1], [1, 0, 0], [0, 2, 1]])))


def test_counts_and_items_see_duplicate_rows():
    codes = np.array([[0, 1], [2, 0], [0, 1], [0, 2], [2, 0], [0, 1]])
    trie = PrefixTrie(codes)
    assert len(trie) == 3  # distinct IDs
    assert trie.count() == 6 and trie.count(distinct=True) == 3
    assert trie.count([0]) == 4 and trie.count([0], distinct=True) == 2
    assert trie.count([0, 1]) == 3 and trie.count([0, 1], distinct=True) == 1
    assert trie.count([1]) == 0 and trie.count([0, 0], distinct=True) == 0
    assert trie.items_with_prefix([0]).tolist() == [0, 2, 3, 5]
    assert trie.items_with_prefix([2, 0]).tolist() == [1, 4]
    assert trie.items_with_prefix([]).tolist() == [0, 1, 2, 3, 4, 5]
    assert trie.items_with_prefix([9, 9]).tolist() == []


# ---------------------------------------------------------------------------------------------------------
# Agreement with a brute-force set of prefixes


def _brute_force(codes: np.ndarray) -> list[set[tuple[int, ...]]]:
    """prefixes[t]: the set of length-t prefixes of the rows."""
    return [{tuple(row[:t]) for row in codes.tolist()} for t in range(codes.shape[1] + 1)]


def _query_prefixes(rng: np.random.Generator, codes: np.ndarray, t: int, k: np.ndarray) -> np.ndarray:
    """Half real prefixes, half random ones (some with codes outside [0, K))."""
    real = codes[rng.integers(0, len(codes), 64), :t]
    noise = rng.integers(-1, k[:t] + 1, size=(64, t)) if t else np.zeros((64, 0), dtype=np.int64)
    return np.concatenate([real, noise])


CASES = [(200, 3, 4, 0), (1000, 4, 16, 1), (300, 2, 50, 2), (50, 5, 2, 3), (400, 1, 30, 4), (2000, 3, 8, 5)]


@DENSE_LIMITS
@pytest.mark.parametrize(
    ("n", "n_levels", "k", "seed"), CASES, ids=[f"{n}x{level}-K{k}-seed{s}" for n, level, k, s in CASES]
)
def test_masks_agree_with_brute_force(n, n_levels, k, seed, dense_mask_limit):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(max(k // 2, 1), k + 1, size=n_levels)
    codes = rng.integers(0, sizes, size=(n, n_levels))
    codes = np.concatenate([codes, codes[: n // 10]])  # duplicates
    trie = PrefixTrie(codes, dense_mask_limit=dense_mask_limit)
    prefix_sets = _brute_force(codes)
    assert len(trie) == len(prefix_sets[-1])
    assert trie.n_nodes == tuple(len(s) for s in prefix_sets)
    for t in range(n_levels):
        prefixes = _query_prefixes(rng, codes, t, sizes)
        expected = [
            [(*p, c) in prefix_sets[t + 1] for c in range(trie.vocab_sizes[t])] for p in prefixes.tolist()
        ]
        assert trie.allowed_mask(prefixes).tolist() == expected
        assert trie.allowed_mask(torch.from_numpy(prefixes)).tolist() == expected
        nodes = trie.walk(prefixes)
        assert (nodes >= 0).tolist() == [tuple(p) in prefix_sets[t] for p in prefixes.tolist()]
        assert trie.allowed_mask_nodes(nodes, t).tolist() == expected


def test_huge_vocabularies_sort_without_a_packed_key():
    # prod(vocab_sizes) >= 2**63: rows cannot be packed into one int64 sort key, so lexsort takes over.
    rng = np.random.default_rng(7)
    codes = rng.integers(0, 3, size=(200, 3)) * np.array([2**40, 2**40, 1])
    trie = PrefixTrie(codes, vocab_sizes=[2**42, 2**42, 3])
    prefix_sets = _brute_force(codes)
    assert trie.n_nodes == tuple(len(s) for s in prefix_sets)
    nodes = trie.walk(codes[:, :2])
    assert trie.allowed_mask_nodes(nodes, 2).tolist() == [
        [(*p, c) in prefix_sets[3] for c in range(3)] for p in codes[:, :2].tolist()
    ]
    assert trie.items_with_prefix([2**41]).tolist() == np.flatnonzero(codes[:, 0] == 2**41).tolist()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_counts_and_items_agree_with_brute_force(seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 4, size=(300, 3))
    trie = PrefixTrie(codes)
    for t in range(4):
        for prefix in _query_prefixes(rng, codes, t, np.array([4, 4, 4]))[::8].tolist():
            rows = [i for i, row in enumerate(codes.tolist()) if row[:t] == prefix]
            assert trie.items_with_prefix(prefix).tolist() == rows
            assert trie.count(prefix) == len(rows)
            assert trie.count(prefix, distinct=True) == len({tuple(codes[i]) for i in rows})
            assert trie.is_valid_prefix(prefix) == bool(rows)
            if t == 3:
                assert (prefix in trie) == bool(rows)


# ---------------------------------------------------------------------------------------------------------
# Edge cases


@DENSE_LIMITS
def test_empty_prefixes_and_empty_batches(dense_mask_limit):
    trie = PrefixTrie(TINY, dense_mask_limit=dense_mask_limit)
    assert trie.allowed_mask(torch.zeros(2, 0, dtype=torch.long)).tolist() == [[T, F, T]] * 2
    assert trie.allowed_mask(np.zeros((0, 2), dtype=np.int64)).shape == (0, 3)
    assert trie.allowed_mask([]).shape == (0, 3)
    assert trie.step(torch.zeros(0, dtype=torch.long), 0, torch.zeros(0, dtype=torch.long)).shape == (0,)


@DENSE_LIMITS
def test_invalid_nodes_and_codes_give_empty_rows(dense_mask_limit):
    trie = PrefixTrie(TINY, vocab_sizes=[3, 3, 4], dense_mask_limit=dense_mask_limit)
    # -1 nodes, ids past the last node, and codes outside [0, K) never alias a real edge
    assert trie.step(torch.tensor([-1, 0, 0, 7, 0]), 0, torch.tensor([0, -1, 3, 0, 2])).tolist() == [
        -1
    ] * 4 + [1]
    assert trie.allowed_mask_nodes(torch.tensor([-1, 5, 1]), 1).tolist() == [[F, F, F], [F, F, F], [T, F, F]]
    assert trie.allowed_mask([[2, 0], [2, 3], [0, -1]]).tolist() == [[T, T, F, F], [F] * 4, [F] * 4]


def test_an_empty_trie_needs_vocab_sizes_and_allows_nothing():
    with pytest.raises(SemidError) as err:
        PrefixTrie(np.zeros((0, 2), dtype=np.int64))
    assert str(err.value) == "codes is empty; pass vocab_sizes to build an empty PrefixTrie"
    trie = PrefixTrie(np.zeros((0, 2), dtype=np.int64), vocab_sizes=[3, 2])
    assert len(trie) == 0 and trie.n_nodes == (1, 0, 0)
    assert trie.allowed_mask(np.zeros((2, 0), dtype=np.int64)).tolist() == [[F, F, F]] * 2
    assert trie.allowed_mask([[0], [1]]).tolist() == [[F, F]] * 2
    assert trie.count() == 0 and trie.items_with_prefix().tolist() == []


def test_vocab_sizes_widen_the_masks():
    trie = PrefixTrie(TINY, vocab_sizes=[5, 3, 4])
    assert trie.allowed_mask(np.zeros((1, 0), dtype=np.int64)).tolist() == [[T, F, T, F, F]]


@pytest.mark.parametrize("device", devices())
def test_queries_run_on_the_tensors_device(device):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 6, size=(500, 3))
    trie = PrefixTrie(codes, dense_mask_limit=20)  # level 0 dense, deeper levels scatter
    prefixes = torch.from_numpy(codes[:40, :2])
    on_cpu = trie.allowed_mask(prefixes)
    assert trie.to(device) is trie
    assert trie.device.type == device and trie.root(4).device.type == device
    mask = trie.allowed_mask(prefixes.to(device))
    assert mask.device.type == device and torch.equal(mask.cpu(), on_cpu)
    nodes = trie.step(trie.root(40), 0, prefixes[:, 0].to(device))
    nodes = trie.step(nodes, 1, prefixes[:, 1].to(device))
    assert nodes.device.type == device and torch.equal(trie.allowed_mask_nodes(nodes, 2).cpu(), on_cpu)


# ---------------------------------------------------------------------------------------------------------
# Mistakes


@pytest.mark.parametrize(
    ("codes", "vocab_sizes", "message"),
    [
        (TINY, [3, 2, 3], "codes row 2 level 1: 2 >= vocab_sizes[1]=2"),
        (TINY, [3, 3], "vocab_sizes has 2 entries but codes have 3 levels"),
        (TINY, [3, 0, 3], "vocab_sizes[1]=0 should be a positive integer"),
        (TINY, [3, 3, 2.5], "vocab_sizes[2]=2.5 should be a positive integer"),
        (np.array([[0, 1], [4, -2]]), None, "codes row 1 level 1: -2 is negative"),
        (np.array([[0.5, 1.0]]), None, "codes should hold integers, got dtype float64"),
        (np.array([1, 2, 3]), None, "codes should be a 2-D (n_items, n_levels) array, got shape (3,)"),
        (np.zeros((2, 0), dtype=np.int64), None, "codes have 0 levels; a Semantic ID needs at least 1"),
        (
            np.array([[1]]),
            [2**62],
            "vocab_sizes[0]=4611686018427387904 is too large: 1 prefixes x 4611686018427387904 codes overflow int64 keys",
        ),
    ],
    ids=[
        "code-too-big",
        "wrong-length",
        "zero-size",
        "float-size",
        "negative",
        "float",
        "1-D",
        "0-levels",
        "overflow",
    ],
)
def test_bad_codes_and_vocab_sizes(codes, vocab_sizes, message):
    with pytest.raises(SemidError) as err:
        PrefixTrie(codes, vocab_sizes)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t: t.allowed_mask(TINY), "prefixes have length 3; a next code exists only for lengths 0..2"),
        (lambda t: t.walk(np.zeros((1, 4), dtype=int)), "prefixes have length 4 but IDs have 3 levels"),
        (
            lambda t: t.allowed_mask(np.array([0, 1])),
            "prefixes should have shape (batch, length), got shape (2,)",
        ),
        (
            lambda t: t.allowed_mask(torch.zeros(2, 1)),
            "prefixes should hold integers, got dtype torch.float32",
        ),
        (
            lambda t: t.allowed_mask_nodes(t.root(2), 3),
            "level=3 has no next code: IDs have 3 levels, numbered 0..2",
        ),
        (
            lambda t: t.step(t.root(2), -1, [0, 0]),
            "level=-1 has no next code: IDs have 3 levels, numbered 0..2",
        ),
        (lambda t: t.step(t.root(2), 0, [0, 0, 0]), "node_ids has shape (2,) but codes has shape (3,)"),
        (lambda t: t.is_valid_prefix([0.5]), "prefix should hold integers, got dtype float64"),
        (
            lambda t: PrefixTrie(TINY, dense_mask_limit=-1),
            "dense_mask_limit=-1 should be a non-negative integer",
        ),
    ],
    ids=[
        "full-length",
        "too-long",
        "1-D",
        "float",
        "level-too-high",
        "negative-level",
        "shapes",
        "float-prefix",
        "limit",
    ],
)
def test_bad_queries(call, message):
    with pytest.raises(SemidError) as err:
        call(PrefixTrie(TINY))
    assert str(err.value) == message
