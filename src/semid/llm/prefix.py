"""A query-embedding prefix: a sentence encoder's reading of the request, as soft-prompt vectors for the LM.

The Semantic IDs are RQ-KMeans codes of the items' sentence embeddings, so the sentence embedding of a
query already says a lot about which ID to write. Multimodal LMs feed an image encoder's output to the
language model as prefix tokens; here a :class:`QueryPrefix` maps the query's sentence embedding
``(d_in,)`` to ``n_prefix`` vectors of the LM's hidden size, which go in front of the prompt's token
embeddings (``inputs_embeds``). It works with any Hugging Face causal LM that accepts ``inputs_embeds``: the
offline scratch Llama or a base model.

- The encoder (:func:`load_query_encoder`) is any model :func:`semid.embed.load_embedder` can load; the
  default is the packaged all-MiniLM-L6-v2, the model behind the item embeddings. It stays frozen.
- What is embedded (:func:`request_text`): the last user turn, *unless it spells Semantic ID tokens*
  (attribute questions, next-item histories). Those get a zero vector: the prefix is then a constant the
  model learns ("no request"), the same in training and at generation, so every sequence has the same
  layout ``[prefix (n_prefix) | prompt tokens | answer]``.
- :func:`request_embeddings` embeds each distinct request once, in the encoder's batches, and keeps the
  vectors in ``query_emb-<hash>.npy`` (keyed by the encoder's ``name`` and the texts), so epochs and reruns
  do not embed again.
- The *code head* (``code_head=True``, the default): the query vector also scores every ID token, added
  to the LM's logits of the level being written, in training and in both decoders. It holds the items' own
  vectors by the same encoder (:meth:`QueryPrefix.fit_items`) and scores a code by the log-sum-exp of
  the query's scaled cosine over the items below it, which factorizes ``softmax_i(scale * cos(q, x_i))``
  level by level: before any training the model ranks like dense retrieval, and beam search keeps the
  subtrees of the best items. Training adapts the query side (``u + A u``, ``A`` from 0) and a scale per
  level while the LM learns what the embedding misses (attributes, phrasings).

Example::

    enc = load_query_encoder()  # packaged MiniLM, 384-d
    prefix = QueryPrefix(enc.dim, hidden_size=256, config=PrefixConfig(n_prefix=4))
    vecs = prefix(torch.from_numpy(request_embeddings(enc, ["a matte red lipstick"])))  # (1, 4, 256)
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from semid._utils import atomic_path, check_positive_int
from semid.errors import SemidError
from semid.ids import PrefixTrie

__all__ = [
    "PREFIX_FILE",
    "PrefixConfig",
    "QueryEncoder",
    "QueryPrefix",
    "encoder_name",
    "load_query_encoder",
    "prepend_prefix",
    "request_embeddings",
    "request_text",
]

PREFIX_FILE = "query_prefix.safetensors"
_ID_TOKEN_RE = re.compile(r"<[a-z]_\d+>")


@dataclass
class PrefixConfig:
    """Which sentence encoder reads the query and how many prefix vectors it becomes."""

    query_encoder: str | None = None  # local path or hub name; None: the packaged all-MiniLM-L6-v2
    n_prefix: int = 4
    mlp: bool = True  # Linear -> GELU -> Linear; False: a single Linear
    # The query embedding also scores every ID token (QueryPrefix.id_scores): through the items' own
    # embeddings by the same encoder, the model starts off ranking items the way dense retrieval does.
    code_head: bool = True
    code_scale: float = 20.0  # initial inverse temperature of those scores (cosine-scale similarities)
    code_lr_ratio: float = 0.1  # the code head learns at this share of the LM's rate (it starts useful)

    def check(self) -> None:
        check_positive_int("n_prefix", self.n_prefix, numpy_ok=False)
        for name in ("code_scale", "code_lr_ratio"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < float("inf"):
                raise SemidError(f"{name}={v!r} should be a positive number")


class QueryEncoder(Protocol):
    """What the prefix needs of a sentence encoder (:class:`semid.embed.Embedder` is one)."""

    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:  # (n, dim) float32
        ...


class QueryPrefix(nn.Module):
    """``(B, d_in)`` sentence embeddings -> ``(B, n_prefix, hidden_size)`` soft-prompt vectors.

    A Linear (or a 2-layer MLP with GELU) to ``n_prefix * hidden_size``, then LayerNorm per vector (unit
    gain: every block of a pre-norm LM reads its input through RMSNorm, so the prefix does not swamp the
    ~0.02-RMS tokens; starting the gain at the tokens' scale learnt clearly slower in the synthetic test).
    """

    def __init__(
        self,
        d_in: int,
        hidden_size: int,
        config: PrefixConfig | None = None,
        *,
        encoder_name: str = "",
        codebook_sizes: Sequence[int] | None = None,
        n_items: int = 0,
    ) -> None:
        super().__init__()
        self.config = config or PrefixConfig()
        self.config.check()
        if d_in < 1 or hidden_size < 1:
            raise SemidError(f"d_in={d_in} and hidden_size={hidden_size} should be positive")
        self.d_in, self.hidden_size, self.n_prefix = int(d_in), int(hidden_size), self.config.n_prefix
        self.encoder_name = encoder_name  # identity of the encoder the prefix was trained with
        out = self.n_prefix * self.hidden_size
        self.proj = (
            nn.Sequential(nn.Linear(d_in, hidden_size), nn.GELU(), nn.Linear(hidden_size, out))
            if self.config.mlp
            else nn.Linear(d_in, out)
        )
        self.norm = nn.LayerNorm(hidden_size)
        self.codebook_sizes: tuple[int, ...] = ()
        if self.config.code_head and codebook_sizes:  # the head needs the IDs' codebook sizes
            self.codebook_sizes = tuple(int(k) for k in codebook_sizes)
            n_levels = len(self.codebook_sizes)
            # the catalogue, set by fit_items: unit item vectors by the query encoder, and their IDs
            self.register_buffer("item_vectors", torch.zeros(n_items, d_in))  # (n, d_in)
            self.register_buffer("item_codes", torch.zeros(n_items, n_levels, dtype=torch.long))  # (n, L)
            self.code_adapter = nn.Linear(d_in, d_in, bias=False)  # q + A q; A starts at 0, decays to 0
            nn.init.zeros_(self.code_adapter.weight)
            self.code_log_scale = nn.Parameter(torch.full((n_levels,), math.log(self.config.code_scale)))
            self._tree: tuple[torch.device, PrefixTrie, list[torch.Tensor]] | None = None

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        self._check(query)
        x = self.proj(query.to(self.norm.weight.dtype))  # (B, P * H)
        return self.norm(x.view(query.shape[0], self.n_prefix, self.hidden_size))  # (B, P, H)

    def _check(self, query: torch.Tensor) -> None:
        if query.ndim != 2 or query.shape[1] != self.d_in:
            raise SemidError(f"query embeddings have shape {tuple(query.shape)}, expected (n, {self.d_in})")

    @property
    def has_code_head(self) -> bool:
        return bool(self.codebook_sizes)

    def _tree_on(self, device: torch.device) -> tuple[PrefixTrie, list[torch.Tensor]]:
        """The trie of the items' IDs and, per level ``l``, each item's node at depth ``l + 1``."""
        if self._tree is None or self._tree[0] != device:
            trie = PrefixTrie(self.item_codes.cpu().numpy(), self.codebook_sizes).to(device)
            codes = self.item_codes.to(device)
            nodes = [trie.walk(codes[:, : lv + 1]) for lv in range(len(self.codebook_sizes))]
            self._tree = (device, trie, nodes)
        return self._tree[1], self._tree[2]

    def id_scores(self, query: torch.Tensor, level: int, written: torch.Tensor) -> torch.Tensor:
        """``(R, K_level)``: what each query gives every code of ``level`` after the ``written`` ``(R, level)``
        codes; added to the LM's logits of those ID tokens, in training and in both decoders.

        The score of code ``k`` is ``logsumexp`` over the items whose ID starts with ``written + [k]`` of
        ``scale_l * u' . x_i``, with ``u' = u + A u``, ``u`` the unit query and ``x_i`` the unit item vectors
        (:meth:`fit_items`). Its softmax over ``k`` is exactly the next-code marginal of the distribution
        ``softmax_i(scale * u' . x_i)`` over items, so the levels' log-softmaxes sum to that distribution's
        log-probability of each item: an untrained model already ranks like dense retrieval, and beam
        search keeps the subtrees holding the best items. Training adapts ``A`` and the per-level scales
        while the LM learns what the embedding misses. A code no item continues scores 0 (the constraint
        masks it); a zero query (a request that spells IDs) scores the same for every item.
        """
        if not self.has_code_head:
            raise SemidError("this prefix has no code head (code_head=False)")
        self._check(query)
        trie, item_nodes = self._tree_on(query.device)
        u = nn.functional.normalize(query.to(self.item_vectors.dtype), dim=1)  # (R, d_in)
        u = u + self.code_adapter(u)
        z = (u @ self.item_vectors.T) * self.code_log_scale[level].exp()  # (R, n) item scores
        node = item_nodes[level]  # (n,) each item's node at depth level + 1
        n_nodes = int(node.max()) + 1 if node.numel() else 1
        idx = node.expand_as(z)
        top = torch.full((z.shape[0], n_nodes), -torch.inf, device=z.device)
        top = top.scatter_reduce(1, idx, z.detach(), "amax")  # (R, N) shift for a stable logsumexp
        mass = torch.zeros_like(top).scatter_add(1, idx, (z - top.gather(1, idx)).exp())
        lse = top + mass.clamp_min(1e-30).log()  # (R, N) logsumexp of each node's items
        k = self.codebook_sizes[level]
        parent = trie.walk(written) if level else trie.root(z.shape[0], device=z.device)  # (R,)
        codes = torch.arange(k, device=z.device).repeat(z.shape[0])  # (R * K,)
        child = trie.step(parent.repeat_interleave(k), level, codes).view(-1, k)  # (R, K), -1: no such ID
        scores = lse.gather(1, child.clamp(min=0))
        return torch.where(child >= 0, scores, torch.zeros_like(scores))

    @torch.no_grad()
    def fit_items(self, item_embeddings: np.ndarray, codes: np.ndarray) -> None:
        """Give the code head its catalogue: ``item_embeddings`` (n, d_in) by this prefix's encoder (stored as
        unit vectors) and ``codes`` (n, L), their unique Semantic IDs (RQ-KMeans, RQ-VAE, any dedup)."""
        if not self.has_code_head:
            raise SemidError("this prefix has no code head (code_head=False)")
        X = np.asarray(item_embeddings, dtype=np.float32)
        codes = np.asarray(codes, dtype=np.int64)
        n_levels = len(self.codebook_sizes)
        if X.ndim != 2 or X.shape[1] != self.d_in:
            raise SemidError(f"item embeddings have shape {X.shape}, expected (n, {self.d_in})")
        if codes.shape != (X.shape[0], n_levels):
            raise SemidError(f"codes have shape {codes.shape}, expected ({X.shape[0]}, {n_levels})")
        if len(codes) and ((codes < 0).any() or (codes >= np.array(self.codebook_sizes)).any()):
            raise SemidError(f"codes fall outside the codebook sizes {list(self.codebook_sizes)}")
        if len(np.unique(codes, axis=0)) != len(codes):
            raise SemidError("the codes are not unique: two items share an ID")
        device = self.item_vectors.device
        self.item_vectors = nn.functional.normalize(torch.from_numpy(X), dim=1).to(device)
        self.item_codes = torch.from_numpy(codes).to(device)
        self._tree = None

    def to_json(self) -> dict[str, Any]:
        """What :meth:`from_json` needs, for the model directory's ``semid_llm.json``."""
        return {
            **asdict(self.config),
            "code_head": self.has_code_head,  # what was built (a head needs the codebook sizes)
            "d_in": self.d_in,
            "hidden_size": self.hidden_size,
            "encoder_name": self.encoder_name,
            "codebook_sizes": list(self.codebook_sizes),
            "n_items": int(self.item_vectors.shape[0]) if self.has_code_head else 0,
        }

    @classmethod
    def from_json(cls, meta: dict[str, Any]) -> QueryPrefix:
        config = PrefixConfig(
            query_encoder=meta.get("query_encoder"),
            n_prefix=int(meta["n_prefix"]),
            mlp=bool(meta["mlp"]),
            code_head=bool(meta.get("code_head", False)),  # directories from before the code head
            code_scale=float(meta.get("code_scale", PrefixConfig.code_scale)),
            code_lr_ratio=float(meta.get("code_lr_ratio", PrefixConfig.code_lr_ratio)),
        )
        return cls(
            int(meta["d_in"]),
            int(meta["hidden_size"]),
            config,
            encoder_name=meta["encoder_name"],
            codebook_sizes=meta.get("codebook_sizes"),
            n_items=int(meta.get("n_items", 0)),
        )

    def save(self, path: str | os.PathLike) -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(path))

    def load(self, path: str | os.PathLike) -> QueryPrefix:
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise SemidError(f"{path}: no such file (the model's {PREFIX_FILE} is missing)")
        try:
            self.load_state_dict(load_file(str(path)))
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0]
            raise SemidError(f"{path}: does not fit the prefix in semid_llm.json ({first})") from None
        return self


def load_query_encoder(source: str | os.PathLike | None = None, *, device: str = "cpu") -> Any:
    """The prefix's sentence encoder: ``None`` is the packaged all-MiniLM-L6-v2 (offline), else a local
    directory or a hub name, as for ``semid embed``. Uses torch's current thread count.

    A path that does not exist raises one line: ``query encoder: /x: no such model directory ...``.
    """
    try:
        from semid.embed.backends import load_embedder

        return load_embedder(source, device=device, num_threads=torch.get_num_threads())
    except SemidError as e:
        raise SemidError(f"query encoder: {e}") from None


def encoder_name(encoder: Any) -> str:
    """The encoder's identity (its ``name``: model files and options), which keys the embedding cache."""
    return str(getattr(encoder, "name", None) or type(encoder).__qualname__)


def request_text(messages: Sequence[dict[str, str]] | str) -> str | None:
    """The natural-language request of a chat (its last user turn) or of a query string; ``None`` when it
    spells Semantic ID tokens (``"What is the brand of <a_1><b_2>?"``): those get a zero vector."""
    if isinstance(messages, str):
        text = messages
    else:
        users = [m["content"] for m in messages if m.get("role") == "user"]
        text = users[-1] if users else ""
    if not text.strip() or _ID_TOKEN_RE.search(text):
        return None
    return text


def request_embeddings(
    encoder: QueryEncoder, requests: Sequence[str | None], *, cache_dir: str | os.PathLike | None = None
) -> np.ndarray:
    """``(n, dim)`` float32: the encoder's vector of each request, zeros where it is ``None``.

    Each distinct text is embedded once. With ``cache_dir`` the vectors are kept in
    ``cache_dir/query_emb-<sha256 of encoder name and texts>.npy`` and read back on the next call (a
    directory that cannot be written only means no cache).
    """
    unique = list(dict.fromkeys(t for t in requests if t is not None))
    vecs, path = None, None
    if cache_dir is not None and unique:
        h = hashlib.sha256(encoder_name(encoder).encode())
        for text in unique:
            h.update(b"\0" + text.encode())
        path = Path(cache_dir) / f"query_emb-{h.hexdigest()[:16]}.npy"
        if path.is_file():
            try:
                vecs = np.load(path, allow_pickle=False)
            except (OSError, ValueError):
                vecs = None
            if vecs is not None and (vecs.ndim != 2 or len(vecs) != len(unique)):
                vecs = None
    if vecs is None:
        vecs = np.asarray(encoder.encode(unique), dtype=np.float32) if unique else None
        if vecs is not None and path is not None:
            try:
                with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                    np.save(fh, vecs)
            except OSError:
                pass
    dim = int(vecs.shape[1]) if vecs is not None else int(encoder.dim)
    if vecs is not None and vecs.shape != (len(unique), dim):
        raise SemidError(f"the query encoder returned shape {vecs.shape} for {len(unique)} texts")
    out = np.zeros((len(requests), dim), dtype=np.float32)  # (n, d)
    if vecs is not None:
        row = {t: r for r, t in enumerate(unique)}
        where = [i for i, t in enumerate(requests) if t is not None]
        out[where] = vecs[[row[requests[i]] for i in where]]
    return out


def prepend_prefix(
    model: Any,
    prefix: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    pad_id: int,
    left_pad: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(inputs_embeds, attention_mask, input_ids)`` with the ``(B, P, H)`` prefix vectors before the tokens.

    The returned ids hold ``pad_id`` where the prefix sits (what ``generate`` keeps as the running sequence;
    the model reads the embeddings). ``left_pad=True`` (generation) moves each row's padding in front of its
    prefix, so rows stay left-padded as Hugging Face expects; ``False`` (training, right padding) just
    concatenates.
    """
    tokens = model.get_input_embeddings()(input_ids)  # (B, T, H)
    b, p = prefix.shape[:2]
    embeds = torch.cat([prefix.to(tokens.dtype), tokens], dim=1)  # (B, P + T, H)
    mask = torch.cat([attention_mask.new_ones(b, p), attention_mask], dim=1)  # (B, P + T)
    ids = torch.cat([input_ids.new_full((b, p), pad_id), input_ids], dim=1)  # (B, P + T)
    if left_pad:
        order = torch.argsort(mask, dim=1, stable=True)  # (B, P + T): padding, then prefix, then prompt
        embeds = embeds.gather(1, order[:, :, None].expand_as(embeds))
        mask, ids = mask.gather(1, order), ids.gather(1, order)
    return embeds, mask, ids
