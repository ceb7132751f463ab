"""A symlink in the photo folder never gets a file from outside it indexed, thumbnailed or served."""

from __future__ import annotations

import os
import shutil

import pytest
from sqlalchemy import select

from indexer.library import Library
from indexer.pipeline import index_folder
from indexer.schema import Image
from tests.conftest import SAMPLES
from tests.web.library_setup import make_app

SECRET = b"root:x:0:0:secret-marker"


@pytest.fixture
def collection(tmp_path):
    """Three real photos and, beside them, links that lead out: to a text file posing as a photo,
    to a real photo outside, and to a folder of photos outside."""
    outside = tmp_path / "outside"
    (outside / "album").mkdir(parents=True)
    (outside / "passwd").write_bytes(SECRET)
    shutil.copy(min((SAMPLES / "hat").glob("*.jpg")), outside / "private.jpg")
    shutil.copy(min((SAMPLES / "shoes").glob("*.jpg")), outside / "album" / "a.jpg")
    root = tmp_path / "photos"
    (root / "evil").mkdir(parents=True)
    for photo in sorted((SAMPLES / "dress").glob("*.jpg"))[:3]:
        shutil.copy(photo, root / photo.name)
    os.symlink(outside / "passwd", root / "evil" / "passwd.jpg")
    os.symlink(outside / "private.jpg", root / "evil" / "private.jpg")
    os.symlink(outside / "album", root / "album")
    os.symlink(root / "evil", root / "also-evil")  # a link inside the root is followed
    return root, outside


def test_links_out_of_the_root_are_not_indexed(collection, tmp_path, backbone):
    root, _ = collection
    library = Library(tmp_path / "lib", create=True)
    try:
        report = index_folder(root, library, backbone, workers=0)
        with library.Session() as s:
            paths = sorted(s.scalars(select(Image.path)))
    finally:
        library.close()
    assert len(paths) == 3 and all("/" not in p for p in paths)  # the three photos, no link
    assert report.indexed == 3 and not report.failed


def test_a_link_swapped_in_after_indexing_is_not_served(collection, tmp_path, backbone):
    root, outside = collection
    library = Library(tmp_path / "lib", create=True)
    index_folder(root, library, backbone, workers=0)
    client = make_app(library, backbone).test_client()
    images = client.get("/api/images?sort=path").get_json()["images"]
    assert client.get(images[0]["original_url"]).status_code == 200
    # Each indexed photo becomes a link that leads out of the root: to the secret, to a photo.
    for image, target in zip(images, (outside / "passwd", outside / "private.jpg", outside / "album"),
                             strict=True):
        (root / image["path"]).unlink()
        os.symlink(target, root / image["path"])
    for image in images:
        for url in (image["original_url"], image["thumb_url"], image["large_url"]):
            response = client.get(url)
            assert response.status_code == 404, url
            assert SECRET not in response.data
    # A stored row naming the link itself (a database from before this check) is refused too.
    with library.Session.begin() as s:
        s.get(Image, images[0]["id"]).path = "evil/passwd.jpg"
    response = client.get(images[0]["original_url"])
    assert response.status_code == 404 and SECRET not in response.data
    library.close()
