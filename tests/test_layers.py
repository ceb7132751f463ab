"""Imports point one way (lookalike -> web -> search -> indexer) and the CLI starts fast.

Every module of every package is checked, twice: imported for real in a fresh interpreter (what
it pulls in at import time, however indirectly), and read (every import statement, including the
ones inside functions that only run later).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["lookalike", "web", "search", "indexer"]  # each may import only those after it


def below(package: str) -> set[str]:
    return set(LAYERS[LAYERS.index(package) + 1 :]) | {package}


def forbidden(package: str) -> set[str]:
    return set(LAYERS) - below(package)


def modules_of(package: str) -> list[str]:
    """Every module of the package, its sub-packages' included, found on disk (nothing imported)."""
    found = []
    for path in sorted((REPO / package).rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    assert len(found) > 1, f"no modules found under {package}"
    return found


def test_every_module_of_a_sub_package_is_checked():
    assert {"search.labelling", "search.labelling.labeller", "search.duplicates.candidates",
            "search.map.store"} <= set(modules_of("search"))


def modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return set(out.stdout.split())


@pytest.mark.parametrize("package", ["indexer", "search", "web"])
def test_importing_every_module_loads_nothing_above_its_layer(package):
    """One fresh interpreter per package imports each of its modules in turn and reports which
    first-party packages each had loaded by then."""
    code = (
        "import importlib, json, sys\n"
        "report = {}\n"
        f"for name in {modules_of(package)!r}:\n"
        "    importlib.import_module(name)\n"
        f"    report[name] = sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(LAYERS)!r}))\n"
        "print(json.dumps(report))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert set(report) == set(modules_of(package))
    wrong = {name: sorted(set(loaded) & forbidden(package)) for name, loaded in report.items()}
    assert not any(wrong.values()), wrong


def imports_in(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import statement in a file, lazy ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.append((node.lineno, path.relative_to(REPO).parts[0]))  # relative: same package
    return found


@pytest.mark.parametrize("package", LAYERS)
def test_no_import_statement_points_up(package):
    files = sorted((REPO / package).rglob("*.py"))
    assert files
    wrong = [
        f"{path.relative_to(REPO)}:{line} imports {target}"
        for path in files
        for line, target in imports_in(path)
        if target in forbidden(package)
    ]
    assert not wrong


def test_the_static_check_sees_a_lazy_upward_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import numpy\n\ndef f():\n    from web import create_app\n    return create_app\n")
    assert imports_in(probe) == [(1, "numpy"), (4, "web")]


def test_command_line_does_not_import_torch_or_faiss():
    loaded = modules_after("import lookalike.cli")
    assert "torch" not in loaded and "faiss" not in loaded
