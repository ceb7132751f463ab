"""`lookalike index` and `lookalike status` through click's runner, as a user types them."""

from __future__ import annotations

import json
import os
import shutil

from click.testing import CliRunner

from lookalike.cli import main
from tests.conftest import SAMPLES, TEST_DATA


def test_index_then_status_json(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLES / "hat", photos / "hat")
    shutil.copy(TEST_DATA / "bad" / "pillow__truncated_jpeg.jpg", photos / "truncated.jpg")
    library = tmp_path / "lib"
    monkeypatch.setenv("LOOKALIKE_LIBRARY", str(library))  # the env var is honoured
    runner = CliRunner()
    result = runner.invoke(main, ["index", str(photos), "--quiet", "--workers", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "indexed 12, unchanged 0, moved 0, removed 0, failed 1 (1 corrupt image)" in result.output

    result = runner.invoke(main, ["status", "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["images"] == 13 and status["indexed"] == 12 and status["failed"] == 1
    assert status["vectors"] == status["indexed"]
    assert status["backbone"] == "efficientnet_lite0" and status["dim"] == 1280
    assert status["failed_by_reason"] == {"corrupt image": 1}

    again = runner.invoke(main, ["index", str(photos), "--quiet", "--library", str(library)])
    assert "indexed 0, unchanged 13" in again.output


def test_errors_are_messages_not_tracebacks(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["status", "--library", str(tmp_path / "nothing")])
    assert result.exit_code == 1
    assert "no library at" in result.output and "Traceback" not in result.output
    photos = tmp_path / "p"
    photos.mkdir()
    result = runner.invoke(main, ["index", str(photos), "--library", str(tmp_path / "l"),
                                  "--weights", str(tmp_path / "missing.pth")])
    assert result.exit_code != 0
    assert "does not exist" in result.output


def test_a_bad_weights_file_is_one_line_and_creates_no_library(tmp_path):
    """A file that is no state_dict, or one of another network, used to create the library (its hash
    recorded as the weights) before the model was loaded: the next run with the right weights was
    then refused as another backbone. And torch's own message ran to kilobytes."""
    import torch

    photos = tmp_path / "p"
    shutil.copytree(SAMPLES / "hat", photos)
    garbage, other = tmp_path / "garbage.pth", tmp_path / "other.pth"
    garbage.write_bytes(b"not weights")
    torch.save({"x": torch.zeros(3)}, other)
    library = tmp_path / "lib"
    runner = CliRunner()
    for weights, message in ((garbage, "cannot read weights file"),
                             (other, "is not an EfficientNet-Lite0 state_dict: 296 keys missing")):
        result = runner.invoke(main, ["index", str(photos), "--library", str(library), "--weights", str(weights)])
        assert result.exit_code == 1 and message in result.output
        assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
        assert not library.exists()
    result = runner.invoke(main, ["index", str(photos), "--library", str(library), "--quiet", "--workers", "1"])
    assert result.exit_code == 0 and "indexed 12," in result.output


def test_a_file_name_that_is_not_utf8_is_skipped_by_name_and_the_run_goes_on(tmp_path):
    """Issue 22, item 3: `bad\\xff.jpg` (a Latin-1 name) aborted every run with "surrogates not allowed",
    so nothing new was ever indexed again. SQLite stores text as UTF-8: the file is skipped, named."""
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLES / "hat", photos / "hat")
    photo = sorted((photos / "hat").iterdir())[0]
    shutil.copy(photo, os.fsdecode(bytes(photos) + b"/bad\xff.jpg"))
    (photos / os.fsdecode(b"caf\xe9")).mkdir()  # a folder whose name is Latin-1, with a photo in it
    shutil.copy(photo, os.fsdecode(bytes(photos) + b"/caf\xe9/x.jpg"))
    library = tmp_path / "lib"
    runner = CliRunner()
    result = runner.invoke(main, ["index", str(photos), "--library", str(library), "--quiet", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert "indexed 12, unchanged 0, moved 0, removed 0, failed 0, skipped 2 files whose names are not UTF-8" \
        in result.output
    assert "Traceback" not in result.output

    shutil.copytree(SAMPLES / "shoes", photos / "shoes")  # the next run indexes what is new
    again = runner.invoke(main, ["index", str(photos), "--library", str(library), "--quiet", "--workers", "1"])
    assert again.exit_code == 0, again.output
    assert "indexed 12, unchanged 12," in again.output and "skipped 2 files whose names" in again.output
    status = json.loads(runner.invoke(main, ["status", "--json", "--library", str(library)]).output)
    assert status["images"] == status["indexed"] == 24


def test_a_photo_folder_or_library_path_that_is_not_utf8_is_a_one_line_error(tmp_path):
    photos = os.fsdecode(bytes(tmp_path) + b"/photos\xff")
    shutil.copytree(SAMPLES / "hat", photos)
    runner = CliRunner()
    result = runner.invoke(main, ["index", photos, "--library", str(tmp_path / "lib"), "--quiet"])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == (
        f"Error: {tmp_path}/photos\\xff: the photo folder's path is not UTF-8, "
        "and the library records it as text: rename it")
    library = os.fsdecode(bytes(tmp_path) + b"/lib\xff")
    result = runner.invoke(main, ["index", str(SAMPLES / "hat"), "--library", library, "--quiet"])
    assert result.exit_code == 1, result.output
    assert result.output.splitlines()[-1] == (
        f"Error: {tmp_path}/lib\\xff: the library's path is not UTF-8: use another --library")
