"""Constrained beam search: hand-computed beams of a fixed-logit "model", and invariants on random ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semid.errors import SemidError
from semid.rec.beam import CodeIndex, beam_search

# Four items with 2-level IDs over 3 codes per level. Prefix 0 continues with 0 or 1, prefix 1 with 2,
# prefix 2 with 0: so [0, 2], [1, 0], [2, 2] ... are no items.
CODES = np.array([[0, 0], [0, 1], [1, 2], [2, 0]])
LEVEL0 = torch.tensor([2.0, 1.0, 0.0])
LEVEL1 = torch.tensor([[0.0, 2.0, 5.0], [4.0, 0.0, 1.0], [0.0, 0.0, 3.0]])  # row = the first code


def fixed_model(prefix: torch.Tensor, parent: torch.Tensor | None) -> torch.Tensor:
    """Logits that depend only on the prefix: LEVEL0 first, then the LEVEL1 row of the first code."""
    B, W, t = prefix.shape
    if t == 0:
        return LEVEL0.expand(B, W, 3)
    return LEVEL1[prefix[:, :, 0]]


def log_prob(codes: list[int]) -> float:
    """The model's log-probability of an ID, by the definition: sum of per-level log-softmax."""
    lp0 = torch.log_softmax(LEVEL0, 0)[codes[0]]
    lp1 = torch.log_softmax(LEVEL1[codes[0]], 0)[codes[1]]
    return float(lp0 + lp1)


def test_constrained_beams_by_hand() -> None:
    # log p: item 0 = -0.4076 - 5.0550 = -5.4626, item 1 = -0.4076 - 3.0550 = -3.4626,
    #        item 2 = -1.4076 - 3.0659 = -4.4735, item 3 = -2.4076 - 3.0949 = -5.5025.
    # The model's favourite continuation of prefix 0 is code 2, which is no item: it is masked.
    res = beam_search(fixed_model, CodeIndex(CODES), batch_size=1, beam_size=3, k=3)
    assert res.items.tolist() == [[1, 2, 0]]
    assert res.codes.tolist() == [[[0, 1], [1, 2], [0, 0]]]
    assert res.scores[0].tolist() == pytest.approx([log_prob([0, 1]), log_prob([1, 2]), log_prob([0, 0])])
    assert res.scores[0].tolist() == pytest.approx([-3.4626, -4.4735, -5.4626], abs=1e-4)
    assert res.invalid_rate == 0.0


@pytest.mark.parametrize(
    ("beam_size", "k", "items"),
    [(1, 1, [1]), (2, 2, [1, 2]), (4, 4, [1, 2, 0, 3])],
    ids=["greedy", "beam-2", "whole-catalogue"],
)
def test_beam_width_decides_which_prefixes_survive(beam_size: int, k: int, items: list[int]) -> None:
    # Greedy: code 0 (best first level), then its best allowed code 1 -> item 1.
    # Beam 2 keeps first codes 0 and 1, so item 3 (first code 2) can never be reached.
    res = beam_search(fixed_model, CodeIndex(CODES), batch_size=1, beam_size=beam_size, k=k)
    assert res.items[0].tolist() == items


def test_unconstrained_mode_reports_ids_that_are_no_item() -> None:
    # Unmasked, the best IDs are [0, 2] (-0.4626), [1, 0] (-0.4735), [2, 2] (-2.5025): none is an item;
    # the fourth, [0, 1] (-3.4626), is item 1.
    res = beam_search(fixed_model, CodeIndex(CODES), batch_size=1, beam_size=4, k=4, constrained=False)
    assert res.codes[0].tolist() == [[0, 2], [1, 0], [2, 2], [0, 1]]
    assert res.items.tolist() == [[-1, -1, -1, 1]]
    assert res.invalid_rate == 0.75
    assert res.scores[0].tolist() == pytest.approx([log_prob(c) for c in ([0, 2], [1, 0], [2, 2], [0, 1])])


def random_catalogue(n: int, sizes: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(k) for k in sizes], indexing="ij"), -1).reshape(-1, len(sizes))
    return grid[rng.choice(len(grid), n, replace=False)]


@pytest.mark.parametrize("seed", [0, 1, 2], ids=["seed0", "seed1", "seed2"])
def test_random_model_gets_valid_distinct_items_and_a_wide_beam_is_exact(seed: int) -> None:
    sizes = (4, 5, 3)
    codes = random_catalogue(30, sizes, seed)  # 30 of 60 possible IDs
    index = CodeIndex(codes, sizes)
    gen = torch.Generator().manual_seed(seed)
    batch = 6
    tables = [
        torch.randn(batch, *sizes[: t + 1], generator=gen) for t in range(3)
    ]  # logits per row and prefix

    def model(prefix: torch.Tensor, parent: torch.Tensor | None) -> torch.Tensor:
        t = prefix.shape[2]
        rows = torch.arange(batch)[:, None].expand(-1, prefix.shape[1])
        return tables[t][(rows, *prefix.unbind(-1))]  # (B, W, K_t)

    calls: list[tuple[torch.Tensor, torch.Tensor | None]] = []

    def recording_model(prefix: torch.Tensor, parent: torch.Tensor | None) -> torch.Tensor:
        calls.append((prefix, parent))
        return model(prefix, parent)

    res = beam_search(recording_model, index, batch_size=batch, beam_size=8, k=8)
    assert calls[0][1] is None
    for (before, _), (prefix, parent) in zip(
        calls[:-1], calls[1:], strict=True
    ):  # beams extend their parents
        t = before.shape[2]
        assert torch.equal(before.gather(1, parent[:, :, None].expand(-1, -1, t)), prefix[:, :, :t])
    assert (res.items >= 0).all()
    for b in range(batch):
        items = res.items[b].tolist()
        assert len(set(items)) == 8
        assert np.array_equal(codes[items], res.codes[b].numpy())
        assert (res.scores[b][:-1] >= res.scores[b][1:]).all()
    # A beam wider than any level keeps every prefix: the result is the exact top k of all items.
    exact = beam_search(model, index, batch_size=batch, beam_size=60, k=8)
    logp = [torch.log_softmax(tables[t], dim=-1) for t in range(3)]
    c = torch.from_numpy(codes)
    for b in range(batch):
        full = logp[0][b][c[:, 0]] + logp[1][b][c[:, 0], c[:, 1]] + logp[2][b][c[:, 0], c[:, 1], c[:, 2]]
        assert exact.items[b].tolist() == full.topk(8).indices.tolist()
        assert exact.scores[b].tolist() == pytest.approx(full.topk(8).values.tolist(), abs=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 5, "beam_size": 5}, r"^k=5 is larger than the catalogue \(4 items\)$"),
        ({"k": 3, "beam_size": 2}, r"^beam_size=2 should be an integer >= k=3$"),
        ({"k": 0}, r"^k=0 should be a positive integer$"),
    ],
    ids=["k-beyond-catalogue", "beam-narrower-than-k", "k-zero"],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(SemidError, match=message):
        beam_search(fixed_model, CodeIndex(CODES), batch_size=1, **kwargs)


def test_a_step_function_with_the_wrong_shape_is_named() -> None:
    with pytest.raises(
        SemidError, match=r"step_fn returned logits of shape \(1, 1, 2\) at level 0, expected \(1, 1, 3\)"
    ):
        beam_search(lambda p, parent: torch.zeros(1, 1, 2), CodeIndex(CODES), batch_size=1, beam_size=2, k=2)


def test_code_index_needs_unique_ids() -> None:
    with pytest.raises(SemidError, match=r"^1 of 3 items share a Semantic ID with another"):
        CodeIndex(np.array([[0, 1], [0, 1], [1, 0]]))


def test_excluded_items_are_never_returned_and_the_rest_keep_their_order() -> None:
    # Without exclusion the order is items 1, 2, 0, 3 (log p above). Row 0 excludes item 1 (its history),
    # row 1 excludes items 2 and 3: each gets the others in the same order, with the same scores.
    exclude = torch.zeros(2, 4, dtype=torch.bool)
    exclude[0, 1] = True
    exclude[1, [2, 3]] = True
    res = beam_search(fixed_model, CodeIndex(CODES), batch_size=2, beam_size=4, k=3, exclude=exclude)
    assert res.items[0].tolist() == [2, 0, 3]
    assert res.items[1].tolist()[:2] == [1, 0]
    assert res.items[1].tolist()[2] == -1  # only two items are left for that row: no third one
    assert res.scores[0].tolist() == pytest.approx([log_prob([1, 2]), log_prob([0, 0]), log_prob([2, 0])])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_narrow_beam_restricted_to_allowed_items_finds_the_best_allowed_ones(seed: int) -> None:
    # A narrow beam (4) over 30 items where each row allows a random fifth of them: the allowed-set
    # pruning at every level must still return exactly the top 3 allowed items (as an exhaustive beam
    # over the allowed items would), never an item outside the set.
    sizes = (4, 5, 3)
    codes = random_catalogue(30, sizes, seed)
    index = CodeIndex(codes, sizes)
    gen = torch.Generator().manual_seed(seed)
    batch = 5
    tables = [torch.randn(batch, *sizes[: t + 1], generator=gen) for t in range(3)]

    def model(prefix: torch.Tensor, parent: torch.Tensor | None) -> torch.Tensor:
        rows = torch.arange(batch)[:, None].expand(-1, prefix.shape[1])
        return tables[prefix.shape[2]][(rows, *prefix.unbind(-1))]

    allow = torch.rand(batch, 30, generator=gen) < 0.2
    allow[0] = False
    allow[0, [3, 17]] = True  # fewer allowed items than k: the rest is -1
    res = beam_search(model, index, batch_size=batch, beam_size=60, k=3, allow=allow)
    logp = [torch.log_softmax(tables[t], dim=-1) for t in range(3)]
    c = torch.from_numpy(codes)
    for b in range(batch):
        full = logp[0][b][c[:, 0]] + logp[1][b][c[:, 0], c[:, 1]] + logp[2][b][c[:, 0], c[:, 1], c[:, 2]]
        full = full.masked_fill(~allow[b], float("-inf"))
        n = min(3, int(allow[b].sum()))
        best = full.topk(n).indices.tolist()
        assert res.items[b].tolist()[:n] == best
        assert res.items[b].tolist()[n:] == [-1] * (3 - n)
        narrow = beam_search(model, index, batch_size=batch, beam_size=3, k=3, allow=allow)
        got = [i for i in narrow.items[b].tolist() if i >= 0]
        assert set(got) <= set(np.flatnonzero(allow[b].numpy()).tolist())
        assert len(got) == n  # pruning keeps the beam on prefixes that still lead to allowed items


def test_allow_of_the_wrong_shape_or_type_is_named() -> None:
    with pytest.raises(SemidError, match=r"allow has shape \(1, 3\), expected \(1, 4\)"):
        beam_search(
            fixed_model, CodeIndex(CODES), batch_size=1, beam_size=2, k=2, allow=torch.ones(1, 3).bool()
        )
    with pytest.raises(SemidError, match=r"allow should be a bool tensor"):
        beam_search(fixed_model, CodeIndex(CODES), batch_size=1, beam_size=2, k=2, allow=torch.ones(1, 4))


def test_row_ranges_bound_the_items_under_each_prefix() -> None:
    index = CodeIndex(CODES)
    trie = index.trie
    order = trie.order
    for depth in range(3):
        prefixes = np.unique(CODES[:, :depth], axis=0)
        nodes = trie.walk(torch.from_numpy(prefixes)) if depth else trie.root(1)
        lo, hi = trie.row_ranges(nodes, depth)
        for p, a, b in zip(prefixes, lo.tolist(), hi.tolist(), strict=True):
            assert sorted(order[a:b].tolist()) == trie.items_with_prefix(p).tolist()
    lo, hi = trie.row_ranges(torch.tensor([-1]), 1)
    assert (lo.item(), hi.item()) == (0, 0)
    dup = CodeIndex(CODES).trie.__class__(np.array([[0, 1], [0, 1], [1, 0]]))  # repeated IDs: rows, not IDs
    lo, hi = dup.row_ranges(dup.walk(torch.tensor([[0, 1], [1, 0]])), 2)
    assert (hi - lo).tolist() == [2, 1]
    empty = CodeIndex(np.zeros((0, 2), dtype=np.int64), (2, 2)).trie
    assert [t.tolist() for t in empty.row_ranges(torch.tensor([0]), 1)] == [[0], [0]]
