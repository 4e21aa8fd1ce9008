"""TIGER (Rajput et al., NeurIPS 2023): generative retrieval with an encoder-decoder over Semantic ID tokens.

Every item is its Semantic ID, ``L`` codes such as ``12-4-9-0``. The encoder reads a hashed user token and
the IDs of the user's last ``<= 20`` items, one token per code (``1 + 20 L`` tokens; or, with
``encoder_tokens="items"``, one token per item, the sum of its codes' embeddings); the decoder writes
the next item's ID code by code, and decoding is a beam search restricted to real IDs
(:func:`semid.rec.beam.beam_search`), so every recommendation is an item.

Tokens: one embedding table per level (code ``c`` of level ``l`` is row ``c`` of table ``l``, shared by the
encoder, the decoder input and, tied, the decoder's output layer for level ``l``) and one table of
``n_user_tokens`` user tokens (users are hashed into them, as in the paper) plus a "no user" token. Item
positions (counted back from the newest item) and decoder steps have learned position embeddings.

The paper's model is the default: 4 encoder + 4 decoder layers, ``d_model`` 128, 6 heads of 64
(attention width 384, as in T5), MLP 1024, dropout 0.1.

    >>> codes = np.array([[i // 4, i % 4] for i in range(16)])
    >>> config = TIGERConfig(codebook_sizes=[4, 4], n_items=16, d_model=32, n_heads=2, d_head=16, d_ff=64,
    ...                      n_encoder_layers=1, n_decoder_layers=1)
    >>> items, scores = TIGER(config, codes).eval().recommend(histories_batch([np.array([1, 2])]), k=3)
    >>> items.shape, bool((items >= 0).all())
    (torch.Size([1, 3]), True)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from semid._utils import check_positive_int
from semid.errors import SemidError
from semid.rec.beam import BeamResult, CodeIndex, StepFn, beam_search
from semid.rec.data import Batch, histories_batch  # noqa: F401  (histories_batch: docstring example)
from semid.rec.layers import Dropout, attention, init_weights


@dataclass
class TIGERConfig:
    """Shape of a TIGER model. The defaults are our best measured Beauty recipe (one token per history item,
    dropout 0.2, no user information: validation R@10 0.1022 against 0.0916 with the paper's user tokens and
    0.084 with its code tokens at the same time budget; ``bench/results/beauty_rec_tiger_nouser.txt``); the
    paper's layout is ``configs/tiger-paper.json`` (``encoder_tokens="codes"``, dropout 0.1, 2,000 users).
    The shape defaults (4+4 layers, d_model 128) are the paper's; :func:`~semid.rec.io.build_model` gives
    small data a smaller one (:func:`semid.rec.config.scaled_shape`) unless the options are given."""

    codebook_sizes: list[int] = field(default_factory=lambda: [256, 256, 256, 256])  # K_l, set from the IDs
    n_items: int = 0  # items with an ID, set from the data
    max_history: int = 20  # items the encoder reads (paper: 20)
    # users are hashed into this many tokens (paper: 2000); 1 (the default) = no user information, which did
    # better on Beauty (bench/results/beauty_rec_tiger_nouser.txt)
    n_user_tokens: int = 1
    d_model: int = 128
    n_heads: int = 6
    d_head: int = 64  # attention width n_heads * d_head = 384 differs from d_model, as in the paper (T5)
    d_ff: int = 1024
    n_encoder_layers: int = 4
    n_decoder_layers: int = 4
    dropout: float = 0.2  # paper: 0.1; 0.2 won on Beauty validation, 0.3 lost (bench/results)
    beam_size: int = 20  # beams kept when decoding (recommend/evaluate may override)
    # "items" (default): one encoder token per history item, the sum of its codes' embeddings, 1 + T tokens;
    # "codes": one token per code, 1 + T * L tokens (the paper; L times longer, about 3x slower on CPU)
    encoder_tokens: str = "items"
    # training loss: cross-entropy of each level's code with this much label smoothing (the share of the target
    # probability spread evenly over the level's K codes, as F.cross_entropy's label_smoothing). 0.1 made no
    # difference epoch for epoch on half of Beauty's users, small shape (validation, one seed,
    # bench/results/scaled_defaults.txt); not measured on the full recipe. Decoding is unchanged
    label_smoothing: float = 0.0

    def validate(self) -> None:
        """Reject bad values with one line quoting them."""
        sizes = self.codebook_sizes
        if not isinstance(sizes, (list, tuple)) or not sizes:
            raise SemidError(f"codebook_sizes={sizes!r} should be a non-empty list of integers")
        for level, k in enumerate(sizes):
            check_positive_int(f"codebook_sizes[{level}]", k, numpy_ok=False)
        names = ("n_items", "max_history", "n_user_tokens", "d_model", "n_heads", "d_head", "d_ff")
        for name in (*names, "n_encoder_layers", "n_decoder_layers", "beam_size"):
            v = getattr(self, name)
            check_positive_int(name, v, numpy_ok=False)
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise SemidError(f"dropout={self.dropout!r} should be a number in [0, 1)")
        ls = self.label_smoothing
        if isinstance(ls, bool) or not isinstance(ls, (int, float)) or not 0 <= ls < 1:
            raise SemidError(f"label_smoothing={ls!r} should be a number in [0, 1)")
        if self.encoder_tokens not in ("codes", "items"):
            raise SemidError(f"encoder_tokens={self.encoder_tokens!r} should be 'codes' or 'items'")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Attention(nn.Module):
    """Multi-head attention of width ``n_heads * d_head``; keys and values can be projected once and reused."""

    def __init__(self, config: TIGERConfig) -> None:
        super().__init__()
        self.n_heads, self.d_head, self.dropout = config.n_heads, config.d_head, config.dropout
        inner = config.n_heads * config.d_head
        self.q = nn.Linear(config.d_model, inner, bias=False)
        self.kv = nn.Linear(config.d_model, 2 * inner, bias=False)
        self.o = nn.Linear(inner, config.d_model, bias=False)
        self.resid_drop = Dropout(config.dropout)

    def project_kv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of ``x`` (B, S, C), each (B, H, S, dh)."""
        B, S, _ = x.shape
        k, v = self.kv(x).view(B, S, 2, self.n_heads, self.d_head).permute(2, 0, 3, 1, 4)  # 2 x (B, H, S, dh)
        return k, v

    def forward(
        self,
        x: torch.Tensor,
        kv: tuple[torch.Tensor, torch.Tensor],
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """Queries from ``x`` (B, Q, C) attend to ``kv``; ``mask`` (B, 1, 1 or Q, S) bool, True = may attend."""
        B, Q, _ = x.shape
        q = self.q(x).view(B, Q, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, Q, dh)
        if self.training:  # plain products: faster on CPU than the fused kernels for these short sequences
            y = attention(q, *kv, mask, is_causal, self.dropout)  # (B, H, Q, dh)
        else:
            y = F.scaled_dot_product_attention(q, *kv, attn_mask=mask, is_causal=is_causal)  # (B, H, Q, dh)
        y = y.transpose(1, 2).reshape(B, Q, self.n_heads * self.d_head)  # (B, Q, H * dh)
        return self.resid_drop(self.o(y))


class MLP(nn.Module):
    def __init__(self, config: TIGERConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.d_ff)
        self.proj = nn.Linear(config.d_ff, config.d_model)
        self.drop = Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x))))


class EncoderLayer(nn.Module):
    """Pre-norm: x + self_attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: TIGERConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = Attention(config)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, self.attn.project_kv(h), mask)
        return x + self.mlp(self.ln_2(x))


class DecoderLayer(nn.Module):
    """Pre-norm: causal self-attention, cross-attention to the encoder's output, MLP."""

    def __init__(self, config: TIGERConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.self_attn = Attention(config)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.cross_attn = Attention(config)
        self.ln_3 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        memory_mask: torch.Tensor,
        beams: int = 1,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """New states of ``x`` (B * W, T, C), and the self-attention keys/values of all positions so far.

        ``W`` beams per encoded row share that row's ``memory_kv`` (B, H, S, dh). ``past`` holds the
        self-attention keys/values (B * W, H, t, dh) of earlier positions when decoding step by step.
        """
        N, T, C = x.shape
        h = self.ln_1(x)
        k, v = self.self_attn.project_kv(h)  # (N, H, T, dh)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (N, H, t + T, dh)
        # Without a cache the positions attend causally; with one, the new position(s) come last.
        x = x + self.self_attn(h, (k, v), is_causal=past is None)
        # Cross-attention has no mask between queries, so the W beams of a row are folded into its queries
        # and attend to one copy of that row's keys and values.
        h = self.ln_2(x).reshape(N // beams, beams * T, C)  # (B, W * T, C)
        x = x + self.cross_attn(h, memory_kv, memory_mask).reshape(N, T, C)
        return x + self.mlp(self.ln_3(x)), (k, v)


class TIGER(nn.Module):
    """Encoder over the history's Semantic ID tokens, decoder writing the next item's ID.

    ``item_codes`` is the ``(n_items, L)`` array of unique codes (item ``i`` has ID ``item_codes[i]``); it is
    kept as a buffer, so a saved model decodes to the same items.
    """

    model_type: ClassVar[str] = "tiger"
    example_kind: ClassVar[str] = "prefixes"  # one training example per prefix of each sequence

    def __init__(self, config: TIGERConfig, item_codes: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        codes = torch.as_tensor(np.asarray(item_codes), dtype=torch.long)
        if config.n_items == 0 and codes.ndim == 2:
            config = replace(config, n_items=codes.shape[0])
        config.validate()
        sizes = list(config.codebook_sizes)
        if codes.shape != (config.n_items, len(sizes)):
            raise SemidError(
                f"item_codes has shape {tuple(codes.shape)}, expected (n_items={config.n_items}, levels={len(sizes)})"
            )
        too_big = codes >= torch.tensor(sizes)
        if (codes < 0).any() or too_big.any():
            item, level = map(int, torch.nonzero((codes < 0) | too_big)[0])
            raise SemidError(
                f"item {item} level {level}: code {int(codes[item, level])} is outside [0, {sizes[level]})"
            )
        self.config = config
        d = config.d_model
        self.register_buffer("item_codes", codes)  # (n_items, L)
        self.code_emb = nn.ModuleList(nn.Embedding(k, d) for k in sizes)  # one token table per level
        self.user_emb = nn.Embedding(config.n_user_tokens + 1, d)  # last row: no user
        self.item_pos_emb = nn.Embedding(config.max_history, d)  # 0 = the newest item
        self.bos = nn.Parameter(torch.zeros(d))  # the decoder's first input
        self.dec_pos_emb = nn.Embedding(len(sizes), d)
        self.drop = Dropout(config.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(config) for _ in range(config.n_encoder_layers))
        self.ln_enc = nn.LayerNorm(d)
        self.decoder = nn.ModuleList(DecoderLayer(config) for _ in range(config.n_decoder_layers))
        self.ln_dec = nn.LayerNorm(d)
        self.apply(init_weights)
        nn.init.normal_(self.bos, std=0.02)
        self._index: CodeIndex | None = None
        self._index_key: tuple[int, int] | None = None

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> TIGER:
        """Rebuild from a saved config and state dict (which holds the item codes)."""
        if "item_codes" not in tensors:
            raise SemidError("TIGER weights have no item_codes")
        model = cls(TIGERConfig(**config), tensors["item_codes"])
        model.load_state_dict(tensors)
        return model

    @property
    def max_history(self) -> int:
        return self.config.max_history

    @property
    def n_levels(self) -> int:
        return len(self.config.codebook_sizes)

    @property
    def index(self) -> CodeIndex:
        """The trie of the items' IDs (rebuilt if ``item_codes`` changed, e.g. by ``load_state_dict``)."""
        key = (self.item_codes.data_ptr(), self.item_codes._version)
        if self._index is None or self._index_key != key:
            self._index = CodeIndex(self.item_codes.cpu().numpy(), self.config.codebook_sizes)
            self._index_key = key
        return self._index

    # -- encoder -----------------------------------------------------------------------------------------

    def encode(self, history: torch.Tensor, user: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states (B, 1 + S, C) and key mask (B, 1, 1, 1 + S) of left-padded histories (B, T).

        ``S = T * L`` tokens with ``encoder_tokens="codes"``, ``S = T`` with ``"items"``.
        """
        history = history[:, -self.config.max_history :]
        B, T = history.shape
        valid = history >= 0  # (B, T)
        codes = self.item_codes[history.clamp(min=0)]  # (B, T, L)
        pos = self.item_pos_emb(torch.arange(T - 1, -1, -1, device=history.device))  # (T, C) 0 = the newest
        per_level = [emb(codes[..., lv]) for lv, emb in enumerate(self.code_emb)]  # L x (B, T, C)
        if self.config.encoder_tokens == "items":
            tok = sum(per_level) + pos  # (B, T, C)
            keep = valid
        else:
            tok = torch.stack(per_level, 2) + pos[None, :, None, :]  # (B, T, L, C)
            tok = tok.flatten(1, 2)  # (B, T * L, C)
            keep = valid.repeat_interleave(self.n_levels, dim=1)  # (B, T * L)
        user_tok = torch.where(user >= 0, user % self.config.n_user_tokens, self.config.n_user_tokens)
        x = torch.cat([self.user_emb(user_tok)[:, None], tok], dim=1)  # (B, 1 + S, C)
        # The user token is always there, so no query row is all-masked.
        mask = torch.cat([valid.new_ones(B, 1), keep], dim=1)[:, None, None, :]  # (B, 1, 1, 1 + S)
        x = self.drop(x)
        for layer in self.encoder:
            x = layer(x, mask)
        return self.ln_enc(x), mask

    # -- decoder -----------------------------------------------------------------------------------------

    def decoder_inputs(self, prefix: torch.Tensor, first: int = 0) -> torch.Tensor:
        """(N, t + 1 - first, C) decoder inputs at positions ``first .. t``: BOS, then the codes of ``prefix`` (N, t)."""
        N, t = prefix.shape
        parts = [self.bos.expand(N, 1, -1)] if first == 0 else []
        parts += [self.code_emb[lv](prefix[:, lv])[:, None] for lv in range(max(first - 1, 0), t)]
        return torch.cat(parts, dim=1) + self.dec_pos_emb.weight[first : t + 1]

    def decode(
        self,
        x: torch.Tensor,
        memory_kv: list[tuple[torch.Tensor, torch.Tensor]],
        memory_mask: torch.Tensor,
        beams: int = 1,
        past: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """Decoder states of inputs ``x`` (B * W, T, C), and each layer's self-attention keys/values so far.

        ``past`` (from the previous call) makes ``x`` the positions after the cached ones.
        """
        x = self.drop(x)
        present = []
        for i, (layer, kv) in enumerate(zip(self.decoder, memory_kv, strict=True)):
            x, layer_kv = layer(x, kv, memory_mask, beams, None if past is None else past[i])
            present.append(layer_kv)
        return self.ln_dec(x), present

    def memory_kv(self, memory: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each decoder layer's cross-attention keys and values of the encoder states, computed once."""
        return [layer.cross_attn.project_kv(memory) for layer in self.decoder]

    def level_logits(self, h: torch.Tensor, level: int) -> torch.Tensor:
        """(..., K_level) logits of the codes of ``level`` from decoder states (..., C); tied to the token table."""
        return h @ self.code_emb[level].weight.T

    # -- training and decoding ---------------------------------------------------------------------------

    def loss(self, batch: Batch) -> torch.Tensor:
        """Cross-entropy of the target item's ID, averaged over its levels (teacher forcing)."""
        total, count = self.loss_terms(batch)
        return total / count

    def loss_terms(self, batch: Batch) -> tuple[torch.Tensor, int]:
        """``(sum over examples of the level-averaged cross-entropy, number of examples)``: what
        data-parallel ranks add up so that their shards of a batch give exactly the whole batch's gradient."""
        memory, mask = self.encode(batch.history, batch.user)
        target = self.item_codes[batch.target]  # (B, L)
        h, _ = self.decode(self.decoder_inputs(target[:, :-1]), self.memory_kv(memory), mask)  # (B, L, C)
        losses = [
            F.cross_entropy(
                self.level_logits(h[:, lv], lv).float(),
                target[:, lv],
                reduction="sum",
                label_smoothing=self.config.label_smoothing,
            )
            for lv in range(self.n_levels)
        ]
        return torch.stack(losses).sum() / self.n_levels, len(batch)

    @torch.no_grad()
    def generate(
        self,
        batch: Batch,
        k: int,
        *,
        beam_size: int | None = None,
        constrained: bool = True,
        exclude_history: bool = False,
    ) -> BeamResult:
        """The ``k`` most likely next-item IDs per row by beam search (constrained to real items by default).

        ``exclude_history``: the items of the history it reads are never returned ("filter seen items").
        """
        batch.check(self.config.n_items, k)
        if beam_size is not None and (isinstance(beam_size, bool) or not isinstance(beam_size, int)):
            raise SemidError(f"beam_size={beam_size!r} should be an integer >= k={k}")
        return beam_search(
            self.step_fn(batch),
            self.index,
            len(batch),
            beam_size=max(beam_size or self.config.beam_size, k),
            k=k,
            constrained=constrained,
            device=batch.history.device,
            exclude=batch.seen(self.config.n_items) if exclude_history else None,
        )

    def step_fn(self, batch: Batch) -> StepFn:
        """The decoder as a beam-search step over ``batch``'s histories (encoded once, here): next-code
        logits ``(B, W, K_t)`` of each beam, each beam continuing its parent's key/value cache. What
        :meth:`generate` searches with, and what personalised search adds to a query model's scores."""
        memory, mask = self.encode(batch.history, batch.user)
        kv = self.memory_kv(memory)
        B = len(batch)
        cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per layer (B * W, H, t, dh)

        def step(
            prefix: torch.Tensor, parent: torch.Tensor | None
        ) -> torch.Tensor:  # (B, W, t) -> (B, W, K_t)
            nonlocal cache
            W, t = prefix.shape[1], prefix.shape[2]
            if t == 0:
                cache = None  # a new search over the same histories
            if cache is not None and parent is not None:  # each beam continues its parent's cache
                rows = (
                    parent + torch.arange(B, device=parent.device)[:, None] * (cache[0][0].shape[0] // B)
                ).reshape(-1)
                cache = [(k[rows], v[rows]) for k, v in cache]
            x = self.decoder_inputs(prefix.reshape(B * W, t), first=t)  # (B * W, 1, C): the newest position
            h, cache = self.decode(x, kv, mask, beams=W, past=cache)
            return self.level_logits(h[:, -1], t).view(B, W, -1)

        return step

    def recommend(
        self,
        batch: Batch,
        k: int,
        *,
        beam_size: int | None = None,
        constrained: bool = True,
        exclude_history: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(items (B, k), log-probabilities (B, k))``, best first; item -1 for an ID that is no item."""
        result = self.generate(
            batch, k, beam_size=beam_size, constrained=constrained, exclude_history=exclude_history
        )
        return result.items, result.scores

    def extra_repr(self) -> str:
        return f"params={sum(p.numel() for p in self.parameters()):,}"
