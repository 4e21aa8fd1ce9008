"""Quantizers: embeddings -> codes. RQ-KMeans (``rq_kmeans.py``), RQ-VAE (``rq_vae.py``), PQ/OPQ (``pq.py``);
metrics in ``metrics.py``."""

from typing import Any

from semid.quantize.base import BaseQuantizer, load_quantizer
from semid.quantize.pq import ProductQuantizer
from semid.quantize.rq_kmeans import RQKMeans

__all__ = [
    "BaseQuantizer",
    "ProductQuantizer",
    "RQKMeans",
    "RQVAE",
    "RQVAEConfig",
    "TrainConfig",
    "load_quantizer",
]


def __getattr__(name: str) -> Any:  # RQ-VAE and its trainer load on first use
    if name in ("RQVAE", "RQVAEConfig"):
        from semid.quantize import rq_vae

        return getattr(rq_vae, name)
    if name == "TrainConfig":
        from semid.quantize.train import TrainConfig

        return TrainConfig
    raise AttributeError(name)
