"""Item text templates: catalogue fields -> one text per item, the input of the embedding model.

A template is a string with ``{field}`` placeholders and ``;``-separated parts::

    Title: {title}; Brand: {brand}; Categories: {categories}; Price: {price}

A part is left out entirely when any of its fields is empty (null, ``""``, ``"None"``, NaN, an empty
list), so an item without a brand reads ``Title: ...; Categories: ...; Price: ...``; the kept parts are
joined with ``"; "``. This default is the item text of TIGER-style pipelines and of the reference
Amazon-Beauty MiniLM vectors.

Field values are rendered as text the same way whatever reader produced them:

- lists (``list<string>``, e.g. a category path) are joined with ``", "``, each element stripped of
  surrounding quotes; empty elements are dropped;
- token-seq strings in ``list_fields`` (RecBole writes ``'Beauty', 'Skin Care', "Women's"``) are split the
  same way;
- floats read like Python prints them (``10.0``, ``5.04``); integers and booleans as written.

Rendering is vectorised with Arrow string kernels (no Python loop over items).

The default item text (:func:`default_template`, used when no template is given) is built from the fields
a catalogue has, so that a catalogue naming its fields ``name``/``manufacturer``/``genres`` works as well
as one with ``title``/``brand``/``categories``. Parts come in this order, each ``Label: {field}`` with the
label read from the field name (``movie_title`` -> ``Movie title: {movie_title}``):

1. a title-like field, the first of :data:`TITLE_FIELDS` the catalogue has (``title``, ``name``, ...);
2. a brand-like field, the first of :data:`BRAND_FIELDS` (``brand``, ``manufacturer``, ...);
3. a category-like field, the first of :data:`CATEGORY_FIELDS` (``categories``, ``genres``, ``tags``, ...);
4. a price-like field, the first of :data:`PRICE_FIELDS` (``price``);
5. every other *short text field*, in catalogue order.

Names match case-insensitively. Fields 1-3 must hold text or lists of text, the price text or a number
(a column with no value at all qualifies too: its part is left out of every text). A *short text field*
holds text or lists of text (numbers, booleans and dates do not count, so numeric ids, ranks and timestamps
stay out) and

- is not named like an id, a link or a time (:data:`NOT_TEXT_NAMES`: ``id``, ``*_id``, ``asin``, ``sku``,
  ``*_url``, ``image``, ``timestamp``, ``*_date``, ...) nor like Amazon's bookkeeping ``sales_type`` and
  ``sales_rank`` (the category a sales rank is counted in, not a property of the item);
- reads as words: at least half of its non-empty values hold a letter and are not links, so codes such as
  ``"874965758"`` or ``"1995-01-01"`` stored as text stay out;
- is short: the median length of its non-empty values (lists joined with ``", "``) is at most
  :data:`SHORT_TEXT_MAX_CHARS` characters, so long free text (a product description) stays out.

A catalogue with ``title``, ``brand``, ``categories`` and ``price`` and no other short text field (the
RecBole and Amazon catalogues) gets exactly :data:`DEFAULT_TEMPLATE`, the text of the reference vectors.
An explicit template is taken as written: a field it names that the catalogue lacks is an error.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from semid.errors import SemidError

__all__ = [
    "BRAND_FIELDS",
    "CATEGORY_FIELDS",
    "DEFAULT_TEMPLATE",
    "NOT_TEXT_NAMES",
    "PRICE_FIELDS",
    "SHORT_TEXT_MAX_CHARS",
    "TITLE_FIELDS",
    "TextTemplate",
    "default_template",
    "item_text_fields",
    "render_texts",
    "to_table",
]

DEFAULT_TEMPLATE = "Title: {title}; Brand: {brand}; Categories: {categories}; Price: {price}"

# Field names of each part of the default item text, most usual first (see the module docs).
TITLE_FIELDS = (
    "title", "name", "item_name", "item_title", "product_name", "product_title", "movie_title", "book_title",
)  # fmt: skip
BRAND_FIELDS = ("brand", "brand_name", "manufacturer", "maker", "vendor", "publisher")
CATEGORY_FIELDS = (
    "categories", "category", "category_path", "category_list", "genres", "genre", "genre_list", "tags", "tag",
    "tag_list",
)  # fmt: skip
PRICE_FIELDS = ("price",)
# Longest median value, in characters, of a field the default text takes as "short text".
SHORT_TEXT_MAX_CHARS = 100
# Names of fields that are no item text: ids and codes, links and images, times, Amazon's sales rank.
NOT_TEXT_NAMES = re.compile(
    r"(^|_)(ids?|asins?|sku|ean|upc|isbn|gtin|urls?|uri|links?|images?|img|imurl|timestamp|time|date)$"
    r"|^sales_(type|rank)$",
    re.IGNORECASE,
)

_EMPTY = ["", "None", "none", "nan", "NaN"]  # values that mean "missing" in real catalogues
_PART_SEP = "; "


@dataclass(frozen=True)
class TextTemplate:
    """A parsed text template (see the module docs for the syntax).

    Args:
        template: ``{field}`` placeholders in ``;``-separated parts; ``{{``/``}}`` are literal braces.
        list_sep: joins the elements of list values.
        list_fields: string fields read as token sequences when they are written as a Python list body
            (``'a', 'b'``), as RecBole ``token_seq`` columns are.
        strip_quotes: ``"tokens"`` removes only the quotes around each list element (``Women's`` stays);
            ``"single"`` deletes every ``'`` from the Python-literal form of the list (``"Womens"``), which is
            what the shared Amazon-Beauty reference vectors were made from.

    Example::

        >>> TextTemplate("Title: {title}; Brand: {brand}").render({"title": ["Lipstick"], "brand": [None]})
        ['Title: Lipstick']
    """

    template: str = DEFAULT_TEMPLATE
    list_sep: str = ", "
    list_fields: tuple[str, ...] = ("categories",)
    strip_quotes: Literal["tokens", "single"] = "tokens"
    parts: tuple[tuple[tuple[str, str | None], ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.strip_quotes not in ("tokens", "single"):
            raise SemidError(f"strip_quotes={self.strip_quotes!r} should be 'tokens' or 'single'")
        for name in ("template", "list_sep"):
            if not isinstance(getattr(self, name), str):
                raise SemidError(f"{name}={getattr(self, name)!r} should be a string")
        object.__setattr__(self, "parts", _parse(self.template))

    @property
    def fields(self) -> list[str]:
        """The catalogue fields the template reads, in order of first use."""
        return list(dict.fromkeys(f for part in self.parts for _, f in part if f is not None))

    def render(self, items: Any) -> list[str]:
        """One text per row of ``items`` (see :func:`render_texts`)."""
        table = to_table(items)
        missing = [f for f in self.fields if f not in table.column_names]
        if missing:
            raise SemidError(
                f"template field {{{missing[0]}}} is not in the catalogue "
                f"(fields: {', '.join(c for c in table.column_names if c != 'item_id')})"
            )
        n = table.num_rows
        if n == 0:
            return []
        values = {f: self._field_text(table.column(f).combine_chunks(), f) for f in self.fields}
        pieces = []
        for part in self.parts:
            args: list[pa.Array | str] = []
            for literal, name in part:
                if literal:
                    args.append(literal)
                if name is not None:
                    args.append(values[name])
            if not any(isinstance(a, pa.Array) for a in args):
                args.append(pa.array([""] * n))  # a part without fields is always kept
            args.append(_PART_SEP)
            # emit_null: the part is null (left out) when any of its fields is missing
            pieces.append(pc.binary_join_element_wise(*args, "", null_handling="emit_null"))
        # Arrow's null_handling="skip" drops rows whose inputs are all null (pyarrow 26), so each kept
        # part carries its own trailing separator and the last one is cut off.
        joined = pc.binary_join_element_wise(*pieces, "", null_handling="replace", null_replacement="")
        return pc.replace_substring_regex(joined, "; $", "").to_pylist()

    def _field_text(self, col: pa.Array, name: str) -> pa.Array:
        """A field as ``string`` with null wherever the value counts as missing."""
        t = col.type
        if pa.types.is_dictionary(t):
            col, t = col.dictionary_decode(), t.value_type
        if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            return self._join_list(col)
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            col = col.cast(pa.string())
            if name in self.list_fields:
                col = self._token_seq(col)
        elif pa.types.is_floating(t):
            nan = pc.fill_null(pc.is_nan(col), False)
            col = pc.if_else(nan, pa.scalar(None, pa.string()), col.cast(pa.string()))
            # Arrow prints 10.0 as "10"; Python (and the files these numbers came from) as "10.0"
            whole = pc.fill_null(pc.match_substring_regex(col, r"^-?\d+$"), False)
            col = pc.if_else(whole, pc.binary_join_element_wise(col, ".0", ""), col)
        elif pa.types.is_integer(t) or pa.types.is_boolean(t) or pa.types.is_decimal(t):
            col = col.cast(pa.string())
        elif pa.types.is_null(t):
            col = pa.nulls(len(col), pa.string())
        else:
            raise SemidError(f"field {name!r} has type {t}, which a text template cannot render")
        return _null_if_empty(col)

    def _join_list(self, col: pa.Array) -> pa.Array:
        """``list<...>`` -> ``"a, b, c"``; null for null/empty lists."""
        if pa.types.is_fixed_size_list(col.type):
            col = col.cast(pa.list_(col.type.value_type))
        col = col.cast(pa.large_list(pa.string()))
        offsets = col.offsets.to_numpy()  # (n + 1,), absolute positions into col.values
        elems = col.values.slice(offsets[0], offsets[-1] - offsets[0])
        elems = pc.utf8_trim_whitespace(elems)
        for q in ("'", '"'):  # one quoted token at a time: RE2 has no backreferences
            elems = pc.replace_substring_regex(elems, f"^{q}(.*){q}$", r"\1")
        keep = ~_null_if_empty(elems).is_null().to_numpy(zero_copy_only=False)
        lengths = np.diff(offsets)
        owner = np.repeat(np.arange(len(col)), lengths)  # (n_elements,) list of each element
        kept = np.bincount(owner[keep], minlength=len(col))
        new_offsets = np.concatenate([[0], np.cumsum(kept)]).astype(np.int64)
        if self.strip_quotes == "single":
            # Python's repr puts a value holding ' in double quotes; then every ' goes
            has_apos = pc.fill_null(pc.match_substring(elems, "'"), False)
            quoted = pc.binary_join_element_wise('"', pc.replace_substring(elems, "'", ""), '"', "")
            elems = pc.if_else(has_apos, quoted, elems)
        lists = pa.LargeListArray.from_arrays(pa.array(new_offsets), elems.filter(pa.array(keep)))
        joined = pc.binary_join(lists, self.list_sep)
        empty = (kept == 0) | col.is_null().to_numpy(zero_copy_only=False)
        return pc.if_else(pa.array(empty), pa.scalar(None, pa.string()), joined.cast(pa.string()))

    def _token_seq(self, col: pa.Array) -> pa.Array:
        """Strings written as a Python list body (``'a', "b's"``) -> ``a, b's``; other strings unchanged."""
        trimmed = pc.utf8_trim_whitespace(col)
        literal = pc.fill_null(pc.match_substring_regex(trimmed, r"""^['"].*['"]$"""), False)
        if not pc.any(literal).as_py():
            return col
        if self.strip_quotes == "single":
            return pc.if_else(literal, pc.replace_substring(trimmed, "'", ""), col)
        body = pc.utf8_slice_codeunits(trimmed, 1, -1)
        tokens = pc.split_pattern_regex(body, r"""['"]\s*,\s*['"]""")
        joined = pc.binary_join(tokens, self.list_sep)
        return pc.if_else(literal, joined, col)


def render_texts(items: Any, template: str | TextTemplate | None = None) -> list[str]:
    """Render one text per item.

    Args:
        items: a :class:`semid.data.Catalogue`, a ``pyarrow.Table``, a pandas ``DataFrame``, a dict of
            columns (``{"title": [...], ...}``) or a list of row dicts.
        template: a template string or a :class:`TextTemplate`; ``None`` (the default) builds the template
            from the fields the items have (:func:`default_template`).

    Example::

        >>> render_texts({"title": ["Red Lipstick"], "brand": ["None"], "categories": [["Beauty", "Makeup"]],
        ...               "price": [10.0]})
        ['Title: Red Lipstick; Categories: Beauty, Makeup; Price: 10.0']
        >>> render_texts({"name": ["Hair Dryer"], "manufacturer": ["Acme"]})
        ['Name: Hair Dryer; Manufacturer: Acme']
    """
    table = to_table(items)
    if template is None:
        return default_template(table).render(table)
    tpl = template if isinstance(template, TextTemplate) else TextTemplate(template)
    return tpl.render(table)


def default_template(items: Any, *, strip_quotes: Literal["tokens", "single"] = "tokens") -> TextTemplate:
    """The default item text of a catalogue: a template over the fields it has (rule in the module docs).

    The result's ``template`` is the chosen template string and its ``fields`` the fields it reads, for
    showing which fields went into the text. A catalogue with no field that qualifies is an error asking for
    an explicit template.

    Example::

        >>> tpl = default_template({"item_id": ["a"], "name": ["Hair Dryer"], "manufacturer": ["Acme"]})
        >>> tpl.template, tpl.fields
        ('Name: {name}; Manufacturer: {manufacturer}', ['name', 'manufacturer'])
    """
    table = to_table(items)
    fields = item_text_fields(table)
    if not fields:
        have = ", ".join(c for c in table.column_names if c != "item_id")
        raise SemidError(
            f"no field for the default item text: no title-, brand-, category- or price-like field and no short "
            f"text field (fields: {have}); pass a template naming the fields to read, e.g. "
            f"'Description: {{description}}' (--template on the command line)"
        )
    template = "; ".join(f"{_label(f)}: {{{f}}}" for f in fields)
    lists = [f for f in fields if f.lower() in CATEGORY_FIELDS]  # token-seq strings in category-like fields
    return TextTemplate(
        template, strip_quotes=strip_quotes, list_fields=tuple(dict.fromkeys(["categories", *lists]))
    )


def item_text_fields(items: Any) -> list[str]:
    """The fields the default item text reads, in its order; empty when none qualifies (see the module docs).

    Example::

        >>> item_text_fields({"item_id": ["a"], "sales_rank": [3.0], "title": ["Soap"], "colour": ["red"]})
        ['title', 'colour']
    """
    table = to_table(items)
    probe = TextTemplate()  # renders a field as a template would, to look at its values
    names = [n for n in table.column_names if n != "item_id" and n.isidentifier()]
    by_lower: dict[str, str] = {}
    for n in names:
        by_lower.setdefault(n.lower(), n)
    chosen: list[str] = []
    roles = ((TITLE_FIELDS, False), (BRAND_FIELDS, False), (CATEGORY_FIELDS, False), (PRICE_FIELDS, True))
    for candidates, numbers_ok in roles:
        for candidate in candidates:
            name = by_lower.get(candidate)
            if name is None or name in chosen:
                continue
            if _field_values(table, name, probe, numbers_ok=numbers_ok) is not None:
                chosen.append(name)
                break
    for name in names:
        if name in chosen or NOT_TEXT_NAMES.search(name):
            continue
        text = _field_values(table, name, probe, numbers_ok=False)
        if text is not None and _is_short_text(text):
            chosen.append(name)
    return chosen


def _field_values(table: pa.Table, name: str, probe: TextTemplate, *, numbers_ok: bool) -> pa.Array | None:
    """A field rendered as text (null where missing), or None when it holds neither text nor lists of text
    (nor numbers, with ``numbers_ok``); a column of nulls only (``null`` type) counts as text."""
    col = table.column(name).combine_chunks()
    t = col.type.value_type if pa.types.is_dictionary(col.type) else col.type
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        t = t.value_type
    ok = pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)
    ok = ok or (numbers_ok and (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)))
    return probe._field_text(col, name) if ok else None


def _is_short_text(text: pa.Array) -> bool:
    """Whether rendered values read as words and are short (the *short text field* rule of the module docs)."""
    values = text.drop_null()
    if len(values) == 0:
        return False
    letter = pc.match_substring_regex(values, r"\pL")
    link = pc.match_substring_regex(values, r"^\s*(https?://|www\.)", ignore_case=True)
    if 2 * pc.sum(pc.and_(letter, pc.invert(link))).as_py() < len(values):
        return False
    return float(np.median(pc.utf8_length(values).to_numpy(zero_copy_only=False))) <= SHORT_TEXT_MAX_CHARS


def _label(name: str) -> str:
    """The label of a field in the default text: ``movie_title`` -> ``Movie title``."""
    words = name.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def to_table(items: Any) -> pa.Table:
    """Catalogue-like input as a ``pyarrow.Table`` (see :func:`render_texts` for what is accepted)."""
    table = getattr(items, "table", None)
    if isinstance(table, pa.Table):  # semid.data.Catalogue
        return table
    if isinstance(items, pa.Table):
        return items
    if isinstance(items, pa.RecordBatch):
        return pa.Table.from_batches([items])
    if type(items).__module__.startswith("pandas"):
        return pa.Table.from_pandas(items, preserve_index=False)
    try:
        if isinstance(items, Mapping):
            return pa.table(
                {
                    k: v if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.array(v)
                    for k, v in items.items()
                }
            )
        if isinstance(items, Sequence) and not isinstance(items, (str, bytes)):
            return pa.Table.from_pylist(list(items))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise SemidError(f"cannot read the catalogue columns: {e}") from None
    raise SemidError(f"expected a catalogue, table or dict of columns, got {type(items).__name__}")


def _parse(template: str) -> tuple[tuple[tuple[str, str | None], ...], ...]:
    """``"A: {a}; B {b}!"`` -> ``((("A: ", "a"),), (("B ", "b"), ("!", None)))``."""
    parts = []
    for raw in template.split(";"):
        text = raw.strip()
        if not text:
            continue
        try:
            pieces = list(string.Formatter().parse(text))
        except ValueError as e:
            raise SemidError(f"template {template!r}: {e}") from None
        part = []
        for literal, name, spec, conversion in pieces:
            if name is not None:
                if not name.isidentifier():
                    raise SemidError(f"template {template!r}: field {{{name}}} should be a plain column name")
                if spec or conversion:
                    raise SemidError(
                        f"template {template!r}: field {{{name}}} has a format spec or conversion; "
                        "only plain {field} placeholders are supported"
                    )
            part.append((literal, name))
        parts.append(tuple(part))
    if not any(name for part in parts for _, name in part):
        raise SemidError(f"template {template!r} has no {{field}} placeholders")
    return tuple(parts)


def _null_if_empty(col: pa.Array) -> pa.Array:
    missing = pc.fill_null(pc.is_in(pc.utf8_trim_whitespace(col), pa.array(_EMPTY)), True)
    return pc.if_else(missing, pa.scalar(None, pa.string()), col)
