"""Small uploads that decode to gigabytes are refused before decoding; the live server's peak
memory (VmHWM) shows it, and shows that only a few uploads are decoded at once."""

from __future__ import annotations

import json
import shutil
import struct
import sys
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import SAMPLES
from tests.lookalike.test_cli_web import start, stop
from web.uploads import DECODE_SLOTS, MAX_DECODED_BYTES

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status")

MiB = 2**20


def blank_png(width: int, height: int, *, channels: int, bit_depth: int = 8) -> bytes:
    """A valid PNG of zero pixels, compressed row by row: a 10000 x 9999 RGBA one is ~400 KB."""
    color_type = {1: 0, 3: 2, 4: 6}[channels]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = bytes(1 + width * channels * bit_depth // 8)  # filter byte 0, then the pixels
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


class PeakMemory:
    """How far a process's resident memory rose above its level at the start of a `with` block.

    Linux keeps the peak in VmHWM; writing 5 to clear_refs resets it to the current size.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.grown = 0

    def __enter__(self) -> PeakMemory:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self.start = status_kib(self.pid, "VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.grown = status_kib(self.pid, "VmHWM") - self.start


def post(url: str, data: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url + "api/search?k=3", data=data, headers={"Content-Type": "image/png"})
    try:
        with urllib.request.urlopen(request, timeout=300) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


@pytest.fixture
def server(sample_library_dir, tmp_path):
    shutil.copytree(sample_library_dir, tmp_path / "library")
    proc, url = start(["serve", "--library", str(tmp_path / "library"), "--port", "0"])
    try:
        # One ordinary search first: the model is loaded and one photo decoded before measuring.
        status, body = post(url, min((SAMPLES / "hat").glob("*.jpg")).read_bytes())
        assert status == 200, (body, "".join(proc.output))
        yield proc, url
    finally:
        stop(proc)


def test_small_files_that_decode_huge_are_413_and_cost_no_memory(server):
    proc, url = server
    bombs = [
        blank_png(10000, 9999, channels=4),  # RGBA: 400 MB of pixels, ~2.5 GB to convert
        blank_png(10000, 9999, channels=1, bit_depth=16),  # 16-bit gray
        blank_png(10000, 9999, channels=4),
        blank_png(10000, 9999, channels=1, bit_depth=16),
    ]
    assert max(len(b) for b in bombs) < 1 * MiB  # far under the 20 MB upload limit
    with PeakMemory(proc.pid) as memory, ThreadPoolExecutor(len(bombs)) as pool:
        answers = list(pool.map(lambda data: post(url, data), bombs))
    for status, body in answers:
        assert status == 413, body
        assert body["error"]["message"].startswith("the photo is too large to search by: 10000x9999")
    # Refused from the header: not even a quarter of one decode's bound was allocated.
    assert memory.grown < MAX_DECODED_BYTES // 4, f"peak memory grew {memory.grown / MiB:.0f} MiB"


def test_photos_under_the_bound_are_searched_a_few_at_a_time(server):
    proc, url = server
    # 4000 x 6000 RGBA: 91.6 MiB of pixels, just under the bound, so it is decoded and searched.
    photo = blank_png(4000, 6000, channels=4)
    assert 4000 * 6000 * 4 <= MAX_DECODED_BYTES
    with PeakMemory(proc.pid) as one:
        status, body = post(url, photo)
    assert status == 200 and body["query"]["width"] == 4000, body
    uploads = 4  # as many as waitress has threads
    with PeakMemory(proc.pid) as together, ThreadPoolExecutor(uploads) as pool:
        answers = list(pool.map(lambda data: post(url, data), [photo] * uploads))
    assert [status for status, _ in answers] == [200] * uploads
    # DECODE_SLOTS decodes at once cost about DECODE_SLOTS times one; four at once (no limit) 2.5x.
    assert together.grown < (DECODE_SLOTS + 0.5) * one.grown, (
        f"one upload: +{one.grown / MiB:.0f} MiB, {uploads} at once: +{together.grown / MiB:.0f} MiB"
    )
