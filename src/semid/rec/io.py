"""Model I/O of a run (or model) directory: build a model, save and load its weights and ``config.json``.

What a run directory holds (each file written atomically)::

    run_dir/config.json             model type, model config, training config, data summary
    run_dir/model.safetensors       the best weights so far (by validation NDCG@10)
    run_dir/items.parquet           the item universe (ids, titles, Semantic IDs) ...
    run_dir/sequences.parquet       ... and the users' sequences: evaluation needs nothing else
    run_dir/metrics.jsonl           one JSON object per epoch (loss, lr, validation metrics, speed)
    run_dir/tensorboard/            the same scalars, when tensorboard is installed
    run_dir/checkpoints/last/       state.safetensors (weights, optimizer tensors, RNG) + trainer.json
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from semid._utils import atomic_path, read_json_mapping, resolve_device
from semid.errors import SemidError, first_line
from semid.rec.config import CODED, MODELS, config_from_dict, scaled_shape
from semid.rec.data import RecData, check_run_files
from semid.rec.sasrec import SASRec

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
METRICS_NAME = "metrics.jsonl"
STATE_NAME = "state.safetensors"
TRAINER_NAME = "trainer.json"
EMBEDDINGS_NAME = "item_embeddings.parquet"
LAST = Path("checkpoints") / "last"


# --------------------------------------------------------------------------------------------------------
# Models: build, save, load
# --------------------------------------------------------------------------------------------------------


def build_model(model_type: str, data: RecData, **overrides: Any) -> nn.Module:
    """A fresh model for ``data``: the defaults (scaled to the data's size, :func:`~semid.rec.config.scaled_shape`),
    the data's sizes, then ``overrides``."""
    if model_type not in MODELS:
        raise SemidError(f"model {model_type!r} is not one of {', '.join(map(repr, MODELS))}")
    klass, config_cls = MODELS[model_type]
    fixed = {"n_items": data.n_items}
    if model_type in CODED:
        if data.codes is None:
            raise SemidError(f"{klass.__name__} needs the items' Semantic IDs: give --ids ids.parquet")
        fixed["codebook_sizes"] = [int(c) + 1 for c in data.codes.max(axis=0)]
        given = overrides.get("codebook_sizes")
        if given is not None:  # wider vocabularies are fine (e.g. the quantizer's K), narrower ones are not
            if len(given) != len(fixed["codebook_sizes"]) or any(
                g < f for g, f in zip(given, fixed["codebook_sizes"], strict=True)
            ):
                raise SemidError(
                    f"codebook_sizes={given} do not fit the IDs (levels need at least {fixed['codebook_sizes']})"
                )
            fixed["codebook_sizes"] = list(given)
    for key in ("n_items",):
        if key in overrides and overrides[key] != fixed[key]:
            raise SemidError(f"{key}={overrides[key]} does not match the data ({fixed[key]})")
    scaled = scaled_shape(model_type, data.n_train_targets)
    config = config_from_dict(config_cls, {**scaled, **overrides, **fixed}, source=f"{model_type} config")
    return klass(config, data.codes) if model_type in CODED else klass(config)


def save_model(model: nn.Module, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` (``model_type``, ``model`` config, plus ``extra``)
    into a new directory or a run's own (never over another folder's files of those names)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    check_run_files(directory, (WEIGHTS_NAME, CONFIG_NAME))  # a run's or a model's own folder, or a new one
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp))
    _write_config(directory, model, extra or {})
    return directory


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The ``config.json`` of a run (or model) directory."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise SemidError(f"{path}: no such file (is {directory} a semid run directory?)")
    config = read_json_mapping(path)  # damaged, not UTF-8 or not an object: one error naming the file
    if not isinstance(config.get("model_type"), str) or config["model_type"] not in MODELS:
        raise SemidError(f"{path}: unknown model_type {config.get('model_type')!r}")
    if not isinstance(config.get("model"), dict):
        raise SemidError(f"{path}: no 'model' section (the model's configuration)")
    return config


def _model_from(
    model_type: str, model_config: dict[str, Any], tensors: dict[str, torch.Tensor], where: Path
) -> nn.Module:
    klass = MODELS[model_type][0]
    try:
        return klass.from_state(model_config, tensors)  # type: ignore[attr-defined]
    except (RuntimeError, TypeError) as e:
        raise SemidError(f"{where}: weights do not fit the config ({first_line(e)})") from None


def load_model(directory: str | os.PathLike, device: str = "cpu") -> nn.Module:
    """The model saved in ``directory`` (the best weights of a run), in eval mode on ``device``."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config = read_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise SemidError(f"{weights}: no such file (the run has not finished an epoch yet)")
    try:
        tensors = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types for damaged files
        raise SemidError(f"{weights}: cannot read weights ({e})") from None
    broken = [k for k, t in tensors.items() if t.is_floating_point() and not torch.isfinite(t).all()]
    if broken:  # every score would be NaN: no ranking, and no error later to say why
        raise SemidError(
            f"{weights}: {len(broken)} weight tensors hold NaN or infinite values (e.g. {broken[0]}); "
            "the training diverged, or the file was damaged"
        )
    model = _model_from(config["model_type"], config["model"], tensors, weights)
    return model.to(resolve_device(device)).eval()


def _write_config(run_dir: Path, model: nn.Module, extra: dict[str, Any]) -> None:
    path = run_dir / CONFIG_NAME
    old = read_json_mapping(path) if path.is_file() else {}
    config = {**old, **extra, "model_type": model.model_type, "model": model.config.to_dict()}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def untrained_items(data: RecData) -> np.ndarray | None:
    """(n_items,) bool: the items in no training sequence (cold items, items nobody interacted with). Their
    SASRec vectors learned no co-occurrence: they were only ever negatives. None for a streamed run (its
    sequences are not in memory)."""
    if data.log is not None:
        return None
    seen = np.zeros(data.n_items, dtype=bool)
    seen[data.split.train.items] = True
    return ~seen


def export_item_embeddings(
    model: SASRec, data: RecData, path: str | os.PathLike, *, impute_from: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Write SASRec's item vectors as an embeddings file (``item_id`` + ``embedding``), e.g. for an RQ-VAE.

    Every item of the run gets its row, trained or not, so the file covers the catalogue the IDs are fitted
    on; the schema metadata (:func:`semid.embed.store.read_metadata`) counts the untrained ones.

    ``impute_from``: a text embeddings file covering the run's items. The untrained items' rows (only ever
    negatives) are then predicted from their text instead (:func:`semid.quantize.collab.impute_from_text`,
    fitted on the trained items), and the file's items the run lacks (new items) are added, predicted the
    same way, so fused IDs place them by their text and their text neighbours' behaviour. Returns
    ``{"n_items", "dim", "untrained_items", "new_items", "imputation"}`` (the last None without
    ``impute_from``).
    """
    from semid.embed.store import read_embeddings, write_embeddings

    untrained = untrained_items(data)
    n_untrained = None if untrained is None else int(untrained.sum())
    ids, vectors = data.item_ids.astype(str), model.item_embeddings()
    meta = {"model_type": model.model_type, "dim": model.config.d_model}
    if n_untrained is not None:
        meta["untrained_items"] = n_untrained
    res: dict[str, Any] = {
        "n_items": data.n_items,
        "dim": model.config.d_model,
        "untrained_items": n_untrained,
    }
    res.update(new_items=0, imputation=None)
    if impute_from is not None:
        from semid.quantize.collab import align_by_item_id, impute_from_text

        if untrained is None:
            raise SemidError(
                "imputing from text needs the run's sequences in memory to tell trained items from untrained "
                "ones; a run trained on a streamed log does not keep them"
            )
        if Path(impute_from).suffix == ".npy":
            raise SemidError(
                f"{impute_from}: a .npy file holds no item ids; imputing from text needs a .parquet file with "
                "item_id and embedding columns (semid embed writes one)"
            )
        text_ids, X = read_embeddings(impute_from)
        X_run = align_by_item_id(
            ids, text_ids, X, name=str(impute_from), catalogue="the run", allow_extra=True
        )
        is_new = ~np.isin(text_ids.astype(str), ids)  # the items the run never saw, in the file's order
        new = text_ids[is_new].astype(str)
        X_run = np.vstack([X_run, X[is_new]])
        ids = np.concatenate([ids, new])
        vectors = np.vstack([vectors, np.zeros((len(new), vectors.shape[1]), dtype=vectors.dtype)])
        known = np.concatenate([~untrained, np.zeros(len(new), dtype=bool)])
        vectors, imputation = impute_from_text(X_run, vectors, known)
        meta.update(imputed_items=imputation.n_imputed, new_items=len(new), imputation=imputation.describe())
        res.update(n_items=len(ids), new_items=len(new), imputation=imputation)
    write_embeddings(path, ids, vectors, metadata=meta)
    return res


def load_sasrec_run(run_dir: str | os.PathLike) -> tuple[SASRec, RecData]:
    """A SASRec run's best model and its data: ``model.item_embeddings()`` row ``i`` is ``data.item_ids[i]``.
    Another kind of run is an error (only SASRec learns one vector per item)."""
    run_dir = Path(run_dir)
    model_type = read_config(run_dir)["model_type"]
    if model_type != "sasrec":
        raise SemidError(
            f"{run_dir} holds a {model_type} run; only SASRec learns one vector per item "
            "(semid train sasrec DATA -o RUN)"
        )
    model = load_model(run_dir)
    data = RecData.load(run_dir)
    if model.config.n_items != data.n_items:
        raise SemidError(
            f"{run_dir}: the model has {model.config.n_items:,} items, items.parquet {data.n_items:,}"
        )
    return model, data  # type: ignore[return-value]


def export_run_embeddings(
    run_dir: str | os.PathLike, path: str | os.PathLike, *, impute_from: str | os.PathLike | None = None
) -> dict[str, Any]:
    """Write the item vectors of a trained SASRec run (its best weights) to ``path`` (.parquet).

    The file has the layout of ``semid embed``'s (``item_id`` + ``embedding`` list<float32>), one row per
    item of the run (:func:`export_item_embeddings`; with ``impute_from``, the untrained rows predicted from
    the text and the text file's new items added), so ``semid fit --collab/--fuse`` can join it to the text
    embeddings by item id. Returns :func:`export_item_embeddings`'s counts (``untrained_items`` is None for a
    run trained on a streamed log).

    Example::

        export_run_embeddings("runs/sasrec", "sasrec-items.parquet", impute_from="emb.parquet")
    """
    model, data = load_sasrec_run(run_dir)
    return export_item_embeddings(model, data, path, impute_from=impute_from)
