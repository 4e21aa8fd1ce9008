"""Semantic ID strings: every format spells each code row once, parses back exactly, and explains bad input."""

from __future__ import annotations

import numpy as np
import pytest

from semid.errors import SemidError
from semid.ids.formats import (
    FORMATS,
    detect_format,
    format_id,
    format_ids,
    id_to_tokens,
    parse_id,
    parse_ids,
    token_vocabulary,
    tokens_to_codes,
)

EXAMPLE = (12, 4, 9, 0)
SPELLINGS = {
    "dash": "12-4-9-0",
    "angle": "<a_12><b_4><c_9><d_0>",
    "bracket": "[SEM_START][SEM_0_12][SEM_1_4][SEM_2_9][SEM_3_0][SEM_END]",
}


# ---------------------------------------------------------------------------------------------------------
# The three spellings


@pytest.mark.parametrize("fmt", FORMATS)
def test_example_id_is_spelled_as_documented(fmt):
    assert format_id(EXAMPLE, fmt) == SPELLINGS[fmt]
    assert format_ids(np.array([EXAMPLE, [1, 0, 0, 7]]), fmt)[0] == SPELLINGS[fmt]
    assert parse_id(SPELLINGS[fmt], fmt) == EXAMPLE
    assert detect_format(SPELLINGS[fmt]) == fmt


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("dash", "7"), ("angle", "<a_7>"), ("bracket", "[SEM_START][SEM_0_7][SEM_END]")],
    ids=FORMATS,
)
def test_single_level_ids(fmt, expected):
    assert format_ids(np.array([[7]]), fmt) == [expected]
    assert parse_ids([expected], fmt).tolist() == [[7]]


def test_default_format_is_dash():
    assert format_id([3, 1]) == "3-1"
    assert parse_id("3-1") == (3, 1)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize(
    ("n", "n_levels", "high", "seed"),
    [
        (500, 4, 256, 0),  # the usual RQ-KMeans shape
        (300, 1, 10, 1),
        (200, 8, 3, 2),
        (50, 3, 10**6, 3),  # a few huge values: a table over distinct values only
        (20, 2, 2**62, 4),  # near the int64 limit: past the 18-digit fast path
    ],
    ids=["4x256", "1-level", "8-levels", "sparse-large", "int64-edge"],
)
def test_format_then_parse_gives_back_the_codes(fmt, n, n_levels, high, seed):
    codes = np.random.default_rng(seed).integers(0, high, size=(n, n_levels))
    codes[0] = 0  # zero is spelled "0", not ""
    strings = format_ids(codes, fmt)
    assert len(set(strings)) == len({tuple(r) for r in codes.tolist()})  # one spelling per ID
    np.testing.assert_array_equal(parse_ids(strings, fmt), codes)
    np.testing.assert_array_equal(parse_ids(strings, fmt, n_levels=n_levels), codes)
    for row, s in zip(codes[:20], strings[:20], strict=True):
        assert format_id(row, fmt) == s
        assert parse_id(s, fmt, n_levels=n_levels) == tuple(row.tolist())
        assert detect_format(s) == fmt


@pytest.mark.parametrize("fmt", FORMATS)
def test_format_accepts_any_integer_dtype_and_lists(fmt):
    as_uint8 = format_ids(np.array([[255, 0]], dtype=np.uint8), fmt)
    assert as_uint8 == format_ids([[255, 0]], fmt) == [format_id([255, 0], fmt)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_inputs(fmt):
    assert format_ids(np.zeros((0, 3), dtype=np.int64), fmt) == []
    assert parse_ids([], fmt).shape == (0, 0)
    assert parse_ids([], fmt, n_levels=3).shape == (0, 3)


def test_value_that_does_not_fit_int64_is_rejected():
    assert parse_id("9223372036854775807-1") == (2**63 - 1, 1)
    with pytest.raises(SemidError) as err:
        parse_ids(["1-1", "9223372036854775808-1"])
    assert str(err.value) == (
        "item 1: '9223372036854775808-1' is not a valid dash Semantic ID: "
        "'9223372036854775808' does not fit in a 64-bit integer"
    )


# ---------------------------------------------------------------------------------------------------------
# Rejections, with the exact messages users see

BAD_STRINGS = [
    ("dash", "12-x-9", "'x' is not a non-negative integer"),
    ("dash", "", "the string is empty"),
    ("dash", "12--3", "'-3' is negative"),
    ("dash", "-3", "'-3' is negative"),
    ("dash", "12-", "level 1 is empty (values are non-negative integers joined by single '-')"),
    ("dash", "12-04", "'04' has a leading zero"),
    ("dash", " 12-4", "it has leading or trailing whitespace"),
    ("dash", "12-4\n", "it has leading or trailing whitespace"),
    ("dash", "1.5-2", "'1.5' is not a non-negative integer"),
    ("dash", "<a_1>", "'<a_1>' is not a non-negative integer"),
    ("angle", "<b_1><a_2>", "token '<b_1>' at level 0 should use letter 'a'"),
    ("angle", "<a_1><c_2>", "token '<c_2>' at level 1 should use letter 'b'"),
    ("angle", "<a_-1>", "'-1' is negative"),
    ("angle", "<a_>", "'' is not a non-negative integer"),
    ("angle", "<a_1>x", "unexpected text 'x' at position 5 (expected a token like '<a_12>')"),
    ("angle", "<a_1><b_2", "unexpected text '<b_2' at position 5 (expected a token like '<a_12>')"),
    ("angle", "12-4", "unexpected text '12-4' at position 0 (expected a token like '<a_12>')"),
    ("bracket", "[SEM_START][SEM_0_1]", "it does not end with [SEM_END]"),
    ("bracket", "[SEM_0_1][SEM_END]", "it does not start with [SEM_START]"),
    ("bracket", "[SEM_START][SEM_END]", "it has no levels"),
    ("bracket", "[SEM_START][SEM_1_1][SEM_END]", "token '[SEM_1_1]' at level 0 should be [SEM_0_...]"),
    ("bracket", "[SEM_START][SEM_0_x][SEM_END]", "'x' is not a non-negative integer"),
    (
        "bracket",
        "[SEM_START][SEM_0_1] [SEM_END]",
        "unexpected text ' ' at position 20 (expected a token like '[SEM_0_12]')",
    ),
]


@pytest.mark.parametrize(("fmt", "s", "problem"), BAD_STRINGS, ids=[f"{f}:{s!r}" for f, s, _ in BAD_STRINGS])
def test_malformed_ids_are_rejected_with_the_reason(fmt, s, problem):
    expected = f"{s!r} is not a valid {fmt} Semantic ID: {problem}"
    with pytest.raises(SemidError) as err:
        parse_id(s, fmt)
    assert str(err.value) == expected
    with pytest.raises(SemidError) as err:  # a list names the failing item; its value errors come first
        parse_ids([SPELLINGS[fmt], SPELLINGS[fmt], s], fmt)
    assert str(err.value) == f"item 2: {expected}"


@pytest.mark.parametrize("fmt", FORMATS)
def test_wrong_number_of_levels(fmt):
    three = format_id([1, 2, 3], fmt)
    with pytest.raises(SemidError) as err:
        parse_id(three, fmt, n_levels=4)
    assert str(err.value) == f"{three!r} is not a valid {fmt} Semantic ID: it has 3 levels, expected 4"
    one = format_id([5], fmt)
    with pytest.raises(SemidError) as err:
        parse_ids([three, three, three, one], fmt)  # the first item fixes the level count
    assert str(err.value) == f"item 3: {one!r} is not a valid {fmt} Semantic ID: it has 1 level, expected 3"


def test_non_string_items_are_named():
    with pytest.raises(SemidError) as err:
        parse_ids(["1-2", 12])
    assert str(err.value) == "item 1: 12 is not a valid dash Semantic ID: expected a str, got int"
    with pytest.raises(SemidError) as err:
        parse_ids("1-2")
    assert str(err.value) == "parse_ids expects a list of strings, got the single string '1-2'"


def test_unknown_format_lists_the_valid_ones():
    message = "fmt='xml' is not a Semantic ID format; expected one of 'dash', 'angle', 'bracket'"
    for call in (
        lambda: format_ids([[1]], "xml"),
        lambda: format_id([1], "xml"),
        lambda: parse_id("1", "xml"),
        lambda: parse_ids(["1"], "xml"),
        lambda: token_vocabulary("xml", [2]),
        lambda: id_to_tokens([1], "xml"),
        lambda: tokens_to_codes(["1"], "xml"),
    ):
        with pytest.raises(SemidError) as err:
            call()
        assert str(err.value) == message


@pytest.mark.parametrize(
    ("codes", "message"),
    [
        (np.array([[1, 2], [3, -1]]), "codes row 1 level 1: -1 is negative"),
        (np.array([[1.0, 2.0]]), "codes should hold integers, got dtype float64"),
        (np.array([1, 2]), "codes should be a 2-D (n_items, n_levels) array, got shape (2,)"),
        (np.zeros((3, 0), dtype=int), "codes have 0 levels; a Semantic ID needs at least 1"),
    ],
    ids=["negative", "float", "1-D", "no-levels"],
)
def test_bad_codes_are_rejected(codes, message):
    with pytest.raises(SemidError) as err:
        format_ids(codes)
    assert str(err.value) == message


def test_angle_format_has_26_levels_at_most():
    assert format_id(range(26), "angle").endswith("<z_25>")
    message = "the angle format spells at most 26 levels (letters a..z), got 27 levels; use the dash or bracket format"
    for call in (
        lambda: format_ids(np.zeros((1, 27), dtype=int), "angle"),
        lambda: parse_id("<a_1>", "angle", n_levels=27),
        lambda: token_vocabulary("angle", [2] * 27),
    ):
        with pytest.raises(SemidError) as err:
            call()
        assert str(err.value) == message
    assert format_ids(np.zeros((1, 27), dtype=int), "bracket")[0].count("[SEM_") == 29


@pytest.mark.parametrize("n_levels", [0, -1, 2.5, True], ids=["zero", "negative", "float", "bool"])
def test_bad_n_levels(n_levels):
    with pytest.raises(SemidError) as err:
        parse_id("1-2", n_levels=n_levels)
    assert str(err.value) == f"n_levels={n_levels!r} should be a positive integer"


@pytest.mark.parametrize("s", ["abc", "", "[SEM_0_1]", "-1", "١٢-3", None], ids=repr)
def test_detect_format_rejects_unknown_shapes(s):
    with pytest.raises(SemidError) as err:
        detect_format(s)
    assert str(err.value).startswith(
        f"{s!r} is not a Semantic ID in any known format: expected e.g. '12-4-9'"
    )


def test_detect_format_judges_shape_only_and_parse_validates():
    assert detect_format("<b_1>") == "angle"
    with pytest.raises(SemidError, match="should use letter 'a'"):
        parse_id("<b_1>", detect_format("<b_1>"))


# ---------------------------------------------------------------------------------------------------------
# Tokens for language models


def test_token_vocabulary_by_format():
    assert token_vocabulary("angle", [2, 3]) == ["<a_0>", "<a_1>", "<b_0>", "<b_1>", "<b_2>"]
    assert token_vocabulary("bracket", [2, 1]) == [
        "[SEM_START]",
        "[SEM_END]",
        "[SEM_0_0]",
        "[SEM_0_1]",
        "[SEM_1_0]",
    ]
    assert token_vocabulary("dash", [2, 4, 3]) == ["-", "0", "1", "2", "3"]


@pytest.mark.parametrize("sizes", [[], [4, 0], [4, -2], [2.0]], ids=["empty", "zero", "negative", "float"])
def test_token_vocabulary_rejects_bad_sizes(sizes):
    with pytest.raises(SemidError) as err:
        token_vocabulary("angle", sizes)
    assert str(err.value) == (
        "codebook_sizes is empty; a Semantic ID needs at least 1 level"
        if not sizes
        else f"codebook_sizes[{len(sizes) - 1}]={sizes[-1]!r} should be a positive integer"
    )


@pytest.mark.parametrize(
    ("fmt", "tokens"),
    [
        ("dash", ["12", "-", "4", "-", "9"]),
        ("angle", ["<a_12>", "<b_4>", "<c_9>"]),
        ("bracket", ["[SEM_START]", "[SEM_0_12]", "[SEM_1_4]", "[SEM_2_9]", "[SEM_END]"]),
    ],
    ids=FORMATS,
)
def test_id_to_tokens_example(fmt, tokens):
    assert id_to_tokens([12, 4, 9], fmt) == tokens
    assert tokens_to_codes(tokens, fmt) == (12, 4, 9)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tokens_round_trip_and_come_from_the_vocabulary(fmt, seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 40, size=rng.integers(1, 6)).tolist()
    vocabulary = set(token_vocabulary(fmt, sizes))
    codes = rng.integers(0, sizes, size=(100, len(sizes)))
    for row in codes:
        tokens = id_to_tokens(row, fmt)
        assert set(tokens) <= vocabulary
        assert "".join(tokens) == format_id(row, fmt)
        assert tokens_to_codes(tokens, fmt) == tuple(row.tolist())


BAD_TOKENS = [
    ("dash", ["1", "2", "-", "4"], "token 1 is '2', expected the separator '-'"),
    ("dash", ["12", "-"], "it ends with the separator '-'"),
    ("dash", ["12", "-", "x"], "'x' is not a non-negative integer"),
    ("dash", [], "there are no tokens"),
    ("angle", ["<a_1>", "<c_2>"], "token 1 is '<c_2>', expected <b_...>"),
    ("angle", ["<a_1><b_2>"], "token 0 is '<a_1><b_2>', expected <a_...>"),
    ("angle", ["<a_01>"], "'01' has a leading zero"),
    ("bracket", ["[SEM_0_1]", "[SEM_END]"], "token 0 is '[SEM_0_1]', expected [SEM_START]"),
    ("bracket", ["[SEM_START]", "[SEM_0_1]"], "the last token is '[SEM_0_1]', expected [SEM_END]"),
    ("bracket", ["[SEM_START]", "[SEM_END]"], "it has no levels"),
    ("bracket", ["[SEM_START]", "[SEM_1_1]", "[SEM_END]"], "token 1 is '[SEM_1_1]', expected [SEM_0_...]"),
]


@pytest.mark.parametrize(("fmt", "tokens", "problem"), BAD_TOKENS, ids=[f"{f}:{t}" for f, t, _ in BAD_TOKENS])
def test_bad_token_sequences_are_rejected(fmt, tokens, problem):
    with pytest.raises(SemidError) as err:
        tokens_to_codes(tokens, fmt)
    assert str(err.value) == f"tokens {tokens!r} are not a valid {fmt} Semantic ID: {problem}"
