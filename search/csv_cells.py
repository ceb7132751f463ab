"""CSV cells a spreadsheet will not run: text starting with = + - @ (or a tab or carriage return)
is read as a formula by Excel, LibreOffice and Sheets (OWASP "CSV injection"), so such a cell is
written with a leading apostrophe, and read back without it. Text that starts with an apostrophe of
its own gets one more, so that it reads back as it was."""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> object:
    """Text that a spreadsheet would read as a formula, or that starts with ' itself, prefixed with ' ;
    anything else as it is."""
    if isinstance(value, str) and value.startswith((*FORMULA_STARTS, "'")):
        return "'" + value
    return value


def unsafe_cell(text: str) -> str:
    """The text `safe_cell` was given: its apostrophe removed again."""
    if text.startswith("'") and text[1:].startswith((*FORMULA_STARTS, "'")):
        return text[1:]
    return text
