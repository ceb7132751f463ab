"""Bad values from the environment and the command line: one line naming what is wrong, no
traceback, and no library folder left behind."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner

from lookalike.cli import main
from lookalike.options import setting_type
from tests.conftest import SAMPLES


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    assert type(result.exception) is SystemExit  # click's exit, not an error escaping the command
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(min((SAMPLES / "hat").glob("*.jpg")), folder / "hat.jpg")
    return folder


@pytest.mark.parametrize(
    "name, value, accepts",
    [
        ("LOOKALIKE_WORKERS", "abc", "an integer from 0 to 64"),
        ("LOOKALIKE_WORKERS", "-1", "an integer from 0 to 64"),
        ("LOOKALIKE_BATCH_SIZE", "abc", "an integer from 1 to 4096"),
        ("LOOKALIKE_BATCH_SIZE", "0", "an integer from 1 to 4096"),
        ("LOOKALIKE_K", "0", "an integer from 1 to 1000"),
        ("LOOKALIKE_TEMPERATURE", "-0.5", "a number above 0"),
        ("LOOKALIKE_TEMPERATURE", "nan", "a number above 0"),
        ("LOOKALIKE_PRECISION", "fp64", "one of auto, fp32, bf16, fp16"),
        ("LOOKALIKE_MAX_UPLOAD_MB", "abc", "a number above 0 and at most 1024"),
        ("LOOKALIKE_PORT", "http", "an integer from 0 to 65535"),
        ("LOOKALIKE_MEMORY_BUDGET", "0.5", "a size such as 4G, 512M or a number of bytes"),  # not 0 bytes
    ],
)
@pytest.mark.parametrize("command", ["index", "serve"])
def test_bad_environment_values_are_one_line_naming_the_variable(photos, tmp_path, monkeypatch, command,
                                                                 name, value, accepts):
    monkeypatch.setenv(name, value)
    library = tmp_path / "lib"
    args = ["index", str(photos), "--quiet"] if command == "index" else ["serve"]
    result = CliRunner().invoke(main, [*args, "--library", str(library)])
    assert one_line_error(result) == f"Error: {name}={value!r}: expected {accepts}"
    assert not library.exists()


@pytest.mark.parametrize("option, setting, bad", [("--workers", "workers", "-1"),
                                                  ("--batch-size", "batch_size", "0")])
def test_options_and_variables_take_their_ranges_from_one_place(photos, tmp_path, option, setting, bad):
    result = CliRunner().invoke(main, ["index", str(photos), option, bad, "--library", str(tmp_path / "lib")])
    assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output
    t = setting_type(setting)
    assert (t.min, t.max) == {"workers": (0, 64), "batch_size": (1, 4096)}[setting]


def test_an_empty_folder_says_so_and_creates_no_library(tmp_path):
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "notes.txt").write_text("no photos here")
    library = tmp_path / "lib"
    for command in ("index", "up"):
        result = CliRunner().invoke(main, [command, str(empty), "--library", str(library)])
        line = one_line_error(result)
        assert line.startswith(f"Error: no photos found under {empty}")
        assert not library.exists()


def test_an_unknown_backbone_creates_no_library(photos, tmp_path):
    library = tmp_path / "lib"
    result = CliRunner().invoke(main, ["index", str(photos), "--backbone", "nonsense", "--library", str(library)])
    assert one_line_error(result).startswith("Error: unknown backbone 'nonsense'")
    assert not library.exists()


def test_an_emptied_folder_still_updates_its_library(photos, tmp_path):
    library = tmp_path / "lib"
    runner = CliRunner()
    args = ["index", str(photos), "--quiet", "--workers", "0", "--library", str(library)]
    assert runner.invoke(main, args).exit_code == 0
    (photos / "hat.jpg").unlink()
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "indexed 0, unchanged 0, moved 0, removed 1" in result.output


@pytest.mark.parametrize("query", ["1180591620717411303424", str(2**63), "9" * 300])
def test_search_for_an_id_beyond_64_bits_is_a_message(sample_library, query):
    result = CliRunner().invoke(main, ["search", query, "--library", str(sample_library.path)])
    assert one_line_error(result).startswith("Error: ")
    assert "is not an image id, a path in the library" in result.output


# --library naming a file is click's usage error; a folder under a file, or the variable naming a file, are not.
@pytest.mark.parametrize("where, library", [("variable", "a-file"), ("variable", "a-file/lib"),
                                            ("option", "a-file/lib")])
def test_a_library_folder_that_cannot_be_made_is_one_line(photos, tmp_path, monkeypatch, where, library):
    (tmp_path / "a-file").write_text("not a folder")
    path = tmp_path / library
    if where == "variable":
        monkeypatch.setenv("LOOKALIKE_LIBRARY", str(path))
        args = []
    else:
        args = ["--library", str(path)]
    result = CliRunner().invoke(main, ["index", str(photos), "--quiet", *args])
    assert one_line_error(result).startswith(f"Error: cannot make the library folder {path}: ")
    assert (tmp_path / "a-file").read_text() == "not a folder"


@pytest.mark.parametrize("error, said", [
    ("database is locked", "is locked by another process (database is locked): try again when it is done"),
    ("database or disk is full", "cannot be written (database or disk is full): is its disk full?"),
])
def test_a_database_that_cannot_be_written_is_one_line(error, said):
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from lookalike.cli import _one_line

    assert _one_line(OperationalError("INSERT ...", {}, sqlite3.OperationalError(error))) == \
        f"the library's database {said}"


def test_a_full_disk_and_a_folder_this_user_cannot_write_are_one_line():
    import errno

    from lookalike.cli import _one_line

    full = OSError(errno.ENOSPC, "No space left on device", "/lib/head.npz.tmp.npz")
    assert _one_line(full) == "no space left to write /lib/head.npz.tmp.npz: free some disk space and run it again"
    denied = PermissionError(errno.EACCES, "Permission denied", "/lib/tune.lock")
    assert _one_line(denied) == "permission denied: /lib/tune.lock: this user cannot write there"
    assert _one_line(ValueError("a bug")) is None  # anything else keeps its traceback
