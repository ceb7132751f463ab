"""Search through HTTP: `lookalike serve` on a synthetic library, a bounded load generator on loopback.

Libraries of 10k, 100k, 1M images use the real schema with synthetic vectors shaped like real
embeddings (`bench.index_types.synthetic`); the FAISS file is the one the library builds for its
size (`Library.build_vectors`), and the k-NN neighbour lists are computed before the server starts
so its warm-up does not run under the measurements. Queries by upload are real clothing photos.
"""

from __future__ import annotations

import http.client
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.index_types import synthetic
from bench.synthetic import fill_library
from indexer.backbone import Backbone

SERVE = "from lookalike.cli import main; main()"


@dataclass
class Latencies:
    ms: list[float] = field(default_factory=list)
    errors: int = 0
    wall: float = 0.0

    def pct(self, p: float) -> float:
        return float(np.percentile(self.ms, p)) if self.ms else float("nan")

    @property
    def rate(self) -> float:
        return len(self.ms) / self.wall if self.wall else 0.0


def build_library(path: Path, n: int, backbone: Backbone, say=print) -> dict:
    """Rows + vectors + FAISS file + neighbour lists; seconds of each step."""
    from search.labelling.labeller import Labeller
    from search.searcher import Searcher

    facts = {}
    started = time.perf_counter()
    files = [(f"{i // 1000:04d}/synthetic_{i:07d}.jpg", 20_000, 1.7e9) for i in range(n)]
    library = fill_library(path, path / "no-photos", files, backbone,
                           lambda start, count: synthetic(count, seed=1000 + start))
    facts["rows_s"] = time.perf_counter() - started
    try:
        started = time.perf_counter()
        index = library.build_vectors()
        library.save_vectors(index, clean=True)
        facts["index_s"] = time.perf_counter() - started
        facts["index"] = index.describe()
        say(f"  {n}: rows {facts['rows_s']:.0f}s, {index.describe().get('index_type')} index "
            f"{facts['index_s']:.0f}s")
        started = time.perf_counter()
        Labeller(Searcher(library, backbone), k=20).refresh()
        facts["neighbours_s"] = time.perf_counter() - started
        say(f"  {n}: neighbour lists {facts['neighbours_s']:.0f}s")
    finally:
        library.close()
    return facts


class Server:
    """`lookalike serve --port 0` in a child process."""

    def __init__(self, library: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOOKALIKE_")}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, "-v", "serve", "--library", str(library), "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )
        self.lines: list[str] = []
        self.port = None
        deadline = time.monotonic() + 300
        while self.port is None:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("lookalike serve exited:\n" + "".join(self.lines))
            self.lines.append(line)
            if "serving" in line and "http://" in line:
                self.port = int(line.rsplit(":", 1)[1].split("/")[0])
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("lookalike serve did not start:\n" + "".join(self.lines))
        threading.Thread(target=self._drain, daemon=True).start()

    def wait_warm(self, timeout: float = 900) -> bool:
        """Wait for `serve`'s warm-up (model, suggestions, queue order) to end: measured after it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any("warm-up done" in line or "could not prepare" in line for line in self.lines):
                return True
            time.sleep(0.2)
        return False

    def _drain(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def rss_mb(self) -> tuple[float, float]:
        """(current, peak) resident memory of the server process, MB."""
        facts = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                facts[key] = int(value.split()[0]) / 1024
        return facts.get("VmRSS", float("nan")), facts.get("VmHWM", float("nan"))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def load(port: int, requests: list[tuple[str, str, bytes | None]], clients: int) -> Latencies:
    """Send `requests` (method, url, body) from `clients` threads, each on one keep-alive connection."""
    out = Latencies()
    lock = threading.Lock()
    shares = [requests[i::clients] for i in range(clients)]

    def client(share):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine, errors = [], 0
        for method, url, body in share:
            headers = {"Content-Type": "image/jpeg"} if body else {}
            t0 = time.perf_counter()
            conn.request(method, url, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            mine.append(1e3 * (time.perf_counter() - t0))
            errors += resp.status != 200
        conn.close()
        with lock:
            out.ms.extend(mine)
            out.errors += errors

    threads = [threading.Thread(target=client, args=(s,)) for s in shares]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.wall = time.perf_counter() - started
    return out


def measure(library: Path, n: int, uploads: list[bytes], *, quick: bool, clients: int) -> dict:
    rng = random.Random(n)
    def by_id(count):
        return [("GET", f"/api/images/{rng.randint(1, n)}/neighbours?k=20", None)
                               for _ in range(count)]
    def by_upload(count):
        return [("POST", "/api/search?k=20", rng.choice(uploads))
                                   for _ in range(count)]
    server = Server(library)
    try:
        server.wait_warm()
        load(server.port, by_id(20) + by_upload(3), 1)  # warm-up: model, caches
        res = {
            "id_1": load(server.port, by_id(150 if quick else 400), 1),
            "upload_1": load(server.port, by_upload(25 if quick else 60), 1),
            "id_n": load(server.port, by_id(clients * (25 if quick else 50)), clients),
            "upload_n": load(server.port, by_upload(clients * (4 if quick else 8)), clients),
        }
        res["rss_mb"], res["peak_rss_mb"] = server.rss_mb()
        res["clients"] = clients
    finally:
        server.stop()
    return res


def _available_bytes(path: Path) -> tuple[int, int]:
    """(free memory, free disk under `path`) in bytes."""
    memory = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable"):
            memory = int(line.split()[1]) * 1024
    st = os.statvfs(path)
    return memory, st.f_bavail * st.f_frsize


def too_big(n: int, workdir: Path, previous: tuple[int, float] | None, max_build_s: float) -> str | None:
    """Why a library of n vectors should not be built here, or None."""
    vectors = n * 1280 * 4
    memory, disk = _available_bytes(workdir)
    # The index build holds every stored vector once (filled in place), plus the index; the k-NN
    # lists are streamed in chunks.
    if memory < 1.8 * vectors:
        return f"needs ~{1.8 * vectors / 2**30:.0f} GiB of free memory, {memory / 2**30:.0f} GiB available"
    if disk < 1.6 * vectors:
        return f"needs ~{1.6 * vectors / 2**30:.0f} GiB of free disk, {disk / 2**30:.0f} GiB available"
    if previous:
        size, seconds = previous
        estimate = seconds * n / size  # at best linear: rows, index and neighbour lists
        if estimate > max_build_s:
            return (f"building it would take ~{estimate / 60:.0f} min (>{max_build_s / 60:.0f} min; "
                    f"{size:,} took {seconds:.0f}s); raise --max-build-minutes to run it")
    return None


def run(workdir: Path, sizes: list[int], corpus: Path, *, quick: bool, clients: int = 8,
        max_build_s: float = 1800, say=print) -> tuple[dict[int, dict], dict[int, str]]:
    """Measured sizes, and skipped sizes with the reason."""
    backbone = Backbone(device="auto")
    uploads = [p.read_bytes() for p in sorted(corpus.rglob("*.jpg"))[:40]]
    out, skipped = {}, {}
    previous = None
    for n in sorted(sizes):
        path = workdir / f"search{n}"
        reason = too_big(n, workdir, previous, max_build_s)
        if reason:
            say(f"skipping {n}: {reason}")
            skipped[n] = reason
            continue
        say(f"building a library of {n} synthetic vectors ...")
        try:
            facts = build_library(path, n, backbone, say)
            previous = (n, facts["rows_s"] + facts["index_s"] + facts["neighbours_s"])
            say(f"measuring {n} through HTTP ...")
            facts.update(measure(path, n, uploads, quick=quick, clients=clients))
        except (MemoryError, OSError, RuntimeError) as e:
            say(f"skipping {n}: {type(e).__name__}: {e}")
            skipped[n] = f"failed: {type(e).__name__}: {str(e)[:200]}"
            continue
        finally:
            shutil.rmtree(path, ignore_errors=True)  # GBs at 1M
        out[n] = facts
        say(f"  {n}: by id p50 {facts['id_1'].pct(50):.1f} ms p99 {facts['id_1'].pct(99):.1f}; "
            f"upload p50 {facts['upload_1'].pct(50):.1f} ms; RSS {facts['rss_mb']:.0f} MB")
    return out, skipped
