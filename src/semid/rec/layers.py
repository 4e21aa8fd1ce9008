"""Dropout and attention for training transformers fast on a CPU.

``F.dropout`` draws its mask with ``bernoulli_``, which is slow on CPUs (about 2x the time of drawing the
same number of uniform floats), and ``F.scaled_dot_product_attention`` with ``dropout_p > 0`` or a fused
CPU kernel is slower than the plain matrix products for the short sequences of recommendation models.
Both matter: on Beauty-sized TIGER batches they took a quarter of a training step. The functions here give
the same distributions and the same results as the ``torch`` ones (see the tests) and are used only while
training; evaluation keeps ``F.scaled_dot_product_attention``. :func:`init_weights` is the GPT-2
initialisation the sequence models share.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout: each element is zeroed with probability ``p`` and the rest scaled by ``1 / (1 - p)``.

    The mask comes from ``torch.rand`` (so from the seeded global generator, like ``F.dropout``).
    """
    if not training or p == 0.0:
        return x
    scale = torch.rand(x.shape, device=x.device).ge_(p).to(x.dtype).mul_(1.0 / (1.0 - p))
    return x * scale


class Dropout(nn.Dropout):
    """:class:`torch.nn.Dropout` drawing its mask with :func:`dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Softmax attention of ``q`` (B, H, Q, dh) over ``k``, ``v`` (B, H, S, dh), dropout on the weights.

    ``mask`` (B, 1, 1 or Q, S) bool, True = may attend; ``is_causal``: query ``i`` sees keys ``<= i`` (as in torch).
    What ``F.scaled_dot_product_attention`` computes; every query row must keep at least one key.
    """
    scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)  # (B, H, Q, S)
    if is_causal:
        Q, S = scores.shape[-2:]
        scores = scores.masked_fill(
            torch.ones(Q, S, dtype=torch.bool, device=q.device).triu(1), float("-inf")
        )
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = dropout(scores.softmax(-1), dropout_p)  # (B, H, Q, S)
    return weights.to(v.dtype) @ v  # (B, H, Q, dh)


def init_weights(module: nn.Module) -> None:
    """GPT-2's initialisation, for ``model.apply``: linear and embedding weights ~ N(0, 0.02), biases 0."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
