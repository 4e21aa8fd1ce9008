"""Semantic ID strings: one code row, three spellings, and the tokens a language model needs to write them.

A Semantic ID is a row of ``L`` non-negative integer codes, one per level (``codes[:, l]`` lies in
``[0, K_l)``; the last level may be a dedup suffix with a larger vocabulary). It is spelled in one of
:data:`FORMATS`::

    codes     (12, 4, 9, 0)
    "dash"    12-4-9-0
    "angle"   <a_12><b_4><c_9><d_0>                                   (level letters a..z: 26 levels at most)
    "bracket" [SEM_START][SEM_0_12][SEM_1_4][SEM_2_9][SEM_3_0][SEM_END]

Every ID has exactly one spelling in each format: values are written without leading zeros, signs or
whitespace, and the parsers reject anything else, so strings can be used as keys (registry, web UI) and
``parse_id(format_id(row)) == row`` always holds.

For language models, :func:`token_vocabulary` lists the tokens to add to a tokenizer and
:func:`id_to_tokens` / :func:`tokens_to_codes` convert between an ID and its token sequence. In the angle and
bracket formats each token names its level (``<b_4>``, ``[SEM_1_4]``); the dash format is ordinary text, so
its tokens are the numbers ``"0"``, ``"1"``, ... shared by all levels, plus the separator ``"-"`` (the
level of a number is its position).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from semid._utils import check_positive_int
from semid.errors import SemidError

__all__ = [
    "FORMATS",
    "detect_format",
    "format_id",
    "format_ids",
    "id_to_tokens",
    "parse_id",
    "parse_ids",
    "token_vocabulary",
    "tokens_to_codes",
]

FORMATS: tuple[str, ...] = ("dash", "angle", "bracket")

#: Level letters of the angle format; level ``l`` is ``_LETTERS[l]``.
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
MAX_ANGLE_LEVELS = len(_LETTERS)

_SEM_START = "[SEM_START]"
_SEM_END = "[SEM_END]"
_INT64_MAX = np.iinfo(np.int64).max

# A canonical non-negative integer: "0" or digits without a leading zero. re.ASCII keeps out "١٢".
_NUMBER = r"(?:0|[1-9][0-9]*)"
_NUMBER_RE = re.compile(_NUMBER, re.ASCII)
# Canonical tokens, used by tokens_to_codes to check one token at a time.
_ANGLE_TOKEN_RE = re.compile(r"<([^<>_]*)_([^<>]*)>")
_BRACKET_TOKEN_RE = re.compile(r"\[SEM_([^\[\]_]*)_([^\[\]]*)\]")


# --------------------------------------------------------------------------------------------------------
# Checks shared by every format


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        valid = ", ".join(repr(f) for f in FORMATS)
        raise SemidError(f"fmt={fmt!r} is not a Semantic ID format; expected one of {valid}")
    return fmt


def _check_n_levels(n_levels: int | None, fmt: str) -> int | None:
    if n_levels is None:
        return None
    check_positive_int("n_levels", n_levels)
    _check_angle_levels(int(n_levels), fmt)
    return int(n_levels)


def _check_angle_levels(n_levels: int, fmt: str) -> None:
    if fmt == "angle" and n_levels > MAX_ANGLE_LEVELS:
        raise SemidError(
            f"the angle format spells at most {MAX_ANGLE_LEVELS} levels (letters a..z), got {n_levels} levels; "
            "use the dash or bracket format"
        )


def _check_codes(codes: np.ndarray | Sequence[Sequence[int]], fmt: str) -> np.ndarray:
    """Return ``codes`` as a validated ``(n, L)`` int64 array (non-negative, 1 <= L)."""
    arr = np.asarray(codes)
    if arr.ndim != 2:
        raise SemidError(f"codes should be a 2-D (n_items, n_levels) array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise SemidError(f"codes should hold integers, got dtype {arr.dtype}")
    if arr.shape[1] == 0:
        raise SemidError("codes have 0 levels; a Semantic ID needs at least 1")
    _check_angle_levels(arr.shape[1], fmt)
    arr = arr.astype(np.int64, copy=False)
    if arr.size and arr.min() < 0:
        row, level = np.argwhere(arr < 0)[0]
        raise SemidError(f"codes row {row} level {level}: {arr[row, level]} is negative")
    return arr


def _check_row(codes_row: np.ndarray | Sequence[int], fmt: str) -> np.ndarray:
    row = np.asarray(codes_row)
    if row.ndim != 1:
        raise SemidError(f"codes_row should be a 1-D array of codes, got shape {row.shape}")
    return _check_codes(row[None, :], fmt)[0]


def _number_problem(text: str) -> str | None:
    """Why ``text`` is not a canonical non-negative integer, or None if it is one."""
    if _NUMBER_RE.fullmatch(text):
        if int(text) > _INT64_MAX:
            return f"{text!r} does not fit in a 64-bit integer"
        return None
    if re.fullmatch(r"-[0-9]+", text, re.ASCII):
        return f"{text!r} is negative"
    if re.fullmatch(r"[0-9]+", text, re.ASCII):
        return f"{text!r} has a leading zero"
    return f"{text!r} is not a non-negative integer"


# --------------------------------------------------------------------------------------------------------
# Formatting


def _level_affixes(fmt: str, n_levels: int) -> list[tuple[str, str, str]]:
    """Per level: (text before the value, text between value and the next level, text after the value).

    Baking separators and markers into per-level lookup tables lets :func:`format_ids` build a string with
    one ``"".join`` per ID.
    """
    affixes = []
    for level in range(n_levels):
        if fmt == "dash":
            before, after = ("" if level == 0 else "-"), ""
        elif fmt == "angle":
            before, after = f"<{_LETTERS[level]}_", ">"
        else:
            before, after = f"[SEM_{level}_", "]"
            if level == 0:
                before = _SEM_START + before
            if level == n_levels - 1:
                after += _SEM_END
        affixes.append((before, after))
    return affixes


def format_ids(codes: np.ndarray | Sequence[Sequence[int]], fmt: str = "dash") -> list[str]:
    """Spell every row of ``codes`` (shape ``(n, L)``, non-negative ints) as a Semantic ID string.

    Vectorised per level: each distinct value is turned into text once (a lookup table), so formatting a
    million 4-level IDs takes about a second.

    >>> format_ids(np.array([[12, 4, 9, 0], [1, 2, 3, 4]]), "angle")
    ['<a_12><b_4><c_9><d_0>', '<a_1><b_2><c_3><d_4>']
    """
    _check_format(fmt)
    arr = _check_codes(codes, fmt)
    n, n_levels = arr.shape
    if n == 0:
        return []
    columns: list[list[str]] = []
    for level, (before, after) in enumerate(_level_affixes(fmt, n_levels)):
        col = arr[:, level]
        top = int(col.max())
        if top < max(4096, 2 * n):
            # Small vocabulary (the usual case): a table over every value 0..max.
            values, inverse = np.arange(top + 1), col
        else:
            # A few huge values (e.g. a sparse suffix level): a table over the distinct values only.
            values, inverse = np.unique(col, return_inverse=True)
        table = np.array([f"{before}{v}{after}" for v in values.tolist()], dtype=object)
        columns.append(table[inverse].tolist())
    if n_levels == 1:
        return columns[0]
    return list(map("".join, zip(*columns, strict=True)))


def format_id(codes_row: np.ndarray | Sequence[int], fmt: str = "dash") -> str:
    """Spell one code row (shape ``(L,)``) as a Semantic ID string: ``format_id([12, 4, 9], "dash") == "12-4-9"``."""
    _check_format(fmt)
    row = _check_row(codes_row, fmt)
    return "".join(
        f"{b}{v}{a}" for v, (b, a) in zip(row.tolist(), _level_affixes(fmt, len(row)), strict=True)
    )


# --------------------------------------------------------------------------------------------------------
# Parsing


def _values_problem(s: str, fmt: str) -> tuple[list[int] | None, str | None]:
    """Parse ``s`` in ``fmt``: (values, None) on success, (None, reason) on failure."""
    if s == "":
        return None, "the string is empty"
    if s != s.strip():
        return None, "it has leading or trailing whitespace"
    if fmt == "dash":
        return _parse_dash(s)
    if fmt == "angle":
        return _parse_angle(s)
    return _parse_bracket(s)


def _parse_dash(s: str) -> tuple[list[int] | None, str | None]:
    parts = s.split("-")
    values = []
    for level, part in enumerate(parts):
        if part == "":
            following = parts[level + 1] if level + 1 < len(parts) else ""
            if re.fullmatch(r"[0-9]+", following, re.ASCII):
                return None, f"'-{following}' is negative"
            return None, f"level {level} is empty (values are non-negative integers joined by single '-')"
        problem = _number_problem(part)
        if problem:
            return None, problem
        values.append(int(part))
    return values, None


def _parse_angle(s: str) -> tuple[list[int] | None, str | None]:
    values: list[int] = []
    pos = 0
    while pos < len(s):
        m = _ANGLE_TOKEN_RE.match(s, pos)
        if m is None:
            return None, f"unexpected text {s[pos:]!r} at position {pos} (expected a token like '<a_12>')"
        letter, number = m.groups()
        level = len(values)
        if level >= MAX_ANGLE_LEVELS:
            return None, f"it has more than {MAX_ANGLE_LEVELS} levels"
        if letter != _LETTERS[level]:
            return None, f"token {m.group()!r} at level {level} should use letter {_LETTERS[level]!r}"
        problem = _number_problem(number)
        if problem:
            return None, problem
        values.append(int(number))
        pos = m.end()
    return values, None


def _parse_bracket(s: str) -> tuple[list[int] | None, str | None]:
    if not s.startswith(_SEM_START):
        return None, f"it does not start with {_SEM_START}"
    if not s.endswith(_SEM_END) or len(s) < len(_SEM_START) + len(_SEM_END):
        return None, f"it does not end with {_SEM_END}"
    body_start, body_end = len(_SEM_START), len(s) - len(_SEM_END)
    values: list[int] = []
    pos = body_start
    while pos < body_end:
        m = _BRACKET_TOKEN_RE.match(s, pos, body_end)
        if m is None:
            return None, (
                f"unexpected text {s[pos:body_end]!r} at position {pos} (expected a token like '[SEM_0_12]')"
            )
        level_text, number = m.groups()
        level = len(values)
        if level_text != str(level):
            return None, f"token {m.group()!r} at level {level} should be [SEM_{level}_...]"
        problem = _number_problem(number)
        if problem:
            return None, problem
        values.append(int(number))
        pos = m.end()
    if not values:
        return None, "it has no levels"
    return values, None


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _parse_one(s: object, fmt: str, n_levels: int | None) -> tuple[int, ...]:
    if not isinstance(s, str):
        raise SemidError(f"{s!r} is not a valid {fmt} Semantic ID: expected a str, got {type(s).__name__}")
    values, problem = _values_problem(s, fmt)
    if problem is None and n_levels is not None and len(values) != n_levels:  # type: ignore[arg-type]
        problem = f"it has {_plural(len(values), 'level')}, expected {n_levels}"  # type: ignore[arg-type]
    if problem is not None:
        raise SemidError(f"{s!r} is not a valid {fmt} Semantic ID: {problem}")
    return tuple(values)  # type: ignore[arg-type]


def parse_id(s: str, fmt: str = "dash", *, n_levels: int | None = None) -> tuple[int, ...]:
    """Read one Semantic ID string back into its codes; malformed input raises :class:`SemidError`.

    ``n_levels``, if given, is the number of levels the ID must have.

    >>> parse_id("12-4-9")
    (12, 4, 9)
    >>> parse_id("12-x-9")
    Traceback (most recent call last):
    semid.errors.SemidError: '12-x-9' is not a valid dash Semantic ID: 'x' is not a non-negative integer
    """
    _check_format(fmt)
    return _parse_one(s, fmt, _check_n_levels(n_levels, fmt))


def _full_pattern(fmt: str, n_levels: int) -> str:
    """An RE2 regex matching exactly the canonical ``n_levels``-level IDs of ``fmt``; group ``l<i>`` is level i.

    Values are capped at 18 digits so the fast path never overflows int64; longer (still valid) values
    go through :func:`_parse_one`.
    """
    body = "".join(
        re.escape(before) + f"(?P<l{level}>0|[1-9][0-9]{{0,17}})" + re.escape(after)
        for level, (before, after) in enumerate(_level_affixes(fmt, n_levels))
    )
    return f"^{body}$"


def parse_ids(strings: Sequence[str], fmt: str = "dash", n_levels: int | None = None) -> np.ndarray:
    """Read many Semantic ID strings into an ``(n, L)`` int64 array; all must have the same number of levels.

    ``L`` is ``n_levels`` if given, else the level count of the first string. An error names the item:
    ``item 3: '12-x' is not a valid dash Semantic ID: 'x' is not a non-negative integer``. Matching and
    integer conversion run in Arrow (about a second for a million IDs); only strings the fast pattern
    rejects are re-read one by one, to explain the error.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    _check_format(fmt)
    n_levels = _check_n_levels(n_levels, fmt)
    if isinstance(strings, str):
        raise SemidError(f"parse_ids expects a list of strings, got the single string {strings!r}")
    strings = list(strings)
    if not strings:
        return np.zeros((0, n_levels or 0), dtype=np.int64)
    if n_levels is None:
        try:
            n_levels = len(_parse_one(strings[0], fmt, None))
        except SemidError as err:
            raise SemidError(f"item 0: {err}") from None
    try:
        column = pa.array(strings, type=pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        column = None
    if column is None or column.null_count:
        bad = next(i for i, s in enumerate(strings) if not isinstance(s, str))
        raise SemidError(
            f"item {bad}: {strings[bad]!r} is not a valid {fmt} Semantic ID: expected a str, "
            f"got {type(strings[bad]).__name__}"
        )
    matched = pc.extract_regex(column, _full_pattern(fmt, n_levels))  # struct of strings; null: no match
    out = np.empty((len(strings), n_levels), dtype=np.int64)
    for level in range(n_levels):
        field = pc.fill_null(pc.struct_field(matched, [level]), "0")
        out[:, level] = pc.cast(field, pa.int64()).to_numpy()
    for i in np.flatnonzero(matched.is_null().to_numpy(zero_copy_only=False)).tolist():
        try:
            out[i] = _parse_one(strings[i], fmt, n_levels)
        except SemidError as err:
            raise SemidError(f"item {i}: {err}") from None
    return out


def detect_format(s: str) -> str:
    """Which of :data:`FORMATS` ``s`` is written in, judged by its first characters.

    Only the shape is checked (``[SEM_START]...`` is bracket, ``<...`` is angle, a leading digit is dash);
    :func:`parse_id` with the returned format validates the whole string.
    """
    if isinstance(s, str):
        if s.startswith(_SEM_START):
            return "bracket"
        if s.startswith("<"):
            return "angle"
        if s[:1].isascii() and s[:1].isdigit():
            return "dash"
    raise SemidError(
        f"{s!r} is not a Semantic ID in any known format: expected e.g. '12-4-9' (dash), "
        f"'<a_12><b_4><c_9>' (angle) or '[SEM_START][SEM_0_12][SEM_1_4][SEM_2_9][SEM_END]' (bracket)"
    )


# --------------------------------------------------------------------------------------------------------
# Tokens for language models


def token_vocabulary(fmt: str, codebook_sizes: Sequence[int]) -> list[str]:
    """Every token a language model needs to spell any ID whose level ``l`` codes lie in ``[0, K_l)``.

    - angle: ``<a_0> .. <a_{K0-1}>, <b_0> .. <b_{K1-1}>, ...`` (level by level);
    - bracket: ``[SEM_START], [SEM_END]``, then ``[SEM_0_0] .. [SEM_0_{K0-1}], [SEM_1_0], ...``;
    - dash: the separator ``"-"``, then the numbers ``"0" .. str(max(K) - 1)``: dash IDs are plain text,
      so the numbers are shared by all levels and a number's level is its position (see
      :func:`id_to_tokens`). Adding these to a tokenizer makes each value one token.
    """
    _check_format(fmt)
    sizes = list(codebook_sizes)
    if not sizes:
        raise SemidError("codebook_sizes is empty; a Semantic ID needs at least 1 level")
    for level, k in enumerate(sizes):
        check_positive_int(f"codebook_sizes[{level}]", k)
    _check_angle_levels(len(sizes), fmt)
    if fmt == "dash":
        return ["-"] + [str(v) for v in range(max(sizes))]
    if fmt == "angle":
        return [f"<{_LETTERS[level]}_{v}>" for level, k in enumerate(sizes) for v in range(k)]
    return [_SEM_START, _SEM_END] + [f"[SEM_{level}_{v}]" for level, k in enumerate(sizes) for v in range(k)]


def id_to_tokens(codes_row: np.ndarray | Sequence[int], fmt: str = "dash") -> list[str]:
    """The token sequence spelling one ID; ``"".join(id_to_tokens(row, fmt)) == format_id(row, fmt)``.

    ``[12, 4]`` -> dash ``["12", "-", "4"]``, angle ``["<a_12>", "<b_4>"]``,
    bracket ``["[SEM_START]", "[SEM_0_12]", "[SEM_1_4]", "[SEM_END]"]``.
    """
    _check_format(fmt)
    values = _check_row(codes_row, fmt).tolist()
    if fmt == "dash":
        tokens = []
        for level, v in enumerate(values):
            if level:
                tokens.append("-")
            tokens.append(str(v))
        return tokens
    if fmt == "angle":
        return [f"<{_LETTERS[level]}_{v}>" for level, v in enumerate(values)]
    return [_SEM_START, *(f"[SEM_{level}_{v}]" for level, v in enumerate(values)), _SEM_END]


def tokens_to_codes(tokens: Sequence[str], fmt: str = "dash") -> tuple[int, ...]:
    """Read a token sequence from :func:`id_to_tokens` (or a model) back into codes; the inverse of it.

    Each token must be one whole token of ``fmt`` in the right place, so ``["1", "2", "-", "4"]`` is
    rejected even though its text joins to the valid ``"12-4"``.
    """
    _check_format(fmt)
    if isinstance(tokens, str):
        raise SemidError(f"tokens_to_codes expects a list of tokens, got the single string {tokens!r}")
    tokens = list(tokens)

    def fail(problem: str) -> SemidError:
        return SemidError(f"tokens {tokens!r} are not a valid {fmt} Semantic ID: {problem}")

    if not tokens:
        raise fail("there are no tokens")
    for i, token in enumerate(tokens):
        if not isinstance(token, str):
            raise fail(f"token {i} is a {type(token).__name__}, not a str")
    if fmt == "dash":
        values_text = tokens[0::2]
        for i in range(1, len(tokens), 2):
            if tokens[i] != "-":
                raise fail(f"token {i} is {tokens[i]!r}, expected the separator '-'")
        if len(tokens) % 2 == 0:
            raise fail("it ends with the separator '-'")
    else:
        if fmt == "bracket":
            if tokens[0] != _SEM_START:
                raise fail(f"token 0 is {tokens[0]!r}, expected {_SEM_START}")
            if len(tokens) < 2 or tokens[-1] != _SEM_END:
                raise fail(f"the last token is {tokens[-1]!r}, expected {_SEM_END}")
            body, token_re, offset = tokens[1:-1], _BRACKET_TOKEN_RE, 1
            if not body:
                raise fail("it has no levels")
        else:
            body, token_re, offset = tokens, _ANGLE_TOKEN_RE, 0
            _check_angle_levels(len(body), fmt)
        values_text = []
        for level, token in enumerate(body):
            m = token_re.fullmatch(token)
            expected = f"[SEM_{level}_...]" if fmt == "bracket" else f"<{_LETTERS[level]}_...>"
            marker = str(level) if fmt == "bracket" else _LETTERS[level]
            if m is None or m.group(1) != marker:
                raise fail(f"token {level + offset} is {token!r}, expected {expected}")
            values_text.append(m.group(2))
    for text in values_text:
        problem = _number_problem(text)
        if problem:
            raise fail(problem)
    return tuple(int(text) for text in values_text)
