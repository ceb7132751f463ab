"""Fixtures for the web layer: an app over a private copy of the indexed sample library."""

from __future__ import annotations

import shutil

import pytest

from indexer.library import Library
from indexer.pipeline import index_folder
from tests.conftest import SAMPLES, TEST_DATA
from tests.web.library_setup import label_every_other, make_app, make_small_collection


@pytest.fixture
def labelled_library(sample_library):
    """The sample library with half of its photos labelled by folder."""
    sample_library.labelled = label_every_other(sample_library)
    return sample_library


@pytest.fixture
def app(labelled_library, backbone):
    return make_app(labelled_library, backbone)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def library(labelled_library):
    return labelled_library


@pytest.fixture(scope="session")
def small_library_dir(tmp_path_factory, backbone):
    """62 photos (6 per class and two near-duplicate copies) and a broken file, indexed once."""
    base = tmp_path_factory.mktemp("small")
    photos = base / "photos"
    copies = make_small_collection(photos, SAMPLES, TEST_DATA / "bad")
    library = Library(base / "library", create=True)
    try:
        index_folder(photos, library, backbone, batch_size=32, workers=0)
    finally:
        library.close()
    return base / "library", copies


@pytest.fixture
def small_library(small_library_dir, tmp_path):
    """A private, writable copy of the small library, half of it labelled."""
    path, copies = small_library_dir
    shutil.copytree(path, tmp_path / "library")
    library = Library(tmp_path / "library")
    library.copies = copies
    library.labelled = label_every_other(library)
    yield library
    library.close()
