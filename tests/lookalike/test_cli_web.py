"""`lookalike serve` and `lookalike up`: real waitress servers in subprocesses, and the pieces."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections import Counter

import pytest
import waitress
from click.testing import CliRunner
from sqlalchemy import select

from indexer.library import Library
from indexer.schema import Image, Label
from lookalike import cli_web
from lookalike.cli import main
from tests.conftest import SAMPLES

# The server gets Ctrl+C as from a terminal even when this test run was started in the background: a
# non-interactive shell starts background jobs with SIGINT ignored, which the server (rightly) keeps.
LOOKALIKE = [sys.executable, "-c",
             "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
             "from lookalike.cli import main; main()"]


def start(args: list[str]) -> tuple[subprocess.Popen, str]:
    """Run `lookalike ARGS` until it says where it serves; returns the process and the URL."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(LOOKALIKE + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    output = []
    for line in proc.stdout:  # ends when the process does
        output.append(line)
        if line.startswith("serving "):
            # Keep reading what it prints (converting a model logs a lot): a full pipe would block it.
            reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
            reader.start()
            proc.output, proc.reader = output, reader  # type: ignore[attr-defined]  # read after stop()
            return proc, line.split(" on ", 1)[1].split()[0]
    proc.wait()
    pytest.fail("the server did not start:\n" + "".join(output))


def get_json(url: str) -> tuple[dict, dict]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r), dict(r.headers)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(2)  # Ctrl+C
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.reader.join(timeout=30)  # type: ignore[attr-defined]  # all it printed is in proc.output


def test_serve_runs_waitress_on_loopback(sample_library_dir):
    proc, url = start(["serve", "--library", str(sample_library_dir), "--port", "0"])
    try:
        assert url.startswith("http://127.0.0.1:")
        status, headers = get_json(url + "api/status")
        assert status == {"status": "ok", "images": 120, "indexed": 120}
        assert headers["Server"] == "lookalike"  # waitress's ident, not Werkzeug's dev server
        page, _ = get_json(url + "api/images?per_page=1")
        assert page["total"] == 120
    finally:
        stop(proc)
    output = "".join(proc.output)
    assert proc.returncode == 0, output
    # Ctrl+C inside waitress's loop (which swallows it) still leaves at once, whatever runs behind.
    assert "stopped (Ctrl+C)" in output


def test_ctrl_c_twice_still_leaves_cleanly(sample_library_dir):
    """A second Ctrl+C while the first is being handled (an impatient person, or `timeout` passing
    the signal on) once deadlocked the handler: the server must still leave with status 0."""
    proc, url = start(["serve", "--library", str(sample_library_dir), "--port", "0"])
    get_json(url + "api/status")  # inside waitress's loop
    proc.send_signal(2)
    proc.send_signal(2)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.reader.join(timeout=30)  # type: ignore[attr-defined]
    output = "".join(proc.output)  # type: ignore[attr-defined]
    assert proc.returncode == 0, output
    assert "stopped (Ctrl+C)" in output and "Traceback" not in output


def test_up_indexes_a_folder_then_serves_it(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in sorted((SAMPLES / "shoes").glob("*.jpg"))[:3]:
        shutil.copy(photo, photos / photo.name)
    proc, url = start(["up", str(photos), "--library", str(tmp_path / "lib"), "--port", "0", "--no-browser"])
    try:
        status, _ = get_json(url + "api/status")
        assert status["images"] == 3 and status["indexed"] == 3
        assert get_json(url + "api/labels")[0]["labelled"] == 0  # only the samples get labels
    finally:
        stop(proc)
    assert proc.returncode == 0, "".join(proc.output)


def test_serve_without_a_library_is_a_message(tmp_path):
    result = CliRunner().invoke(main, ["serve", "--library", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "no library at" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("where", ["option", "variable"])
def test_serve_on_an_address_that_is_none_is_one_line(sample_library_dir, monkeypatch, where):
    host = "999.1.1.1"
    monkeypatch.setenv("LOOKALIKE_TOKEN", "t0ken")  # no warning for listening beyond loopback without one
    if where == "option":
        args = ["--host", host]
    else:
        monkeypatch.setenv("LOOKALIKE_HOST", host)
        args = []
    result = CliRunner().invoke(main, ["serve", "--library", str(sample_library_dir), "--port", "0", *args])
    assert result.exit_code == 1 and type(result.exception) is SystemExit, result.output
    assert result.output.splitlines() == [f"Error: cannot listen on {host}:0: Invalid host/port specified."]


def test_up_with_the_samples_labels_half_of_them(tmp_path, monkeypatch):
    samples = tmp_path / "samples"
    for cls in ("hat", "shoes"):
        (samples / cls).mkdir(parents=True)
        for photo in sorted((SAMPLES / cls).glob("*.jpg"))[:4]:
            shutil.copy(photo, samples / cls / photo.name)
    served = []
    monkeypatch.setattr(cli_web, "SAMPLES", samples)
    monkeypatch.setattr(cli_web, "run_server", lambda settings, open_browser: served.append((settings, open_browser)))
    library = tmp_path / "lib"
    result = CliRunner().invoke(main, ["up", "--library", str(library), "--port", "5123"])
    assert result.exit_code == 0, result.output
    assert "indexed 8" in result.output and "labelled 4 sample photos" in result.output
    settings, open_browser = served[0]
    assert settings.port == 5123 and settings.host == "127.0.0.1" and open_browser is True

    lib = Library(library)
    try:
        with lib.Session() as s:
            labels = dict(s.execute(select(Image.folder, Label.label).join(Label)).all())
            per_folder = Counter(s.scalars(select(Image.folder).join(Label)).all())
        assert all(folder == label for folder, label in labels.items())
        assert per_folder == {"hat": 2, "shoes": 2}
        assert cli_web.label_half_of_samples(lib) == 0  # never twice, never over someone's labels
    finally:
        lib.close()


@pytest.fixture
def no_warm_up(monkeypatch):
    """In-process `serve` with a stand-in server: its warm-up thread would outlive the command in
    pytest's process (loading the model while later tests import, which broke CPython 3.11.7's AST
    state: "AST constructor recursion depth mismatch" at pytest's exit). Recorded, not run."""
    started = []
    monkeypatch.setattr(cli_web, "_warm_up", lambda searcher, labeller: started.append(searcher))
    return started


def test_serving_beyond_loopback_without_a_token_warns(sample_library_dir, monkeypatch, no_warm_up):
    made = {}

    class FakeServer:
        effective_port = 8765

        def run(self):
            made["ran"] = True

        def close(self):
            made["closed"] = True

    def create_server(app, **kw):
        made.update(kw)
        return FakeServer()

    monkeypatch.setattr(waitress, "create_server", create_server)
    monkeypatch.delenv("LOOKALIKE_TOKEN", raising=False)
    result = CliRunner().invoke(main, ["serve", "--library", str(sample_library_dir), "--host", "0.0.0.0"])
    assert result.exit_code == 0, result.output
    assert made["host"] == "0.0.0.0" and made["port"] == 5000 and made["ran"] and made["closed"]
    assert len(no_warm_up) == 1  # the warm-up was started beside the server
    assert "without LOOKALIKE_TOKEN" in result.output
    assert "on http://127.0.0.1:8765/" in result.output

    monkeypatch.setenv("LOOKALIKE_TOKEN", "t0ken")
    result = CliRunner().invoke(main, ["serve", "--library", str(sample_library_dir), "--host", "0.0.0.0"])
    assert "without LOOKALIKE_TOKEN" not in result.output


def test_ctrl_c_during_the_warm_up_stops_at_once(sample_library_dir, tmp_path):
    """Ctrl+C while the model is still loading: the server leaves without waiting for it (and
    without the abort that exiting under a loading torch used to cause)."""
    shutil.copytree(sample_library_dir, tmp_path / "lib")
    proc, url = start(["-v", "serve", "--library", str(tmp_path / "lib"), "--port", "0"])
    proc.send_signal(2)  # at once: the warm-up thread has only begun to build the model
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, output
    assert "warm-up done" not in output  # it did not wait for the model
    assert "terminate called" not in output and "Traceback" not in output


def test_serve_warns_beyond_loopback_only(sample_library_dir, monkeypatch, no_warm_up):
    """One definition of loopback: no warning on any 127.x address, ::1 or localhost."""
    monkeypatch.setattr(waitress, "create_server", lambda app, **kw: _NoServer())
    monkeypatch.delenv("LOOKALIKE_TOKEN", raising=False)
    for host, warns in (("127.0.0.1", False), ("127.0.0.2", False), ("::1", False), ("localhost", False),
                        ("0.0.0.0", True), ("::", True), ("192.168.1.20", True)):
        result = CliRunner().invoke(main, ["serve", "--library", str(sample_library_dir), "--host", host])
        assert result.exit_code == 0, result.output
        assert ("without LOOKALIKE_TOKEN" in result.output) is warns, host


class _NoServer:
    effective_port = 8765

    def run(self):
        pass

    def close(self):
        pass
