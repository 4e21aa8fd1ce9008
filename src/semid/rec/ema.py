"""An exponential moving average (EMA) of a model's weights: what validation scores and the run saves.

    ema = WeightAverage(model, decay=0.999)
    for step, batch in enumerate(batches):
        train_step(model, optimizer, batch)
        ema.update(model, step)
    with ema.applied(model):          # the averaged weights in place of the trained ones ...
        evaluate(model, valid)        # ... and the trained ones back afterwards, bit for bit

After update ``n`` (0-based) the average is ``a <- d_n a + (1 - d_n) w`` with
``d_n = min(decay, (1 + n) / (10 + n))``: TensorFlow's ``num_updates`` warm-up, so the first averages are
not dominated by the random initialisation (``d_0 = 0.1``). Only floating-point trainable parameters are
averaged; buffers (a TIGER's item codes) are the model's own.

Cost: one float32 copy of the trainable parameters (TIGER on Beauty: 4.6M, 18 MB) and one fused ``lerp``
over them per optimizer step (``torch._foreach_lerp_``); :meth:`applied` copies the weights twice more.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from semid.errors import SemidError

PREFIX = "ema."  # the average's tensors in a checkpoint: ``ema.<parameter name>``


class WeightAverage:
    """The moving average of ``model``'s trainable floating-point parameters, started at their values."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 < decay < 1:
            raise SemidError(f"ema_decay={decay!r} should be a number in (0, 1)")
        self.decay = float(decay)
        self.names = [n for n, p in model.named_parameters() if p.requires_grad and p.is_floating_point()]
        self.shadow = [p.detach().float().clone() for p in self._params(model)]

    def _params(self, model: nn.Module) -> list[torch.Tensor]:
        params = dict(model.named_parameters())
        return [params[n] for n in self.names]

    def decay_at(self, n: int) -> float:
        """The decay of update ``n`` (0-based): ``min(decay, (1 + n) / (10 + n))``."""
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module, n: int) -> None:
        """Fold the model's current weights into the average as update ``n`` (the optimizer step just taken,
        0-based: a resumed run passes the same numbers as an uninterrupted one)."""
        weights = [p.detach().float() for p in self._params(model)]
        torch._foreach_lerp_(self.shadow, weights, 1.0 - self.decay_at(n))

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """``model`` holding the averaged weights inside the block, its trained weights restored after it."""
        params = self._params(model)
        with torch.no_grad():
            trained = [p.detach().clone() for p in params]
            for p, a in zip(params, self.shadow, strict=True):
                p.copy_(a)
        try:
            yield model
        finally:
            with torch.no_grad():
                for p, w in zip(params, trained, strict=True):
                    p.copy_(w)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """``{"ema.<name>": average}`` on the CPU, for a checkpoint."""
        return {
            PREFIX + n: a.detach().cpu().contiguous() for n, a in zip(self.names, self.shadow, strict=True)
        }

    def load_state_dict(self, tensors: dict[str, torch.Tensor], where: str = "the checkpoint") -> None:
        """Restore the average from a checkpoint's tensors (other keys are ignored)."""
        missing = [n for n in self.names if PREFIX + n not in tensors]
        if missing:
            raise SemidError(
                f"{where} holds no weight average for {missing[0]!r}; it was saved without ema_decay"
            )
        with torch.no_grad():
            for n, a in zip(self.names, self.shadow, strict=True):
                a.copy_(tensors[PREFIX + n])
