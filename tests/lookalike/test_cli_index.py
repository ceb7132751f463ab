"""`lookalike index` and `lookalike status` through click's runner, as a user types them."""

from __future__ import annotations

import json
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
