"""Flexible requests with set-based relevance: a benchmark of what a shopper might ask, scored against
*every* catalogue item that satisfies the request, not one target item.

A :class:`Request` is a text (``"cheap blow dryers"``), a family (``"price"``) and a :class:`Constraint`
over catalogue fields: any combination of a category node or sub-path (``"Hair Dryers"``,
``"Fragrance > Men's"``), a brand (compared after :func:`normalize_text`: case, apostrophes and accents do
not matter), a price range ``[price_min, price_max)`` (either end open) and required title words. Its
relevant items are the catalogue rows that satisfy every part (:meth:`Request.relevant`, vectorised with
pyarrow); an item with a missing field never satisfies a constraint on that field.

Three modules, one job each: :mod:`.model` (normalisation, constraints, requests, JSONL), :mod:`.metrics`
(set-based metrics) and :mod:`.generate` (the seeded generator).

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

from semid.llm.requests.generate import (
    DEFAULT_PHRASINGS,
    DEFAULT_PRICE_WORDINGS,
    RequestLexicon,
    assign_splits,
    brand_spellings,
    make_requests,
    request_summary,
    typo,
)
from semid.llm.requests.metrics import (
    RequestScores,
    hit_at_k,
    ndcg_at_k,
    precision_at_k,
    score_requests,
)
from semid.llm.requests.model import (
    SPLITS,
    CatalogueFields,
    Constraint,
    Request,
    catalogue_fields,
    load_requests,
    normalize_text,
    save_requests,
)

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
