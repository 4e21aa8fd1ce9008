"""Flexible requests with set-based relevance: a benchmark of what a shopper might ask, scored against
*every* catalogue item that satisfies the request, not one target item.

A :class:`Request` is a text (``"cheap blow dryers"``), a family (``"price"``) and a :class:`Constraint`
over catalogue fields: any combination of a category node or sub-path (``"Hair Dryers"``,
``"Fragrance > Men's"``), a brand (compared after :func:`normalize_text`: case, apostrophes and accents do
not matter), a price range ``[price_min, price_max)`` (either end open) and required title words. Its
relevant items are the catalogue rows that satisfy every part (:meth:`Request.relevant`, vectorised with
pyarrow); an item with a missing field never satisfies a constraint on that field.

- metrics of ranked lists against a relevant set: :func:`hit_at_k`, :func:`precision_at_k`,
  :func:`ndcg_at_k`; :func:`score_requests` scores a ``(Q, k)`` array of item rows for a list of requests
  (per request, per family, overall);
- :func:`save_requests` / :func:`load_requests`: a request set as JSONL, one request a line;
- :func:`make_requests`: a seeded generator of requests from a catalogue, in families (synonyms, needs,
  price wordings, brand spellings, typos, combinations ...), split into ``dev`` and ``test``. Domain
  words (everyday names of categories, needs, ingredients) come in a :class:`RequestLexicon`; without one
  the generator uses the catalogue's own leaf categories and brands.

Example::

    >>> from semid.data import Catalogue
    >>> cat = Catalogue.from_pydict({
    ...     "item_id": ["a", "b", "c"],
    ...     "title": ["Argan Oil Shampoo", "Hair Dryer 1875W", "Rose Shampoo"],
    ...     "brand": ["L'Oréal Paris", "Conair", None],
    ...     "categories": [["Beauty", "Hair Care", "Shampoos"], ["Beauty", "Hair Care", "Styling Tools",
    ...                    "Hair Dryers"], ["Beauty", "Hair Care", "Shampoos"]],
    ...     "price": [6.5, 24.0, 3.0]})
    >>> Request("cheap loreal shampoo", "combo", Constraint(categories=("Shampoos",), brand="loreal paris",
    ...         price_max=10)).relevant(cat).tolist()
    [0]
"""

from __future__ import annotations

import contextlib
import functools
import html
import math
import os
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from semid._utils import read_json_lines
from semid.data.model import Catalogue
from semid.errors import SemidError

__all__ = [
    "DEFAULT_PHRASINGS",
    "DEFAULT_PRICE_WORDINGS",
    "SPLITS",
    "CatalogueFields",
    "Constraint",
    "Request",
    "RequestLexicon",
    "RequestScores",
    "assign_splits",
    "brand_spellings",
    "catalogue_fields",
    "hit_at_k",
    "load_requests",
    "make_requests",
    "ndcg_at_k",
    "normalize_text",
    "precision_at_k",
    "request_summary",
    "save_requests",
    "score_requests",
    "typo",
]

SPLITS = ("dev", "test")
_MISSING_BRANDS = {"", "none", "unknown", "n a", "na"}  # normalised values that mean "no brand"
_APOSTROPHES = "['\u2019\u2018`\u00b4]+"
_APOSTROPHE_RE = re.compile(_APOSTROPHES)


# --------------------------------------------------------------------------------------------------------
# Normalisation: the same steps for catalogue columns (pyarrow) and request strings (Python)
# --------------------------------------------------------------------------------------------------------


def _unescape_html(arr: pa.Array) -> pa.Array:
    """HTML entities decoded (``&amp;`` -> ``&``, ``&eacute;`` -> ``é``), as scraped catalogues carry them;
    Python's :func:`html.unescape` on the few values holding an ``&``, the others untouched."""
    has = pc.fill_null(pc.match_substring(arr, "&"), False)
    if not pc.any(has).as_py():
        return arr
    fixed = [html.unescape(v) for v in arr.filter(has).to_pylist()]
    return pc.replace_with_mask(arr, has, pa.array(fixed, arr.type))


def _normalize_array(arr: pa.Array) -> pa.Array:
    """Strings -> HTML entities decoded, lower case, accents and apostrophes removed, other punctuation as
    single spaces, trimmed.

    ``"L'Oréal  Paris"`` -> ``"loreal paris"``; ``"Burt&#39;s Bees"`` -> ``"burts bees"``; nulls stay null.
    Cost: a few vectorised passes over the characters.
    """
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.string())
    arr = _unescape_html(arr)
    arr = pc.utf8_normalize(arr, "NFKD")
    arr = pc.replace_substring_regex(arr, r"\p{Mn}+", "")
    arr = pc.utf8_lower(arr)
    arr = pc.replace_substring_regex(arr, _APOSTROPHES, "")
    arr = pc.replace_substring_regex(arr, r"[^\p{L}\p{N}]+", " ")
    return pc.utf8_trim_whitespace(arr)


@functools.lru_cache(maxsize=65536)
def normalize_text(text: str) -> str:
    """``text`` as relevance compares it: ``"L'Oréal Paris"``, ``"LOREAL paris"`` -> ``"loreal paris"``.

    HTML entities decoded, lower case, accents (combining marks after NFKD) and apostrophes removed, every other run of
    characters that are not letters or digits as one space, trimmed: the same steps as the catalogue side
    (:func:`catalogue_fields`, in pyarrow), so a request string and an item's field compare equal exactly
    when they differ only in case, accents, apostrophes or punctuation. Cost: O(len(text)), cached.
    """
    s = str(text)
    s = unicodedata.normalize("NFKD", html.unescape(s) if "&" in s else s)
    s = "".join(c for c in s if unicodedata.category(c) != "Mn").lower()
    s = _APOSTROPHE_RE.sub("", s)
    return " ".join("".join(c if unicodedata.category(c)[0] in "LN" else " " for c in s).split())


# --------------------------------------------------------------------------------------------------------
# Catalogue fields, prepared once for many requests
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogueFields:
    """The fields relevance reads, normalised once (:func:`catalogue_fields`); ``None``: no such column.

    ``brand``: normalised brand or null; ``title``: normalised title padded with spaces (``" argan oil "``)
    for whole-word matching; ``path``: the normalised category nodes joined and wrapped in ``|``
    (``"|beauty|hair care|shampoos|"``); ``price``: float64 dollars, NaN where missing or not positive.
    """

    n: int
    brand: pa.Array | None
    title: pa.Array | None
    path: pa.Array | None
    price: np.ndarray | None


def _table(catalogue: Catalogue | pa.Table) -> pa.Table:
    if isinstance(catalogue, Catalogue):
        return catalogue.table
    if isinstance(catalogue, pa.Table):
        return catalogue
    raise SemidError(f"expected a Catalogue or a pyarrow Table, got {type(catalogue).__name__}")


def _column(table: pa.Table, name: str) -> pa.Array | None:
    if name not in table.column_names:
        return None
    col = table.column(name)
    return col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col


def _path_column(col: pa.Array) -> pa.Array:
    """A category column (``list<string>``, or strings ``"A > B > C"``) as ``"|a|b|c|"`` (null if empty)."""
    if pa.types.is_dictionary(col.type):
        col = col.dictionary_decode()
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        col = pc.split_pattern(col, " > ")
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
        raise SemidError(f"categories should be a list of strings or 'A > B > C' text, got type {col.type}")
    if pa.types.is_large_list(col.type):
        col = col.cast(pa.list_(pa.string()))
    values = pc.fill_null(_normalize_array(col.values), "")
    lists = pa.ListArray.from_arrays(col.offsets, values, mask=col.is_null())
    joined = pc.binary_join(lists, "|")
    wrapped = pc.binary_join_element_wise("|", joined, "|", "")
    return pc.if_else(pc.greater(pc.list_value_length(lists), 0), wrapped, pa.scalar(None, pa.string()))


def _price_column(col: pa.Array) -> np.ndarray:
    if pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_decimal(col.type):
        out = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
    elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        out = np.full(len(col), np.nan)
        for i, v in enumerate(col.to_pylist()):  # text prices ("$12.99"): parsed one by one
            with contextlib.suppress(TypeError, ValueError):
                out[i] = float(str(v).replace("$", "").replace(",", "").strip())
    else:
        raise SemidError(f"price should be numbers, got type {col.type}")
    out[~np.isfinite(out) | (out <= 0)] = np.nan
    return out


def catalogue_fields(
    catalogue: Catalogue | pa.Table | CatalogueFields,
    *,
    title: str = "title",
    brand: str = "brand",
    categories: str = "categories",
    price: str = "price",
) -> CatalogueFields:
    """Normalise the title, brand, category and price columns once, for many :meth:`Request.relevant` calls.

    Cost: a few vectorised pyarrow passes over those columns (about 50 ms for 12,000 items); a missing
    column gives ``None`` and then no item satisfies a constraint on it.
    """
    if isinstance(catalogue, CatalogueFields):
        return catalogue
    table = _table(catalogue)
    b = _column(table, brand)
    if b is not None:
        b = _normalize_array(b.dictionary_decode() if pa.types.is_dictionary(b.type) else b)
        b = pc.if_else(
            pc.is_in(b, value_set=pa.array(sorted(_MISSING_BRANDS))), pa.scalar(None, pa.string()), b
        )
    t = _column(table, title)
    if t is not None:
        t = pc.binary_join_element_wise(" ", _normalize_array(t), " ", "")
    c = _column(table, categories)
    p = _column(table, price)
    return CatalogueFields(
        n=table.num_rows,
        brand=b,
        title=t,
        path=_path_column(c) if c is not None else None,
        price=_price_column(p) if p is not None else None,
    )


# --------------------------------------------------------------------------------------------------------
# Constraints and requests
# --------------------------------------------------------------------------------------------------------


def _number(value: Any, what: str) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise SemidError(f"{what}={value!r} should be a non-negative number or None")
    return float(value)


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise SemidError(f"{what}={value!r} should be a list of strings")
    return tuple(value)


@dataclass(frozen=True)
class Constraint:
    """What an item must satisfy, field by field; every given part must hold (an AND).

    - ``categories``: any of these (an OR): a node (``"Mascara"``) or a sub-path of consecutive nodes
      (``"Fragrance > Men's"``); an item matches when its category path contains it. Compared normalised.
    - ``brand``: the item's brand, normalised (``"loreal paris"`` matches ``"L'Oréal Paris"``).
    - ``price_min`` (inclusive) / ``price_max`` (exclusive): dollars; either may be ``None`` (open).
    - ``title_words``: all of these words or phrases appear in the title as whole words, normalised;
      a trailing ``*`` matches a word prefix (``"curl*"`` matches ``curly``, ``curls``).

    Items whose field is missing (no category path, no brand, no positive price, no title) never satisfy a
    part on that field. A constraint with no part at all is an error (it would match everything).
    """

    categories: tuple[str, ...] = ()
    brand: str | None = None
    price_min: float | None = None
    price_max: float | None = None
    title_words: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        cats = _strings(self.categories, "categories")
        words = _strings(self.title_words, "title_words")
        object.__setattr__(self, "categories", cats)
        object.__setattr__(self, "title_words", words)
        lo, hi = _number(self.price_min, "price_min"), _number(self.price_max, "price_max")
        object.__setattr__(self, "price_min", lo)
        object.__setattr__(self, "price_max", hi)
        if lo is not None and hi is not None and lo >= hi:
            raise SemidError(f"price range [{lo:g}, {hi:g}) is empty: price_min should be below price_max")
        if self.brand is not None and (not isinstance(self.brand, str) or not normalize_text(self.brand)):
            raise SemidError(f"brand={self.brand!r} should be a non-empty name or None")
        for c in cats:
            if not all(normalize_text(part) for part in c.split(">")):
                raise SemidError(f"category {c!r} has an empty node")
        for w in words:
            if not normalize_text(w.rstrip("*")) or "*" in w.rstrip("*"):
                raise SemidError(f"title word {w!r} should be words, with at most a trailing '*'")
        if not (cats or self.brand is not None or lo is not None or hi is not None or words):
            raise SemidError(
                "a constraint needs at least one of categories, brand, price_min, price_max, title_words"
            )

    @property
    def n_parts(self) -> int:
        """How many fields the constraint restricts (categories, brand, price, title words)."""
        price = self.price_min is not None or self.price_max is not None
        return bool(self.categories) + (self.brand is not None) + price + bool(self.title_words)

    def mask(self, catalogue: Catalogue | pa.Table | CatalogueFields) -> np.ndarray:
        """(n_items,) bool: which items satisfy every part. Cost: one vectorised pass per part over the
        prepared fields; pass :func:`catalogue_fields` to pay the normalisation once for many requests."""
        f = catalogue_fields(catalogue)
        ok = np.ones(f.n, dtype=bool)

        def matched(arr: pa.Array | None, pattern: str) -> np.ndarray:
            if arr is None:
                return np.zeros(f.n, dtype=bool)
            return pc.fill_null(pc.match_substring(arr, pattern), False).to_numpy(zero_copy_only=False)

        if self.categories:
            any_cat = np.zeros(f.n, dtype=bool)
            for c in self.categories:
                nodes = [normalize_text(part) for part in c.split(">")]
                any_cat |= matched(f.path, "|" + "|".join(nodes) + "|")
            ok &= any_cat
        if self.brand is not None:
            if f.brand is None:
                ok[:] = False
            else:
                eq = pc.equal(f.brand, normalize_text(self.brand))
                ok &= pc.fill_null(eq, False).to_numpy(zero_copy_only=False)
        if self.price_min is not None or self.price_max is not None:
            if f.price is None:
                ok[:] = False
            else:
                with np.errstate(invalid="ignore"):
                    in_range = np.isfinite(f.price)
                    if self.price_min is not None:
                        in_range &= f.price >= self.price_min
                    if self.price_max is not None:
                        in_range &= f.price < self.price_max
                ok &= in_range
        for w in self.title_words:
            prefix = w.endswith("*")
            word = normalize_text(w.rstrip("*"))
            ok &= matched(f.title, f" {word}" if prefix else f" {word} ")
        return ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "categories": list(self.categories),
            "brand": self.brand,
            "price_min": self.price_min,
            "price_max": self.price_max,
            "title_words": list(self.title_words),
        }

    def __and__(self, other: Constraint) -> Constraint:
        """Both constraints at once (categories of both must match: an error if both restrict them)."""
        if self.categories and other.categories:
            raise SemidError("cannot combine two category constraints (each is an OR of nodes)")
        if self.brand is not None and other.brand is not None:
            raise SemidError("cannot combine two brand constraints")
        lo = [v for v in (self.price_min, other.price_min) if v is not None]
        hi = [v for v in (self.price_max, other.price_max) if v is not None]
        return Constraint(
            categories=self.categories or other.categories,
            brand=self.brand if self.brand is not None else other.brand,
            price_min=max(lo) if lo else None,
            price_max=min(hi) if hi else None,
            title_words=tuple(dict.fromkeys(self.title_words + other.title_words)),
        )


@dataclass(frozen=True)
class Request:
    """A request a shopper might type, its family (``"synonym"``, ``"price"`` ...), the constraint that
    defines its relevant items, its split (``"dev"``, ``"test"`` or ``None``) and, when known, how many
    items were relevant in the catalogue it was made from (``n_relevant``, checked by
    :func:`score_requests`)."""

    text: str
    family: str
    constraint: Constraint
    split: str | None = None
    n_relevant: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise SemidError(f"request text {self.text!r} should be non-empty")
        if not isinstance(self.family, str) or not self.family:
            raise SemidError(f"request {self.text!r}: family {self.family!r} should be a non-empty name")
        if self.split is not None and self.split not in SPLITS:
            raise SemidError(f"request {self.text!r}: split {self.split!r} should be one of {SPLITS} or None")
        if not isinstance(self.constraint, Constraint):
            raise SemidError(f"request {self.text!r}: constraint should be a Constraint")

    def relevant(self, catalogue: Catalogue | pa.Table | CatalogueFields) -> np.ndarray:
        """Row indices (int64, ascending) of every catalogue item that satisfies the constraint.

        Cost: see :meth:`Constraint.mask`; O(n_items) per call once the fields are prepared."""
        return np.flatnonzero(self.constraint.mask(catalogue)).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "family": self.family,
            "split": self.split,
            **self.constraint.to_dict(),
            "n_relevant": self.n_relevant,
        }

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> Request:
        """The inverse of :meth:`to_dict`; unknown keys or bad values raise :class:`SemidError`."""
        known = {"text", "family", "split", "categories", "brand", "price_min", "price_max", "title_words",
                 "n_relevant"}  # fmt: skip
        extra = sorted(set(row) - known)
        if extra:
            raise SemidError(f"unknown request field {extra[0]!r} (known: {', '.join(sorted(known))})")
        for key in ("text", "family"):
            if key not in row:
                raise SemidError(f"request has no {key!r}")
        n = row.get("n_relevant")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise SemidError(f"n_relevant={n!r} should be a non-negative integer or null")
        constraint = Constraint(
            categories=tuple(row.get("categories") or ()),
            brand=row.get("brand"),
            price_min=row.get("price_min"),
            price_max=row.get("price_max"),
            title_words=tuple(row.get("title_words") or ()),
        )
        return cls(row["text"], row["family"], constraint, row.get("split"), n)


# --------------------------------------------------------------------------------------------------------
# JSONL
# --------------------------------------------------------------------------------------------------------


def save_requests(path: str | os.PathLike, requests: Sequence[Request]) -> Path:
    """Write one request a line (text, family, split, constraint fields, n_relevant), atomically."""
    from semid.llm.examples import write_jsonl

    return write_jsonl(path, [r.to_dict() for r in requests])


def load_requests(path: str | os.PathLike, *, split: str | None = None) -> list[Request]:
    """Read a file written by :func:`save_requests`, optionally only one ``split``; errors name the line."""
    if split is not None and split not in SPLITS:
        raise SemidError(f"split={split!r} should be one of {SPLITS} or None")
    out = []
    for n, row in read_json_lines(path):
        try:
            req = Request.from_dict(row)
        except SemidError as e:
            raise SemidError(f"{path} line {n}: {e}") from None
        if split is None or req.split == split:
            out.append(req)
    return out


# --------------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------------


def _gain_matrix(ranked: np.ndarray, relevant: Sequence[np.ndarray]) -> np.ndarray:
    """(Q, K) bool: position j of list q holds a relevant item seen for the first time in that list.

    A repeated item counts once (its later copies are not relevant), ``-1`` (no answer) never counts."""
    G = np.zeros(ranked.shape, dtype=bool)
    for q in range(len(ranked)):
        row = ranked[q]
        hit = np.isin(row, np.asarray(relevant[q], dtype=np.int64)) & (row >= 0)
        if hit.any():
            _, first = np.unique(row, return_index=True)
            once = np.zeros(len(row), dtype=bool)
            once[first] = True
            G[q] = hit & once
    return G


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise SemidError(f"k={k!r} should be a positive integer")
    return int(k)


def _metric_arrays(G: np.ndarray, n_rel: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """hit, precision and nDCG at ``k`` for each row of the gain matrix (positions past K count as misses)."""
    g = G[:, :k].astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = g @ discounts[: g.shape[1]]
    ideal_n = np.minimum(k, n_rel)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])[ideal_n]
    with np.errstate(invalid="ignore", divide="ignore"):
        ndcg = np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1.0), 0.0)
    return {
        f"hit@{k}": (g.sum(axis=1) > 0).astype(np.float64),
        f"precision@{k}": g.sum(axis=1) / k,
        f"ndcg@{k}": ndcg,
    }


def _one(
    ranked: Sequence[int] | np.ndarray, relevant: Sequence[int] | np.ndarray, k: int
) -> dict[str, float]:
    k = _check_k(k)
    row = np.asarray(ranked, dtype=np.int64).reshape(1, -1)
    rel = np.unique(np.asarray(relevant, dtype=np.int64))
    G = _gain_matrix(row, [rel])
    return {name: float(v[0]) for name, v in _metric_arrays(G, np.array([len(rel)]), k).items()}


def hit_at_k(ranked: Sequence[int] | np.ndarray, relevant: Sequence[int] | np.ndarray, k: int) -> float:
    """1.0 if any of the first ``k`` items of ``ranked`` is in ``relevant``, else 0.0."""
    return _one(ranked, relevant, k)[f"hit@{_check_k(k)}"]


def precision_at_k(ranked: Sequence[int] | np.ndarray, relevant: Sequence[int] | np.ndarray, k: int) -> float:
    """Distinct relevant items among the first ``k`` of ``ranked``, divided by ``k`` (a list shorter than
    ``k``, or ``-1`` for no answer, counts the missing places as misses)."""
    return _one(ranked, relevant, k)[f"precision@{_check_k(k)}"]


def ndcg_at_k(ranked: Sequence[int] | np.ndarray, relevant: Sequence[int] | np.ndarray, k: int) -> float:
    """nDCG with binary gains: ``sum_{i<k, ranked[i] relevant} 1/log2(i+2)`` over the ideal DCG, which puts
    ``min(k, |relevant|)`` relevant items first; 0.0 when ``relevant`` is empty. A repeated item gains once."""
    return _one(ranked, relevant, k)[f"ndcg@{_check_k(k)}"]


@dataclass
class RequestScores:
    """Metrics of one method on a request set.

    ``per_request``: metric name (``"hit@10"``, ``"precision@10"``, ``"ndcg@10"`` ...) -> (Q,) array;
    ``per_family``: family -> {metric: mean over its requests, "requests": count}, with ``"all"`` (the
    mean over every request) first; ``n_relevant``: (Q,) size of each relevant set.
    """

    families: list[str]
    n_relevant: np.ndarray
    per_request: dict[str, np.ndarray]
    per_family: dict[str, dict[str, float]] = field(default_factory=dict)

    def rows(self, **extra: Any) -> list[dict[str, Any]]:
        """One dict per family (``"all"`` first): family, requests, the metrics, and ``extra`` columns."""
        return [{"family": fam, **extra, **vals} for fam, vals in self.per_family.items()]


def score_requests(
    ranked: np.ndarray,
    requests: Sequence[Request],
    catalogue: Catalogue | pa.Table | CatalogueFields | None = None,
    *,
    relevant: Sequence[np.ndarray] | None = None,
    ks: Sequence[int] = (1, 10),
) -> RequestScores:
    """Score ranked lists of item rows (``ranked[q]``: catalogue rows for ``requests[q]``, best first,
    ``-1`` for no answer) against each request's relevant set.

    The relevant sets come from ``catalogue`` (computed here) or ``relevant`` (precomputed, one array of
    rows per request). A request with no relevant item, or one whose ``n_relevant`` disagrees with the
    catalogue, means the benchmark does not belong to this catalogue: a :class:`SemidError`. Cost:
    O(Q * n_items) to compute the relevant sets, O(Q * K * log) to score.
    """
    ranked = np.asarray(ranked)
    if ranked.ndim != 2 or ranked.dtype.kind not in "iu":
        raise SemidError(f"ranked should be a (Q, k) integer array of item rows, got shape {ranked.shape}")
    if len(ranked) != len(requests):
        raise SemidError(f"ranked has {len(ranked)} rows for {len(requests)} requests")
    ks = [_check_k(k) for k in ks]
    if relevant is None:
        if catalogue is None:
            raise SemidError("score_requests needs the catalogue or the precomputed relevant sets")
        fields = catalogue_fields(catalogue)
        relevant = [r.relevant(fields) for r in requests]
    elif len(relevant) != len(requests):
        raise SemidError(f"{len(relevant)} relevant sets for {len(requests)} requests")
    relevant = [np.unique(np.asarray(r, dtype=np.int64)) for r in relevant]
    n_rel = np.array([len(r) for r in relevant], dtype=np.int64)
    for req, n in zip(requests, n_rel.tolist(), strict=True):
        if n == 0:
            raise SemidError(f"request {req.text!r} has no relevant item in this catalogue")
        if req.n_relevant is not None and req.n_relevant != n:
            raise SemidError(
                f"request {req.text!r} has {n} relevant items here but {req.n_relevant} where it was made: "
                f"the benchmark belongs to another catalogue"
            )
    G = _gain_matrix(ranked.astype(np.int64), relevant)
    per_request: dict[str, np.ndarray] = {}
    for k in ks:
        per_request.update(_metric_arrays(G, n_rel, k))
    families = [r.family for r in requests]
    fam_arr = np.array(families, dtype=object)
    per_family: dict[str, dict[str, float]] = {}
    for fam in ["all", *dict.fromkeys(families)]:
        sel = np.ones(len(requests), bool) if fam == "all" else fam_arr == fam
        per_family[fam] = {"requests": int(sel.sum())}
        per_family[fam].update(
            {m: float(v[sel].mean()) if sel.any() else 0.0 for m, v in per_request.items()}
        )
    return RequestScores(families, n_rel, per_request, per_family)


# --------------------------------------------------------------------------------------------------------
# Generating a request set
# --------------------------------------------------------------------------------------------------------

DEFAULT_PRICE_WORDINGS: dict[str, tuple[float | None, float | None]] = {
    "cheap {x}": (None, 10.0),
    "budget {x}": (None, 15.0),
    "{x} for less than 15 bucks": (None, 15.0),
    "{x} under $20": (None, 20.0),
    "affordable {x}": (None, 20.0),
    "{x} under thirty dollars": (None, 30.0),
    "{x} from $5 to $15": (5.0, 15.0),
    "{x} around $30": (25.0, 35.0),
    "{x} between $20 and $40": (20.0, 40.0),
    "mid-range {x}": (15.0, 40.0),
    "high-end {x}": (40.0, None),
    "luxury {x}": (50.0, None),
    "premium {x} over $100": (100.0, None),
}
"""Price wordings (a template around ``{x}``, the rest of the request) -> ``(price_min, price_max)``.
None of them is a training price band phrase (``"under $10"``, ``"between $10 and $25"`` ...)."""

DEFAULT_PHRASINGS: dict[str, tuple[str, ...]] = {
    # {x}: an everyday category word (plural or mass noun: "blow dryers", "cologne")
    "synonym": ("{x}", "any good {x}?", "need {x}", "show me {x}", "recommend some {x}",
                "shopping for {x}", "what {x} would you suggest?", "got {x}?"),
    # {x}: a need ("to straighten my hair", "for dry skin")
    "need": ("something {x}", "what's good {x}?", "I need something {x}", "what should I buy {x}?",
             "suggest a product {x}", "anything {x}?"),
    # {b}: a brand spelling
    "brand": ("anything by {b}", "{b} products", "what do you carry from {b}?", "show me {b} stuff",
              "{b} please", "items from {b}"),
    "brand_category": ("{b} {x}", "{x} made by {b}", "any {b} {x}?", "{x}, the {b} kind"),
    "brand_price": ("{b} products", "{b} stuff", "things from {b}"),
    # {i}: an ingredient ("argan oil"); {q}: a quality ("waterproof")
    "ingredient": ("{x} with {i}", "{x} containing {i}", "{i} {x}", "{x} that has {i} in it"),
    "quality": ("{q} {x}", "{x}, {q} please", "{x}, {q} only", "looking for {q} {x}"),
}  # fmt: skip
"""Phrasings per family; none is a phrasing of :mod:`semid.llm.examples`' training or held-out templates."""


@dataclass
class RequestLexicon:
    """The domain words :func:`make_requests` may use (all optional; a catalogue's own words fill in).

    - ``categories``: everyday word -> category nodes or sub-paths it means (any of):
      ``{"blow dryers": ("Hair Dryers",), "cologne": ("Cologne", "Fragrance > Men's")}``; without it the
      catalogue's leaf categories (lower-cased) serve as category words, and there is no synonym family;
    - ``needs``: a need phrase -> constraint: ``{"to straighten my hair": Constraint(("Flattening Irons",))}``;
    - ``ingredients`` / ``qualities``: phrase -> required title words:
      ``{"argan oil": ("argan",)}``, ``{"waterproof": ("waterproof",)}``;
    - ``prices``: price wordings (:data:`DEFAULT_PRICE_WORDINGS`);
    - ``extra``: family -> {request text, used verbatim: constraint}, for hand-written families;
    - ``phrasings``: overrides of :data:`DEFAULT_PHRASINGS`, per family.
    """

    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    needs: dict[str, Constraint] = field(default_factory=dict)
    ingredients: dict[str, tuple[str, ...]] = field(default_factory=dict)
    qualities: dict[str, tuple[str, ...]] = field(default_factory=dict)
    prices: dict[str, tuple[float | None, float | None]] = field(
        default_factory=lambda: dict(DEFAULT_PRICE_WORDINGS)
    )
    extra: dict[str, dict[str, Constraint]] = field(default_factory=dict)
    phrasings: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def phrasing(self, family: str) -> tuple[str, ...]:
        return tuple(self.phrasings.get(family) or DEFAULT_PHRASINGS[family])


_KEYBOARD = {
    c: n
    for row in ("qwertyuiop", "asdfghjkl", "zxcvbnm")
    for i, c in enumerate(row)
    for n in [row[max(0, i - 1) : i] + row[i + 1 : i + 2]]
}


def typo(text: str, rng: np.random.Generator) -> str | None:
    """``text`` with one seeded character edit in its longest word of 4+ letters (the first letter kept):
    a deletion, a swap of neighbours, a doubled letter or a neighbouring key. ``None`` if no word fits."""
    words = text.split(" ")
    lengths = [len(w) if w.isalpha() and len(w) >= 4 else 0 for w in words]
    if max(lengths, default=0) == 0:
        return None
    longest = [i for i, n in enumerate(lengths) if n == max(lengths)]
    i = int(longest[int(rng.integers(len(longest)))])
    w = words[i]
    for _ in range(20):
        j = int(rng.integers(1, len(w) - 1))  # never the first letter, never past the last
        op = int(rng.integers(4))
        if op == 0:
            new = w[:j] + w[j + 1 :]
        elif op == 1:
            new = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
        elif op == 2:
            new = w[:j] + w[j] + w[j:]
        else:
            near = _KEYBOARD.get(w[j].lower(), "")
            if not near:
                continue
            c = near[int(rng.integers(len(near)))]
            new = w[:j] + (c.upper() if w[j].isupper() else c) + w[j + 1 :]
        if new.lower() != w.lower():
            return " ".join([*words[:i], new, *words[i + 1 :]])
    return None


def brand_spellings(brand: str) -> list[str]:
    """Spellings of ``brand`` a shopper might type that normalise to the same name, most changed first:
    lower case without apostrophes and accents, then each change alone; never ``brand`` itself."""

    def no_accents(s: str) -> str:
        return "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))

    def no_apostrophes(s: str) -> str:
        return "".join(c for c in s if c not in "'\u2019\u2018`\u00b4")

    cands = [
        no_apostrophes(no_accents(brand)).lower(),
        no_apostrophes(brand),
        no_accents(brand),
        brand.lower(),
    ]
    return [c for c in dict.fromkeys(cands) if c != brand and c.strip()]


def _tokens(text: str) -> list[str]:
    return normalize_text(text).split()


def _echoes_a_title(text: str, fields: CatalogueFields) -> bool:
    """Whether ``text`` could be a training query made from a title: equal to one, or (two words or more)
    its words, in order, are words of one title (what the ``keywords`` training template draws).
    Cost: one vectorised pass over the titles, then a Python check of the few titles with every word."""
    toks = _tokens(text)
    if not toks or fields.title is None:
        return False
    if len(toks) == 1:
        return bool(pc.any(pc.equal(fields.title, f" {toks[0]} ")).as_py())
    rows = np.flatnonzero(Constraint(title_words=tuple(toks)).mask(fields))
    for r in rows.tolist():
        title = fields.title[r].as_py().split()
        it = iter(title)
        if all(t in it for t in toks):  # an in-order subsequence
            return True
    return False


def assign_splits(requests: Sequence[Request], seed: int = 0, dev_fraction: float = 0.5) -> list[Request]:
    """The requests with ``split`` set to ``"dev"`` or ``"test"``: about ``dev_fraction`` of each family in
    dev, and requests with the same constraint always in the same split (so no relevant set is shared
    between dev and test). Seeded; greedy over constraint groups in random order. Cost: O(Q)."""
    if not 0.0 < dev_fraction < 1.0:
        raise SemidError(f"dev_fraction={dev_fraction!r} should be between 0 and 1")
    rng = np.random.default_rng(seed)
    groups: dict[Constraint, list[int]] = defaultdict(list)
    for i, r in enumerate(requests):
        groups[r.constraint].append(i)
    total = Counter(r.family for r in requests)
    want = {"dev": {f: n * dev_fraction for f, n in total.items()}}
    want["test"] = {f: n - want["dev"][f] for f, n in total.items()}
    have = {s: Counter() for s in SPLITS}
    split_of: dict[int, str] = {}
    keys = list(groups)
    for g in rng.permutation(len(keys)).tolist():
        members = groups[keys[g]]
        fams = Counter(requests[i].family for i in members)
        room = {s: sum((want[s][f] - have[s][f]) * c for f, c in fams.items()) for s in SPLITS}
        s = SPLITS[int(rng.integers(2))] if room["dev"] == room["test"] else max(SPLITS, key=room.__getitem__)
        have[s].update(fams)
        for i in members:
            split_of[i] = s
    return [
        Request(r.text, r.family, r.constraint, split_of[i], r.n_relevant) for i, r in enumerate(requests)
    ]


def make_requests(
    catalogue: Catalogue | pa.Table,
    seed: int = 0,
    *,
    lexicon: RequestLexicon | None = None,
    per_family: int = 36,
    dev_fraction: float = 0.5,
    min_brand_items: int = 3,
) -> list[Request]:
    """A seeded set of flexible requests over ``catalogue``, up to ``per_family`` in each family, split
    into dev and test (:func:`assign_splits`).

    Families (those whose words the lexicon or the catalogue lacks are left out):

    - ``synonym``: an everyday word for a category (lexicon ``categories``), in a phrasing;
    - ``need``: what the shopper wants to do or fix (lexicon ``needs``);
    - ``price``: a category word in a price wording (``"cheap {x}"``, ``"{x} under $20"``);
    - ``brand_spelling``: a brand typed in lower case, without apostrophes or accents;
    - ``brand_typo`` / ``category_typo``: a brand or category word with one character edit (:func:`typo`);
    - ``brand_category``, ``brand_price``, ``ingredient`` (a category word + required title words),
      ``quality`` (the same, as an adjective): two constraints;
    - ``combo3``: three constraints (category + brand or ingredient + price);
    - one family per key of lexicon ``extra``, verbatim.

    Only requests with at least one relevant item are kept, texts are unique (compared normalised) and no
    text repeats a catalogue title or its words in order (what the training templates ask). Category words
    are the lexicon's, or the catalogue's leaf categories with at least 2 items; brands need
    ``min_brand_items`` items. Cost: O((candidates + requests) * n_items) vectorised (a few seconds for
    12,000 items).
    """
    lex = lexicon or RequestLexicon()
    if isinstance(per_family, bool) or not isinstance(per_family, int) or per_family < 1:
        raise SemidError(f"per_family={per_family!r} should be a positive integer")
    table = _table(catalogue)
    fields = catalogue_fields(table)
    rng = np.random.default_rng(seed)
    n = fields.n

    # Category words: the lexicon's everyday words, else the catalogue's leaves.
    cat_words: dict[str, Constraint] = {}
    if lex.categories:
        cat_words = {w: Constraint(categories=tuple(nodes)) for w, nodes in lex.categories.items()}
    elif "categories" in table.column_names:
        paths = _column(table, "categories")
        if pa.types.is_string(paths.type):
            paths = pc.split_pattern(paths, " > ")
        leaves = Counter(p[-1] for p in paths.to_pylist() if p and p[-1])
        cat_words = {
            leaf.lower(): Constraint(categories=(leaf,)) for leaf, c in sorted(leaves.items()) if c >= 2
        }
    word_list = list(cat_words)
    word_masks = (
        np.stack([cat_words[w].mask(fields) for w in word_list]) if word_list else np.zeros((0, n), bool)
    )

    # Brands: one display spelling (the most common) per normalised name with enough items.
    brand_names: list[str] = []
    brand_rows: list[np.ndarray] = []
    if fields.brand is not None and "brand" in table.column_names:
        enc = pc.dictionary_encode(fields.brand)
        codes = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False)
        raw = _column(table, "brand").to_pylist()
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(enc.dictionary) + 1))
        for b in range(len(enc.dictionary)):
            rows = np.sort(order[bounds[b] : bounds[b + 1]])
            if len(rows) >= min_brand_items:
                brand_names.append(html.unescape(Counter(raw[r] for r in rows.tolist()).most_common(1)[0][0]))
                brand_rows.append(rows)

    prices = [(t, Constraint(price_min=lo, price_max=hi)) for t, (lo, hi) in lex.prices.items()]
    price_masks = np.stack([c.mask(fields) for _, c in prices]) if prices else np.zeros((0, n), bool)

    def title_masks(d: dict[str, tuple[str, ...]]) -> tuple[list[str], np.ndarray]:
        names = list(d)
        masks = [Constraint(title_words=tuple(d[k])).mask(fields) for k in names]
        return names, (np.stack(masks) if masks else np.zeros((0, n), bool))

    ingr_names, ingr_masks = title_masks(lex.ingredients)
    qual_names, qual_masks = title_masks(lex.qualities)

    def pick(seq: Sequence[Any]) -> Any:
        return seq[int(rng.integers(len(seq)))]

    def pick_where(counts: np.ndarray, power: float = 0.5) -> int | None:
        """An index with a positive count, drawn with probability proportional to count ** power."""
        w = np.maximum(counts, 0).astype(np.float64) ** power
        return int(rng.choice(len(w), p=w / w.sum())) if w.sum() > 0 else None

    def spelled(brand: str) -> str:
        """The brand as a shopper types it: usually a looser spelling, sometimes as written."""
        variants = brand_spellings(brand)
        return pick(variants) if variants and rng.random() < 0.75 else brand

    def shuffled(k: int) -> list[int]:
        return rng.permutation(k).tolist()

    # Each generator yields (text, constraint) candidates in a random order; the first per_family that
    # pass the checks are kept.
    def synonym():
        for w in shuffled(len(word_list)) if lex.categories else []:
            yield pick(lex.phrasing("synonym")).format(x=word_list[w]), cat_words[word_list[w]]

    def need():
        names = list(lex.needs)
        for i in shuffled(len(names)):
            yield pick(lex.phrasing("need")).format(x=names[i]), lex.needs[names[i]]

    def price():
        for w in shuffled(len(word_list)):
            p = pick_where(price_masks[:, word_masks[w]].sum(1))
            if p is not None:
                yield prices[p][0].format(x=word_list[w]), cat_words[word_list[w]] & prices[p][1]

    def brand_spelling():
        for b in shuffled(len(brand_names)):
            variants = brand_spellings(brand_names[b])
            if variants:
                text = pick(lex.phrasing("brand")).format(
                    b=variants[0] if rng.random() < 0.5 else pick(variants)
                )
                yield text, Constraint(brand=brand_names[b])

    def brand_typo():
        for b in shuffled(len(brand_names)):
            t = typo(brand_names[b], rng)
            if t is not None:
                yield pick(lex.phrasing("brand")).format(b=t), Constraint(brand=brand_names[b])

    def category_typo():
        for w in shuffled(len(word_list)):
            t = typo(word_list[w], rng)
            if t is not None:
                yield pick(lex.phrasing("synonym")).format(x=t), cat_words[word_list[w]]

    def brand_category():
        for b in shuffled(len(brand_names)):
            w = pick_where(word_masks[:, brand_rows[b]].sum(1))
            if w is not None:
                text = pick(lex.phrasing("brand_category")).format(b=spelled(brand_names[b]), x=word_list[w])
                yield text, cat_words[word_list[w]] & Constraint(brand=brand_names[b])

    def brand_price():
        for b in shuffled(len(brand_names)):
            p = pick_where(price_masks[:, brand_rows[b]].sum(1))
            if p is not None:
                core = pick(lex.phrasing("brand_price")).format(b=spelled(brand_names[b]))
                yield prices[p][0].format(x=core), Constraint(brand=brand_names[b]) & prices[p][1]

    def with_words(family: str, names: list[str], masks: np.ndarray, d: dict[str, tuple[str, ...]], key: str):
        """(category word, title words) pairs drawn with probability proportional to their item count, so
        common pairings ("shampoos with argan oil") come first; a word at most twice, a phrase a few times."""

        def gen():
            counts = (word_masks.astype(np.float64) @ masks.T.astype(np.float64)).ravel()
            if not len(names) or counts.sum() == 0:
                return
            cap = max(2, math.ceil(2 * per_family / len(names)))
            used_w: Counter[int] = Counter()
            used_i: Counter[int] = Counter()
            order = rng.choice(
                len(counts), size=np.count_nonzero(counts), replace=False, p=counts / counts.sum()
            )
            for idx in order.tolist():
                w, i = divmod(idx, len(names))
                if used_w[w] >= 2 or used_i[i] >= cap:
                    continue
                used_w[w] += 1
                used_i[i] += 1
                text = pick(lex.phrasing(family)).format(x=word_list[w], **{key: names[i]})
                yield text, cat_words[word_list[w]] & Constraint(title_words=tuple(d[names[i]]))

        return gen

    def combo3():
        for w in shuffled(len(word_list)):
            if len(ingr_names) and rng.random() < 0.4:
                i = pick_where(ingr_masks[:, word_masks[w]].sum(1), power=1.0)
                if i is None:
                    continue
                rows = word_masks[w] & ingr_masks[i]
                core = pick(lex.phrasing("ingredient")).format(x=word_list[w], i=ingr_names[i])
                base = cat_words[word_list[w]] & Constraint(title_words=tuple(lex.ingredients[ingr_names[i]]))
            else:
                with_brand = [b for b in range(len(brand_names)) if word_masks[w, brand_rows[b]].any()]
                if not with_brand:
                    continue
                b = pick(with_brand)
                rows = np.zeros(n, bool)
                rows[brand_rows[b]] = True
                rows &= word_masks[w]
                core = f"{spelled(brand_names[b])} {word_list[w]}"
                base = cat_words[word_list[w]] & Constraint(brand=brand_names[b])
            p = pick_where(price_masks[:, rows].sum(1))
            if p is not None:
                yield prices[p][0].format(x=core), base & prices[p][1]

    def verbatim(family: str):
        def gen():
            texts = list(lex.extra[family])
            for i in shuffled(len(texts)):
                yield texts[i], lex.extra[family][texts[i]]

        return gen

    families = {
        "synonym": synonym,
        "need": need,
        "price": price,
        "brand_spelling": brand_spelling,
        "brand_typo": brand_typo,
        "category_typo": category_typo,
        "brand_category": brand_category,
        "brand_price": brand_price,
        "ingredient": with_words("ingredient", ingr_names, ingr_masks, lex.ingredients, "i"),
        "quality": with_words("quality", qual_names, qual_masks, lex.qualities, "q"),
        "combo3": combo3,
        **{fam: verbatim(fam) for fam in lex.extra},
    }
    seen: set[str] = set()
    out: list[Request] = []
    for family, gen in families.items():
        kept = 0
        for text, constraint in gen():
            key = normalize_text(text)
            if not key or key in seen or _echoes_a_title(text, fields):
                continue
            n_rel = int(constraint.mask(fields).sum())
            if n_rel == 0:
                continue
            seen.add(key)
            out.append(Request(text, family, constraint, None, n_rel))
            kept += 1
            if kept == per_family:
                break
    return assign_splits(out, seed=seed, dev_fraction=dev_fraction)


def request_summary(requests: Sequence[Request]) -> list[dict[str, Any]]:
    """One row per family (then ``"all"``): requests in dev and test, mean and median relevant items
    (``n_relevant``, as stored), and the mean number of constrained fields."""
    rows = []
    fams = list(dict.fromkeys(r.family for r in requests))
    for fam in [*fams, "all"]:
        sel = [r for r in requests if fam in ("all", r.family)]
        n_rel = np.array([r.n_relevant for r in sel if r.n_relevant is not None], dtype=np.float64)
        rows.append(
            {
                "family": fam,
                "dev": sum(r.split == "dev" for r in sel),
                "test": sum(r.split == "test" for r in sel),
                "mean_relevant": float(n_rel.mean()) if len(n_rel) else float("nan"),
                "median_relevant": float(np.median(n_rel)) if len(n_rel) else float("nan"),
                "constraints": float(np.mean([r.constraint.n_parts for r in sel])) if sel else float("nan"),
            }
        )
    return rows
