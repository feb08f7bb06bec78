"""``ivr.domain.csvsafe.safe_cell``: the spreadsheet formula-injection defence of every CSV export."""

from __future__ import annotations

import pytest

from ivr.domain.csvsafe import safe_cell


@pytest.mark.parametrize("value", ['=HYPERLINK("http://evil","x")', "+1+1", "-2+3", "@SUM(1)", "\t=1",
                                   "\r=1"])
def test_a_cell_that_starts_like_a_formula_is_shown_as_text(value: str) -> None:
    assert safe_cell(value) == "'" + value


@pytest.mark.parametrize("value", ["Lid 1", "Coördinator 1", "", "a=b", " =1", "'quoted", "x@y"])
def test_other_cells_stay_as_they_are(value: str) -> None:
    assert safe_cell(value) == value


def test_none_is_an_empty_cell() -> None:
    assert safe_cell(None) == ""
