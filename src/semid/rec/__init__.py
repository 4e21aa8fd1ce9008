"""The rec room: sequence models that recommend the next item, and their evaluation.

- :mod:`~semid.rec.sasrec`: SASRec, causal self-attention over item sequences (the baseline);
- :mod:`~semid.rec.tiger`: TIGER, an encoder-decoder that generates the next item's Semantic ID;
- :mod:`~semid.rec.rpg`: RPG, all digits of a long (product-quantised) ID at once, every item scored exactly;
- :mod:`~semid.rec.beam`: beam search over Semantic IDs, constrained to real items by a prefix trie;
- :mod:`~semid.rec.hybrid`: a generative model's candidates reranked by SASRec's scores (TIGER + SASRec);
- :mod:`~semid.rec.unseen`: items no training sequence holds, added by Semantic-ID prefix (TIGER's cold start);
- :mod:`~semid.rec.evaluate`: leave-one-out Recall/NDCG@5/10 with full ranking, most-popular baseline;
- :mod:`~semid.rec.train`: the shared trainer (validation each epoch, early stopping, resume);
- :mod:`~semid.rec.config`: :class:`TrainConfig`, each model's defaults and run-config files;
- :mod:`~semid.rec.io`: build, save and load models; what a run directory holds; SASRec's item vectors;
- :mod:`~semid.rec.checkpoints`: the checkpointed training state, saved and restored;
- :mod:`~semid.rec.runs`: :func:`evaluate_run`, a run's best model on the test or validation targets
  (:func:`evaluate_hybrid_run`: a generative run reranked by a SASRec run);
- :mod:`~semid.rec.data`: :class:`RecData`, next-item examples and length-bucketed batches.

Names are imported on first use, so ``import semid.rec`` stays light (torch loads with the models). The
functions ``train`` and ``evaluate`` share their modules' names: import them from the modules::

    from semid.rec import RecData, fit, evaluate_run
    data = RecData.from_dataset(load_dataset("data/beauty"), read_ids("ids.parquet"))
    model, result = fit("tiger", data, "runs/tiger")
    print(evaluate_run("runs/tiger", "test"))
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "RecData": "semid.rec.data",
    "SASRec": "semid.rec.sasrec",
    "SASRecConfig": "semid.rec.sasrec",
    "TIGER": "semid.rec.tiger",
    "TIGERConfig": "semid.rec.tiger",
    "RPG": "semid.rec.rpg",
    "RPGConfig": "semid.rec.rpg",
    "HybridRecommender": "semid.rec.hybrid",
    "choose_weight": "semid.rec.hybrid",
    "collect_candidates": "semid.rec.hybrid",
    "evaluate_hybrid_run": "semid.rec.runs",
    "UnseenByPrefix": "semid.rec.unseen",
    "BeamResult": "semid.rec.beam",
    "CodeIndex": "semid.rec.beam",
    "beam_search": "semid.rec.beam",
    "evaluate_most_popular": "semid.rec.evaluate",
    "recall_ndcg": "semid.rec.evaluate",
    "TrainConfig": "semid.rec.config",
    "TrainResult": "semid.rec.train",
    "build_model": "semid.rec.io",
    "evaluate_run": "semid.rec.runs",
    "export_run_embeddings": "semid.rec.io",
    "fit": "semid.rec.train",
    "load_model": "semid.rec.io",
    "save_model": "semid.rec.io",
    "train_demo_tiger": "semid.rec.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'semid.rec' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
