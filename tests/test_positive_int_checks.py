"""One check for every "a positive integer" setting (`semid._utils.check_positive_int`): a bool is not one,
and a config field that is saved as JSON takes a Python int only."""

from __future__ import annotations

import re

import numpy as np
import pytest

from semid._utils import check_positive_int
from semid.errors import SemidError
from semid.llm.examples import ExampleConfig
from semid.serve.service import ServeConfig


def test_integers_of_one_or_more_pass_and_come_back_as_python_ints() -> None:
    assert check_positive_int("k", 3) == 3
    got = check_positive_int("k", np.int64(7))
    assert got == 7 and type(got) is int


@pytest.mark.parametrize("value", [0, -1, True, False, 2.0, "3", None, np.float32(4)])
def test_anything_else_is_one_error_naming_the_setting(value) -> None:
    with pytest.raises(
        SemidError,
        match="^" + re.escape(f"k={value!r} should be a positive integer") + "$",
    ):
        check_positive_int("k", value)


def test_a_json_config_field_refuses_numpy_integers() -> None:
    four = np.int64(4)  # repr np.int64(4) on numpy 2, 4 on numpy 1
    with pytest.raises(
        SemidError, match="^" + re.escape(f"beam_size={four!r} should be a positive integer") + "$"
    ):
        check_positive_int("beam_size", four, numpy_ok=False)


def test_configs_that_once_took_true_for_one_refuse_it() -> None:
    with pytest.raises(SemidError, match=r"^beam_size=True should be a positive integer$"):
        ServeConfig(beam_size=True).validate()
    with pytest.raises(SemidError, match=r"^max_history=True should be a positive integer$"):
        ExampleConfig(max_history=True).check()
    with pytest.raises(SemidError, match=r"^n_valid_items=True should be a positive integer or None$"):
        ExampleConfig(n_valid_items=True).check()
