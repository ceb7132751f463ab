"""BENCHMARKS.md is written by several benchmarks: each replaces only its own section.

A section runs from `<!-- NAME -->` to `<!-- /NAME -->`; one not there yet is appended.
"""

from __future__ import annotations

from pathlib import Path


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name} -->", f"<!-- /{name} -->"


def write_section(path: Path, name: str, text: str) -> None:
    """Put `text` (without markers) in the section `name` of `path`, leaving the rest as it is."""
    begin, end = markers(name)
    section = f"{begin}\n{text.rstrip()}\n{end}\n"
    old = path.read_text() if path.exists() else ""
    if begin in old and end in old:
        new = old[: old.index(begin)] + section + old[old.index(end) + len(end) + 1 :]
    else:
        new = (old.rstrip("\n") + "\n\n" if old else "") + section
    path.write_text(new)
