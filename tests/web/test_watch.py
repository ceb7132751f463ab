"""`lookalike serve --watch` on a live server: photos copied, moved, deleted and written slowly into
the watched folder are indexed as a re-run would index them, and a server killed mid-batch loses nothing.

The server is the real command in a child process (its own torch, engine and inotify observer); the
test only touches files and reads the JSON API, polling with generous deadlines (a loaded machine).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from indexer.library import Library
from indexer.pipeline import index_folder
from search.labelling.labels import import_folders
from tests.conftest import SAMPLES
from tests.reliability.conftest import library_vectors

LOOKALIKE = [sys.executable, "-c", "from lookalike.cli import main; main()"]
CHROMIUM = Path("/usr/bin/chromium")
WAIT = 600  # seconds: a deadline for the loaded 2-core machine, not a speed claim


class Server:
    """`lookalike serve --watch` in a child process; its output is kept for failure messages."""

    def __init__(self, library: Path, *command: str, **env_vars: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **env_vars}
        self.proc = subprocess.Popen(
            [*LOOKALIKE, *(command or ["serve"]), "--library", str(library), "--port", "0", "--watch"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        self.output: list[str] = []
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            if line.startswith("serving "):
                self.url = line.split(" on ", 1)[1].split()[0]
                break
        else:
            self.proc.wait()
            pytest.fail("the server did not start:\n" + "".join(self.output))
        threading.Thread(target=lambda: self.output.extend(self.proc.stdout), daemon=True).start()  # type: ignore[arg-type]

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=WAIT) as r:
            return json.load(r)

    def request(self, method: str, path: str, body: bytes, content_type: str) -> dict:
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers={"Content-Type": content_type})
        with urllib.request.urlopen(req, timeout=WAIT) as r:
            return json.load(r)

    def status(self) -> dict:
        return self.get("api/status")

    def wait_for(self, what: str, check, timeout: float = WAIT):
        """Poll `check()` until it returns something true; fail with the server's output after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "the server died:\n" + "".join(self.output)
            value = check()
            if value:
                return value
            time.sleep(0.5)
        pytest.fail(f"waited {timeout:.0f} s for {what}; last status {self.status()}\n" + "".join(self.output[-40:]))

    def wait_idle(self, indexed: int):
        """Until the library holds `indexed` indexed photos and the watcher has nothing left to do."""
        def done():
            s = self.status()
            w = s["watch"]
            return s["indexed"] == indexed and w["state"] == "idle" and w["waiting"] == 0 and s
        return self.wait_for(f"{indexed} indexed photos", done)

    def image_at(self, path: str) -> dict | None:
        folder = path.rsplit("/", 1)[0]
        page = self.get(f"api/images?folder={folder}&per_page=200&status=indexed")
        return next((i for i in page["images"] if i["path"] == path), None)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def new_photos(n: int, start: int = 0) -> list[tuple[str, bytes]]:
    """Photos that are not in the library yet: the samples mirrored, then flipped (real photos,
    new bytes); (file name, JPEG bytes) of numbers start..start+n."""
    samples = sorted(SAMPLES.rglob("*.jpg"))
    out = []
    for i in range(start, start + n):
        src = samples[i % len(samples)]
        turn = (ImageOps.mirror, ImageOps.flip, lambda im: im.rotate(180))[i // len(samples)]
        buf = io.BytesIO()
        with Image.open(src) as im:
            turn(im.convert("RGB")).save(buf, "JPEG", quality=90)
        out.append((f"{src.parent.name}-{i:03d}.jpg", buf.getvalue()))
    return out


def copy_in(folder: Path, photos: list[tuple[str, bytes]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in photos:
        (folder / name).write_bytes(data)


def make_library(tmp: Path, backbone) -> tuple[Path, Path]:
    """A photo root of 12 samples (two folders), indexed; the library beside it."""
    root, lib = tmp / "photos", tmp / "library"
    for cls in ("hat", "shoes"):
        (root / cls).mkdir(parents=True)
        for f in sorted((SAMPLES / cls).glob("*.jpg"))[:6]:
            shutil.copyfile(f, root / cls / f.name)
    with Library(lib, create=True) as library:
        index_folder(root, library, backbone, batch_size=32, workers=1)
    return root, lib


@pytest.fixture(scope="module")
def watched(tmp_path_factory, backbone):
    root, lib = make_library(tmp_path_factory.mktemp("watched"), backbone)
    with Library(lib) as library:  # labelled by folder: new photos get suggestions
        import_folders(library)
    server = Server(lib)
    server.wait_idle(12)
    yield root, lib, server
    server.stop()


def test_status_says_what_the_watcher_does(watched):
    _, _, server = watched
    status = server.status()
    assert set(status) == {"status", "images", "indexed", "watch"}
    assert status["watch"]["observer"] == "InotifyObserver"
    assert status["watch"]["error"] is None


def test_200_photos_copied_at_once_are_all_indexed(watched):
    root, lib, server = watched
    photos = new_photos(200)
    copy_in(root / "new", photos)
    server.wait_idle(212)
    stored = library_vectors(lib)  # SQLite and the FAISS file agree
    assert {f"new/{name}" for name, _ in photos} <= set(stored)
    # Searchable: the photo's own bytes find it first.
    name, data = photos[100]
    hits = server.request("POST", "api/search?k=1", data, "image/jpeg")["results"]
    assert hits[0]["image"]["path"] == f"new/{name}"
    # New photos with labelled photos among their neighbours get suggestions, without a restart.
    suggested = sum(server.get(f"api/images?folder=new&suggested={label}&per_page=1")["total"]
                    for label in ("hat", "shoes"))
    assert suggested > 0


def test_a_moved_labelled_photo_keeps_its_label(watched):
    root, _, server = watched
    indexed = server.status()["indexed"]
    image = server.image_at("hat/" + sorted(os.listdir(root / "hat"))[0])
    assert image is not None
    server.request("PUT", f"api/images/{image['id']}/label", json.dumps({"label": "sunhat"}).encode(),
                   "application/json")
    (root / "moved").mkdir()
    os.rename(root / image["path"], root / "moved" / image["name"])
    moved = server.wait_for("the move", lambda: server.image_at(f"moved/{image['name']}"))
    assert moved["id"] == image["id"]
    assert moved["label"]["label"] == "sunhat"
    server.wait_idle(indexed)  # a move, not a new photo and a removal


def test_a_deleted_photo_loses_its_row(watched):
    root, _, server = watched
    indexed = server.status()["indexed"]
    path = "shoes/" + sorted(os.listdir(root / "shoes"))[0]
    image = server.image_at(path)
    assert image is not None
    (root / path).unlink()

    def gone():
        try:
            server.get(f"api/images/{image['id']}")
        except urllib.error.HTTPError as e:
            return e.code == 404
        return False

    server.wait_for("the deletion", gone)
    server.wait_idle(indexed - 1)
    assert (SAMPLES / path).exists()  # the watcher never touches a photo: the sample is intact


def test_a_file_written_slowly_is_indexed_once_whole(watched):
    """A photo still being written waits; a photo copied meanwhile does not wait for it."""
    root, lib, server = watched
    indexed = server.status()["indexed"]
    (_, data), (_, quick) = new_photos(2, start=240)
    slow = root / "slow.jpg"
    with open(slow, "wb") as f:
        f.write(data[: len(data) // 2])
        f.flush()
        (root / "quick.jpg").write_bytes(quick)
        server.wait_for("the photo copied meanwhile", lambda: _row(lib, "quick.jpg") == "indexed")
        for i in range(len(data) // 2, len(data), 4096):  # the rest, bit by bit
            f.write(data[i : i + 4096])
            f.flush()
            assert _row(lib, "slow.jpg") is None  # not indexed, nor failed, half-written
            time.sleep(0.01)
    server.wait_idle(indexed + 2)
    assert _row(lib, "slow.jpg") == "indexed"


def test_an_index_run_from_another_shell_takes_turns_with_the_watcher(watched):
    root, lib, server = watched
    indexed = server.status()["indexed"]
    with Library(lib) as library, library.writer_lock():  # as a `lookalike index` run holds it
        (root / "during.jpg").write_bytes(new_photos(1, start=242)[0][1])
        error = server.wait_for("the watcher to find the library busy", lambda: server.status()["watch"]["error"])
        assert "another `lookalike index` is writing" in error
    server.wait_idle(indexed + 1)  # after the run, the watcher's batch goes through: nothing lost
    # And the other way round: `lookalike index` between two batches runs, and finds nothing to do.
    out = subprocess.run([*LOOKALIKE, "index", str(root), "--library", str(lib), "--quiet"],
                         capture_output=True, text=True, timeout=WAIT)
    assert out.returncode == 0, out.stderr
    assert f"indexed 0, unchanged {indexed + 1}," in out.stdout


@pytest.mark.browser
def test_the_pages_say_while_photos_wait_to_be_indexed(watched):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    root, lib, server = watched
    indexed = server.status()["indexed"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(base_url=server.url)
            page.goto("/")
            banner = page.locator("#watch-banner")
            sync_api.expect(banner).to_be_hidden()
            data = new_photos(1, start=243)[0][1]
            with open(root / "arriving.jpg", "wb") as f:  # held open: it waits, and the page says so
                f.write(data[:2000])
                f.flush()
                sync_api.expect(banner).to_be_visible(timeout=WAIT * 1000)
                sync_api.expect(banner).to_contain_text("Indexing new photos", timeout=WAIT * 1000)
                sync_api.expect(banner).to_contain_text("1 still being written", timeout=WAIT * 1000)
                f.write(data[2000:])
            sync_api.expect(banner).to_be_hidden(timeout=WAIT * 1000)
        finally:
            browser.close()
    server.wait_idle(indexed + 1)


def test_up_watches_the_folder_it_indexed(tmp_path):
    root = tmp_path / "photos"
    copy_in(root / "hat", [(f.name, f.read_bytes()) for f in sorted((SAMPLES / "hat").glob("*.jpg"))[:4]])
    server = Server(tmp_path / "library", "up", str(root), "--no-browser")
    try:
        server.wait_idle(4)
        copy_in(root / "hat", new_photos(1))
        server.wait_idle(5)
    finally:
        server.stop()


def test_a_server_killed_while_indexing_loses_nothing(tmp_path, backbone):
    root, lib = make_library(tmp_path, backbone)
    photos = new_photos(200)
    server = Server(lib, LOOKALIKE_BATCH_SIZE="8")  # small batches: progress to see, a run to interrupt
    try:
        server.wait_idle(12)
        copy_in(root / "new", photos)

        def under_way():
            w = server.status()["watch"]
            return w["state"] == "indexing" and 0 < w["done"] < w["total"]

        server.wait_for("a batch under way", under_way)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
    finally:
        server.stop()
    server = Server(lib)  # starts with a catch-up run
    try:
        server.wait_idle(212)
    finally:
        server.stop()
    stored = library_vectors(lib)
    assert {f"new/{name}" for name, _ in photos} <= set(stored)
    assert len(stored) == 212


def _row(lib: Path, path: str) -> str | None:
    """The status of the row of `path` (None without one), read straight from the database."""
    import sqlite3

    conn = sqlite3.connect(f"file:{lib / 'library.db'}?mode=ro", uri=True, timeout=30)
    try:
        row = conn.execute("SELECT status FROM images WHERE path = ?", (path,)).fetchone()
    finally:
        conn.close()
    return row[0] if row else None


def test_watching_a_photo_folder_that_is_gone_is_a_clear_error(tmp_path, backbone):
    from click.testing import CliRunner

    from lookalike.cli import main

    root, lib = make_library(tmp_path, backbone)
    root.rename(tmp_path / "elsewhere")
    result = CliRunner().invoke(main, ["serve", "--library", str(lib), "--port", "0", "--watch"])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: cannot watch {root}, the library's photo folder: it is not a folder"
