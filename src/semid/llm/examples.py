"""Training data for a query -> Semantic ID language model, built from a catalogue and its IDs.

Three tasks, each a chat (system prompt, user turn, assistant answer):

- ``predict_semantic_id``: a natural-language request built from an item's title, brand, categories,
  attributes and price band -> ``[REC]`` followed by the item's ID tokens (``<a_12><b_4><c_9>``);
- ``predict_attribute``: "What is the brand of <a_12><b_4><c_9>?" -> the field value;
- ``next_item`` (when interactions are given): the IDs of a user's last items -> ``[REC]`` + the next ID.

Query templates are split in two: the *training* templates are drawn at random (one seeded generator) to
make ``n_per_item`` examples per item; the *held-out* templates never appear in training and make the
validation set, so validation measures how well the model generalises to new phrasings. The language
model always spells IDs in the ``angle`` format (one token per level), whatever format ``ids.parquet`` uses
for display.

Example::

    >>> from semid.data import make_demo_dataset
    >>> cat = make_demo_dataset(n_items=20, n_users=5, seed=0).catalogue
    >>> codes = np.stack([np.arange(20) // 10, np.arange(20) % 10], axis=1)
    >>> ex = build_examples(cat, cat.item_ids, codes, ExampleConfig(n_per_item=2, seed=0))
    >>> ex.train[0]["messages"][2]["content"].startswith("[REC]<a_")
    True
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semid._outputs import atomic_path, check_output, has_marker
from semid._utils import check_positive_int, check_random_state, read_json_lines
from semid.data.model import Catalogue, Sequences
from semid.embed.text import default_template, item_text_fields
from semid.errors import SemidError
from semid.ids import format_id

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "HELD_OUT_TEMPLATES",
    "REC_TOKEN",
    "TRAIN_TEMPLATES",
    "ExampleConfig",
    "Examples",
    "ATTRIBUTE_QUESTIONS",
    "ItemFacts",
    "attribute_question",
    "build_examples",
    "check_ids_cover",
    "id_text",
    "item_facts",
    "prepare_dataset",
    "price_band",
    "read_jsonl",
    "write_jsonl",
]

FILTER_FIELDS = ("brand", "price", "categories")  # kept with the items for request filters
REC_TOKEN = "[REC]"  # "answer with an item": constrained decoding starts after it
ID_FORMAT = "angle"  # one token per level, so the level of a token is in the token itself
DEFAULT_SYSTEM_PROMPT = "You recommend items from the catalogue."

# (upper bound in dollars, phrase); the last band is open.
_PRICE_BANDS: tuple[tuple[float, str], ...] = (
    (10.0, "under $10"),
    (25.0, "between $10 and $25"),
    (50.0, "between $25 and $50"),
    (math.inf, "over $50"),
)
# Fields that are not item attributes worth asking about (numbers with no meaning to a shopper).
_SKIP_FIELDS = {"sales_rank", "sales_type", "rating", "timestamp", "description", "image", "url"}
_WORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9'&.+-]*")


def price_band(price: float | None) -> str | None:
    """The phrase of the price band of ``price`` (``"under $10"`` ...), ``None`` when there is no price."""
    if price is None or not math.isfinite(price) or price <= 0:
        return None
    for bound, phrase in _PRICE_BANDS:
        if price < bound:
            return phrase
    return None  # unreachable: the last bound is inf


def id_text(codes_row: Sequence[int] | np.ndarray) -> str:
    """The ID as the language model spells it: ``[3, 1]`` -> ``"<a_3><b_1>"``."""
    return format_id(np.asarray(codes_row), ID_FORMAT)


@dataclass
class ItemFacts:
    """What the templates may say about one item; ``None`` where the catalogue has no value."""

    title: str | None
    brand: str | None
    leaf: str | None  # the most specific category ("Lipstick")
    path: str | None  # the category path below the root ("Makeup > Lips > Lipstick")
    band: str | None  # price band phrase
    price: str | None  # "$12.99"
    attributes: dict[str, str]  # other short text fields: colour, finish, size ...


# A template maps (facts, rng) to a query, or None when the item lacks what the template needs.
Template = Callable[[ItemFacts, np.random.Generator], "str | None"]


def _keywords(title: str | None, rng: np.random.Generator, lo: int = 2, hi: int = 5) -> str | None:
    """A few words of the title in their original order: how people type into a search box."""
    if not title:
        return None
    words = _WORD_RE.findall(title)
    if len(words) < 2:
        return None
    n = int(rng.integers(min(lo, len(words)), min(hi, len(words)) + 1))
    keep = np.sort(rng.choice(len(words), size=n, replace=False))
    return " ".join(words[i] for i in keep)


def _attribute_phrase(f: ItemFacts) -> str | None:
    return " ".join(f.attributes.values()) if f.attributes else None


def _leaf_keywords(f: ItemFacts, rng: np.random.Generator) -> str | None:
    words = _keywords(f.title, rng)
    return f"{f.leaf}: {words}" if f.leaf and words else None


def _need(*values: str | None) -> bool:
    return all(v for v in values)


TRAIN_TEMPLATES: dict[str, Template] = {
    "title": lambda f, r: f.title,
    "looking_for": lambda f, r: f"I'm looking for {f.title}." if _need(f.title) else None,
    "keywords": lambda f, r: _keywords(f.title, r),
    "brand_leaf": lambda f, r: f"{f.leaf} by {f.brand}" if _need(f.leaf, f.brand) else None,
    "brand_leaf_band": (
        lambda f, r: f"{f.brand} {f.leaf} {f.band}" if _need(f.brand, f.leaf, f.band) else None
    ),
    "path_brand": (lambda f, r: f"Something in {f.path} from {f.brand}" if _need(f.path, f.brand) else None),
    "attributes_leaf": (
        lambda f, r: f"{_attribute_phrase(f)} {f.leaf}" if _need(_attribute_phrase(f), f.leaf) else None
    ),
    "leaf_keywords": lambda f, r: _leaf_keywords(f, r),
}
"""Query templates used for training (name -> template)."""

HELD_OUT_TEMPLATES: dict[str, Template] = {
    "recommend_title": lambda f, r: f"Can you recommend the {f.title}?" if _need(f.title) else None,
    "attribute_query": (
        lambda f, r: (
            f"I want a {f.leaf} from {f.brand}, {f.band}." if _need(f.leaf, f.brand, f.band) else None
        )
    ),
    "search_keywords": lambda f, r: f"Do you have {_keywords(f.title, r, 3, 6)}?" if _need(f.title) else None,
}
"""Query templates held out for evaluation only: their phrasings never appear in training."""

ATTRIBUTE_QUESTIONS = {"brand": "brand", "leaf": "category", "band": "price range"}
"""``predict_attribute`` questions: :class:`ItemFacts` field -> how the question names it."""


def attribute_question(label: str, spelled_id: str) -> str:
    """The ``predict_attribute`` question: ``("brand", "<a_1>")`` -> ``"What is the brand of <a_1>?"``."""
    return f"What is the {label} of {spelled_id}?"


@dataclass
class ExampleConfig:
    """How many examples of which kind; one seed makes the whole set reproducible."""

    n_per_item: int = 4  # predict_semantic_id examples per item, templates drawn without replacement
    attribute_examples: bool = True  # one predict_attribute example per item and known field
    max_history: int = 10  # next_item: most recent items shown
    n_valid_items: int | None = None  # items that get held-out validation queries (None: all)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    seed: int = 0

    def check(self) -> None:
        check_positive_int("n_per_item", self.n_per_item, numpy_ok=False)
        check_positive_int("max_history", self.max_history, numpy_ok=False)
        if self.n_valid_items is not None and (
            isinstance(self.n_valid_items, bool)
            or not isinstance(self.n_valid_items, int)
            or self.n_valid_items < 1
        ):
            raise SemidError(f"n_valid_items={self.n_valid_items!r} should be a positive integer or None")


@dataclass
class Examples:
    """Training and validation examples: dicts with ``task``, ``template``, ``item`` (catalogue row, or -1),
    ``item_id`` and ``messages`` (system, user, assistant)."""

    train: list[dict[str, Any]]
    valid: list[dict[str, Any]]
    config: ExampleConfig = field(default_factory=ExampleConfig)

    def write(self, directory: str | os.PathLike) -> Path:
        """Write ``train.jsonl``, ``valid.jsonl`` and ``examples.json`` (the config) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_jsonl(directory / "train.jsonl", self.train)
        write_jsonl(directory / "valid.jsonl", self.valid)
        with atomic_path(directory / "examples.json") as tmp:
            tmp.write_text(json.dumps(asdict(self.config), indent=2) + "\n")
        return directory


def _chat(system: str, user: str, answer: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": system},
        {"role": "user", "content": user},
        {"role": "assistant", "content": answer},
    ]


def item_facts(catalogue: Catalogue) -> list[ItemFacts]:
    """Per-item facts (catalogue order), read column-wise: what the examples' queries and answers say."""
    n = len(catalogue)
    fields = set(catalogue.fields)

    def texts(name: str) -> list[str | None]:
        if name not in fields:
            return [None] * n
        return [t.strip() or None for t in catalogue.text_column(name).to_pylist()]

    titles, brands = texts("title"), texts("brand")
    brands = [None if b in (None, "None", "Unknown") else b for b in brands]
    if "categories" in fields:
        cats = catalogue.column("categories").to_pylist()
        if cats and isinstance(next((c for c in cats if c is not None), []), str):
            cats = [c.split(" > ") if c else None for c in cats]
    else:
        cats = [None] * n
    prices: list[float | None] = [None] * n
    if "price" in fields:
        import pyarrow as pa
        import pyarrow.compute as pc

        col = catalogue.column("price")
        if pa.types.is_floating(col.type) or pa.types.is_integer(col.type):
            prices = pc.cast(col, pa.float64()).to_pylist()
    attr_names = [
        name
        for name in catalogue.text_fields
        if name not in {"title", "brand", "categories", "price"} and name not in _SKIP_FIELDS
    ]
    attr_values = {name: texts(name) for name in attr_names}
    out = []
    for i in range(n):
        path = [c for c in (cats[i] or []) if c]
        below_root = path[1:] if len(path) > 1 else path
        price = prices[i]
        attributes = {
            name: v for name in attr_names if (v := attr_values[name][i]) and v != "None" and len(v) <= 40
        }
        out.append(
            ItemFacts(
                title=titles[i],
                brand=brands[i],
                leaf=below_root[-1] if below_root else None,
                path=" > ".join(below_root) if below_root else None,
                band=price_band(price),
                price=f"${price:.2f}" if price_band(price) else None,
                attributes=attributes,
            )
        )
    return out


def check_ids_cover(catalogue: Catalogue, item_ids: np.ndarray, *, where: str = "ids") -> np.ndarray:
    """Row of ``item_ids`` holding each catalogue item's ID; every catalogue item must have one.

    Raises ``SemidError("ids.parquet: 3 of 50 catalogue items have no Semantic ID (first: 'D00007')")``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    ids = pa.array([str(x) for x in item_ids], type=pa.string())
    rows = pc.index_in(catalogue.column("item_id").cast(pa.string()), value_set=ids)
    missing = rows.is_null().to_numpy(zero_copy_only=False)
    if missing.any():
        first = catalogue.item_ids[int(np.argmax(missing))]
        raise SemidError(
            f"{where}: {int(missing.sum()):,} of {len(catalogue):,} catalogue items have no Semantic ID "
            f"(first: {first!r})"
        )
    return pc.fill_null(rows, -1).to_numpy().astype(np.int64)


def build_examples(
    catalogue: Catalogue,
    item_ids: Sequence[str] | np.ndarray,
    codes: np.ndarray,
    config: ExampleConfig | None = None,
    *,
    sequences: Sequences | None = None,
) -> Examples:
    """Chat examples for every item of ``catalogue``; ``item_ids``/``codes`` are the ID table's rows.

    ``codes[j]`` is the ID of item ``item_ids[j]``; every catalogue item must be there. ``sequences`` (item
    indices are catalogue rows, as from :meth:`semid.data.Dataset.sequences`) adds ``next_item`` examples:
    each user's second-to-last item in training, the last one in validation (leave-one-out).
    """
    config = config or ExampleConfig()
    config.check()
    codes = np.asarray(codes)
    if codes.ndim != 2 or len(codes) != len(item_ids):
        raise SemidError(f"codes has shape {codes.shape}, expected ({len(item_ids)}, n_levels)")
    rows = check_ids_cover(catalogue, np.asarray(item_ids, dtype=object))
    id_texts = [id_text(codes[r]) for r in rows]  # catalogue row -> ID text
    cat_ids = catalogue.item_ids
    rng = check_random_state(config.seed)
    facts = item_facts(catalogue)
    system = config.system_prompt
    train: list[dict[str, Any]] = []
    valid: list[dict[str, Any]] = []

    def add(dest: list, task: str, template: str, item: int, query: str, answer: str) -> None:
        dest.append(
            {
                "task": task,
                "template": template,
                "item": item,
                "item_id": str(cat_ids[item]) if item >= 0 else None,
                "messages": _chat(system, query, answer),
            }
        )

    names = list(TRAIN_TEMPLATES)
    for i, f in enumerate(facts):
        rec = REC_TOKEN + id_texts[i]
        made = 0
        for j in rng.permutation(len(names)):  # templates in random order, until n_per_item fit the item
            query = TRAIN_TEMPLATES[names[j]](f, rng)
            if query:
                add(train, "predict_semantic_id", names[j], i, query, rec)
                made += 1
                if made == config.n_per_item:
                    break
        if config.attribute_examples:
            for key, label in ATTRIBUTE_QUESTIONS.items():
                value = getattr(f, key)
                if value:
                    add(train, "predict_attribute", key, i, attribute_question(label, id_texts[i]), value)

    valid_items = np.arange(len(facts))
    if config.n_valid_items is not None and config.n_valid_items < len(facts):
        valid_items = np.sort(rng.choice(len(facts), size=config.n_valid_items, replace=False))
    for i in valid_items.tolist():
        for name, template in HELD_OUT_TEMPLATES.items():
            query = template(facts[i], rng)
            if query:
                add(valid, "predict_semantic_id", name, i, query, REC_TOKEN + id_texts[i])

    if sequences is not None:
        for u in range(len(sequences.offsets) - 1):
            seq = sequences.items[sequences.offsets[u] : sequences.offsets[u + 1]]
            for dest, end in ((train, len(seq) - 1), (valid, len(seq))):
                if end < 2:
                    continue
                history = seq[max(0, end - 1 - config.max_history) : end - 1]
                query = "I bought " + ", ".join(id_texts[h] for h in history) + ". What next?"
                target = int(seq[end - 1])
                add(dest, "next_item", "history", target, query, REC_TOKEN + id_texts[target])
    order = rng.permutation(len(train))
    return Examples(train=[train[k] for k in order], valid=valid, config=config)


def write_jsonl(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> Path:
    """One JSON object a line, written atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a JSONL file of examples; a malformed line raises ``SemidError`` naming the line."""
    rows = []
    for n, row in read_json_lines(path):
        if not isinstance(row.get("messages"), list):
            raise SemidError(f"{path} line {n}: expected an object with a 'messages' list")
        rows.append(row)
    return rows


DATA_META = "llm_data.json"
ITEMS_FILE = "items.parquet"
EXAMPLES_DIR = "a directory of training examples"  # what `semid llm prepare` writes, for messages


def _item_texts(catalogue: Catalogue, titles: list[str]) -> list[str]:
    """Each item as `semid embed` renders it by default (:func:`semid.embed.text.default_template`: the
    catalogue's title-, brand-, category- and price-like fields, then its other short text fields); the
    titles when no field qualifies."""
    return default_template(catalogue).render(catalogue) if item_text_fields(catalogue) else titles


def prepare_dataset(
    catalogue: Catalogue,
    ids: Any,
    directory: str | os.PathLike,
    config: ExampleConfig | None = None,
    *,
    sequences: Sequences | None = None,
    ids_path: str = "ids",
) -> Examples:
    """Write everything ``semid llm train`` needs into ``directory``.

    ``ids`` is an :class:`semid.ids.table.IdTable` covering every catalogue item. Files: ``train.jsonl``,
    ``valid.jsonl``, ``examples.json`` (the config), ``items.parquet`` (catalogue order: ``item_id``,
    ``semantic_id``, ``codes``, ``title``, ``text``, and the catalogue's ``brand``, ``price`` and
    ``categories`` where it has them, for :class:`semid.llm.constraints.RequestFilter`) and ``llm_data.json`` (codebook sizes, templates).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_output(
        directory,
        is_dir=True,
        replaceable=has_marker(DATA_META),
        what=EXAMPLES_DIR,
    )
    rows = check_ids_cover(catalogue, np.asarray(ids.item_ids, dtype=object), where=ids_path)
    codes = np.asarray(ids.codes, dtype=np.int64)[rows]  # (n_items, L) in catalogue order
    if len(np.unique(codes, axis=0)) != len(codes):
        raise SemidError(f"{ids_path}: Semantic IDs are not unique; assign them with a dedup strategy")
    sizes = (codes.max(axis=0) + 1).tolist() if len(codes) else []
    declared = ids.meta.get("codebook_sizes") or []
    if len(declared) == len(sizes):  # the quantizer's sizes, unless dedup added codes beyond them
        sizes = [max(int(a), int(b)) for a, b in zip(declared, sizes, strict=True)]
    examples = build_examples(catalogue, catalogue.item_ids, codes, config, sequences=sequences)
    titles = (
        catalogue.text_column("title").to_pylist() if "title" in catalogue.fields else [""] * len(catalogue)
    )
    table = pa.table(
        {
            "item_id": pa.array([str(x) for x in catalogue.item_ids], type=pa.string()),
            "semantic_id": pa.array([ids.semantic_ids[r] for r in rows], type=pa.string()),
            "codes": pa.array(codes.tolist(), type=pa.list_(pa.int64())),
            "title": pa.array(titles, type=pa.string()),
            # what `semid embed` reads by default; the query encoder embeds it for the code head
            "text": pa.array(_item_texts(catalogue, titles), type=pa.string()),
            # what a request may constrain outright (semid.llm.constraints.RequestFilter), as catalogued
            **{f: catalogue.table.column(f) for f in FILTER_FIELDS if f in catalogue.fields},
        }
    )
    meta = {
        "codebook_sizes": sizes,
        "n_items": len(catalogue),
        "n_train": len(examples.train),
        "n_valid": len(examples.valid),
        "train_templates": list(TRAIN_TEMPLATES),
        "held_out_templates": list(HELD_OUT_TEMPLATES),
        "system_prompt": examples.config.system_prompt,
    }
    # the whole directory at once: a kill leaves the old one (or none), never new examples beside old metadata
    with atomic_path(directory, is_dir=True, replaceable=has_marker(DATA_META), what=EXAMPLES_DIR) as tmp:
        examples.write(tmp)
        pq.write_table(table, tmp / ITEMS_FILE)
        (tmp / DATA_META).write_text(json.dumps(meta, indent=2) + "\n")
    return examples
