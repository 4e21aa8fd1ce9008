"""Unseen items by Semantic-ID prefix: TIGER's cold-start rule (Rajput et al. 2023, section 4.3).

A generative model trained on interactions puts almost no probability on an item no training sequence
holds, even though constrained decoding could produce its ID: on Beauty's cold-start split (605 cold items), our
TIGER recommends none of them (``bench/results/beauty_rec_cold_start.txt``). The TIGER paper's remedy uses
the IDs' semantics. Decode as usual; then, for each decoded item in rank order, the *unseen* items (in no
training sequence) whose ID shares its first ``prefix_levels`` codes are placed right after it, with its
score, while the list holds fewer than ``floor(share * k)`` unseen items (the paper's epsilon). Items the
decoder proposed keep their order (an unseen one it decoded itself stays, and counts towards the cap), so
at most ``floor(share * k)`` decoded items are pushed out and the cost to warm users is bounded.

``prefix_levels`` defaults to all levels but the last: with suffix-deduplicated IDs (``12-4-9-0``) that is
the whole semantic part, the paper's choice. Shorter prefixes reach more unseen items (on Beauty's split,
3 levels reach 22% of the cold items, 2 levels 67%) at a coarser match.

Cost: one generative decode plus a dictionary lookup per decoded item; no model is retrained.

Example::

    unseen = np.flatnonzero(untrained_items(data))            # semid.rec.io: items in no training sequence
    model = UnseenByPrefix(tiger, data.codes, unseen, share=0.1)
    items, scores = model.recommend(batch, k=10)              # at most 1 of 10 slots an unseen item
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch
from torch import nn

from semid.errors import SemidError
from semid.rec.data import Batch

DEFAULT_SHARE = 0.1  # the largest share of the k slots unseen items may take (the paper's epsilon)


def check_share(share: Any) -> float:
    """``share`` as a float in [0, 1]; anything else is one error quoting it."""
    if isinstance(share, bool) or not isinstance(share, numbers.Real) or not 0 <= share <= 1:
        raise SemidError(f"unseen share={share!r} should be a number in [0, 1], e.g. 0.1")
    return float(share)


class PrefixSiblings:
    """The unseen items of each Semantic-ID prefix.

    ``codes`` (n_items, L) are every item's codes, ``unseen`` the indices of the items no training sequence
    holds; ``siblings(item)`` gives the unseen items whose first ``prefix_levels`` codes are ``item``'s, in
    index order (the item itself left out).
    """

    def __init__(self, codes: np.ndarray, unseen: np.ndarray, prefix_levels: int | None = None) -> None:
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[1] < 1:
            raise SemidError(f"codes should be (n_items, levels), got shape {codes.shape}")
        n_items, levels = codes.shape
        if prefix_levels is None:
            prefix_levels = max(1, levels - 1)
        if (
            isinstance(prefix_levels, bool)
            or not isinstance(prefix_levels, (int, np.integer))
            or not 1 <= prefix_levels <= levels
        ):
            raise SemidError(f"prefix_levels={prefix_levels!r} should be an integer in [1, {levels}]")
        unseen = np.asarray(unseen)
        if unseen.dtype == bool:  # e.g. semid.rec.io.untrained_items(data): a mask, not indices
            raise SemidError("unseen items should be item indices, not a mask: pass np.flatnonzero(mask)")
        unseen = np.unique(unseen.astype(np.int64))
        bad = unseen[(unseen < 0) | (unseen >= n_items)]
        if len(bad):
            raise SemidError(f"unseen items should be indices in [0, {n_items}), got {int(bad[0])}")
        self.prefix_levels = int(prefix_levels)
        self.is_unseen = np.zeros(n_items, dtype=bool)
        self.is_unseen[unseen] = True
        self._keys = [tuple(row) for row in codes[:, : self.prefix_levels].tolist()]
        self._groups: dict[tuple[int, ...], list[int]] = {}
        for item in unseen.tolist():
            self._groups.setdefault(self._keys[item], []).append(item)

    def siblings(self, item: int) -> list[int]:
        return [i for i in self._groups.get(self._keys[item], ()) if i != item]

    @property
    def reachable(self) -> int:
        """Unseen items that share their prefix with at least one seen item (the rule can reach them)."""
        seen_keys = {k for k, u in zip(self._keys, self.is_unseen, strict=True) if not u}
        return sum(len(g) for key, g in self._groups.items() if key in seen_keys)


def mix_unseen(
    items: np.ndarray,
    scores: np.ndarray,
    siblings: PrefixSiblings,
    k: int,
    share: float = DEFAULT_SHARE,
    *,
    history: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each row's decoded ``items`` (B, W) with unseen prefix siblings added: ``(items (B, k), scores)``.

    Rows are walked in rank order: every decoded item is kept (an unseen one counts towards the cap); after
    each, its unseen siblings follow (same score) while the row holds fewer than ``floor(share * k)`` unseen
    items. Invalid entries (``-1``) are skipped; a row that runs out is padded with ``-1`` / ``-inf``.
    ``history`` (B, H) (``-1`` padding): items in it are never added as siblings. ``share`` 0 returns the
    decoded items as they are (invalid ones dropped).
    """
    share = check_share(share)
    B = items.shape[0]
    cap = math.floor(share * k + 1e-9)
    out = np.full((B, k), -1, dtype=np.int64)
    out_scores = np.full((B, k), -np.inf, dtype=np.float32)
    for r in range(B):
        taken: list[int] = []
        kept: list[float] = []
        placed: set[int] = set()
        skip = set(history[r].tolist()) if history is not None else set()
        n_unseen = 0
        for item, score in zip(items[r].tolist(), scores[r].tolist(), strict=True):
            if len(taken) == k:
                break
            if item < 0 or item in placed:
                continue
            n_unseen += bool(siblings.is_unseen[item])
            taken.append(item)
            kept.append(score)
            placed.add(item)
            for sib in siblings.siblings(item):
                if len(taken) == k or n_unseen >= cap:
                    break
                if sib in placed or sib in skip:
                    continue
                taken.append(sib)
                kept.append(score)
                placed.add(sib)
                n_unseen += 1
        out[r, : len(taken)] = taken
        out_scores[r, : len(kept)] = kept
    return out, out_scores


class UnseenByPrefix(nn.Module):
    """A generative recommender (TIGER) whose lists also hold the unseen prefix siblings of its items.

    ``recommend(batch, k)`` satisfies :class:`semid.rec.evaluate.Recommender`; decoding options (TIGER's
    ``beam_size``, ``constrained``, ``exclude_history``) go to the generative model, which decodes
    ``k`` items.
    """

    def __init__(
        self,
        generative: nn.Module,
        codes: np.ndarray,
        unseen: np.ndarray,
        *,
        share: float = DEFAULT_SHARE,
        prefix_levels: int | None = None,
    ) -> None:
        super().__init__()
        n_items = int(generative.config.n_items)
        if np.shape(codes)[0] != n_items:
            raise SemidError(f"codes have {np.shape(codes)[0]:,} rows for the model's {n_items:,} items")
        self.generative = generative
        self.share = check_share(share)
        self.siblings = PrefixSiblings(codes, unseen, prefix_levels)

    @property
    def model_type(self) -> str:
        return f"{self.generative.model_type} + unseen by prefix"

    @property
    def config(self) -> Any:
        return self.generative.config

    @property
    def max_history(self) -> int:
        return int(self.generative.max_history)

    @torch.no_grad()
    def recommend(self, batch: Batch, k: int, **options: Any) -> tuple[torch.Tensor, torch.Tensor]:
        items, scores = self.generative.recommend(batch, k, **options)  # (B, k) each
        history = batch.history.cpu().numpy() if options.get("exclude_history") else None
        mixed, mixed_scores = mix_unseen(
            items.cpu().numpy(), scores.float().cpu().numpy(), self.siblings, k, self.share, history=history
        )
        return torch.from_numpy(mixed).to(items.device), torch.from_numpy(mixed_scores).to(items.device)

    def extra_repr(self) -> str:
        return f"share={self.share:g}, prefix_levels={self.siblings.prefix_levels}"
