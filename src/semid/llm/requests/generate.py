"""A seeded generator of request sets from a catalogue (:func:`make_requests`), in families (synonyms,
needs, price wordings, brand spellings, typos, combinations ...), split into ``dev`` and ``test``; the
domain words it may use come in a :class:`RequestLexicon`."""

from __future__ import annotations

import html
import math
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from semid._utils import check_positive_int
from semid.data.model import Catalogue
from semid.errors import SemidError
from semid.llm.requests.model import (
    SPLITS,
    CatalogueFields,
    Constraint,
    Request,
    _column,
    _table,
    catalogue_fields,
    normalize_text,
)

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
    check_positive_int("per_family", per_family)
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
