"""SIGKILL at random moments while indexing, resume each time: the library ends as a clean run's."""

from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_corpus
from tests.reliability.conftest import CLI, copy_photos, library_vectors, status_json

pytestmark = pytest.mark.slow

PHOTOS = 300
KILLS = 6
SEED = 20261122
BATCH = 8  # many small transactions: many moments to be killed between and inside them


def indexed_count(library: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{library / 'library.db'}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("select count(*) from images where status = 'indexed'").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:  # not created yet, or its tables are being created
        return 0


def index_command(photos: Path, library: Path) -> list[str]:
    return [sys.executable, "-c", CLI, "index", str(photos), "--library", str(library),
            "--quiet", "--workers", "1", "--batch-size", str(BATCH)]


def kill_at_random_moment(photos: Path, library: Path, rng: random.Random, total: int) -> str:
    """Start an indexer, kill -9 it at a random point of its run; what it had done by then."""
    before = indexed_count(library)
    proc = subprocess.Popen(index_command(photos, library), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    # A random share of the work still to do, then a random extra delay: the kill lands anywhere
    # from start-up through a batch's write (0 = during start-up, before any batch is written).
    target = before + int(rng.uniform(0.0, 0.2) * (total - before))
    deadline = time.monotonic() + 120
    while proc.poll() is None and indexed_count(library) < target and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.3))
    if proc.poll() is not None:
        out = proc.stdout.read().decode()
        assert proc.returncode == 0, out
        return "finished before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stdout.close()
    return f"killed at {indexed_count(library)}/{total}"


def test_sigkill_at_random_moments_then_resume_equals_a_clean_run(tmp_path):
    photos = tmp_path / "photos"
    copy_photos(shared_corpus("clothing_small"), photos, PHOTOS, step=11)
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    result = subprocess.run(index_command(photos, clean), capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr

    rng = random.Random(SEED)
    outcomes = [kill_at_random_moment(photos, killed, rng, PHOTOS) for _ in range(KILLS)]
    assert sum(o.startswith("killed") for o in outcomes) >= 5, outcomes
    result = subprocess.run(index_command(photos, killed), capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr

    want, got = library_vectors(clean), library_vectors(killed)
    assert sorted(got) == sorted(want) and len(got) == PHOTOS, outcomes
    # Batches differ between the runs; bf16 kernels may round a batch's images a hair differently.
    for path in want:
        assert np.allclose(got[path], want[path], atol=2e-3), path
    for facts in (status_json(clean), status_json(killed)):
        assert facts["indexed"] == facts["vectors"] == facts["images"] == PHOTOS
        assert facts["pending"] == facts["failed"] == 0
