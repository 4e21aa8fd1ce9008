"""Personalised search: one beam search over the catalogue's IDs, scored by a request *and* a user's history.

The query -> item language model (:class:`~semid.llm.generate.QueryRecommender`) and TIGER
(:class:`~semid.rec.tiger.TIGER`) both write an item's Semantic ID one code at a time. With the same IDs
they can share one constrained beam search: at each level the next code's score is

    query_weight * log p_LM(code | request, ID so far) + history_weight * log p_TIGER(code | history, ID so far)

renormalised over the level's codes, and codes that lead to no item are masked by the trie as always. So the
answer is a real item that fits both the words of the request and what the user did before, ranked by a
product of the two models' ID distributions. ``history_weight = 0`` is exactly the query model's beam, and
``query_weight = 0`` exactly TIGER's (tested). The weight is a per-catalogue choice: pick it on a dev set
of (request, history, item) triples.

    search = PersonalisedSearch.from_llm(load_llm("llm/"), load_model("run/"), RecData.load("run/"))
    search.search(["a matte lipstick"], [["B0001", "B0002"]], k=10, history_weight=0.5)

Cost per level: one step of each model with a non-zero weight (the LM re-reads the prompt and ID prefix;
TIGER continues its key/value cache), so about the sum of the two searches' costs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from semid.errors import SemidError
from semid.llm.generate import QueryRecommender, Recommendations, backfill_rows
from semid.rec.beam import StepFn, beam_search
from semid.rec.data import RecData, histories_batch, user_keys

__all__ = ["PersonalisedSearch", "combine_steps"]


def combine_steps(steps: Sequence[tuple[StepFn, float]]) -> StepFn:
    """A step function whose logits are the weighted sum of the ``(step, weight)`` pairs' log-softmaxes
    (pairs of weight 0 are never called)."""
    active = [(fn, float(w)) for fn, w in steps if w != 0]
    if not active:
        raise SemidError("every weight is 0: give the query or the history a positive weight")

    def step(prefix: torch.Tensor, parent: torch.Tensor | None) -> torch.Tensor:
        total = None
        for fn, weight in active:
            part = weight * F.log_softmax(fn(prefix, parent).float(), dim=-1)  # (B, W, K_t)
            total = part if total is None else total + part
        return total

    return step


def _to_widths(fn: StepFn, widths: Sequence[int], own: Sequence[int]) -> StepFn:
    """``fn`` (a model whose levels have ``own`` codes) on beams of a trie with ``widths`` codes per level.

    Two models trained on the same IDs may still size a level differently (one from the IDs file's
    metadata, one from the largest code it saw); the codes of real items fit both. Each level's logits are
    cut, or padded with -inf (a code the model cannot write), to ``widths``; beam search fills its width with
    dead (-inf) beams whose codes may lie beyond ``own``, so those are clamped before the model reads them.
    """
    limit = torch.tensor([k - 1 for k in own])

    def step(prefix: torch.Tensor, parent: torch.Tensor | None) -> torch.Tensor:
        t = prefix.shape[2]
        readable = torch.minimum(prefix, limit[:t].to(prefix.device))  # (B, W, t): only dead beams change
        out = fn(readable, parent)  # (B, W, own[t])
        width = widths[t]
        if out.shape[-1] >= width:
            return out[..., :width]
        return F.pad(out, (0, width - out.shape[-1]), value=float("-inf"))

    return step


class PersonalisedSearch:
    """A query model and a TIGER run over the same Semantic IDs, searched together (module docs).

    ``query``: the language model's recommender; ``query_item_ids`` its items, row for row. ``tiger`` and
    ``data``: a trained TIGER and its run's :class:`~semid.rec.data.RecData`, whose items a history names.
    The two must agree on the IDs: the same codes for every item both know (a level's size may differ).
    Answers are rows of the language model's catalogue.
    """

    def __init__(
        self, query: QueryRecommender, query_item_ids: np.ndarray, tiger: torch.nn.Module, data: RecData
    ):
        if getattr(tiger, "model_type", None) != "tiger":
            raise SemidError(
                "personalised search needs a TIGER run (it decodes Semantic IDs); SASRec does not"
            )
        if query.index.n_levels != tiger.index.n_levels:
            raise SemidError(
                f"the language model's IDs have {query.index.n_levels} levels and the TIGER run's "
                f"{tiger.index.n_levels}: train both on the same IDs"
            )
        q_ids = np.asarray(query_item_ids, dtype=object).astype(str)
        if len(q_ids) != query.index.n_items:
            raise SemidError(
                f"{len(q_ids):,} item ids for the language model's {query.index.n_items:,} items"
            )
        run_row = {str(item): i for i, item in enumerate(data.item_ids)}
        shared = np.array([run_row.get(i, -1) for i in q_ids], dtype=np.int64)  # (n_lm,) run row or -1
        both = np.flatnonzero(shared >= 0)
        if len(both) == 0:
            raise SemidError("the language model and the TIGER run have no item in common")
        differ = both[(query.index.codes[both] != tiger.index.codes[shared[both]]).any(axis=1)]
        if len(differ):
            i = differ[0]
            raise SemidError(
                f"item {str(q_ids[i])!r} has ID {query.index.codes[i].tolist()} in the language model and "
                f"{tiger.index.codes[shared[i]].tolist()} in the TIGER run ({len(differ):,} items differ): "
                "train both on the same IDs"
            )
        self.query, self.tiger, self.data = query, tiger, data
        self.item_ids = q_ids
        self._lm_row_of_run = np.full(data.n_items, -1, dtype=np.int64)  # (n_run,) LM row or -1
        self._lm_row_of_run[shared[both]] = both

    @classmethod
    def from_llm(cls, llm, tiger: torch.nn.Module, data: RecData) -> PersonalisedSearch:
        """From a loaded :class:`~semid.llm.model.LLM` and a TIGER run (``load_model``, ``RecData.load``)."""
        return cls(QueryRecommender.from_llm(llm), llm.item_ids, tiger, data)

    @torch.no_grad()
    def search(
        self,
        queries: Sequence[str],
        histories: Sequence[Sequence[str]],
        *,
        k: int = 10,
        history_weight: float = 2.0,
        query_weight: float = 1.0,
        beam_size: int | None = None,
        users: Sequence[str] | None = None,
        exclude_history: bool = False,
        batch_size: int = 32,
        query_embeddings: np.ndarray | None = None,
        allow: np.ndarray | None = None,
        backfill: bool = True,
    ) -> Recommendations:
        """The ``k`` best items per (request, history) pair, rows of the language model's catalogue.

        ``histories``: item ids, oldest first (an unknown item is an error naming it; an empty history
        leaves the request alone for that row only if ``history_weight`` is 0, so it is refused).
        ``users``: user ids for TIGER's user tokens. ``exclude_history``: never answer an item of the
        row's history. ``allow``: ``(Q, n_items)`` bool over the language model's items, the items each
        request may get (:meth:`semid.llm.constraints.RequestFilter.masks`), pruned at every level; a row
        with fewer than ``k`` allowed items gets them first, then (``backfill``) the unrestricted search's
        best others, as :meth:`QueryRecommender.recommend` does. Scores are the combined log-scores of the
        IDs (module docs).
        """
        for name, w in (("history_weight", history_weight), ("query_weight", query_weight)):
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not np.isfinite(w) or w < 0:
                raise SemidError(f"{name}={w!r} should be a finite number >= 0")
        if len(histories) != len(queries):
            raise SemidError(f"{len(queries)} requests but {len(histories)} histories: give one per request")
        if users is not None and len(users) != len(queries):
            raise SemidError(f"{len(queries)} requests but {len(users)} user ids")
        parsed = [self.data.parse_history(list(h)) for h in histories]  # names an unknown or empty history
        if allow is not None:
            allow = np.asarray(allow)
            if allow.dtype != bool or allow.shape != (len(queries), self.query.index.n_items):
                raise SemidError(
                    f"allow should be a bool array of shape ({len(queries)}, {self.query.index.n_items}), "
                    f"got {allow.dtype} {allow.shape}"
                )
        beam_size = max(k, 20) if beam_size is None else beam_size
        prompts = self.query.prompts(queries) if query_weight else [[] for _ in queries]
        qvecs = self.query.query_embeddings(queries, query_embeddings) if query_weight else None
        keys = None if users is None else user_keys(list(users))
        device = self.query.device

        def run(rows: np.ndarray, restrict: bool) -> tuple[np.ndarray, np.ndarray]:
            items, scores = [], []
            for start in range(0, len(rows), batch_size):
                part = rows[start : start + batch_size]
                steps: list[tuple[StepFn, float]] = []
                if query_weight:
                    chunk = None if qvecs is None else qvecs[part]
                    steps.append((self.query.prompt_step_fn([prompts[i] for i in part], chunk), query_weight))
                if history_weight:
                    batch = histories_batch(
                        [parsed[i] for i in part], None if keys is None else keys[part], device
                    )
                    tiger_step = _to_widths(
                        self.tiger.step_fn(batch), self.query.index.vocab_sizes, self.tiger.index.vocab_sizes
                    )
                    steps.append((tiger_step, history_weight))
                exclude = self._exclude([parsed[i] for i in part], device) if exclude_history else None
                res = beam_search(
                    combine_steps(steps), self.query.index, len(part), beam_size=beam_size, k=k,
                    device=device, exclude=exclude,
                    allow=torch.from_numpy(allow[part]) if restrict else None,
                )  # fmt: skip
                items.append(res.items.cpu().numpy())
                scores.append(res.scores.cpu().numpy())
            return np.concatenate(items), np.concatenate(scores)

        tiger_mode = self.tiger.training
        self.tiger.eval()
        try:
            with self.query.eval_mode():
                every = np.arange(len(queries))
                restricted = allow is not None and not allow.all()
                items, scores = run(every, restricted)
                short = np.flatnonzero((items < 0).any(axis=1)) if restricted and backfill else every[:0]
                if len(short):  # fewer than k allowed items: the best others, after them
                    backfill_rows(items, scores, short, *run(short, False))
        finally:
            self.tiger.train(tiger_mode)
        return Recommendations(items=items, scores=scores)

    def _exclude(self, histories: list[np.ndarray], device: torch.device) -> torch.Tensor:
        """(B, n_lm_items) bool: the language-model rows of each history's items."""
        mask = torch.zeros(len(histories), self.query.index.n_items, dtype=torch.bool)
        for r, h in enumerate(histories):
            rows = self._lm_row_of_run[h]
            mask[r, torch.from_numpy(rows[rows >= 0])] = True
        return mask.to(device)
