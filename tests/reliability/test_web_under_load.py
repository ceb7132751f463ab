"""The web app while the indexer writes, and under a burst of concurrent requests: no 5xx, no lost label."""

from __future__ import annotations

import http.client
import json
import random
import shutil
import subprocess
import sys
import threading

import pytest
from PIL import Image as PILImage
from PIL import ImageOps
from werkzeug.serving import make_server

from indexer.library import Library
from indexer.pipeline import index_folder
from indexer.schema import Label
from tests.conftest import SAMPLES
from tests.reliability.conftest import CLI
from web import create_app
from web.settings import Settings

pytestmark = pytest.mark.slow

READERS = 4
MAX_READS = 300  # per reader: the load is bounded even if the indexer were slow
BURST_CLIENTS = 16
BURST_REQUESTS = 12  # per client


class Client:
    """One keep-alive connection; records every response status."""

    def __init__(self, port: int, log: list) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.log = log

    def call(self, method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data else {}
        self.conn.request(method, url, body=data, headers=headers)
        resp = self.conn.getresponse()
        payload = resp.read()
        self.log.append((resp.status, method, url, payload[:300]))
        try:
            return resp.status, json.loads(payload)
        except ValueError:
            return resp.status, {}

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def live(tmp_path, backbone):
    """120 sample photos indexed and served on 127.0.0.1:<free port>; 120 more waiting to be indexed."""
    photos = tmp_path / "photos"
    shutil.copytree(SAMPLES, photos, ignore=shutil.ignore_patterns("*.md", "*.txt"))
    library = Library(tmp_path / "library", create=True)
    try:
        index_folder(photos, library, backbone, batch_size=32, workers=0)
    finally:
        library.close()
    # New photos for the indexer to write while the app serves: mirrored copies of the samples.
    for src in sorted(SAMPLES.rglob("*.jpg")):
        with PILImage.open(src) as img:
            ImageOps.mirror(img.convert("RGB")).save(photos / src.parent.name / f"mirror-{src.name}")
    app = create_app(Settings(library=tmp_path / "library"))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield photos, tmp_path / "library", server.server_port
    server.shutdown()
    thread.join(timeout=30)


def stored_labels(library_path) -> dict[int, str]:
    library = Library(library_path)
    try:
        with library.Session() as s:
            return {row.image_id: row.label for row in s.query(Label)}
    finally:
        library.close()


def test_reads_and_label_writes_while_the_indexer_writes_then_a_burst(live):
    photos, library_path, port = live
    log: list = []
    first = Client(port, log)
    status, body = first.call("GET", "/api/images?per_page=200&sort=path")
    assert status == 200 and body["total"] == 120
    ids = [im["id"] for im in body["images"]]
    first.close()

    writer = subprocess.Popen(
        [sys.executable, "-c", CLI, "index", str(photos), "--library", str(library_path),
         "--quiet", "--workers", "1", "--batch-size", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    expected: dict[int, str] = {}
    lock = threading.Lock()
    during_indexing = []  # requests sent while the indexer was still running

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        client = Client(port, log)
        for i in range(MAX_READS):
            if writer.poll() is not None and i >= 20:
                break
            if writer.poll() is None:
                during_indexing.append(1)
            image_id = rng.choice(ids)
            url = rng.choice([
                f"/api/images/{image_id}/neighbours?k=10", f"/api/images/{image_id}",
                "/api/images?per_page=50&unlabelled=1", "/api/status", "/api/labels",
                "/api/queue?limit=10", f"/api/images/{image_id}/suggestion",
            ])
            client.call("GET", url)
        client.close()

    def labeller(seed: int, mine: list[int]) -> None:
        rng = random.Random(seed)
        client = Client(port, log)
        for i in range(60):
            if writer.poll() is not None and i >= 10:
                break
            image_id = rng.choice(mine)
            label = f"label-{seed}-{i}"
            status, _ = client.call("PUT", f"/api/images/{image_id}/label", {"label": label})
            if status == 200:
                with lock:
                    expected[image_id] = label
        client.close()

    threads = [threading.Thread(target=reader, args=(s,)) for s in range(READERS)]
    threads += [threading.Thread(target=labeller, args=(100 + s, ids[s::2])) for s in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    out, _ = writer.communicate(timeout=300)
    assert writer.returncode == 0, out.decode()

    # A burst: every client starts at once, reads and labels its own images.
    barrier = threading.Barrier(BURST_CLIENTS)

    def burst(n: int) -> None:
        rng = random.Random(1000 + n)
        mine = ids[n::BURST_CLIENTS]
        client = Client(port, log)
        barrier.wait(timeout=60)
        for i in range(BURST_REQUESTS):
            image_id = rng.choice(mine)
            if i % 3 == 0:
                label = f"burst-{n}-{i}"
                status, _ = client.call("PUT", f"/api/images/{image_id}/label", {"label": label})
                if status == 200:
                    with lock:
                        expected[image_id] = label
            else:
                client.call("GET", rng.choice([f"/api/images/{image_id}/neighbours?k=20",
                                               f"/api/images/{image_id}", "/api/queue?limit=20"]))
        client.close()

    threads = [threading.Thread(target=burst, args=(n,)) for n in range(BURST_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)

    errors = [entry for entry in log if entry[0] >= 500]
    assert not errors, errors[:5]
    unexpected = [entry for entry in log if entry[0] != 200]
    assert not unexpected, unexpected[:5]
    assert len(during_indexing) >= 20 and expected, (len(during_indexing), len(log))
    # No label lost: the database and the API both hold the last label each image was given.
    assert {i: stored_labels(library_path).get(i) for i in expected} == expected
    check = Client(port, log)
    for image_id, label in expected.items():
        status, body = check.call("GET", f"/api/images/{image_id}")
        assert status == 200 and body["label"]["label"] == label
    status, body = check.call("GET", "/api/status")
    assert status == 200 and body["indexed"] == 240
    check.close()
