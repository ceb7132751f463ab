"""File names the library can record: SQLite and FAISS take text as UTF-8, and POSIX names are bytes.

Python gives a name's bytes that are not UTF-8 as lone surrogates (PEP 383), which no UTF-8 text
can hold; such a path is reported by its printable form and not stored.
"""

from __future__ import annotations

import os
from pathlib import Path


def is_utf8(path: str | Path) -> bool:
    """Whether a path from the file system was valid UTF-8 (else it holds surrogate escapes)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(path: str | Path) -> str:
    """`path` with the bytes that are not UTF-8 written as \\xNN escapes, for messages."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
