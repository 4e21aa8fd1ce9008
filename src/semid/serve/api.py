"""The HTTP API over a :class:`~semid.serve.service.Service` (FastAPI), with the web UI mounted at ``/ui``.

Endpoints (JSON; the OpenAPI schema is at ``/openapi.json``, interactive docs at ``/docs``):

==========================  ===============================================================================
``POST /recommend``         ``{"history": [item_id, ...] | "user_id": "...", "k": 10}`` -> next items, by
                            TIGER's beam search constrained to real Semantic IDs
``POST /search``            ``{"query": "...", "k": 10[, "history": [...]]}`` -> items, and ``method``: ``"lm"`` (query -> ID
                            language model) or ``"dense"`` (nearest item embeddings)
``GET /items/{item_id}``    the item, its Semantic ID, codes and ID prefixes (with their sizes)
``GET /ids/{semantic_id}``  the item that has this Semantic ID (``12-4-9-0``, ``<a_12>...`` or ``[SEM_...``)
``GET /prefixes/{prefix}``  the items whose Semantic ID starts with ``prefix`` (e.g. ``12-4``)
``GET /report``             the ``semid report`` page of the IDs and the model (HTML)
``GET /health``             what is loaded, and batching counters
``GET /version``            versions of semid and its main libraries
==========================  ===============================================================================

Errors are ``{"detail": "<one line>"}`` with status 404 (unknown item, user or ID), 413 (body over
``max_body_bytes``), 422 (invalid request: ``k`` out of range, empty query or history, malformed ID), 503
(the served directory has no model for this) or 500 (the report could not be built). Concurrent ``/recommend`` and ``/search`` requests are
gathered into one model call (:class:`~semid.serve.batching.MicroBatcher`), run on one worker thread.
No endpoint takes a file path: everything served was loaded at start-up.
"""

from __future__ import annotations

import asyncio
import logging
import platform
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

import semid
from semid.errors import SemidError
from semid.serve.batching import MicroBatcher
from semid.serve.service import MAX_ID_CHARS, RequestError, Service

__all__ = ["create_app"]

log = logging.getLogger("semid.serve")

MAX_K = 100
MAX_HISTORY = 200
MAX_QUERY_CHARS = 500
MAX_BODY_BYTES = 64 * 1024

Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID_CHARS)]


# --------------------------------------------------------------------------------------------------------
# Request and response bodies
# --------------------------------------------------------------------------------------------------------


class RecommendRequest(BaseModel):
    """A history of item ids (oldest first), a known user (their stored history), or both."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"history": ["B0001", "B0002"], "k": 10}, {"user_id": "u1", "k": 5}]},
    )
    history: list[Id] | None = Field(
        None, max_length=MAX_HISTORY, description="Item ids, oldest first (the model reads the newest)."
    )
    user_id: Id | None = Field(
        None,
        description="A user of the training data: their history when none is given, and their user token.",
    )
    k: int = Field(10, ge=1, le=MAX_K, strict=True, description="How many items (an integer, not true).")

    @model_validator(mode="after")
    def _history_or_user(self) -> RecommendRequest:
        if self.history is None and self.user_id is None:
            raise ValueError("give a history (item ids, oldest first) or a user_id")
        if self.history is not None and not self.history:
            raise ValueError("the history is empty; give at least one item id")
        return self


class SearchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"query": "matte red lipstick", "k": 10}]}
    )
    query: str = Field(..., min_length=1, max_length=MAX_QUERY_CHARS, description="What to look for.")
    k: int = Field(10, ge=1, le=MAX_K, strict=True, description="How many items (an integer, not true).")
    history: list[Id] | None = Field(
        None,
        max_length=MAX_HISTORY,
        description="Personalised search: the user's items, oldest first; the query model and TIGER search "
        "together (needs both).",
    )
    user_id: str | None = Field(
        None, max_length=MAX_ID_CHARS, description="Personalised search with a stored user's history."
    )
    history_weight: float | None = Field(
        None,
        ge=0,
        le=100,
        allow_inf_nan=False,
        description="Weight of the history's model next to the query's (default: the server's).",
    )

    @model_validator(mode="after")
    def _not_blank(self) -> SearchRequest:
        if not self.query.strip():
            raise ValueError("the query is empty: ask for something, e.g. 'a matte red lipstick'")
        if self.history is not None and not self.history:
            raise ValueError("the history is empty; give at least one item id")
        return self


class ItemOut(BaseModel):
    item_id: str
    semantic_id: str | None
    title: str | None
    score: float = Field(description="Log-probability (recommend, lm search) or cosine similarity (dense).")


class RecommendResponse(BaseModel):
    items: list[ItemOut]
    model: str = Field(description="The recommender, e.g. 'tiger'.")
    history_length: int = Field(description="Items in the history the model was given.")
    user_id: str | None


class SearchResponse(BaseModel):
    query: str
    method: Literal["lm", "dense", "lm+history"] = Field(
        description="'lm': the language model; 'dense': embedding search; 'lm+history': the language model "
        "and TIGER together (a personalised search)."
    )
    items: list[ItemOut]


class ItemBrief(BaseModel):
    item_id: str
    semantic_id: str | None
    title: str | None


class PrefixSize(BaseModel):
    prefix: str
    n_items: int


class ItemDetail(ItemBrief):
    codes: list[int] | None
    prefixes: list[PrefixSize] = Field(
        description="Each proper prefix of the item's ID and how many items share it."
    )


class PrefixItems(BaseModel):
    prefix: str
    depth: int
    n_items: int
    items: list[ItemBrief]


class Problem(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No such item, user or Semantic ID."},
    413: {"model": Problem, "description": "The request body is too large."},
    422: {"model": Problem, "description": "The request is invalid."},
    503: {"model": Problem, "description": "The served directory has no model for this."},
}
REPORT_FAILED: dict[str, Any] = {"model": Problem, "description": "The report could not be built."}


# --------------------------------------------------------------------------------------------------------
# The app
# --------------------------------------------------------------------------------------------------------


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413, announced (Content-Length) or streamed."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            return await self._reject(send)
        seen, rejected = 0, False

        async def limited_receive() -> dict:
            nonlocal seen, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:  # answer now; the app sees the client leave
                    rejected = True
                    await self._reject(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            if not rejected:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)

    async def _reject(self, send: Any) -> None:
        response = JSONResponse(
            {"detail": f"the request body is larger than {self.max_bytes:,} bytes"}, status_code=413
        )
        await response({"type": "http"}, None, send)


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for e in errors[:3]:
        if e.get("type") == "json_invalid":
            where = e.get("loc", ("body", "?"))[-1]
            parts.append(
                f"the body is not valid JSON: {e.get('ctx', {}).get('error', 'invalid')} (character {where})"
            )
            continue
        loc = [str(x) for x in e.get("loc", ())]
        if loc and loc[0] in ("body", "path", "query", "header"):  # where it was; the field is what counts
            loc = loc[1:]
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{'.'.join(loc)}: {msg}" if loc else msg)
    return "; ".join(parts) + (f" (and {len(errors) - 3} more problems)" if len(errors) > 3 else "")


def create_app(service: Service, *, ui: bool = True, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """A FastAPI app answering from ``service``; ``ui=True`` mounts the Gradio page at ``/ui``."""
    config = service.config
    app = FastAPI(
        title="semid",
        version=semid.__version__,
        description='Recommendations and search over Semantic IDs. Errors are `{"detail": "..."}`.',
    )
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="semid-model")
    batch = config.max_batch if config.batching else 1
    wait = config.max_wait_ms if config.batching else 0.0
    rec_batcher: MicroBatcher = MicroBatcher(
        service.recommend_many, max_batch=batch, max_wait_ms=wait, executor=executor
    )
    search_batcher: MicroBatcher = MicroBatcher(
        service.search_many, max_batch=batch, max_wait_ms=wait, executor=executor
    )
    app.state.service = service
    app.state.batchers = {"recommend": rec_batcher, "search": search_batcher}

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        return JSONResponse({"detail": _validation_message(errors)}, status_code=422)

    @app.post("/recommend", response_model=RecommendResponse, responses=ERRORS, tags=["recommend"])
    async def recommend(body: RecommendRequest) -> RecommendResponse:
        """The next `k` items after a history (or a user's stored history), best first."""
        prepared = service.prepare_recommend(body.history, body.user_id, body.k)
        items = await rec_batcher.submit(prepared)
        model = service.recommender.model_type  # type: ignore[union-attr]
        return RecommendResponse(
            items=[ItemOut(**i.to_dict()) for i in items],
            model=model,
            history_length=len(prepared[0]),
            user_id=body.user_id,
        )

    @app.post("/search", response_model=SearchResponse, responses=ERRORS, tags=["search"])
    async def search(body: SearchRequest) -> SearchResponse:
        """The `k` items that best answer a text query; with a `history` or `user_id`, for that user."""
        if body.history is not None or body.user_id is not None:
            loop = asyncio.get_running_loop()
            res = await loop.run_in_executor(
                executor,
                lambda: service.search_personal(
                    body.query,
                    body.k,
                    history=body.history,
                    user_id=body.user_id,
                    history_weight=body.history_weight,
                ),
            )
            return SearchResponse(
                query=body.query.strip(), method=res.method, items=[ItemOut(**i.to_dict()) for i in res.items]
            )
        prepared = service.prepare_search(body.query, body.k)
        res = await search_batcher.submit(prepared)
        return SearchResponse(
            query=prepared[0], method=res.method, items=[ItemOut(**i.to_dict()) for i in res.items]
        )

    @app.get("/items/{item_id}", response_model=ItemDetail, responses=ERRORS, tags=["catalogue"])
    async def item(item_id: Annotated[str, Path(max_length=MAX_ID_CHARS)]) -> dict[str, Any]:
        """An item by its id: title, Semantic ID, codes and the sizes of its ID prefixes."""
        return service.item(item_id)

    @app.get("/ids/{semantic_id}", response_model=ItemDetail, responses=ERRORS, tags=["catalogue"])
    async def by_semantic_id(semantic_id: Annotated[str, Path(max_length=MAX_ID_CHARS)]) -> dict[str, Any]:
        """The item that has this Semantic ID, in any spelling: `12-4-9-0`, `<a_12><b_4>...`, `[SEM_START]...`."""
        return service.by_semantic_id(semantic_id)

    @app.get("/prefixes/{prefix}", response_model=PrefixItems, responses=ERRORS, tags=["catalogue"])
    async def prefix(
        prefix: Annotated[str, Path(max_length=MAX_ID_CHARS)],
        limit: Annotated[int, Query(ge=1, le=1000, description="Most items listed.")] = 50,
    ) -> dict[str, Any]:
        """The items whose Semantic ID starts with `prefix` (e.g. `12-4`): how many, and the first `limit`."""
        return service.prefix(prefix, limit=limit)

    @app.get(
        "/report",
        response_class=HTMLResponse,
        responses={500: REPORT_FAILED, 503: ERRORS[503]},
        tags=["model"],
    )
    def report() -> Response:
        """The `semid report` page of the served IDs and model (built on first request, then kept)."""
        try:
            return HTMLResponse(service.report_html())
        except RequestError:
            raise
        except SemidError as e:  # a file went bad since start-up, say: one line, no traceback
            log.error("/report: %s", e)
            return JSONResponse({"detail": f"the report could not be built: {e}"}, status_code=500)
        except Exception:  # noqa: BLE001 - a bug: its traceback goes to the log, a JSON line to the client
            log.exception("/report failed")
            return JSONResponse(
                {"detail": "the report could not be built (an internal error; see the server log)"},
                status_code=500,
            )

    @app.get("/health", tags=["service"])
    async def health() -> dict[str, Any]:
        """`status: ok` once loaded; what is served, and how requests were batched so far."""
        return {
            "status": "ok",
            **service.info(),
            "batching": {
                "enabled": config.batching,
                "max_batch": batch,
                **{name: b.stats.to_dict() for name, b in app.state.batchers.items()},
            },
        }

    @app.get("/version", tags=["service"])
    async def version() -> dict[str, Any]:
        """Versions of semid, Python and the libraries that answer."""
        import fastapi
        import torch

        return {
            "semid": semid.__version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "fastapi": fastapi.__version__,
            "recommend": service.info()["recommend"],
            "search": service.search_method,
        }

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/ui/" if ui else "/docs")

    if ui:
        from semid.serve.ui import mount_ui

        app = mount_ui(app, service)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    return app
