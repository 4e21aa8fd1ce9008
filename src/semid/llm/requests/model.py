"""Flexible requests, the data model: text normalisation, catalogue fields prepared once, a
:class:`Constraint` over catalogue fields, a :class:`Request` and its relevant items, and request sets as
JSONL (:func:`save_requests` / :func:`load_requests`). :mod:`semid.llm.requests` gives the overview."""

from __future__ import annotations

import contextlib
import functools
import html
import math
import os
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from semid._utils import read_json_lines
from semid.data.model import Catalogue
from semid.errors import SemidError

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
