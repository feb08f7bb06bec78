"""Cells of a CSV export that a spreadsheet will not run (formula injection, "CSV injection").

Excel, LibreOffice and Google Sheets treat a cell that starts with ``=``, ``+``, ``-`` or ``@`` (or a
tab or carriage return before one) as a formula: a member named ``=HYPERLINK(...)`` or a transcript
starting with ``@SUM(...)`` would run in the coordinator's spreadsheet. Prefixing a single quote makes
the spreadsheet show the text as typed (OWASP's advice). Pure: imports nothing of the project.
"""

from __future__ import annotations

#: The first characters that make a spreadsheet read a cell as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: str | None) -> str:
    """``value`` as a CSV cell a spreadsheet shows as text: ``'`` before a formula start, ``""`` for ``None``.

    Only for free text (names, message text, transcripts): figures and masked numbers are ours and
    must stay as they are ("-3", "+32*****000").
    """
    if value is None:
        return ""
    return "'" + value if value.startswith(FORMULA_STARTS) else value
