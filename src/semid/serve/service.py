"""What a server answers with, loaded once: the catalogue, a recommender and a search method (no web code).

A :class:`Service` reads a *serving directory* once, at start-up, and then answers in memory:

- the **catalogue** (:class:`Catalogue`): item ids, titles and Semantic IDs, both directions (item id ->
  ID, ID -> item) and the items under an ID prefix;
- **recommend** (:class:`Recommender`): the next items after a history, by the trained TIGER model's beam
  search constrained to real IDs (a SASRec run works too);
- **search** (:class:`LMSearch` or :class:`DenseSearch`): items for a text query, by the query -> item
  language model when one is trained (``method = "lm"``), else by dense retrieval over the item embeddings
  with the query embedded by the same sentence model (``method = "dense"``).

Layouts :meth:`Service.load` understands (options override what it finds):

- ``semid demo --out DIR``: ``DIR/tiger/`` (TIGER run), ``DIR/ids.parquet``, ``DIR/embeddings.parquet``,
  ``DIR/data/`` (titles when there is no TIGER run) and, when there is one, ``DIR/llm/``;
- a run directory of ``semid train`` (``config.json`` + ``model.safetensors`` + ``items.parquet``), with
  ``ids=``, ``embeddings=`` and ``llm=`` given separately.

Every file is read with safe loaders: model weights from ``.safetensors`` only (a language model directory
without them is refused rather than unpickled), tables from Parquet, settings from JSON. Request problems
raise :class:`RequestError` subclasses whose ``status_code`` is the HTTP status the API answers with.

Example::

    service = Service.load("semid-demo")
    service.recommend(history=["B0001", "B0002"], k=5)       # [ItemScore(item_id=..., score=...), ...]
    service.search("a matte red lipstick", k=5).method        # "dense" (no language model trained)
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from semid._utils import check_positive_int
from semid.errors import SemidError, first_line
from semid.serve.catalogue import (  # noqa: F401  (re-exported: the catalogue's part of the service)
    MAX_ID_CHARS,
    Catalogue,
    ItemScore,
    KeyIndex,
    NotFoundError,
    RequestError,
    UnavailableError,
    _show,
)

__all__ = [
    "Catalogue",
    "DenseSearch",
    "ItemScore",
    "LMSearch",
    "NotFoundError",
    "Recommender",
    "RequestError",
    "SearchResult",
    "ServeConfig",
    "Service",
    "UnavailableError",
]

# --------------------------------------------------------------------------------------------------------
# Settings and results
# --------------------------------------------------------------------------------------------------------


@dataclass
class ServeConfig:
    """Limits and batching of a :class:`Service` (the API validates requests against the limits)."""

    max_k: int = 100  # most items one request may ask for
    max_history: int = 200  # most items in a request's history (the model reads its last max_history)
    max_query_chars: int = 500  # longest search query
    beam_size: int | None = None  # TIGER beams (default: the run's; always at least k)
    batching: bool = True  # gather concurrent requests into one model call
    max_batch: int = 64  # most requests in one model call
    max_wait_ms: float = 2.0  # how long the first request of a batch waits for company
    device: str = "cpu"
    # personalised search (a query with a history): weight of TIGER's log-probabilities next to the query
    # model's (semid.llm.personal). Chosen on Beauty dev users from 0.5, 1, 2 by NDCG@10 (0.067, 0.101,
    # 0.114; bench/results/beauty_personal.txt); a per-catalogue choice
    history_weight: float = 2.0
    # query -> item search: read the brand and price a request states and answer only with items that
    # satisfy them, then the best others (semid.llm.constraints; the language model's items.parquet must
    # keep brand / price). Chosen on the Beauty dev requests: Precision@10 0.402 vs 0.346 without, 3 seeds
    # (bench/results/beauty_flex_eval_3seeds.txt)
    search_filter: bool = True

    def validate(self) -> None:
        for name in ("max_k", "max_history", "max_query_chars", "max_batch"):
            v = getattr(self, name)
            check_positive_int(name, v, numpy_ok=False)
        if self.beam_size is not None:
            check_positive_int("beam_size", self.beam_size, numpy_ok=False)
        if not isinstance(self.max_wait_ms, (int, float)) or not 0 <= self.max_wait_ms <= 1000:
            raise SemidError(f"max_wait_ms={self.max_wait_ms!r} should be between 0 and 1000")


@dataclass(frozen=True)
class SearchResult:
    """Items for one query and the method that found them (``"lm"`` or ``"dense"``)."""

    items: list[ItemScore]
    method: str


# --------------------------------------------------------------------------------------------------------
# Recommend and search
# --------------------------------------------------------------------------------------------------------


class Recommender:
    """Next items after histories, many histories per model call.

    ``model`` is a loaded TIGER (or SASRec) and ``data`` its run's :class:`~semid.rec.data.RecData`. A TIGER
    call decodes with constrained beam search of width ``max(beam_size, k)``; rows of one call that ask
    for different widths are split by width, so a batched answer is the answer the row would get alone.
    """

    def __init__(self, model: Any, data: Any, *, beam_size: int | None = None) -> None:
        self.model = model
        self.data = data
        self.model_type: str = getattr(model, "model_type", type(model).__name__.lower())
        self.default_beam = getattr(getattr(model, "config", None), "beam_size", None)
        self.beam_size = beam_size or self.default_beam
        self.users = {str(u): i for i, u in enumerate(data.user_ids)}
        self.lock = threading.Lock()  # one model call at a time (torch already uses every core)

    def user_history(self, user_id: str) -> np.ndarray:
        """The stored sequence of ``user_id`` (item rows, oldest first)."""
        row = self.users.get(user_id)
        if row is None:
            raise NotFoundError(f"user {_show(user_id)} is not in this run ({len(self.users):,} users)")
        seqs = self.data.sequences
        return seqs.items[seqs.offsets[row] : seqs.offsets[row + 1]]

    def _width(self, k: int) -> int:
        return max(self.beam_size or k, k)

    def recommend(
        self, histories: Sequence[np.ndarray], users: Sequence[str | None], ks: Sequence[int]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(item rows (k,), scores (k,))`` per history, best first."""
        import torch

        from semid.rec.data import histories_batch, user_keys

        out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(histories)
        groups: dict[int, list[int]] = {}
        for i, k in enumerate(ks):
            groups.setdefault(self._width(k) if self.model_type == "tiger" else 0, []).append(i)
        device = next(self.model.parameters()).device
        for width, rows in groups.items():
            k_max = max(ks[i] for i in rows)
            keys = np.array(
                [-1 if users[i] is None else int(user_keys([users[i]])[0]) for i in rows], dtype=np.int64
            )
            batch = histories_batch([histories[i] for i in rows], keys, device=device)
            options = {"beam_size": width} if self.model_type == "tiger" else {}
            with self.lock, torch.inference_mode():
                top, scores = self.model.recommend(batch, k_max, **options)
            top, scores = top.cpu().numpy(), scores.float().cpu().numpy()
            for j, i in enumerate(rows):
                out[i] = (top[j, : ks[i]], scores[j, : ks[i]])
        return out  # type: ignore[return-value]


class Embedder(Protocol):
    """What dense search needs of an embedder: texts -> ``(n, dim)`` float32 vectors."""

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class DenseSearch:
    """Nearest items to the query's embedding by cosine similarity (normalised dot product)."""

    method = "dense"

    def __init__(self, embedder: Embedder, rows: np.ndarray, X: np.ndarray) -> None:
        X = np.asarray(X, dtype=np.float32)
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        self.X = X / np.maximum(norms, 1e-12)
        self.rows = np.asarray(rows, dtype=np.int64)  # catalogue row of each embedding
        self.embedder = embedder
        self.lock = threading.Lock()

    def search(self, queries: Sequence[str], ks: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        with self.lock:
            Q = np.asarray(self.embedder.encode(list(queries)), dtype=np.float32)
        if Q.ndim != 2 or Q.shape[1] != self.X.shape[1]:
            raise SemidError(
                f"the query embedder gives {Q.shape[-1]} values per text but the items have {self.X.shape[1]}"
            )
        Q /= np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-12)
        sims = Q @ self.X.T  # (q, n)
        out = []
        for row, k in zip(sims, ks, strict=True):
            k = min(k, len(row))
            top = np.argpartition(-row, k - 1)[:k]
            top = top[np.lexsort((top, -row[top]))]  # best first; ties by row, so answers are stable
            out.append((self.rows[top], row[top]))
        return out


class LMSearch:
    """Items a query -> Semantic ID language model writes, by constrained beam search over the catalogue."""

    method = "lm"

    def __init__(self, llm: Any, catalogue: Catalogue, *, use_filter: bool = True) -> None:
        from semid.llm.constraints import filter_for
        from semid.llm.generate import QueryRecommender

        self.llm = llm
        self.recommender = QueryRecommender.from_llm(llm)
        self.filter = filter_for(llm) if use_filter else None  # brand / price a request states
        # LM item row -> catalogue row (-1: an item the catalogue does not know)
        self.rows = catalogue.index.get_many([str(i) for i in llm.item_ids])
        self.lock = threading.Lock()

    @property
    def n_items(self) -> int:
        return len(self.llm.item_ids)

    def search(self, queries: Sequence[str], ks: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(queries)
        groups: dict[int, list[int]] = {}
        for i, k in enumerate(ks):  # beam width max(k, 20) depends on k: one call per k
            groups.setdefault(min(k, self.n_items), []).append(i)
        for k, rows in groups.items():
            texts = [queries[i] for i in rows]
            allow = None if self.filter is None else self.filter.masks(texts)
            with self.lock:
                res = self.recommender.recommend(texts, k=k, allow=allow)
            for j, i in enumerate(rows):
                out[i] = (res.items[j], res.scores[j])
        return out  # type: ignore[return-value]

    def result(self, catalogue: Catalogue, lm_row: int, score: float) -> ItemScore:
        row = self.rows[lm_row]
        if row >= 0:
            return catalogue.result(int(row), score)
        llm = self.llm
        return ItemScore(
            str(llm.item_ids[lm_row]),
            llm.semantic_ids[lm_row],
            llm.titles[lm_row] or None,
            round(float(score), 6),
        )


# --------------------------------------------------------------------------------------------------------
# The service
# --------------------------------------------------------------------------------------------------------


@dataclass
class Sources:
    """Where a :class:`Service` read its parts from (for ``/version`` and the report); ``None``: absent."""

    root: Path
    run: Path | None = None
    ids: Path | None = None
    embeddings: Path | None = None
    llm: Path | None = None
    data: Path | None = None


class Service:
    """A catalogue plus the models that answer recommend and search requests; see the module docstring.

    Build one with :meth:`load` (reads files) or directly from parts (tests, notebooks).
    """

    def __init__(
        self,
        catalogue: Catalogue,
        recommender: Recommender | None = None,
        searcher: LMSearch | DenseSearch | None = None,
        *,
        config: ServeConfig | None = None,
        sources: Sources | None = None,
    ) -> None:
        self.config = config or ServeConfig()
        self.config.validate()
        self.catalogue = catalogue
        self.recommender = recommender
        self.searcher = searcher
        self._personal: Any = None  # semid.llm.personal.PersonalisedSearch, built on first use
        self.sources = sources
        self.loaded_at = time.time()
        self._report: str | None = None
        self._report_lock = threading.Lock()

    # -- loading ------------------------------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        ids: str | os.PathLike | None = None,
        embeddings: str | os.PathLike | None = None,
        llm: str | os.PathLike | None = None,
        embedder: Embedder | str | None = None,
        config: ServeConfig | None = None,
    ) -> Service:
        """Read a serving directory (see the module docstring); ``embedder``: an object or a model name.

        The query embedder defaults to the packaged all-MiniLM-L6-v2, which made the demo's embeddings.
        Every file it will serve from is checked here, before anything else loads, including those only the
        report reads later: a missing, unreadable or corrupt one is a one-line :class:`SemidError` naming it.
        """
        config = config or ServeConfig()
        config.validate()
        root = Path(path)
        if not root.is_dir():
            raise SemidError(f"{root}: no such directory")
        run = _find_run(root)
        data_dir = root / "data" if (root / "data").is_dir() else None
        src = Sources(
            root=root,
            run=run,
            ids=Path(ids) if ids is not None else _existing(root / "ids.parquet"),
            embeddings=Path(embeddings) if embeddings is not None else _existing(root / "embeddings.parquet"),
            llm=Path(llm) if llm is not None else _llm_dir(root / "llm"),
            data=data_dir,
        )
        if run is None and src.ids is None:
            raise SemidError(
                f"{root}: found neither a run of `semid train` (config.json + model.safetensors) nor "
                "ids.parquet; serve the output of `semid demo` or a run directory"
            )
        # Check every file now, cheapest first: the report reads ids and embeddings only when first asked.
        from semid.ids.table import read_ids

        id_table = read_ids(src.ids) if src.ids is not None else None
        if src.embeddings is not None:
            _check_embeddings(src.embeddings)
        if src.llm is not None:
            _check_llm(src.llm)
        recommender = None
        if run is not None:
            from semid.rec.data import RecData
            from semid.rec.train import load_model

            try:
                data = RecData.load(run)
            except SemidError:
                raise
            except (OSError, ValueError) as e:  # ArrowInvalid is a ValueError; its text names the file
                raise SemidError(f"{run}: not a readable run ({first_line(e)})") from None
            model = load_model(run, device=config.device)
            recommender = Recommender(model, data, beam_size=config.beam_size)
            catalogue = Catalogue(data.item_ids, data.titles, data.semantic_ids, data.codes)
        else:
            catalogue = _catalogue_from_ids(id_table, data_dir)  # type: ignore[arg-type]

        searcher: LMSearch | DenseSearch | None = None
        if src.llm is not None:
            searcher = LMSearch(_load_llm(src.llm, config.device), catalogue, use_filter=config.search_filter)
        elif src.embeddings is not None:
            searcher = _dense_search(src.embeddings, catalogue, embedder, config.device)
        return cls(catalogue, recommender, searcher, config=config, sources=src)

    # -- requests -----------------------------------------------------------------------------------------

    @property
    def search_method(self) -> str | None:
        return None if self.searcher is None else self.searcher.method

    def check_k(self, k: int) -> int:
        limit = min(self.config.max_k, len(self.catalogue))
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= limit:
            more = (
                f" (the catalogue has {len(self.catalogue):,} items)"
                if len(self.catalogue) < self.config.max_k
                else ""
            )
            raise RequestError(f"k={k!r} should be between 1 and {limit}{more}")
        return k

    def prepare_recommend(
        self, history: Sequence[str] | None, user_id: str | None, k: int
    ) -> tuple[np.ndarray, str | None, int]:
        """Validate a recommend request: ``(history item rows, user id or None, k)``; raises RequestError."""
        if self.recommender is None:
            raise UnavailableError("no recommendation model is loaded (serve a directory with a TIGER run)")
        k = self.check_k(k)
        if history is None and user_id is None:
            raise RequestError("give a history (item ids, oldest first) or a user_id")
        if user_id is not None and not user_id.strip():
            raise RequestError("user_id is empty")
        if history is not None:
            if not history:
                raise RequestError("the history is empty; give at least one item id")
            if len(history) > self.config.max_history:
                raise RequestError(
                    f"the history has {len(history):,} items; the most is {self.config.max_history}"
                )
            rows = np.array([self.catalogue.row_of(h) for h in history], dtype=np.int64)
        else:
            rows = self.recommender.user_history(user_id)  # type: ignore[arg-type]
        return rows, user_id, k

    def recommend_many(self, requests: Sequence[tuple[np.ndarray, str | None, int]]) -> list[list[ItemScore]]:
        """Answers to prepared requests (see :meth:`prepare_recommend`), one model call for all of them."""
        assert self.recommender is not None
        res = self.recommender.recommend(
            [r[0] for r in requests], [r[1] for r in requests], [r[2] for r in requests]
        )
        return [
            [self.catalogue.result(int(i), s) for i, s in zip(items, scores, strict=True) if i >= 0]
            for items, scores in res
        ]

    def recommend(
        self, history: Sequence[str] | None = None, *, user_id: str | None = None, k: int = 10
    ) -> list[ItemScore]:
        """The ``k`` next items after ``history`` (item ids, oldest first) or after ``user_id``'s sequence."""
        return self.recommend_many([self.prepare_recommend(history, user_id, k)])[0]

    def prepare_search(self, query: str, k: int) -> tuple[str, int]:
        """Validate a search request: ``(query, k)``; raises RequestError."""
        if self.searcher is None:
            raise UnavailableError(
                "no search method is loaded (serve a directory with embeddings.parquet or a language model)"
            )
        if not isinstance(query, str) or not query.strip():
            raise RequestError("the query is empty: ask for something, e.g. 'a matte red lipstick'")
        if len(query) > self.config.max_query_chars:
            raise RequestError(
                f"the query is {len(query):,} characters long; the most is {self.config.max_query_chars}"
            )
        return query.strip(), self.check_k(k)

    def search_many(self, requests: Sequence[tuple[str, int]]) -> list[SearchResult]:
        """Answers to prepared searches (see :meth:`prepare_search`), batched in one call where possible."""
        assert self.searcher is not None
        res = self.searcher.search([q for q, _ in requests], [k for _, k in requests])
        out = []
        for items, scores in res:
            if isinstance(self.searcher, LMSearch):
                rows = [
                    self.searcher.result(self.catalogue, int(i), s)
                    for i, s in zip(items, scores, strict=True)
                ]
            else:
                rows = [self.catalogue.result(int(i), s) for i, s in zip(items, scores, strict=True)]
            out.append(SearchResult(rows, self.searcher.method))
        return out

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        history: Sequence[str] | None = None,
        user_id: str | None = None,
        history_weight: float | None = None,
    ) -> SearchResult:
        """The ``k`` items that best answer ``query`` (language model if trained, else dense retrieval).

        With a ``history`` (item ids, oldest first) or a stored ``user_id``, the query model and the TIGER
        run search together (:meth:`search_personal`).
        """
        if history is not None or user_id is not None:
            return self.search_personal(
                query, k, history=history, user_id=user_id, history_weight=history_weight
            )
        return self.search_many([self.prepare_search(query, k)])[0]

    def search_personal(
        self,
        query: str,
        k: int = 10,
        *,
        history: Sequence[str] | None = None,
        user_id: str | None = None,
        history_weight: float | None = None,
    ) -> SearchResult:
        """A query and a user's history in one beam search over the IDs (:mod:`semid.llm.personal`): the
        query model's and TIGER's log-probabilities, TIGER's weighted by ``history_weight`` (default
        :attr:`ServeConfig.history_weight`). Needs a language model and a TIGER run; ``method`` is
        ``"lm+history"``."""
        query, k = self.prepare_search(query, k)
        if (
            not isinstance(self.searcher, LMSearch)
            or self.recommender is None
            or (self.recommender.model_type != "tiger")
        ):
            # the request asks for what this server cannot do: a client error, never a 5xx
            raise RequestError(
                "personalised search needs a query language model and a TIGER run (serve both)"
            )
        rows, user_id, k = self.prepare_recommend(history, user_id, k)
        weight = self.config.history_weight if history_weight is None else history_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 100:
            raise RequestError(f"history_weight={weight!r} should be a number in [0, 100]")
        personal = self._personal_search()
        items = [str(self.recommender.data.item_ids[r]) for r in rows]
        flt = self.searcher.filter
        with self.searcher.lock, self.recommender.lock:
            res = personal.search(
                [query],
                [items],
                k=min(k, personal.query.index.n_items),  # the beam runs over the language model's items
                history_weight=float(weight),
                users=None if user_id is None else [user_id],
                allow=None if flt is None else flt.masks([query]),  # the brand / price the query states
            )
        out = [  # an ID no model can write comes back as item -1 with score -inf: fewer than k answers
            self.searcher.result(self.catalogue, int(i), s)
            for i, s in zip(res.items[0], res.scores[0], strict=True)
            if i >= 0 and np.isfinite(s)
        ]
        return SearchResult(out, "lm+history")

    def _personal_search(self) -> Any:
        if self._personal is None:
            from semid.llm.personal import PersonalisedSearch

            assert isinstance(self.searcher, LMSearch) and self.recommender is not None
            try:
                self._personal = PersonalisedSearch(
                    self.searcher.recommender,
                    self.searcher.llm.item_ids,
                    self.recommender.model,
                    self.recommender.data,
                )
            except (
                SemidError
            ) as e:  # the two models were trained on other IDs: this server cannot personalise
                raise RequestError(f"personalised search is unavailable here: {e}") from None
        return self._personal

    def item(self, item_id: str) -> dict[str, Any]:
        """``/items/{item_id}``: the item, its Semantic ID and its prefixes."""
        if len(item_id) > MAX_ID_CHARS:
            raise RequestError(f"the item id is {len(item_id):,} characters long; the most is {MAX_ID_CHARS}")
        return self.catalogue.describe(self.catalogue.row_of(item_id))

    def by_semantic_id(self, semantic_id: str) -> dict[str, Any]:
        """``/ids/{semantic_id}``: the item that has this Semantic ID (any spelling)."""
        row = self.catalogue.by_semantic_id.get(semantic_id)
        if row is None:
            codes = self.catalogue.parse_semantic_id(semantic_id)
            row = self.catalogue.row_of_codes(codes, semantic_id)
        return self.catalogue.describe(row)

    def prefix(self, prefix: str, limit: int = 50) -> dict[str, Any]:
        """``/prefixes/{prefix}``: how many items share an ID prefix, and the first ``limit`` of them."""
        codes = self.catalogue.parse_semantic_id(prefix, prefix=True)
        rows = self.catalogue.rows_under(codes)
        if not len(rows):
            raise NotFoundError(f"no item's Semantic ID starts with {_show(prefix)}")
        return {
            "prefix": "-".join(map(str, codes)),
            "depth": len(codes),
            "n_items": len(rows),
            "items": [self.catalogue.describe_short(int(r)) for r in rows[:limit]],
        }

    def info(self) -> dict[str, Any]:
        """What is loaded (names only, no paths): for ``/health`` and ``/version``."""
        rec = self.recommender
        src = self.sources
        return {
            "items": len(self.catalogue),
            "levels": self.catalogue.n_levels,
            "recommend": None if rec is None else rec.model_type,
            "users": None if rec is None else len(rec.users),
            "beam_size": None if rec is None else rec.beam_size,
            "search": self.search_method,
            "search_filter": self.search_filter_state,
            "serving": None if src is None else src.root.resolve().name,
        }

    @property
    def search_filter_state(self) -> str | None:
        """The request filter of language-model search: ``"on"``, ``"off"`` (``ServeConfig.search_filter``
        false) or ``"unavailable"`` (a model whose ``items.parquet`` keeps no brand or price: a
        model prepared before `semid llm prepare` kept them, or a catalogue without them); ``None`` without such a model."""
        if not isinstance(self.searcher, LMSearch):
            return None
        if self.searcher.filter is not None:
            return "on"
        return "off" if not self.config.search_filter else "unavailable"

    # -- the report ---------------------------------------------------------------------------------------

    def report_html(self) -> str:
        """The ``semid report`` page of the IDs (plus the TIGER training curves), built once and kept."""
        with self._report_lock:
            if self._report is None:
                self._report = self._build_report()
            return self._report

    def _build_report(self) -> str:
        import tempfile

        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UnavailableError("the report needs matplotlib: pip install 'semid[report]'") from None
        from semid.ids.report import _curves_figure, build_report
        from semid.ids.table import IdTable, write_ids

        cat = self.catalogue
        if cat.codes is None:
            raise UnavailableError("this catalogue has no Semantic IDs to report on")
        src = self.sources
        titles = {str(i): cat.title(r) or "" for r, i in enumerate(cat.item_ids)}
        with tempfile.TemporaryDirectory(prefix="semid-report-") as tmp:
            ids = src.ids if src is not None and src.ids is not None else None
            if ids is None:  # a run without ids.parquet: report the IDs the run trained on
                ids = Path(tmp) / "ids.parquet"
                write_ids(ids, IdTable(cat.item_ids, list(cat.semantic_ids), cat.codes, cat.codes, {}))
            emb = src.embeddings if src is not None else None
            page = build_report(ids, Path(tmp) / "report.html", emb=emb, titles=titles).read_text()
        run = None if src is None else src.run
        if run is not None and (run / "metrics.jsonl").is_file():
            curves = _curves_figure(run / "metrics.jsonl")
            if curves:
                section = f"<h2>Recommender training ({self.recommender.model_type})</h2>" + curves  # type: ignore[union-attr]
                page = page.replace("</body>", section + "\n</body>", 1)
        return page


# --------------------------------------------------------------------------------------------------------
# Loading helpers
# --------------------------------------------------------------------------------------------------------


def _existing(path: Path) -> Path | None:
    return path if path.exists() else None


def _is_run(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "items.parquet").is_file()


def _find_run(root: Path) -> Path | None:
    """The recommender run: ``root`` itself, or ``root/tiger`` (demo layout)."""
    for candidate in (root, root / "tiger"):
        if _is_run(candidate):
            return candidate
    return None


def _llm_dir(path: Path) -> Path | None:
    from semid.llm.model import META_FILE

    return path if (path / META_FILE).is_file() else None


def _check_llm(path: Path) -> None:
    """A language model directory with safetensors weights (a pickled checkpoint is refused)."""
    from semid.llm.model import META_FILE

    if not path.is_dir():
        raise SemidError(f"{path}: no such directory")
    if not any(path.glob("*.safetensors")):
        raise SemidError(
            f"{path}: no .safetensors weights; the server loads no pickled checkpoints (*.bin, *.pt)"
        )
    if not (path / META_FILE).is_file():
        raise SemidError(
            f"{path}: not a semid language model (no {META_FILE}; train one with semid llm train)"
        )


def _load_llm(path: Path, device: str) -> Any:
    """A trained language model, from safetensors weights only; a corrupt one is a one-line SemidError
    (:func:`~semid.llm.model.load_llm`)."""
    _check_llm(path)
    from semid.llm.model import load_llm

    return load_llm(path, device=device)


def _check_embeddings(path: Path) -> None:
    """What :func:`~semid.embed.store.read_embeddings` would refuse about ``path`` without reading the
    vectors: it exists, and each Parquet file has a readable footer and the item_id and embedding columns
    (a ``.npy`` array: a readable 2-D header)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        raise SemidError(f"{path}: no such file")
    if path.suffix == ".npy" and path.is_file():
        from semid.embed.store import open_npy

        X = open_npy(path)
        if X.ndim != 2:
            raise SemidError(f"{path}: array has shape {X.shape}, expected (n_items, dim)")
        return
    if path.is_dir():
        files = sorted(path.glob("*.parquet"))
        if not files:
            raise SemidError(f"{path}: no .parquet files in this directory")
    elif path.suffix == ".parquet":
        files = [path]
    else:
        raise SemidError(
            f"{path}: unknown embeddings format {path.suffix!r} "
            "(expected .parquet, .npy or a directory of .parquet files)"
        )
    for f in files:
        try:
            names = pq.read_schema(f).names
        except (pa.ArrowInvalid, OSError) as e:
            raise SemidError(f"{f}: not a readable Parquet file ({first_line(e)})") from None
        for col in ("item_id", "embedding"):
            if col not in names:
                raise SemidError(f"{f}: no column {col!r} (columns: {', '.join(names)})")


def _catalogue_from_ids(table: Any, data_dir: Path | None) -> Catalogue:
    """Catalogue of a read ``ids.parquet`` (an IdTable; titles from the dataset in ``data_dir`` if any)."""
    titles = None
    if data_dir is not None:
        from semid.data import load_dataset

        cat = load_dataset([data_dir]).catalogue
        if cat is not None and "title" in cat.fields:
            by_id = dict(zip(map(str, cat.item_ids), cat.text_column("title").to_pylist(), strict=True))
            titles = np.asarray([by_id.get(str(i)) for i in table.item_ids], dtype=object)
    return Catalogue(
        np.asarray(table.item_ids, dtype=object),
        titles,
        np.asarray(table.semantic_ids, dtype=object),
        np.asarray(table.codes, dtype=np.int64),
    )


def _dense_search(
    path: Path, catalogue: Catalogue, embedder: Embedder | str | None, device: str
) -> DenseSearch:
    """Dense retrieval over the catalogue items that have an embedding in ``path``."""
    from semid.embed.store import read_embeddings

    item_ids, X = read_embeddings(path)
    rows = catalogue.index.get_many([str(i) for i in item_ids])
    keep = rows >= 0
    if not keep.any():
        raise SemidError(f"{path}: none of its item ids is in the catalogue")
    if embedder is None or isinstance(embedder, str):
        from semid.embed import load_embedder

        embedder = load_embedder(embedder, device=device).load()
    dim = getattr(embedder, "dim", X.shape[1])
    if dim != X.shape[1]:
        raise SemidError(f"{path}: {X.shape[1]} values per embedding, but the query embedder gives {dim}")
    return DenseSearch(embedder, rows[keep], X[keep])
