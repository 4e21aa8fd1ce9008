"""The llm room: a language model that answers natural-language requests with Semantic IDs of real items.

- :mod:`~semid.llm.examples`: training data (query -> ``[REC]`` + ID, attribute questions, next item).
- :mod:`~semid.llm.model`: tokenizer with ID tokens, scratch Llama or a base model, LoRA, save/load.
- :mod:`~semid.llm.prefix`: the query's sentence embedding (packaged MiniLM) as soft-prompt vectors in
  front of the prompt (:class:`QueryPrefix`, on by default in training).
- :mod:`~semid.llm.train`: the training loop (:class:`TrainConfig`, :func:`train_llm`).
- :mod:`~semid.llm.generate`: constrained generation (:class:`SemanticIdLogitsProcessor`) and top-k
  recommendation (:class:`QueryRecommender`).
- :mod:`~semid.llm.constraints`: the brand and price a request states, read from its text, as the set of
  items decoding may return (:class:`RequestFilter`; ``QueryRecommender.recommend(allow=...)``).
- :mod:`~semid.llm.attributes`: ID -> attribute: the model names an item's brand, category and price range
  from its Semantic ID (:func:`describe`), scored against the catalogue with a majority baseline
  (:func:`attribute_accuracy`).
- :mod:`~semid.llm.personal`: a request and a user's history in one beam search, with TIGER
  (:class:`PersonalisedSearch`).
- :mod:`~semid.llm.requests`: flexible requests with set-based relevance over catalogue fields, and their
  metrics (the benchmark of ``bench/flex_requests.py``).

Names are imported on first use, so ``import semid.llm`` does not load transformers.

Example::

    from semid.llm import QueryRecommender, filter_for, load_llm

    llm = load_llm("llm_model/")
    rec, flt = QueryRecommender.from_llm(llm), filter_for(llm)   # filter: brand / price the request states
    queries = ["a matte red lipstick under $10"]
    rec.recommend(queries, k=10, allow=flt.masks(queries) if flt else None).items
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "REC_TOKEN": "examples",
    "ExampleConfig": "examples",
    "Examples": "examples",
    "build_examples": "examples",
    "prepare_dataset": "examples",
    "LLM": "model",
    "ScratchConfig": "model",
    "SemanticVocab": "model",
    "add_semantic_tokens": "model",
    "apply_lora": "model",
    "load_base_model": "model",
    "load_llm": "model",
    "save_llm": "model",
    "scratch_model": "model",
    "train_tokenizer": "model",
    "PrefixConfig": "prefix",
    "QueryPrefix": "prefix",
    "load_query_encoder": "prefix",
    "TrainConfig": "train",
    "TrainResult": "train",
    "train_llm": "train",
    "QueryRecommender": "generate",
    "Recommendations": "generate",
    "SemanticIdLogitsProcessor": "generate",
    "RequestFilter": "constraints",
    "filter_for": "constraints",
    "ATTRIBUTES": "attributes",
    "AttributeScore": "attributes",
    "attribute_accuracy": "attributes",
    "describe": "attributes",
    "PersonalisedSearch": "personal",
    "Constraint": "requests",
    "Request": "requests",
    "load_requests": "requests",
    "make_requests": "requests",
    "save_requests": "requests",
    "score_requests": "requests",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"semid.llm.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'semid.llm' has no attribute {name!r}")
