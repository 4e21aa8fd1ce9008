"""What every quantizer shares: input checks, the save/load format, and loading by model type.

A quantizer directory holds ``config.json`` (constructor arguments, fitted scalars, ``model_type``,
``fingerprint``) and ``model.safetensors`` (every array). No pickle: a directory written on one machine
loads on any other and gives bit-identical codes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from semid._outputs import holds_only
from semid._utils import atomic_path, fingerprint_arrays, read_json_mapping, resolve_device
from semid.errors import NotFittedError, SemidError, first_line

if TYPE_CHECKING:
    from semid.quantize.collab import Fusion

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

_MODEL_TYPES: dict[str, type[BaseQuantizer]] = {}
# Where each model type is defined: imported on demand by `from_pretrained`, so loading needs no import.
_MODEL_MODULES = {
    "rq-kmeans": "semid.quantize.rq_kmeans",
    "rq-vae": "semid.quantize.rq_vae",
    "pq": "semid.quantize.pq",
}


def per_level_sizes(codebook_size: Any, n: Any, name: str, unit: str) -> list[int]:
    """Codes per level from ``codebook_size`` (one int for every level, or one per level) and the number of
    levels ``n`` (the parameter ``name``; ``unit`` names a level in messages). One clear error each."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SemidError(f"{name}={n!r} should be an integer >= 1")
    if isinstance(codebook_size, (int, np.integer)) and not isinstance(codebook_size, bool):
        sizes = [int(codebook_size)] * int(n)
    else:
        ok = isinstance(codebook_size, (list, tuple, np.ndarray)) and all(
            isinstance(k, (int, np.integer)) and not isinstance(k, bool) for k in codebook_size
        )
        if not ok:
            raise SemidError(f"codebook_size={codebook_size!r} should be an integer or a list of integers")
        sizes = [int(k) for k in codebook_size]
        if len(sizes) != n:
            raise SemidError(
                f"codebook_size has {len(sizes)} entries ({sizes}), expected one per {unit} ({name}={n})"
            )
    for k in sizes:
        if k < 2:
            raise SemidError(f"codebook_size={k} should be >= 2")
    return sizes


def as_float_matrix(X: Any, *, name: str = "X") -> np.ndarray:
    """Validate and convert input to a C-contiguous float32 (n, D) array; one clear error line otherwise."""
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    try:
        X = np.asarray(X)
    except ValueError:  # rows of different lengths
        raise SemidError(
            f"{name} has rows of different lengths, expected a 2-D matrix (n_items, dim)"
        ) from None
    if X.dtype == object or not np.issubdtype(X.dtype, np.number) or np.iscomplexobj(X):
        raise SemidError(f"{name} has dtype {X.dtype}, expected a real numeric matrix")
    if X.ndim != 2 or X.shape[1] == 0:
        raise SemidError(f"{name} has shape {X.shape}, expected a 2-D matrix (n_items, dim >= 1)")
    X = np.ascontiguousarray(X, dtype=np.float32)
    finite = np.isfinite(X).all(1)
    if not finite.all():
        row = int(np.argmin(finite))
        what = "NaN" if np.isnan(X[row]).any() else "inf"
        raise SemidError(f"{name} row {row}: contains {what}")
    return X


class BaseQuantizer:
    """Mixin: fitted checks, ``fit_encode``, ``save_pretrained`` / ``from_pretrained``.

    Subclasses set ``model_type``, implement ``fit``, ``encode``, ``decode``, ``_get_config``,
    ``_get_arrays`` and ``_set_state``, and list fitted attributes in ``_fitted_attrs``.
    """

    model_type: ClassVar[str] = ""
    _fitted_attrs: ClassVar[tuple[str, ...]] = ()
    # set when the model was fitted on text embeddings fused with collaborative vectors
    # (semid.quantize.collab.fit_fused); saved in config.json so that new items get the same input
    fusion_: Fusion | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.model_type:
            _MODEL_TYPES[cls.model_type] = cls

    # -- checks ---------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not all(hasattr(self, a) for a in self._fitted_attrs):
            raise NotFittedError(
                f"This {type(self).__name__} is not fitted yet; call fit(X) or load one with from_pretrained(dir)"
            )

    def _check_dim(self, X: np.ndarray) -> None:
        if X.shape[1] != self.n_features_in_:
            raise SemidError(
                f"X has {X.shape[1]} features, but {type(self).__name__} was fitted with {self.n_features_in_}"
            )

    # -- surface shared by all quantizers -------------------------------------------------------
    def fit_encode(self, X: Any, **kwargs: Any) -> np.ndarray:
        """``fit(X)`` then ``encode(X)``; the codes equal those a later ``encode(X)`` returns."""
        return self.fit(X).encode(X, **kwargs)

    @property
    def fingerprint_(self) -> str:
        """A content hash of the fitted model: an ID registry is bound to it."""
        self._check_fitted()
        return fingerprint_arrays(self._get_arrays())

    @property
    def codebook_sizes_(self) -> list[int]:
        raise NotImplementedError

    def _check_codes(self, codes: Any) -> np.ndarray:
        """Validate codes for ``decode``: (n, >= L) integers inside each level's codebook; drops a suffix level."""
        codes = np.asarray(codes)
        sizes = self.codebook_sizes_
        L = len(sizes)
        if codes.ndim != 2 or codes.shape[1] < L or not np.issubdtype(codes.dtype, np.integer):
            raise SemidError(
                f"codes have shape {codes.shape} and dtype {codes.dtype}, expected integers (n, {L})"
            )
        codes = codes[:, :L]  # a dedup suffix level, if any, carries no vector
        for level, K in enumerate(sizes):
            col = codes[:, level]
            bad = (col < 0) | (col >= K)
            if bad.any():
                row = int(np.argmax(bad))
                raise SemidError(f"codes row {row}: level {level} code {int(col[row])} is outside [0, {K})")
        return codes

    # -- persistence ----------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` + ``model.safetensors`` to ``directory`` atomically."""
        from safetensors.numpy import save_file

        self._check_fitted()
        directory = Path(directory)
        arrays = {k: np.ascontiguousarray(v) for k, v in self._get_arrays().items()}
        config = {
            "model_type": self.model_type,
            "semid_version": _version(),
            "fingerprint": fingerprint_arrays(arrays),
            **self._get_config(),
        }
        if self.fusion_ is not None:
            config["fusion"] = self.fusion_.to_dict()
        with atomic_path(
            directory, is_dir=True, replaceable=is_quantizer_dir, what="a quantizer directory"
        ) as tmp:
            save_file(arrays, str(tmp / WEIGHTS_NAME), metadata={"model_type": self.model_type})
            (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, device: str = "auto") -> BaseQuantizer:
        """Load a quantizer saved with :meth:`save_pretrained` (checks type and fingerprint)."""
        from safetensors.numpy import load_file

        resolve_device(device)  # the caller's: a bad one is not blamed on config.json below
        config, path = _read_config(directory)
        model_type = config.get("model_type")
        if not isinstance(model_type, str):
            raise SemidError(f"{path / CONFIG_NAME}: unknown model_type {model_type!r}")
        if model_type not in _MODEL_TYPES and model_type in _MODEL_MODULES:
            import importlib

            importlib.import_module(_MODEL_MODULES[model_type])
        klass = _MODEL_TYPES.get(model_type)
        if klass is None:
            raise SemidError(f"{path / CONFIG_NAME}: unknown model_type {model_type!r}")
        if cls is not BaseQuantizer and not issubclass(klass, cls):
            raise SemidError(f"{path} holds a {model_type!r} model, not a {cls.__name__}")
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise SemidError(f"{weights}: no such file (a quantizer directory needs {WEIGHTS_NAME})")
        try:
            arrays = load_file(str(weights))
        except Exception as e:  # safetensors raises its own error types for damaged files
            raise SemidError(f"{weights}: cannot read weights ({e})") from None
        fp = fingerprint_arrays(arrays)
        if config.get("fingerprint") not in (None, fp):
            raise SemidError(
                f"{weights}: weights fingerprint {fp} does not match config.json ({config['fingerprint']})"
            )
        try:  # a config.json edited by hand: its values are checked as a new model's would be
            model = klass._from_config(config, device=device)
            if hasattr(model, "_validate_params"):
                model._validate_params()
            model._set_state(arrays, config)
        except SemidError as e:
            raise SemidError(f"{path / CONFIG_NAME}: {e}") from None
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise SemidError(
                f"{path / CONFIG_NAME}: not a readable {model_type} model ({type(e).__name__}: {first_line(e)})"
            ) from None
        if config.get("fusion") is not None:
            from semid.quantize.collab import Fusion

            model.fusion_ = Fusion.from_dict(config["fusion"], source=str(path / CONFIG_NAME))
        return model

    @classmethod
    def _from_config(cls, config: dict[str, Any], *, device: str) -> BaseQuantizer:
        raise NotImplementedError

    def _get_config(self) -> dict[str, Any]:
        raise NotImplementedError

    def _get_arrays(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _set_state(self, arrays: dict[str, np.ndarray], config: dict[str, Any]) -> None:
        raise NotImplementedError


# What a quantizer directory holds: save_pretrained's two files and the training curves `semid fit` copies.
QUANTIZER_FILES = frozenset({CONFIG_NAME, WEIGHTS_NAME, "metrics.jsonl"})


def is_quantizer_dir(directory: str | os.PathLike) -> bool:
    """True for a directory :meth:`BaseQuantizer.save_pretrained` wrote and nothing else wrote into (what
    ``semid fit`` may replace): a registry or a report a user put beside the model keeps it from being
    replaced."""
    return holds_only(QUANTIZER_FILES, check=_holds_quantizer_config)(Path(directory))


def _holds_quantizer_config(directory: Path) -> bool:
    config = json.loads((directory / CONFIG_NAME).read_text())
    return isinstance(config, dict) and config.get("model_type") in _MODEL_MODULES


def _read_config(directory: str | os.PathLike) -> tuple[dict[str, Any], Path]:
    path = Path(directory)
    if not path.exists():
        raise SemidError(f"{path}: no such model directory")
    if not path.is_dir():
        raise SemidError(f"{path}: not a model directory (expected {CONFIG_NAME} + {WEIGHTS_NAME})")
    cfg = path / CONFIG_NAME
    if not cfg.is_file():
        raise SemidError(f"{cfg}: no such file (not a semid model directory?)")
    return read_json_mapping(cfg), path  # damaged, not UTF-8 or not an object: one error naming the file


def load_quantizer(directory: str | os.PathLike, *, device: str = "auto") -> BaseQuantizer:
    """Load any semid quantizer (RQ-KMeans, RQ-VAE, PQ) from its directory."""
    return BaseQuantizer.from_pretrained(directory, device=device)


def _version() -> str:
    from semid import __version__

    return __version__
