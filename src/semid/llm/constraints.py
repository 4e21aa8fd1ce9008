"""Hard constraints a request states outright (a brand, a price) read from its text, as an item filter.

A language model or a dense retriever ranks items by how well they *match* a request; neither knows that
"under $20" excludes a $21 item or that "gelish" names exactly one brand. :class:`RequestFilter` reads
those two kinds of constraint from the request and turns them into the set of items that satisfy them, so
that decoding (:meth:`semid.llm.generate.QueryRecommender.recommend`'s ``allow``, which prunes the ID trie
at every level) or any ranked list only returns items inside the set.

What it reads (:meth:`RequestFilter.parse`):

- **brands**: catalogue brands named in the request, compared after
  :func:`semid.llm.requests.normalize_text` (case, accents, apostrophes and punctuation do not matter);
  one request word also matches a name with its spaces removed (``"babylisspro"`` finds ``BaBylissPRO``),
  but not the other way round: "acne free" and "soft soap" are phrases, not AcneFree and Softsoap. The
  longest non-overlapping names win.
  A word group holding a word that at most ``rare_words`` (2) of the catalogue's items use (a likely typo)
  is also matched to the closest brand names of 5 or more letters within ``max_edits`` edits
  (optimal-string-alignment distance: a swap of neighbours is one edit; :mod:`rapidfuzz`). A brand name
  that the catalogue's titles and category names use for *unrelated* brands' items ``ambiguity`` (5)
  times as often as the brand has items, across 3 or more such brands (``"Pure"``, ``"Atomizer"``), is a
  common word, not a brand, and is never read as one (a product line that a parent brand's titles name,
  such as Gelish under Hand & Nail Harmony, stays a brand);
- **prices** in dollars: ``under $20`` / ``below 20 dollars`` / ``less than 15 bucks`` (strict upper
  bound), ``up to`` / ``at most`` / ``no more than`` (inclusive), ``over`` / ``more than`` (strict lower),
  ``at least``, ``between $20 and $40`` / ``from $5 to $15`` / ``$5-$15`` (inclusive range),
  ``around $30`` (within 20%); numbers may be written as words (``thirty dollars``). A number only counts
  as a price next to ``$``, ``dollars``, ``bucks`` or ``usd`` ("2 pack", "100 ml" are not prices);
- **price words** (``vague_prices=True``): ``cheap`` and its kin, ``affordable``, ``mid-range``,
  ``high-end``, ``luxury`` ... as quantiles of the catalogue's own prices (:data:`PRICE_WORDS`), since what
  "cheap" means depends on the catalogue.

An item with no price never satisfies a price constraint; an item with no brand never satisfies a brand.
:meth:`RequestFilter.mask` gives ``None`` for a request that states neither (nothing to filter).

Costs: :meth:`RequestFilter.fit` scans the catalogue's title and category words once (``O(words)``
Python, about 1 s per 10k items); :meth:`parse` is ``O(words^2)`` dictionary lookups plus, when a word is
rare, one :func:`rapidfuzz.process.cdist` of the word groups holding it against the brand names (about
2 ms a request on Beauty's 2,036 brands); :meth:`mask` is one pass over the item rows.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from semid.data.model import Catalogue
from semid.errors import SemidError
from semid.llm.requests import catalogue_fields, normalize_text

__all__ = ["PRICE_WORDS", "ParsedRequest", "RequestFilter", "filter_for"]

# Price words -> (lower, upper) quantile of the catalogue's known prices (None: open end).
PRICE_WORDS: dict[str, tuple[float | None, float | None]] = {
    "cheap": (None, 0.25), "cheapest": (None, 0.25), "inexpensive": (None, 0.25), "budget": (None, 0.25),
    "bargain": (None, 0.25), "low cost": (None, 0.25), "low priced": (None, 0.25),
    "affordable": (None, 0.5), "reasonably priced": (None, 0.5),
    "mid range": (0.25, 0.75), "mid priced": (0.25, 0.75), "moderately priced": (0.25, 0.75),
    "high end": (0.75, None), "premium": (0.75, None), "expensive": (0.75, None), "pricey": (0.75, None),
    "upscale": (0.75, None), "luxury": (0.9, None), "luxurious": (0.9, None), "splurge": (0.9, None),
}  # fmt: skip

_UNITS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
}
_NUMBER_WORDS_RE = re.compile(
    r"\b(?:(?:a|one)\s+hundred|(?:{tens})(?:[\s-](?:{units}))?|(?:{teens}))\b".format(
        tens="|".join(_TENS), units="|".join(k for k in _UNITS if _UNITS[k] < 10), teens="|".join(_UNITS)
    )
)
_CUR = r"(?:\$|dollars?\b|bucks\b|usd\b)"
_N = r"\d+(?:\.\d+)?"
# A price: an amount with its currency right beside it ("$15", "15 dollars"); a bare number is no price.
_MONEY = rf"(\$\s*{_N}|{_N}\s*{_CUR})"
# A range's ends: either may carry the currency ("$5-15", "5 to 15 bucks"), checked after matching.
_END = rf"(\$?\s*{_N}(?:\s*{_CUR})?)"
_NUM_RE = re.compile(_N)
_CURRENCY_RE = re.compile(_CUR)
# (pattern, kind): kinds decide the bounds; ranges are read first and their text is not read again.
_PRICE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), kind)
    for p, kind in (
        (rf"\bbetween\s+{_END}\s*(?:and|-|–|to)\s*{_END}", "range"),
        (rf"(?:\bfrom\s+)?{_END}\s*(?:-|–|\bto\b)\s*{_END}", "range"),
        (rf"(?:\bunder|\bbelow|\bless than|\bcheaper than|\blower than|\bbeneath|<)\s*{_MONEY}", "lt"),
        (
            rf"(?:\bup to|\bat most|\bmax(?:imum)?|\bno more than|\bnot more than|\bwithin|<=)\s*{_MONEY}",
            "le",
        ),
        (
            rf"{_MONEY}\s*(?:or less\b|and under\b|or under\b|and below\b|or below\b|or cheaper\b|max(?:imum)?\b)",
            "le",
        ),
        (rf"(?:\bover|\babove|\bmore than|\bgreater than|>)\s*{_MONEY}", "gt"),
        (rf"(?:\bat least|\bmin(?:imum)?|\bstarting at|\bfrom|>=)\s*{_MONEY}", "ge"),
        (rf"{_MONEY}\s*(?:or more\b|and up\b|and above\b|plus\b|\+)", "ge"),
        (rf"(?:\baround|\babout|\broughly|\bapproximately|\bapprox\.?|\bnear|~)\s*{_MONEY}", "around"),
    )
)
# kind -> (bound, inclusive) from the amounts a pattern read
_LOWER = {
    "range": lambda x: (min(x), True),
    "gt": lambda x: (x[0], False),
    "ge": lambda x: (x[0], True),
    "around": lambda x: (0.8 * x[0], True),
}
_UPPER = {
    "range": lambda x: (max(x), True),
    "lt": lambda x: (x[0], False),
    "le": lambda x: (x[0], True),
    "around": lambda x: (1.2 * x[0], True),
}
_NEGATION_RE = re.compile(r"\b(?:not|no|never|isnt|arent|nothing|without)\s+(?:too\s+|very\s+|so\s+)?$")


def _number_words_to_digits(text: str) -> str:
    """``"under thirty five dollars"`` -> ``"under 35 dollars"`` (whole numbers below 200)."""

    def value(m: re.Match[str]) -> str:
        words = re.split(r"[\s-]+", m.group(0))
        if words[-1] == "hundred":
            return "100"
        return str(sum(_TENS.get(w, 0) + _UNITS.get(w, 0) for w in words))

    return _NUMBER_WORDS_RE.sub(value, text)


@dataclass(frozen=True)
class ParsedRequest:
    """What :meth:`RequestFilter.parse` read from one request.

    ``brands``: the matched catalogue brands (normalised), ``fuzzy``: matched by edit distance rather than
    by name; ``price_min`` / ``price_max`` in dollars (``None``: open), with whether each end is
    inclusive; ``spans``: the text fragments that stated each constraint, for display.
    """

    brands: tuple[str, ...] = ()
    fuzzy: bool = False
    price_min: float | None = None
    price_max: float | None = None
    min_inclusive: bool = True
    max_inclusive: bool = False
    spans: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.brands and self.price_min is None and self.price_max is None


@dataclass
class RequestFilter:
    """Reads brand and price constraints from requests and gives the items that satisfy them.

    ``RequestFilter().fit(catalogue)`` learns the brand names, the catalogue's words and its price
    quantiles; ``item_ids`` (e.g. a language model's ``llm.item_ids``) orders the masks' columns (items
    that the catalogue lacks satisfy no constraint). ``brands`` / ``prices`` / ``vague_prices`` /
    ``fuzzy`` switch each reading off; ``ambiguity`` is the ratio of other brands' mentions of a name to
    its own items above which the name is a common word (if 3 or more unrelated brands use it);
    ``rare_words``: how few items may use a word for a word group holding it to be matched with edits;
    ``max_edits`` maps a minimum name length (letters, spaces removed)
    to the edits a misspelt brand may have: ``{5: 1, 12: 2}``.
    """

    brands: bool = True
    prices: bool = True
    vague_prices: bool = True
    fuzzy: bool = True
    max_edits: dict[int, int] = field(default_factory=lambda: {5: 1, 12: 2})
    price_words: dict[str, tuple[float | None, float | None]] = field(
        default_factory=lambda: dict(PRICE_WORDS)
    )
    ambiguity: float = 5.0
    rare_words: int = 2

    def fit(
        self, catalogue: Catalogue | pa.Table, item_ids: Sequence[Any] | np.ndarray | None = None
    ) -> RequestFilter:
        """Learn the brands, words and price quantiles of ``catalogue`` (a :class:`Catalogue`, or a table
        with an ``item_id`` column and any of ``brand``, ``price``, ``title``, ``categories``)."""
        fields = catalogue_fields(catalogue)
        n = fields.n
        rows = np.arange(n)
        if item_ids is not None:  # columns in the caller's item order
            own_ids = (
                catalogue.item_ids if isinstance(catalogue, Catalogue) else catalogue["item_id"].to_pylist()
            )
            row_of = {str(i): r for r, i in enumerate(own_ids)}
            rows = np.array([row_of.get(str(i), -1) for i in item_ids], dtype=np.int64)
        self.n_items_ = len(rows)
        known = rows >= 0
        price = np.full(len(rows), np.nan)
        if fields.price is not None:
            price[known] = fields.price[rows[known]]
        self.price_ = price  # (n_items,) NaN: unknown
        finite = price[np.isfinite(price)]
        qs = sorted({q for b in self.price_words.values() for q in b if q is not None})
        self.quantiles_ = {q: float(np.quantile(finite, q)) for q in qs} if len(finite) else {}
        brand = [None] * n if fields.brand is None else fields.brand.to_pylist()
        titles = [""] * n if fields.title is None else fields.title.to_pylist()
        paths = [""] * n if fields.path is None else fields.path.to_pylist()
        own = Counter(b for b in brand if b)
        columns: dict[str, list[int]] = {}  # brand -> its columns (in the item_ids order), in one pass
        for col, r in enumerate(rows.tolist()):
            if r >= 0 and brand[r]:
                columns.setdefault(brand[r], []).append(col)
        self.brand_rows_ = {b: np.asarray(columns.get(b, []), dtype=np.int64) for b in own}
        self.max_brand_words_ = max((len(b.split()) for b in own), default=0)
        # Ambiguity: how many items of *unrelated* brands (neither name inside the other) use the brand's
        # name in their title or categories, and how many such brands: a common word, not a product line.
        other: Counter[str] = Counter()
        other_brands: dict[str, set[str | None]] = {}
        df: Counter[str] = Counter()  # items whose text uses each word
        for r in range(n):
            words = f"{titles[r] or ''} {(paths[r] or '').replace('|', ' ')}".split()
            df.update(set(words))
            seen = {
                " ".join(words[i : i + m])
                for m in range(1, self.max_brand_words_ + 1)
                for i in range(len(words) - m + 1)
            } & own.keys()
            mine = f" {brand[r]} " if brand[r] else None
            for name in seen:
                if mine is None or (f" {name} " not in mine and mine not in f" {name} "):
                    other[name] += 1
                    other_brands.setdefault(name, set()).add(brand[r])
        for b in own:
            df.update(set(b.split()))
        self.word_counts_ = df
        self.ambiguous_ = {
            b for b, c in own.items() if other[b] >= self.ambiguity * c and len(other_brands.get(b, ())) >= 3
        }
        usable = [b for b in own if b not in self.ambiguous_]
        self.brand_names_ = set(usable)
        self.compact_: dict[str, list[str]] = {}
        for b in usable:
            self.compact_.setdefault(b.replace(" ", ""), []).append(b)
        self.fuzzy_names_ = [c for c in self.compact_ if len(c) >= min(self.max_edits, default=math.inf)]
        return self

    # ----------------------------------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "brand_rows_"):
            raise SemidError("this RequestFilter is not fitted: call fit(catalogue) first")

    def parse(self, text: str) -> ParsedRequest:
        """The brand and price constraints ``text`` states (see the module docstring)."""
        self._check_fitted()
        if not isinstance(text, str):
            raise SemidError(f"a request should be a string, got {type(text).__name__}")
        brands: tuple[str, ...] = ()
        fuzzy = False
        spans: list[str] = []
        words = normalize_text(text).split()
        if self.brands and words:
            brands, found = self._exact_brands(words)
            if self.fuzzy:  # a misspelt longer name beats an exact shorter one inside it ("obagi meedical")
                near, near_found = self._fuzzy_brands(words)
                longer = any(f" {e} " in f" {f} " and len(f) > len(e) for f in near_found for e in found)
                if near and (not brands or longer):
                    brands, found, fuzzy = near, near_found, True
            spans += found
        lo = hi = None
        lo_inc, hi_inc = True, False
        if self.prices:
            (lo, hi, lo_inc, hi_inc), found = self._price(text)
            spans += found
        return ParsedRequest(brands, fuzzy, lo, hi, lo_inc, hi_inc, tuple(spans))

    def _exact_brands(self, words: list[str]) -> tuple[tuple[str, ...], list[str]]:
        taken = np.zeros(len(words), bool)
        out: list[str] = []
        spans: list[str] = []
        for m in range(min(len(words), self.max_brand_words_ + 1), 0, -1):  # longest names first
            for i in range(len(words) - m + 1):
                if taken[i : i + m].any():
                    continue
                gram = words[i : i + m]
                names = [" ".join(gram)] if " ".join(gram) in self.brand_names_ else []
                if not names and m == 1:  # one word for a spaced name: "babylisspro" -> BaBylissPRO
                    names = self.compact_.get(gram[0], [])
                if names:
                    out += [b for b in names if b not in out]
                    spans.append(" ".join(gram))
                    taken[i : i + m] = True
        return tuple(out), spans

    def _fuzzy_brands(self, words: list[str]) -> tuple[tuple[str, ...], list[str]]:
        if not self.fuzzy_names_:
            return (), []
        from rapidfuzz.distance import OSA
        from rapidfuzz.process import cdist

        grams = []
        for m in range(1, min(len(words), self.max_brand_words_) + 1):
            for i in range(len(words) - m + 1):
                gram = words[i : i + m]
                if any(self.word_counts_[w] <= self.rare_words for w in gram):  # a likely typo in it
                    grams.append(("".join(gram), " ".join(gram)))
        if not grams:
            return (), []
        limit = max(self.max_edits.values())
        dist = cdist(
            [g for g, _ in grams], self.fuzzy_names_, scorer=OSA.distance, score_cutoff=limit, workers=1
        )
        best: tuple[int, list[str], list[str]] = (limit + 1, [], [])
        for gi, (_, span) in enumerate(grams):
            for ni in np.flatnonzero(dist[gi] <= limit):
                name, d = self.fuzzy_names_[ni], int(dist[gi, ni])
                if d > self._edits_for(len(name)) or d > best[0]:
                    continue
                if d < best[0]:
                    best = (d, [], [])
                best[1].extend(b for b in self.compact_[name] if b not in best[1])
                if span not in best[2]:
                    best[2].append(span)
        return tuple(best[1]), best[2]

    def _edits_for(self, length: int) -> int:
        return max((e for m, e in self.max_edits.items() if length >= m), default=0)

    def _price(self, text: str) -> tuple[tuple[float | None, float | None, bool, bool], list[str]]:
        """``((price_min, price_max, min_inclusive, max_inclusive), spans)``: the first stated lower and
        upper bounds in reading order ("more than $10 but less than $30" states both); a price word only
        when no amount is stated, the first in the text, and not after a negation ("not expensive")."""
        raw = _number_words_to_digits(re.sub(r"(?<=\d),(?=\d{3}\b)", "", text.lower()))
        found: list[tuple[int, str, list[float], str]] = []  # (position, kind, amounts, text)
        taken = np.zeros(len(raw) + 1, bool)
        for pattern, kind in _PRICE_PATTERNS:
            for m in pattern.finditer(raw):
                if taken[m.start() : m.end()].any():
                    continue  # inside a range already read
                amounts = [g for g in m.groups() if g is not None]
                if kind == "range" and not any(_CURRENCY_RE.search(a) for a in amounts):
                    continue  # "spf 30-50", "3-4 oz": numbers, not prices
                found.append(
                    (m.start(), kind, [float(_NUM_RE.search(a).group(0)) for a in amounts], m.group(0))
                )
                taken[m.start() : m.end()] = True
        lo = hi = None
        lo_inc, hi_inc = True, False
        spans: list[str] = []
        for _, kind, x, span in sorted(found, key=lambda f: f[0]):
            used = False
            if kind in _LOWER and lo is None:
                lo, lo_inc = _LOWER[kind](x)
                used = True
            if kind in _UPPER and hi is None:
                hi, hi_inc = _UPPER[kind](x)
                used = True
            if used:
                spans.append(span.strip())
        if spans or not (self.vague_prices and self.quantiles_):
            return (lo, hi, lo_inc, hi_inc), spans
        norm = " " + normalize_text(text) + " "
        first = None
        for word, (qlo, qhi) in self.price_words.items():
            at = norm.find(f" {word} ")
            while at >= 0 and _NEGATION_RE.search(norm[: at + 1]):
                at = norm.find(f" {word} ", at + 1)
            if at >= 0 and (first is None or at < first[0]):
                first = (at, word, qlo, qhi)
        if first is None:
            return (None, None, True, False), []
        _, word, qlo, qhi = first
        lo = None if qlo is None else self.quantiles_[qlo]
        hi = None if qhi is None else self.quantiles_[qhi]
        return (lo, hi, True, True), [word]

    # ----------------------------------------------------------------------------------------------------

    def mask(self, request: str | ParsedRequest) -> np.ndarray | None:
        """``(n_items,)`` bool: the items that satisfy what ``request`` states; ``None`` if it states nothing."""
        parsed = self.parse(request) if isinstance(request, str) else request
        self._check_fitted()
        if parsed.empty:
            return None
        ok = np.ones(self.n_items_, bool)
        if parsed.brands:
            named = np.zeros(self.n_items_, bool)
            for b in parsed.brands:
                named[self.brand_rows_.get(b, [])] = True
            ok &= named
        p = self.price_
        with np.errstate(invalid="ignore"):
            if parsed.price_min is not None:
                ok &= (p >= parsed.price_min) if parsed.min_inclusive else (p > parsed.price_min)
            if parsed.price_max is not None:
                ok &= (p <= parsed.price_max) if parsed.max_inclusive else (p < parsed.price_max)
        return ok

    def masks(self, requests: Sequence[str]) -> np.ndarray:
        """``(Q, n_items)`` bool, one row per request; a request that states nothing allows every item."""
        out = np.ones((len(requests), self.n_items_), bool)
        for q, text in enumerate(requests):
            m = self.mask(text)
            if m is not None:
                out[q] = m
        return out


def filter_for(llm: Any) -> RequestFilter | None:
    """A :class:`RequestFilter` over a loaded language model's items (columns in ``llm.item_ids`` order),
    from the ``brand`` / ``price`` columns its ``items.parquet`` keeps; ``None`` when it has neither (a
    model prepared before they were kept, or a catalogue without them)."""
    table = getattr(llm, "item_table", None)
    if table is None or not {"brand", "price"} & set(table.column_names):
        return None
    return RequestFilter().fit(table)
