"""Fixtures for the search layer: libraries of hand-made vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer.library import Library
from indexer.schema import INDEXED, Embedding, Image


def unit(rows) -> np.ndarray:
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def make_vector_library(path: Path, vectors: np.ndarray, paths: list[str] | None = None) -> Library:
    """A library whose indexed images carry these hand-made vectors (ids 1..n, in order)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    paths = paths or [f"img/{i:04d}.jpg" for i in range(1, len(vectors) + 1)]
    library = Library(path, create=True)
    with library.Session.begin() as s:
        library.set_meta(
            s,
            root=str(path / "photos"),
            backbone="handmade",
            weights="none",
            preprocessing="none",
            dim=str(vectors.shape[1]),
        )
        for i, (p, v) in enumerate(zip(paths, vectors, strict=False), start=1):
            folder = p.rsplit("/", 1)[0] if "/" in p else ""
            s.add(Image(id=i, path=p, folder=folder, size=1, mtime=0.0, status=INDEXED))
            s.add(Embedding(image_id=i, vector=v.tobytes()))
    library.save_vectors(library.build_vectors(), clean=True)
    return library


@pytest.fixture
def vector_library(tmp_path):
    """Factory: vector_library(vectors, paths=None) -> Library, closed after the test."""
    made: list[Library] = []

    def make(vectors, paths=None, name="vectors"):
        library = make_vector_library(tmp_path / name, vectors, paths)
        made.append(library)
        return library

    yield make
    for library in made:
        library.close()
