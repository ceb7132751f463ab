"""Opening a library that this release cannot use: it is refused in one line, and left as it was."""

from __future__ import annotations

import sqlite3

import pytest
from click.testing import CliRunner

from indexer.library import Library, LibraryError
from indexer.library_files import DB_FILE
from lookalike.cli import main


def _tables(db) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'").fetchall())


def test_a_newer_schemas_library_is_refused_before_anything_in_it_changes(tmp_path):
    Library(tmp_path / "lib", create=True).close()
    db = tmp_path / "lib" / DB_FILE
    with sqlite3.connect(db) as conn:  # what a later release might have: another version, other tables
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        conn.execute("DROP TABLE copy_verdicts")
        conn.execute("CREATE TABLE copy_verdicts (newer_column TEXT)")
        conn.execute("INSERT INTO copy_verdicts VALUES ('kept')")
        conn.execute("DROP TABLE map_points")
    before = _tables(db)
    with pytest.raises(LibraryError, match="has schema version 99, this lookalike understands"):
        Library(tmp_path / "lib")
    assert _tables(db) == before
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT * FROM copy_verdicts").fetchall() == [("kept",)]
    result = CliRunner().invoke(main, ["status", "--library", str(tmp_path / "lib")])
    assert result.exit_code == 1 and "schema version 99" in result.output and "Traceback" not in result.output


def test_a_file_that_is_no_database_is_one_line(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / DB_FILE).write_text("hello")
    for command in (["status"], ["labels", "counts"]):
        result = CliRunner().invoke(main, [*command, "--library", str(tmp_path / "lib")])
        assert result.exit_code == 1, result.output
        assert "cannot open the library" in result.output and "file is not a database" in result.output
        assert "Traceback" not in result.output
    assert (tmp_path / "lib" / DB_FILE).read_text() == "hello"


def test_a_derived_file_that_cannot_be_written_leaves_no_temporary_file(tmp_path):
    import numpy as np

    from indexer.npz import read_npz, write_npz

    write_npz(tmp_path / "fit.npz", {"a": np.arange(3)})
    assert read_npz(tmp_path / "fit.npz", lambda d: d["a"].tolist()) == [0, 1, 2]
    (tmp_path / "head.npz").mkdir()  # the rename onto it fails, as a full disk or a read-only folder fails
    with pytest.raises(OSError):
        write_npz(tmp_path / "head.npz", {"a": np.arange(3)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.npz", "head.npz"]
