"""Quantizers: embeddings -> codes. RQ-KMeans (``rq_kmeans.py``); metrics in ``metrics.py``."""

from semid.quantize.base import BaseQuantizer, load_quantizer
from semid.quantize.rq_kmeans import RQKMeans

__all__ = ["BaseQuantizer", "RQKMeans", "load_quantizer"]
