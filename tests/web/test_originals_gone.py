"""A photo whose file can no longer be opened since indexing is a 404 on every URL that shows it, not a 500:
its path now runs through a file where a folder was (ENOTDIR), or it became a link to itself (ELOOP)."""

from __future__ import annotations

import os
import shutil

import pytest

from indexer.library import Library
from indexer.pipeline import index_folder
from tests.conftest import SAMPLES
from tests.web.library_setup import make_app


@pytest.fixture
def client_and_root(tmp_path, backbone):
    """Two real photos in a folder of the collection, indexed; the app over them."""
    root = tmp_path / "photos"
    (root / "album").mkdir(parents=True)
    for photo in sorted((SAMPLES / "dress").glob("*.jpg"))[:2]:
        shutil.copy(photo, root / "album" / photo.name)
    library = Library(tmp_path / "lib", create=True)
    index_folder(root, library, backbone, workers=0)
    yield make_app(library, backbone).test_client(), root
    library.close()


def urls(image: dict) -> list[str]:
    return [image["original_url"], image["thumb_url"], image["large_url"]]


def test_a_folder_replaced_by_a_file_is_404(client_and_root):
    client, root = client_and_root
    images = client.get("/api/images").get_json()["images"]
    assert len(images) == 2
    shutil.rmtree(root / "album")
    (root / "album").write_bytes(b"now a file")
    for image in images:
        for url in urls(image):
            assert client.get(url).status_code == 404, url


def test_a_photo_become_a_link_to_itself_is_404(client_and_root):
    client, root = client_and_root
    image = client.get("/api/images").get_json()["images"][0]
    path = root / image["path"]
    path.unlink()
    os.symlink(path.name, path)  # a loop: resolving it fails with ELOOP
    for url in urls(image):
        assert client.get(url).status_code == 404, url
