"""Imports point one way (lookalike -> web -> search -> indexer) and the CLI starts fast."""

from __future__ import annotations

import subprocess
import sys

import pytest


def modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize(
    "package, forbidden",
    [
        ("indexer.pipeline", {"search", "web", "lookalike"}),
        ("search", {"web", "lookalike"}),
        ("web", {"lookalike"}),
    ],
)
def test_imports_point_one_way(package, forbidden):
    loaded = {name.split(".")[0] for name in modules_after(f"import {package}")}
    assert not loaded & forbidden


def test_command_line_does_not_import_torch_or_faiss():
    loaded = modules_after("import lookalike.cli")
    assert "torch" not in loaded and "faiss" not in loaded
