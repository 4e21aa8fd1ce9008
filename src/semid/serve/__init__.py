"""The serve room: trained models behind an HTTP API (FastAPI) and a web page (Gradio).

- :mod:`~semid.serve.service`: :class:`Service`, a serving directory loaded once (catalogue, recommender,
  search); no web code.
- :mod:`~semid.serve.batching`: :class:`MicroBatcher`, concurrent requests gathered into one model call.
- :mod:`~semid.serve.api`: :func:`create_app`, the endpoints, validation and error messages.
- :mod:`~semid.serve.ui`: the Gradio page mounted at ``/ui``.

Names are imported on first use, so ``import semid.serve`` needs neither FastAPI nor Gradio.

Example::

    import uvicorn
    from semid.serve import Service, create_app

    uvicorn.run(create_app(Service.load("semid-demo")), host="127.0.0.1", port=8000)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Service": "service",
    "ServeConfig": "service",
    "RequestError": "service",
    "MicroBatcher": "batching",
    "create_app": "api",
}

__all__ = ["MicroBatcher", "RequestError", "ServeConfig", "Service", "create_app"]

if TYPE_CHECKING:
    from semid.serve.api import create_app
    from semid.serve.batching import MicroBatcher
    from semid.serve.service import RequestError, ServeConfig, Service


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"semid.serve.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'semid.serve' has no attribute {name!r}")
