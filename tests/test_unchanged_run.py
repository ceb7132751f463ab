"""`lookalike index` on a folder and library unchanged since the last complete run (search.unchanged):
answered without SQLAlchemy's ORM, FAISS, NumPy, Pillow or a model, and never in place of a run
that has something to do."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from indexer.library import Library
from indexer.vectors import VectorIndex
from lookalike.cli import main
from search.unchanged import LAST_RUN_FILE
from tests.conftest import REPO, SAMPLES

SHORTCUT = "nothing changed since its last complete run"

# `lookalike index` in a fresh interpreter, then which of the heavy modules it imported.
INDEX_AND_REPORT = """
import sys
from lookalike.cli import main
main(sys.argv[2:], standalone_mode=False)
print(sorted(m for m in sys.argv[1].split(",") if m in sys.modules))
"""
HEAVY = ("sqlalchemy", "sqlalchemy.orm", "faiss", "numpy", "PIL", "cv2", "torch", "openvino")


def index(*args: object) -> str:
    result = CliRunner().invoke(main, ["index", *map(str, args), "--quiet"])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def library_dir(sample_library_dir, tmp_path):
    path = tmp_path / "library"
    shutil.copytree(sample_library_dir, path)
    return path


def test_an_unchanged_run_imports_no_orm_faiss_numpy_pillow_or_model(library_dir):
    whole = index(SAMPLES, "--library", library_dir)  # the whole path, which records the run
    assert "indexed 0, unchanged 120" in whole
    assert (library_dir / LAST_RUN_FILE).exists()
    done = subprocess.run([sys.executable, "-c", INDEX_AND_REPORT, ",".join(HEAVY), "index", str(SAMPLES),
                           "--library", str(library_dir), "--quiet"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].rsplit(" in ", 1)[0] == whole.rsplit(" in ", 1)[0]  # the same summary, but the time
    assert lines[-1] == "[]"


def test_the_subprocess_probe_sees_the_modules_of_the_whole_path(library_dir):
    """The probe above can tell: without the record of a complete run, the same command opens the
    library through SQLAlchemy's ORM and reads FAISS."""
    done = subprocess.run([sys.executable, "-c", INDEX_AND_REPORT, ",".join(HEAVY), "index", str(SAMPLES),
                           "--library", str(library_dir), "--quiet"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.strip().splitlines()[-1]
    assert "'sqlalchemy.orm'" in loaded and "'faiss'" in loaded and "'torch'" not in loaded


def test_every_change_runs_the_whole_path(tmp_path, backbone, caplog):
    photos = tmp_path / "photos"
    for c in ("hat", "shoes"):
        (photos / c).mkdir(parents=True)
        for f in sorted((SAMPLES / c).glob("*.jpg"))[:4]:
            shutil.copy(f, photos / c / f.name)
    library = tmp_path / "lib"
    args = (photos, "--library", library, "--workers", "1")

    def run() -> tuple[str, bool]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="search.unchanged"):
            out = index(*args)
        return out, SHORTCUT in caplog.text

    out, shortcut = run()
    assert "indexed 8, unchanged 0" in out and not shortcut
    assert (library / LAST_RUN_FILE).exists()
    out, shortcut = run()
    assert "indexed 0, unchanged 8, moved 0, removed 0, failed 0 in " in out and shortcut

    extra = sorted((SAMPLES / "hat").glob("*.jpg"))[4]  # a new photo
    shutil.copy(extra, photos / "hat" / extra.name)
    out, shortcut = run()
    assert "indexed 1, unchanged 8" in out and not shortcut
    assert run()[1]  # settled again

    touched = photos / "hat" / extra.name  # the same path, another mtime: embedded again
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns - 10**9))
    out, shortcut = run()
    assert "indexed 1, unchanged 8" in out and not shortcut

    touched.unlink()
    out, shortcut = run()
    assert "removed 1" in out and not shortcut

    # Labels set since (as the web or `lookalike labels` would): the run trains the head on them.
    from search.labelling.labeller import Labeller
    from search.labelling.labels import import_folders
    from search.searcher import Searcher

    with Library(library) as lib:
        assert import_folders(lib) == 8
    out, shortcut = run()
    assert "indexed 0, unchanged 8" in out and not shortcut
    with Library(library) as lib:
        assert not Labeller(Searcher(lib, backbone)).labels_changed()

    # A damaged FAISS file: the run writes it again from the database.
    assert run()[1]
    vectors = library / "vectors.faiss"
    vectors.write_bytes(vectors.read_bytes()[:100])
    out, shortcut = run()
    assert "indexed 0, unchanged 8" in out and not shortcut
    with Library(library) as lib:
        assert VectorIndex.load(vectors, 1280).ntotal == 8 == lib.counts()["indexed"]

    # Other settings: the whole path, which records the new budget.
    out, shortcut = run()
    assert shortcut
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="search.unchanged"):
        out = index(*args, "--memory-budget", "1G")
    assert SHORTCUT not in caplog.text
    with Library(library) as lib:
        assert lib.memory_budget == 1 << 30

    # Another indexer holding the library is still said, not passed over.
    assert not run()[1]  # without the budget: other settings again
    assert run()[1]
    with Library(library) as lib, lib.writer_lock():
        result = CliRunner().invoke(main, ["index", *map(str, args), "--quiet"])
    assert result.exit_code == 1 and "another `lookalike index` is writing" in result.output
