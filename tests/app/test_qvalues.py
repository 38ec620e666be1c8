"""The one reader of Accept and Accept-Encoding lists that all three negotiations share."""

from __future__ import annotations

import pytest

from app.qvalues import elements


def test_elements_in_order_with_names_lowered_and_default_q() -> None:
    assert list(elements(" Text/CSV ;q=0.5, */*, gzip;Q=1.000")) == [
        ("text/csv", 0.5, "Text/CSV ;q=0.5"),
        ("*/*", 1.0, "*/*"),
        ("gzip", 1.0, "gzip;Q=1.000"),
    ]


@pytest.mark.parametrize("q", ["nan", "inf", "-1", "2", "1.5", "0.1234", "abc", "", "1.0001"])
def test_a_q_that_is_not_a_qvalue_marks_the_element_invalid(q: str) -> None:
    assert list(elements(f"text/csv;q={q}")) == [("text/csv", None, f"text/csv;q={q}")]


@pytest.mark.parametrize(("q", "value"), [("0", 0.0), ("0.", 0.0), ("0.125", 0.125), ("1.", 1.0)])
def test_qvalues_of_rfc_9110(q: str, value: float) -> None:
    assert next(elements(f"deflate; q={q}"))[1] == value
