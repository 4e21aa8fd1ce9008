"""Constrained generation: after ``[REC]`` the model can only write the ID of a real item.

Two ways to decode, both driven by the :class:`semid.ids.PrefixTrie` of the catalogue's IDs:

- :class:`SemanticIdLogitsProcessor`, a ``transformers.LogitsProcessor`` for ``model.generate`` (greedy
  or sampling): in every row, the tokens after the last ``[REC]`` are read back into codes, walked down
  the trie (one vectorised step per level, never a loop over rows), and every token that does not
  continue a real ID is set to ``-inf``; once the ID is complete only EOS is allowed, and before it EOS is
  forbidden. Rows without ``[REC]`` may write anything but ID tokens.
- :meth:`QueryRecommender.recommend`: beam search over IDs (:func:`semid.rec.beam.beam_search`) with
  the language model as the step function: the top-``k`` *distinct* items with their log-probabilities.

A model trained with a query-embedding prefix (:mod:`semid.llm.prefix`) reads the query twice: the
sentence encoder's vector, as ``n_prefix`` soft-prompt vectors, then the prompt's tokens. Both ways of
decoding then run on ``inputs_embeds`` (``generate`` keeps the token ids as its running sequence, with the
pad id where the prefix sits, so the constraint still finds ``[REC]``); the constraint does not change.

Guards against generation defaults that would silently break the constraint: ``generate`` is called with
an explicit configuration (no sampling unless asked, no repetition penalty or suppressed tokens from the
model's ``generation_config.json``, EOS and length set from the ID), prompts are built in token space with
``[REC]`` appended as a token (a chat template cannot insert text after it), and every decoded ID is
checked against the trie before it is returned.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from semid.errors import SemidError
from semid.ids import PrefixTrie
from semid.llm.model import LLM, SemanticVocab, prompt_ids
from semid.llm.prefix import QueryEncoder, QueryPrefix, prepend_prefix, request_embeddings, request_text
from semid.rec.beam import CodeIndex, StepFn, beam_search

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

try:  # transformers is an optional dependency of semid; the processor subclasses its base when present
    from transformers import LogitsProcessor
except ImportError:  # pragma: no cover
    LogitsProcessor = object  # type: ignore[misc,assignment]

__all__ = ["QueryRecommender", "Recommendations", "SemanticIdLogitsProcessor"]


class SemanticIdLogitsProcessor(LogitsProcessor):
    """Masks the next-token scores so that the tokens after ``[REC]`` spell a valid ID, then EOS.

    ``__call__(input_ids (B, T), scores (B, V)) -> scores``. A row whose prefix after ``[REC]`` is no
    prefix of any ID (which the mask itself never produces) has no allowed token: that raises
    :class:`SemidError` rather than letting the model write an invalid ID. With ``code_head`` (a prefix
    with a code head and the ``(Q, d_in)`` query vectors), :meth:`QueryPrefix.id_scores` of the level a
    row writes are added to that level's tokens first; ``B`` may be ``Q`` times the sequences per query.
    """

    def __init__(
        self,
        trie: PrefixTrie,
        vocab: SemanticVocab,
        code_head: tuple[QueryPrefix, torch.Tensor] | None = None,
    ) -> None:
        if trie.n_levels != vocab.n_levels:
            raise SemidError(f"the trie has {trie.n_levels} levels but the vocabulary {vocab.n_levels}")
        for level, (k_trie, k_vocab) in enumerate(zip(trie.vocab_sizes, vocab.codebook_sizes, strict=True)):
            if k_trie > k_vocab:
                raise SemidError(f"level {level}: the trie has {k_trie} codes but the vocabulary {k_vocab}")
        self.trie = trie
        self.vocab = vocab
        self.code_head = code_head  # (prefix, (Q, d_in) query vectors): its scores go in before the mask
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        if device not in self._tables:
            level_of, code_of = self.vocab.level_and_code(device)
            token_ids = self.vocab.token_ids.to(device)
            id_tokens = token_ids[token_ids >= 0]
            self._tables[device] = (level_of, code_of, token_ids, id_tokens)
        return self._tables[device]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        batch, length = input_ids.shape
        device, n_levels = input_ids.device, self.trie.n_levels
        level_of, code_of, token_ids, id_tokens = self._on(device)
        is_rec = input_ids == self.vocab.rec_id
        has_rec = is_rec.any(dim=1)  # (B,)
        last_rec = torch.where(is_rec, torch.arange(length, device=device), -1).amax(dim=1)  # (B,)
        written = length - 1 - last_rec  # (B,) tokens after the last [REC]
        nodes = self.trie.root(batch, device=device)  # (B,) trie node of the ID written so far
        codes = torch.zeros((batch, n_levels), dtype=torch.long, device=device)  # (B, L) written codes
        for level in range(n_levels):  # walk the written codes down the trie, all rows at once
            pos = (last_rec + 1 + level).clamp(max=length - 1)
            token = input_ids.gather(1, pos[:, None]).squeeze(1).clamp(max=level_of.numel() - 1)
            code = torch.where(level_of[token] == level, code_of[token], -1)
            codes[:, level] = code.clamp(min=0)
            stepped = self.trie.step(nodes, level, code)
            nodes = torch.where(has_rec & (written > level), stepped, nodes)
        if scores.shape[1] < int(token_ids.max()) + 1:
            raise SemidError(
                f"scores have {scores.shape[1]} columns but the ID tokens reach {int(token_ids.max())}"
            )
        allowed = torch.zeros_like(scores, dtype=torch.bool)  # (B, V)
        head, queries = self.code_head if self.code_head is not None else (None, None)
        if queries is not None:
            queries = queries.to(device).repeat_interleave(batch // queries.shape[0], 0)  # (B, d_in)
            scores = scores.clone()
        for level in range(n_levels):
            rows = (has_rec & (written == level)).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            k = self.trie.vocab_sizes[level]
            if head is not None:
                extra = head.id_scores(queries[rows], level, codes[rows, :level]).to(scores.dtype)
                scores[rows[:, None], token_ids[level, :k][None, :]] += extra  # (R, K)
            mask = self.trie.allowed_mask_nodes(nodes[rows], level)  # (R, K)
            empty = ~mask.any(dim=1)
            if empty.any():
                row = int(rows[empty.nonzero()[0, 0]])
                raise SemidError(
                    f"row {row}: no Semantic ID continues the {level} code(s) written after [REC]; "
                    "that prefix is in no catalogue item's ID"
                )
            allowed[rows[:, None], token_ids[level, :k][None, :]] = mask
        done = has_rec & (written >= n_levels)
        allowed[done, self.vocab.eos_id] = True  # a complete ID: only EOS (and EOS again after it)
        constrained = has_rec
        out = torch.where(constrained[:, None] & ~allowed, float("-inf"), scores)
        free = (~constrained).nonzero(as_tuple=True)[0]
        if free.numel():  # no [REC] yet: anything but ID tokens
            out[free[:, None], id_tokens[None, :]] = float("-inf")
        return out


@contextlib.contextmanager
def eval_mode(*modules: torch.nn.Module | None) -> Iterator[None]:
    """The modules (``None`` skipped) in eval mode for the block, then back to how they were."""
    present = [m for m in modules if m is not None]
    modes = [m.training for m in present]
    for m in present:
        m.eval()
    try:
        yield
    finally:
        for m, mode in zip(present, modes, strict=True):
            m.train(mode)


@dataclass
class Recommendations:
    """Top-``k`` items per query, best first. The order is the ranking: with ``recommend(allow=...)`` the
    allowed items come first and the backfilled others after them, whose log-probabilities may be higher."""

    items: np.ndarray  # (Q, k) int64 item rows
    scores: np.ndarray  # (Q, k) float32 log-probability of each item's ID given the query

    def hits(self, targets: Sequence[int] | np.ndarray, k: int | None = None) -> np.ndarray:
        """``(Q,)`` bool: whether each query's target item is in its top ``k`` (default: all returned)."""
        top = self.items[:, : (k or self.items.shape[1])]
        return (top == np.asarray(targets)[:, None]).any(axis=1)


def backfill_rows(
    items: np.ndarray, scores: np.ndarray, rows: np.ndarray, extra_items: np.ndarray, extra_scores: np.ndarray
) -> None:
    """Fill, in place, the ``-1`` tail of each of ``rows`` of a restricted answer ``items`` / ``scores``
    (Q, k) with the best items of an unrestricted one (``extra_*``, one row per entry of ``rows``) that the
    row does not hold yet; what is still missing stays ``-1`` / ``-inf``."""
    k = items.shape[1]
    for j, q in enumerate(rows):
        have = items[q][items[q] >= 0].tolist()
        more = [
            (i, s) for i, s in zip(extra_items[j], extra_scores[j], strict=True) if i >= 0 and i not in have
        ]
        fill = more[: k - len(have)]
        items[q, len(have) :] = [i for i, _ in fill] + [-1] * (k - len(have) - len(fill))
        scores[q, len(have) :] = [s for _, s in fill] + [-np.inf] * (k - len(have) - len(fill))


class QueryRecommender:
    """Answers natural-language queries with catalogue items through a language model.

    ``codes`` is the ``(n_items, L)`` table of unique IDs (row ``i`` is item ``i``). ``recommend`` returns
    the ``k`` most likely distinct items; ``generate`` runs ``model.generate`` with the constraint (for
    sampling or greedy answers). With a ``prefix``, each query is also embedded by ``query_encoder`` (or
    its ``(Q, d_in)`` vectors are passed as ``query_embeddings=``) and read as soft-prompt vectors.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        vocab: SemanticVocab,
        codes: np.ndarray,
        *,
        system_prompt: str,
        prefix: QueryPrefix | None = None,
        query_encoder: QueryEncoder | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.vocab = vocab
        self.index = CodeIndex(np.asarray(codes, dtype=np.int64), vocab.codebook_sizes)
        self.system_prompt = system_prompt
        self.processor = SemanticIdLogitsProcessor(self.index.trie, vocab)
        self.prefix = prefix
        self.query_encoder = query_encoder
        if prefix is not None and prefix.has_code_head:
            head_codes = prefix.item_codes.cpu().numpy()
            if head_codes.shape != self.index.codes.shape or (head_codes != self.index.codes).any():
                raise SemidError(
                    f"the query prefix's code head holds {len(head_codes)} items with other IDs than the "
                    f"{len(codes)} given: use the catalogue it was trained on"
                )

    @classmethod
    def from_llm(cls, llm: LLM) -> QueryRecommender:
        return cls(
            llm.model,
            llm.tokenizer,
            llm.vocab,
            llm.codes,
            system_prompt=llm.system_prompt,
            prefix=llm.prefix,
            query_encoder=llm.query_encoder,
        )

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def prompts(self, queries: Sequence[str]) -> list[list[int]]:
        """Token ids of each query's prompt, ending with ``[REC]``."""
        if isinstance(queries, str):
            raise SemidError(f"queries should be a list of strings, got the single string {queries!r}")
        out = []
        for q, query in enumerate(queries):
            if not isinstance(query, str) or not query.strip():
                raise SemidError(f"query {q} is empty: ask for something, e.g. 'a matte red lipstick'")
            messages = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": query}]
            out.append(prompt_ids(self.tokenizer, messages) + [self.vocab.rec_id])
        return out

    def _eval_mode(self) -> contextlib.AbstractContextManager[None]:
        """The model (and prefix) in eval mode for the block, then back to how they were."""
        return eval_mode(self.model, self.prefix)

    @property
    def _pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.vocab.eos_id

    def _left_pad(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for r, p in enumerate(prompts):
            ids[r, width - len(p) :] = torch.tensor(p)
            mask[r, width - len(p) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def query_embeddings(self, queries: Sequence[str], given: np.ndarray | None = None) -> np.ndarray | None:
        """``(Q, d_in)`` vectors for the prefix (``None`` without one): ``given``, checked, or the encoder's
        (a zero vector for a query that spells Semantic IDs, as in training)."""
        if self.prefix is None:
            return None
        if given is not None:
            given = np.asarray(given, dtype=np.float32)
            if given.shape != (len(queries), self.prefix.d_in):
                raise SemidError(
                    f"query_embeddings has shape {given.shape}, expected ({len(queries)}, {self.prefix.d_in})"
                )
            return given
        if self.query_encoder is None:
            raise SemidError("the model has a query prefix but no query encoder: pass query_encoder=")
        out = request_embeddings(self.query_encoder, [request_text(q) for q in queries])
        if out.shape[1] != self.prefix.d_in:
            raise SemidError(
                f"the query encoder gives {out.shape[1]}-d vectors, but the prefix was trained on "
                f"{self.prefix.d_in}-d ones"
            )
        return out

    def _inputs(
        self, prompts: list[list[int]], embeddings: np.ndarray | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(ids, mask, inputs_embeds)`` of left-padded prompts; with a prefix, ``(B, P + T)`` ids (pad id
        where the prefix sits) and the embeddings the model reads instead; without one, ``None``."""
        ids, mask = self._left_pad(prompts)
        if self.prefix is None or embeddings is None:
            return ids, mask, None
        vecs = self.prefix(torch.tensor(embeddings, dtype=torch.float32, device=self.device))  # (B, P, H)
        embeds, mask, ids = prepend_prefix(self.model, vecs, ids, mask, pad_id=self._pad_id, left_pad=True)
        return ids, mask, embeds

    def _code_queries(self, embeddings: np.ndarray | None) -> torch.Tensor | None:
        """``(B, d_in)`` query vectors for the code head (``None`` without one)."""
        if self.prefix is None or not self.prefix.has_code_head or embeddings is None:
            return None
        return torch.tensor(embeddings, dtype=torch.float32, device=self.device)

    def _step_fn(
        self,
        ids: torch.Tensor,
        mask: torch.Tensor,
        embeds: torch.Tensor | None,
        table: torch.Tensor,
        code_queries: torch.Tensor | None = None,
        weights: tuple[float, float] = (1.0, 1.0),
    ):
        """The language model as a beam-search step: next-code logits of each beam of left-padded prompts
        (``embeds``: the prompts as ``(B, T, H)`` input embeddings, prefix included, when there is one;
        ``code_queries``: ``(B, d_in)`` query vectors whose code-head scores are added; ``weights``: the
        language model's and the code head's factors, ``(1, 1)`` as trained; ablations zero one of them)."""
        lm_w, head_w = weights
        embed_tokens = self.model.get_input_embeddings()

        def step(prefix: torch.Tensor, parent: torch.Tensor | None = None) -> torch.Tensor:
            b, n_beams, t = prefix.shape  # (B, W, t) codes; the whole prefix is re-read, so parent is unused
            levels = torch.arange(t, device=self.device).expand_as(prefix)
            tokens = table[levels, prefix].reshape(b * n_beams, t)  # (B * W, t)
            att = torch.cat([mask.repeat_interleave(n_beams, 0), torch.ones_like(tokens)], dim=1)
            positions = (att.cumsum(1) - 1).clamp(min=0)  # as in training, whatever the padding
            if embeds is None:
                full = torch.cat([ids.repeat_interleave(n_beams, 0), tokens], dim=1)  # (B * W, T + t)
                out = self.model(input_ids=full, attention_mask=att, position_ids=positions, logits_to_keep=1)
            else:
                x = torch.cat([embeds.repeat_interleave(n_beams, 0), embed_tokens(tokens)], dim=1)
                out = self.model(
                    inputs_embeds=x, attention_mask=att, position_ids=positions, logits_to_keep=1
                )
            k_t = self.index.vocab_sizes[t]
            logits = out.logits[:, -1, table[t, :k_t]].float().view(b, n_beams, k_t)  # (B, W, K_t)
            if lm_w != 1.0:
                logits = logits * lm_w
            if code_queries is not None and head_w != 0.0:
                q = code_queries.repeat_interleave(n_beams, 0)  # (B * W, d_in)
                extra = self.prefix.id_scores(q, t, prefix.reshape(b * n_beams, t))  # (B * W, K_t)
                logits = logits + head_w * extra.view(b, n_beams, k_t)
            return logits

        return step

    @torch.no_grad()
    def recommend(
        self,
        queries: Sequence[str],
        *,
        k: int = 10,
        beam_size: int | None = None,
        batch_size: int = 32,
        query_embeddings: np.ndarray | None = None,
        allow: np.ndarray | None = None,
        backfill: bool = True,
        lm_weight: float = 1.0,
        head_weight: float = 1.0,
    ) -> Recommendations:
        """The ``k`` most likely distinct items for each query (beam search over IDs, ``beam_size >= k``).

        ``query_embeddings``: the ``(Q, d_in)`` encoder vectors of ``queries``, if already computed (a model
        with a prefix embeds them itself otherwise). ``allow``: ``(Q, n_items)`` bool, the items each query
        may get (e.g. :meth:`semid.llm.constraints.RequestFilter.masks`: the brand and price a request
        states); the beam is pruned to them at every level. A query with fewer than ``k`` allowed items
        gets them first, then (``backfill=True``) the best other items of an unrestricted beam, so it
        still gets ``k`` answers; ``backfill=False`` leaves ``-1`` there. ``lm_weight`` / ``head_weight``
        scale the language model's logits and the code head's scores (ablations: ``lm_weight=0`` is the
        code head alone, ``head_weight=0`` the language model without it).
        """
        beam_size = max(k, 20) if beam_size is None else beam_size
        for name, w in (("lm_weight", lm_weight), ("head_weight", head_weight)):
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not (math.isfinite(w) and w >= 0):
                raise SemidError(f"{name}={w!r} should be a finite number >= 0")
        prompts = self.prompts(queries)
        qvecs = self.query_embeddings(queries, query_embeddings)
        if allow is not None:
            allow = np.asarray(allow)
            if allow.dtype != bool or allow.shape != (len(prompts), self.index.n_items):
                raise SemidError(
                    f"allow should be a bool array of shape ({len(prompts)}, {self.index.n_items}), "
                    f"got {allow.dtype} {allow.shape}"
                )
        weights = (float(lm_weight), float(head_weight))

        def run(rows: np.ndarray, restrict: bool) -> tuple[np.ndarray, np.ndarray]:
            items, scores = [], []
            for start in range(0, len(rows), batch_size):
                part = rows[start : start + batch_size]
                chunk = None if qvecs is None else qvecs[part]
                step = self.prompt_step_fn([prompts[i] for i in part], chunk, weights=weights)
                mask = torch.from_numpy(allow[part]) if restrict else None
                res = beam_search(
                    step, self.index, len(part), beam_size=beam_size, k=k, device=self.device, allow=mask
                )
                items.append(res.items.cpu().numpy())
                scores.append(res.scores.cpu().numpy())
            return np.concatenate(items), np.concatenate(scores)

        with self._eval_mode():
            every = np.arange(len(prompts))
            restricted = allow is not None and not allow.all()
            items, scores = run(every, restricted)
            short = np.flatnonzero((items < 0).any(axis=1)) if restricted and backfill else every[:0]
            if len(short):  # fewer than k allowed items: the best others, after them
                backfill_rows(items, scores, short, *run(short, False))
        return Recommendations(items=items, scores=scores)

    def prompt_step_fn(
        self,
        prompts: list[list[int]],
        query_embeddings: np.ndarray | None = None,
        *,
        weights: tuple[float, float] = (1.0, 1.0),
    ) -> StepFn:
        """The language model as a beam-search step over a batch of ``prompts`` (:meth:`prompts`; with a
        prefix, their ``(B, d_in)`` ``query_embeddings``; ``weights``: the language model's and the code
        head's factors). Call it in eval mode (:meth:`eval_mode`)."""
        table = self.vocab.token_ids.to(self.device)
        ids, mask, embeds = self._inputs(prompts, query_embeddings)
        return self._step_fn(ids, mask, embeds, table, self._code_queries(query_embeddings), weights)

    def eval_mode(self) -> contextlib.AbstractContextManager[None]:
        """The model (and prefix) in eval mode for a ``with`` block, then back to how they were."""
        return self._eval_mode()

    @torch.no_grad()
    def generate(
        self,
        queries: Sequence[str],
        *,
        do_sample: bool = False,
        num_return_sequences: int = 1,
        temperature: float = 1.0,
        seed: int | None = None,
        query_embeddings: np.ndarray | None = None,
    ) -> np.ndarray:
        """``(Q, num_return_sequences)`` item rows from ``model.generate`` under the constraint.

        Every setting that could defeat the constraint is passed explicitly, so the model's own
        ``generation_config.json`` (sampling on, repetition penalty, extra EOS ids, suppressed tokens)
        cannot override it; each decoded ID is checked against the trie. With a prefix, ``generate`` gets
        ``inputs_embeds`` for the prompt and the token ids (pad where the prefix sits) as its sequence.
        """
        from transformers import GenerationConfig, LogitsProcessorList

        if not do_sample and num_return_sequences != 1:
            raise SemidError(
                f"num_return_sequences={num_return_sequences} needs do_sample=True (greedy gives one answer; "
                "use recommend() for the top k)"
            )
        prompts = self.prompts(queries)
        qvecs = self.query_embeddings(queries, query_embeddings)
        n_levels = self.vocab.n_levels
        config = GenerationConfig(
            do_sample=do_sample,
            num_beams=1,
            num_return_sequences=num_return_sequences,
            max_new_tokens=n_levels + 1,  # the ID, then EOS
            min_new_tokens=0,
            temperature=temperature if do_sample else None,
            top_k=None,
            top_p=None,
            repetition_penalty=1.0,  # explicit: a None is filled from the model's own config
            no_repeat_ngram_size=0,
            eos_token_id=self.vocab.eos_id,
            pad_token_id=self._pad_id,
        )
        if seed is not None:
            torch.manual_seed(seed)
        with self._eval_mode():
            ids, mask, embeds = self._inputs(prompts, qvecs)
            extra = {} if embeds is None else {"inputs_embeds": embeds}
            code_queries = self._code_queries(qvecs)
            processor = (
                self.processor
                if code_queries is None
                else SemanticIdLogitsProcessor(self.index.trie, self.vocab, (self.prefix, code_queries))
            )
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                generation_config=config,
                logits_processor=LogitsProcessorList([processor]),
                **extra,
            )
        new = out[:, ids.shape[1] : ids.shape[1] + n_levels].cpu()  # (Q * n, <= L)
        if new.shape[1] < n_levels:
            raise SemidError(f"generation stopped after {new.shape[1]} of {n_levels} ID tokens")
        level_of, code_of = self.vocab.level_and_code()
        new = new.clamp(max=level_of.numel() - 1)
        if (level_of[new] != torch.arange(n_levels)).any():
            raise SemidError("the model wrote a token that is not an ID token of its level after [REC]")
        nodes = self.index.trie.walk(code_of[new])
        items = self.index.items_of_leaves(nodes)
        if (items < 0).any():
            raise SemidError("the model wrote an ID that is not in the catalogue")
        return items.numpy().reshape(len(queries), num_return_sequences)
