"""The whole bad_inputs corpus mixed with real photos: nothing crashes, every file is accounted for."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from sqlalchemy import select

from indexer.imageio import EXTENSIONS
from indexer.library import Library
from indexer.schema import FAILED, INDEXED, Image
from tests.conftest import shared_corpus
from tests.reliability.conftest import cli, copy_photos, library_vectors, status_json

pytestmark = pytest.mark.slow

REASONS = {"corrupt image", "not an image", "decompression bomb", "empty file", "degenerate image"}


def test_bad_inputs_mixed_with_real_photos(tmp_path):
    bad = shared_corpus("bad_inputs")
    photos = tmp_path / "photos"
    shutil.copytree(bad / "files", photos / "bad")
    good = copy_photos(shared_corpus("clothing_small"), photos / "good", 40, step=97)
    with open(bad / "catalog.csv", newline="") as f:
        catalog = {row["file"]: row for row in csv.DictReader(f)}
    scanned = {f"bad/{name}" for name in catalog if "." + name.rsplit(".", 1)[-1].lower() in EXTENSIONS}
    library_path = tmp_path / "library"

    result = cli("index", str(photos), "--library", str(library_path), "--quiet", "--workers", "2")
    assert result.returncode == 0, result.stdout + result.stderr

    library = Library(library_path)
    try:
        with library.Session() as s:
            rows = {r.path: r for r in s.scalars(select(Image))}
    finally:
        library.close()
    assert set(rows) == scanned | {f"good/{p}" for p in good}
    assert {p: rows[f"good/{p}"].status for p in good} == {p: INDEXED for p in good}
    for path, row in rows.items():
        assert row.status in (INDEXED, FAILED), path
        if row.status == FAILED:
            assert row.error and row.reason in REASONS, (path, row.error)
    # Bombs, empty files, non-images and degenerate images that Pillow cannot load, and corrupt
    # files it cannot even identify, are failed. (Others may be indexed: a PNG whose pixels are whole
    # but whose trailing chunk is cut, a GIF whose second frame is the bomb, HEIF via pillow-heif.)
    for name, facts in catalog.items():
        outcome, category = facts["pillow13_default_load"], facts["category"]
        unusable = outcome != "ok" and (
            category in ("bomb", "empty", "not_image", "degenerate")
            or (category == "corrupt" and outcome.startswith("UnidentifiedImageError"))
        )
        if f"bad/{name}" in rows and unusable:
            assert rows[f"bad/{name}"].status == FAILED, (name, outcome)

    status = status_json(library_path)
    indexed = sum(r.status == INDEXED for r in rows.values())
    assert status["vectors"] == status["indexed"] == indexed
    assert status["failed"] == len(rows) - indexed and status["pending"] == 0
    vectors = np.stack(list(library_vectors(library_path).values()))
    assert np.isfinite(vectors).all()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
