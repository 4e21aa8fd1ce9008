"""ID -> attribute: what the language model says about an item from its Semantic ID alone.

Training (:mod:`semid.llm.examples`) asks, for every item and known field, "What is the brand of
<a_12><b_4><c_9>?" (also its ``category``, the leaf category, and its ``price range``, the price band
phrase) and trains the value as a plain-text answer. :func:`describe` asks the same questions the same way
(system prompt, :func:`~semid.llm.model.prompt_ids`, and for a model with a query prefix the zero query
vector that training gives a request spelling IDs) and decodes greedily; :func:`attribute_accuracy` scores
the answers on a seeded sample of items against the values training used, after
:func:`semid.llm.requests.normalize_text` (case, accents, apostrophes, HTML entities and punctuation do not
count), next to the majority-class baseline.

Example::

    llm = load_llm("llm_model/")
    scores = attribute_accuracy(llm, load_dataset("data/").catalogue, n_items=500)
    scores["brand"].accuracy, scores["brand"].majority
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from semid._utils import check_positive_int
from semid.data.model import Catalogue
from semid.errors import SemidError
from semid.llm.examples import ATTRIBUTE_QUESTIONS, attribute_question, check_ids_cover, id_text, item_facts
from semid.llm.generate import eval_mode
from semid.llm.model import LLM, prompt_ids
from semid.llm.prefix import prepend_prefix, request_embeddings, request_text
from semid.llm.requests import normalize_text

__all__ = ["ATTRIBUTES", "MAX_NEW_TOKENS", "AttributeScore", "attribute_accuracy", "describe"]

ATTRIBUTES: tuple[str, ...] = tuple(ATTRIBUTE_QUESTIONS.values())  # ("brand", "category", "price range")
MAX_NEW_TOKENS = 24  # longer than any brand, leaf category or price band in the catalogues seen so far
_FACT = {label: key for key, label in ATTRIBUTE_QUESTIONS.items()}  # "category" -> ItemFacts.leaf
_FIELD = {"brand": "brand", "leaf": "categories", "band": "price"}  # the catalogue field behind each fact


@dataclass
class AttributeScore:
    """How well the model names one attribute of a seeded sample of items, given only their IDs."""

    attribute: str  # "brand", "category" or "price range"
    n_with_value: int  # catalogue items that have a value (the sample is drawn from them)
    items: np.ndarray  # (n,) catalogue rows asked, ascending
    truths: list[str]  # their values, as the training examples state them
    answers: list[str]  # the model's answers (stripped)
    accuracy: float  # share of answers equal to the truth after normalize_text
    majority_value: str  # the commonest value of all n_with_value items (normalised; ties: first seen)
    majority: float  # accuracy of always answering majority_value, on the same sample

    def to_dict(self) -> dict[str, Any]:
        """The numbers, without the per-item lists (a row of a report)."""
        return {
            "attribute": self.attribute,
            "n_with_value": self.n_with_value,
            "n_asked": len(self.items),
            "accuracy": self.accuracy,
            "majority": self.majority,
            "majority_value": self.majority_value,
        }


def _check_attribute(attribute: str) -> str:
    if attribute not in _FACT:
        valid = ", ".join(repr(a) for a in ATTRIBUTES)
        raise SemidError(f"unknown attribute {attribute!r}: ask for one of {valid}")
    return attribute


def _pad_id(llm: LLM) -> int:
    pad = llm.tokenizer.pad_token_id
    return int(pad) if pad is not None else llm.vocab.eos_id


def _query_vectors(llm: LLM, messages: list[list[dict[str, str]]]) -> np.ndarray | None:
    """``(n, d_in)`` prefix inputs as in training: zeros for a request that spells IDs (every question here)."""
    if llm.prefix is None:
        return None
    texts = [request_text(m) for m in messages]
    if all(t is None for t in texts):
        return np.zeros((len(texts), llm.prefix.d_in), dtype=np.float32)
    return request_embeddings(llm.query_encoder, texts)


def _inputs(
    llm: LLM, prompts: list[list[int]], vectors: np.ndarray | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(ids, mask, inputs_embeds or None)``: left-padded ``(B, T)`` prompts; with a prefix ``(B, P + T)``
    (pad id where the prefix sits) and the ``(B, P + T, H)`` embeddings the model reads instead."""
    pad, width = _pad_id(llm), max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)  # (B, T)
    for r, p in enumerate(prompts):
        ids[r, width - len(p) :] = torch.tensor(p)
        mask[r, width - len(p) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    if vectors is None:
        return ids, mask, None
    vecs = llm.prefix(torch.from_numpy(vectors).to(device))  # (B, P, H)
    embeds, mask, ids = prepend_prefix(llm.model, vecs, ids, mask, pad_id=pad, left_pad=True)
    return ids, mask, embeds


def _generation_config(llm: LLM, max_new_tokens: int) -> Any:
    """Greedy, explicit in every setting the model's ``generation_config.json`` could otherwise change;
    ``[REC]`` and the ID tokens are suppressed (an answer is text, never an ID)."""
    from transformers import GenerationConfig

    table = llm.vocab.token_ids
    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        temperature=None,
        top_k=None,
        top_p=None,
        repetition_penalty=1.0,  # explicit: a None is filled from the model's own config
        no_repeat_ngram_size=0,
        eos_token_id=llm.vocab.eos_id,
        pad_token_id=_pad_id(llm),
        suppress_tokens=[llm.vocab.rec_id, *table[table >= 0].tolist()],
    )


def _decode(llm: LLM, tokens: list[int]) -> str:
    """The answer's text: the tokens up to the first EOS, special tokens dropped, stripped."""
    if llm.vocab.eos_id in tokens:
        tokens = tokens[: tokens.index(llm.vocab.eos_id)]
    return llm.tokenizer.decode(tokens, skip_special_tokens=True).strip()


@torch.no_grad()
def describe(
    llm: LLM,
    items: Sequence[int] | np.ndarray,
    attribute: str,
    *,
    batch_size: int = 64,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> list[str]:
    """The model's answer to "What is the ``attribute`` of <ID>?" for each of ``items`` (rows of ``llm.codes``).

    The question, system prompt and prompt tokens are those of the training examples; the model (and its
    prefix) run in eval mode on their device. Cost: ``ceil(len(items) / batch_size)`` greedy
    ``model.generate`` calls, each at most ``max_new_tokens`` forward passes over its batch.
    """
    label = _check_attribute(attribute)
    check_positive_int("batch_size", batch_size)
    check_positive_int("max_new_tokens", max_new_tokens)
    rows = np.asarray(items).reshape(-1)  # (n,)
    if rows.size and (
        not np.issubdtype(rows.dtype, np.integer) or rows.min() < 0 or rows.max() >= len(llm.codes)
    ):
        raise SemidError(
            f"items should be rows of the model's {len(llm.codes)} items (0 .. {len(llm.codes) - 1})"
        )
    messages = [
        [
            {"role": "system", "content": llm.system_prompt},
            {"role": "user", "content": attribute_question(label, id_text(llm.codes[r]))},
        ]
        for r in rows.tolist()
    ]
    prompts = [prompt_ids(llm.tokenizer, m) for m in messages]
    vectors = _query_vectors(llm, messages)
    config = _generation_config(llm, max_new_tokens)
    device = next(llm.model.parameters()).device
    answers: list[str] = []
    with eval_mode(llm.model, llm.prefix):
        for start in range(0, len(prompts), batch_size):
            chunk = None if vectors is None else vectors[start : start + batch_size]
            ids, mask, embeds = _inputs(llm, prompts[start : start + batch_size], chunk, device)
            extra = {} if embeds is None else {"inputs_embeds": embeds}
            out = llm.model.generate(input_ids=ids, attention_mask=mask, generation_config=config, **extra)
            new = out[:, ids.shape[1] :].cpu()  # (B, <= max_new_tokens): answer, EOS, then padding
            answers += [_decode(llm, row) for row in new.tolist()]
    return answers


def attribute_accuracy(
    llm: LLM,
    catalogue: Catalogue,
    *,
    attributes: Sequence[str] = ATTRIBUTES,
    n_items: int = 1000,
    seed: int = 0,
    batch_size: int = 64,
) -> dict[str, AttributeScore]:
    """Exact-match accuracy of the model's answers per attribute, and the majority-class baseline.

    ``catalogue`` is the one the model was trained on (its items must all be among ``llm.item_ids``); the
    true values are the facts the training examples state (:func:`semid.llm.examples.item_facts`). Per
    attribute, ``min(n_items, items with a value)`` items are drawn without replacement by a generator of
    ``seed`` of its own, so a sample does not depend on which other attributes are asked. Cost: one
    :func:`describe` per attribute, ``ceil(sample / batch_size)`` ``generate`` calls each.
    """
    attributes = (attributes,) if isinstance(attributes, str) else tuple(attributes)
    labels = [_check_attribute(a) for a in attributes]
    check_positive_int("n_items", n_items)
    llm_rows = check_ids_cover(catalogue, np.asarray(llm.item_ids, dtype=object), where="the language model")
    facts = item_facts(catalogue)
    out: dict[str, AttributeScore] = {}
    for label in labels:
        values = [getattr(f, _FACT[label]) for f in facts]  # (n_catalogue,) str or None
        have = np.flatnonzero([v is not None for v in values])
        if not len(have):
            field = _FIELD[_FACT[label]]
            reason = "has no" if field not in catalogue.fields else "has no usable value in its"
            raise SemidError(
                f"no catalogue item has a {label} to ask about: the catalogue {reason} {field!r} field"
            )
        rng = np.random.default_rng(seed)
        rows = np.sort(
            rng.choice(have, size=min(int(n_items), len(have)), replace=False)
        )  # (n,) catalogue rows
        truths = [values[r] for r in rows.tolist()]
        answers = describe(llm, llm_rows[rows], label, batch_size=batch_size)
        norm = [normalize_text(t) for t in truths]
        counts = Counter(normalize_text(values[r]) for r in have.tolist())  # insertion order breaks ties
        top = counts.most_common(1)[0][0]
        out[label] = AttributeScore(
            attribute=label,
            n_with_value=len(have),
            items=rows,
            truths=truths,
            answers=answers,
            accuracy=float(np.mean([normalize_text(a) == t for a, t in zip(answers, norm, strict=True)])),
            majority_value=next(values[r] for r in have.tolist() if normalize_text(values[r]) == top),
            majority=float(np.mean([t == top for t in norm])),
        )
    return out
