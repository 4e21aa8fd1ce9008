"""RPG (Hou et al., KDD 2025, arXiv 2506.05781): long Semantic IDs whose digits are predicted in parallel.

Every item is a long ID of ``M`` *unordered* digits, typically product-quantised codes (OPQ 32 x 256, see
:class:`~semid.quantize.ProductQuantizer`; a dedup suffix is one more digit). No digit refines another,
so the model predicts all of them at once from one hidden state instead of decoding them one by one.

- **Input.** A history item is the *mean* of its ``M`` digit-token embeddings (one shared table, digit
  ``m``'s codes at rows ``offset_m + code``), plus a learned position. The mean, not the sum, keeps an
  item's vector on the scale of the position embeddings whatever ``M`` is (4 or 64), so one learning rate
  fits every ID length. Positions count from the oldest item read (as GPT-2 does), so a prefix has the
  same positions in training as when it is the whole history; a position that no training window reaches
  stays untrained, so ``max_len`` should not exceed the longer training sequences (Beauty has windows of
  50; tiny test data needs a lower one). A causal transformer of SASRec's blocks
  (:class:`semid.rec.sasrec.Block`) reads the sequence.
- **Output.** From the state ``h`` at each position, digit ``m`` has its own head, a residual block
  ``s_m = h + SiLU(W_m h + b_m)`` (``W_m, b_m`` start at zero, so every head starts as the identity), and
  its logits are cosine similarities to digit ``m``'s token embeddings over a temperature,
  ``cos(s_m, e_{m,k}) / temperature``: the output layer is *tied* to the input token table, as in the
  paper's code (which normalises both sides, temperature 0.03 on Beauty).
- **Loss.** The mean over digits of the per-digit cross-entropy of the next item's code, at every position
  of each training window (SASRec's windows, :func:`semid.rec.data.window_examples`). A dedup suffix
  (the last digit, 0 for an item whose base ID is its own; :func:`is_suffix_digit`) is read, never
  predicted: it carries no content, and predicting it would push every twin far below its base item.
- **Scoring.** With the digits independent given ``h``, ``log p(item) = sum_m log softmax_m(code_m(item))``
  decomposes, so every item is scored exactly: gather the ``(M, B, K)`` log-probabilities at the items'
  ``(n_items, M)`` codes and add, ``O(n_items x M)`` per user after one forward pass (12,101 items x 33
  digits is 0.4 M additions). Twins (items sharing all digits but the suffix) split their base ID's
  probability evenly. Every answer is a real item by construction (0 invalid IDs). This exact
  ranking replaces the paper's graph-constrained decoding (a beam walk over a k-nearest-neighbour graph of
  items), which approximates the same argmax to avoid touching every item; at catalogue sizes where a
  ``(B, n_items)`` score matrix fits it is both exact and simpler.

Costs per training position: the transformer (``~12 d^2`` per layer), the heads (``M d^2``) and the
logits (``M K d``); with the paper's ``d`` = 448, M = 32, K = 256 the heads and logits dominate.

    >>> codes = np.array([[i // 4, i % 4, i % 3] for i in range(16)])
    >>> config = RPGConfig(codebook_sizes=[4, 4, 3], n_items=16, d_model=32, n_heads=2, d_ff=64)
    >>> items, scores = RPG(config, codes).eval().recommend(histories_batch([np.array([1, 2])]), k=3)
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
from semid.rec.data import Batch, histories_batch  # noqa: F401  (histories_batch: docstring example)
from semid.rec.layers import init_weights
from semid.rec.sasrec import Block, SASRecConfig


@dataclass
class RPGConfig:
    """Shape of an RPG model. Defaults follow the paper's code on Beauty (GPT-2 backbone of 2 layers,
    ``d_model`` 448, 4 heads, MLP 1024, embedding and attention dropout 0.5, no residual dropout, 50 items,
    temperature 0.03); they are not tuned here."""

    codebook_sizes: list[int] = field(default_factory=lambda: [256] * 32)  # K_m per digit, set from the IDs
    n_items: int = 0  # items with an ID, set from the data
    max_len: int = 50  # history items read (the last 50)
    d_model: int = 448
    n_layers: int = 2
    n_heads: int = 4
    d_ff: int = 1024
    dropout: float = 0.5  # on the input (item + position) embeddings
    attn_dropout: float = 0.5  # on the attention weights
    resid_dropout: float = 0.0  # on the attention and MLP outputs
    temperature: float = 0.03  # of the cosine logits (paper: 0.03 on every dataset it reproduces)
    # the last digit is a dedup suffix (0, or 1, 2 ... for the twins of a collision; see
    # semid.ids.dedup): it is read but not predicted, and twins share their base ID's probability
    # evenly. None: decided from the codes when the model is built (:func:`is_suffix_digit`)
    suffix_digit: bool | None = None

    def validate(self) -> None:
        """Reject bad values with one line quoting them."""
        sizes = self.codebook_sizes
        if not isinstance(sizes, (list, tuple)) or not sizes:
            raise SemidError(f"codebook_sizes={sizes!r} should be a non-empty list of integers")
        for digit, k in enumerate(sizes):
            check_positive_int(f"codebook_sizes[{digit}]", k, numpy_ok=False)
        for name in ("n_items", "max_len", "d_model", "n_layers", "n_heads", "d_ff"):
            v = getattr(self, name)
            check_positive_int(name, v, numpy_ok=False)
        if self.d_model % self.n_heads:
            raise SemidError(f"d_model={self.d_model} should be a multiple of n_heads={self.n_heads}")
        for name in ("dropout", "attn_dropout", "resid_dropout"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1:
                raise SemidError(f"{name}={v!r} should be a number in [0, 1)")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
            raise SemidError(f"temperature={t!r} should be a number > 0")
        if self.suffix_digit is not None and not isinstance(self.suffix_digit, bool):
            raise SemidError(f"suffix_digit={self.suffix_digit!r} should be true, false or null")
        if self.suffix_digit and len(sizes) < 2:
            raise SemidError("suffix_digit needs IDs of at least 2 digits (a base and the suffix)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_suffix_digit(codes: np.ndarray) -> bool:
    """Whether the last column of unique ``(n, M)`` codes is a dedup suffix: within every group of items
    that share the other digits, the last digits are exactly 0, 1, ..., size - 1 (so 0 for an item with a
    base ID of its own). A product-quantised digit practically never is. ``O(n M log n)``."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[1] < 2 or len(codes) == 0:
        return False
    _, group, size = np.unique(codes[:, :-1], axis=0, return_inverse=True, return_counts=True)
    last = codes[:, -1]
    return bool(((last >= 0) & (last < size[group.ravel()])).all())


def _block(config: RPGConfig) -> Block:
    """A SASRec block of RPG's shape: ``attn_dropout`` on the attention weights, ``resid_dropout`` on the
    attention and MLP outputs (SASRec's block has one rate for all three)."""
    shape = {"d_model": config.d_model, "n_heads": config.n_heads, "d_ff": config.d_ff}
    block = Block(SASRecConfig(n_items=2, dropout=config.attn_dropout, **shape))  # (a block reads no n_items)
    block.attn.resid_drop.p = block.mlp.drop.p = config.resid_dropout
    return block


class RPG(nn.Module):
    """Causal transformer over items pooled from their ID tokens; all ``M`` digits of the next ID at once.

    ``item_codes`` is the ``(n_items, M)`` array of unique codes (item ``i`` has ID ``item_codes[i]``); it is
    kept as a buffer, so a saved model scores the same items.
    """

    model_type: ClassVar[str] = "rpg"
    example_kind: ClassVar[str] = "windows"  # trains on windows, predicting at every position

    def __init__(self, config: RPGConfig, item_codes: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        codes = torch.as_tensor(np.asarray(item_codes), dtype=torch.long)
        if config.n_items == 0 and codes.ndim == 2:
            config = replace(config, n_items=codes.shape[0])
        if config.suffix_digit is None:
            config = replace(config, suffix_digit=is_suffix_digit(codes.numpy()))
        config.validate()
        sizes = list(config.codebook_sizes)
        if codes.shape != (config.n_items, len(sizes)):
            raise SemidError(
                f"item_codes has shape {tuple(codes.shape)}, expected (n_items={config.n_items}, "
                f"digits={len(sizes)})"
            )
        too_big = codes >= torch.tensor(sizes)
        if (codes < 0).any() or too_big.any():
            item, digit = map(int, torch.nonzero((codes < 0) | too_big)[0])
            raise SemidError(
                f"item {item} digit {digit}: code {int(codes[item, digit])} is outside [0, {sizes[digit]})"
            )
        self.config = config
        M, K, d = len(sizes), max(sizes), config.d_model
        self.register_buffer("item_codes", codes)  # (n_items, M)
        k_of = torch.tensor(sizes)
        offsets = torch.cumsum(k_of, 0) - k_of  # (M,) first token row of each digit
        self.register_buffer("offsets", offsets, persistent=False)
        # (M, K) token row of each digit's code k (K = max K_m); (M, 1, K) 0, or -inf where digit m has no
        # code k, added to the logits inside their matrix product
        have = torch.arange(K)[None, :] < k_of[:, None]
        rows = torch.where(have, offsets[:, None] + torch.arange(K), 0)
        self.register_buffer("digit_rows", rows, persistent=False)
        missing = torch.zeros(M, 1, K).masked_fill_(~have[:, None, :], float("-inf"))
        self.register_buffer("digit_missing", missing, persistent=False)
        # (n_items,) log of the number of items sharing each item's base ID (0 without a suffix digit)
        twins = torch.zeros(config.n_items)
        if config.suffix_digit:
            _, group, size = np.unique(codes[:, :-1].numpy(), axis=0, return_inverse=True, return_counts=True)
            twins = torch.from_numpy(np.log(size[group.ravel()])).float()
        self.register_buffer("twin_log", twins, persistent=False)
        self.token_emb = nn.Embedding(int(k_of.sum()), d)  # every digit's codes, digit after digit
        self.pos_emb = nn.Embedding(config.max_len, d)  # 0 = the oldest item read
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(_block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(d)
        self.heads = nn.Linear(d, M * d)  # W_m, b_m of the M digit heads, side by side
        self.apply(init_weights)
        nn.init.zeros_(self.heads.weight)  # every head starts as the identity (the paper's ResBlock init)

    @classmethod
    def from_state(cls, config: dict[str, Any], tensors: dict[str, torch.Tensor]) -> RPG:
        """Rebuild from a saved config and state dict (which holds the item codes)."""
        if "item_codes" not in tensors:
            raise SemidError("RPG weights have no item_codes")
        model = cls(RPGConfig(**config), tensors["item_codes"])
        model.load_state_dict(tensors)
        return model

    @property
    def max_history(self) -> int:
        return self.config.max_len

    @property
    def n_digits(self) -> int:
        return len(self.config.codebook_sizes)

    @property
    def n_predicted(self) -> int:
        """Digits the model predicts: all but a dedup suffix."""
        return self.n_digits - int(bool(self.config.suffix_digit))

    def hidden(self, history: torch.Tensor) -> torch.Tensor:
        """(B, T, C) output states of (B, T) left-padded histories (item indices, -1 pads)."""
        history = history[:, -self.config.max_len :]
        B, T = history.shape
        valid = history >= 0  # (B, T)
        tokens = self.item_codes[history.clamp(min=0)] + self.offsets  # (B, T, M) token rows
        # mean of each item's M token embeddings without materialising (B, T, M, C)
        x = F.embedding_bag(tokens.view(B * T, -1), self.token_emb.weight, mode="mean").view(B, T, -1)
        x = x * valid[..., None]  # padding reads nothing (an empty history is not item 0)
        pos = (valid.cumsum(1) - 1).clamp(min=0)  # (B, T) 0 = the oldest item read
        x = self.drop(x + self.pos_emb(pos))  # (B, T, C)
        causal = torch.ones(T, T, dtype=torch.bool, device=history.device).tril()  # (T, T)
        eye = torch.eye(T, dtype=torch.bool, device=history.device)
        # A query sees earlier real items and always itself (so a padding row is never all-masked).
        mask = ((causal & valid[:, None, :]) | eye)[:, None]  # (B, 1, T, T)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x)

    def digit_logits(self, h: torch.Tensor) -> torch.Tensor:
        """(P, N, K) float32 logits of each predicted digit's codes (P = all digits but a dedup suffix)
        from states ``h`` (N, C), digit first; ``-inf`` where ``k >= K_m`` (a digit with fewer codes than
        the widest). Cost ``N M d (d + K)``: the heads and one batched matrix product, which also applies
        the temperature and the ``-inf``. That product runs in float32 even under bf16 autocast: cosines
        over a temperature of 0.03 reach +-33, where bf16 steps are 0.125-0.25 (on a CPU without fast
        bf16 this costs about a third more step time at the paper's shape)."""
        N, C = h.shape
        P = self.n_predicted
        s = h[:, None, :] + F.silu(self.heads(h)).view(N, self.n_digits, C)[:, :P]  # (N, P, C) digit states
        s = F.normalize(s.float(), dim=-1).transpose(0, 1)  # (P, N, C)
        E = F.normalize(self.token_emb.weight.float(), dim=-1)[self.digit_rows[:P]]  # (P, K, C) tied
        with torch.autocast(device_type=s.device.type, enabled=False):
            return torch.baddbmm(
                self.digit_missing[:P], s, E.transpose(1, 2), alpha=1.0 / self.config.temperature
            )  # (P, N, K)

    def digit_log_probs(self, h: torch.Tensor) -> torch.Tensor:
        """(P, N, K) float32 log-probabilities of each predicted digit's codes (a softmax per digit)."""
        return self.digit_logits(h).log_softmax(-1)

    # -- training and scoring ----------------------------------------------------------------------------

    def loss(self, batch: Batch) -> torch.Tensor:
        """Mean over every real position of the batch's windows of the digit-averaged cross-entropy."""
        total, count = self.loss_terms(batch)
        return total / count

    def loss_terms(self, batch: Batch) -> tuple[torch.Tensor, int]:
        """``(sum over positions of the digit-averaged cross-entropy, number of positions)``: what
        data-parallel ranks add up so that their shards of a batch give exactly the whole batch's gradient."""
        history = batch.history[:, -self.config.max_len :]
        h = self.hidden(history)  # (B, T, C)
        # (B, T) the next item at each position
        targets = torch.cat([history[:, 1:], batch.target[:, None]], dim=1)
        valid = (history >= 0) & (targets >= 0)
        h, y = h[valid], targets[valid]  # (N, C), (N,)
        logits = self.digit_logits(h)  # (P, N, K)
        P, N, K = logits.shape
        codes = self.item_codes[y, :P].T.reshape(-1)  # (P * N,) digit first, as the logits
        nll = F.cross_entropy(logits.reshape(P * N, K), codes, reduction="none")  # (P * N,)
        return nll.view(P, N).mean(0).sum(), len(y)

    def scores(self, history: torch.Tensor) -> torch.Tensor:
        """(B, n_items) float32 log-probability of every item as the next one after each (B, T) history:
        the sum over digits of the log-probability of the item's code, less the log of the number of its
        twins when the last digit is a dedup suffix (they split their base ID evenly). ``O(B x n_items x M)``."""
        logp = self.digit_log_probs(self.hidden(history)[:, -1])  # (P, B, K)
        out = logp[0][:, self.item_codes[:, 0]] - self.twin_log  # (B, n_items)
        for m in range(1, self.n_predicted):  # one digit at a time: memory stays (B, n_items)
            out += logp[m][:, self.item_codes[:, m]]
        return out

    @torch.no_grad()
    def recommend(
        self, batch: Batch, k: int, *, exclude_history: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``k`` most likely next items of the whole catalogue: ``(items (B, k), log-probabilities (B, k))``.

        Exact: every item is scored (no beam, no graph), so every answer is a real item. ``exclude_history``
        leaves out the items of the history it reads; fewer than ``k`` left gives item -1 at the end.
        """
        batch.check(self.config.n_items, k)
        if k > self.config.n_items:
            raise SemidError(f"k={k} is larger than the catalogue ({self.config.n_items:,} items)")
        scores = self.scores(batch.history)  # (B, n_items)
        if exclude_history:
            scores = scores.masked_fill(batch.to(scores.device).seen(self.config.n_items), float("-inf"))
        top = scores.topk(k, dim=1)
        return torch.where(torch.isfinite(top.values), top.indices, -1), top.values

    def extra_repr(self) -> str:
        return f"digits={self.n_digits}, params={sum(p.numel() for p in self.parameters()):,}"
