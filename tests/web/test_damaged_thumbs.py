"""A damaged thumbnail cache is regenerated or bypassed, never a 500 (issue 22, item 7).

The cache under `<library>/thumbs` is derived data: a `thumbs` that is a file, a cached thumbnail
that is a folder, or one holding garbage must not stop a photo from being shown.
"""

from __future__ import annotations

import io
import shutil

import pytest
from PIL import Image as PILImage

from tests.web.test_security import unlabelled_id


def thumb_of(client, library) -> tuple[str, dict]:
    image = client.get(f"/api/images/{unlabelled_id(library)}").get_json()
    return image["thumb_url"], image


def assert_a_thumbnail(response, side: int = 360) -> None:
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.mimetype == "image/jpeg"
    with PILImage.open(io.BytesIO(response.data)) as img:
        img.load()
        assert max(img.size) == side


def test_thumbs_being_a_file_serves_thumbnails_made_in_memory(client, library):
    url, image = thumb_of(client, library)
    thumbs = library.path / "thumbs"
    shutil.rmtree(thumbs, ignore_errors=True)
    thumbs.write_text("not a folder")
    assert_a_thumbnail(client.get(url))
    assert_a_thumbnail(client.get(image["large_url"]), side=min(1600, max(image["width"], image["height"])))
    assert thumbs.read_text() == "not a folder"  # left as it was: not the server's to remove


@pytest.mark.parametrize("damage", ["folder", "garbage", "empty", "truncated"])
def test_a_damaged_cached_thumbnail_is_made_again(client, library, damage):
    url, image = thumb_of(client, library)
    first = client.get(url)
    assert_a_thumbnail(first)
    [cached] = (library.path / "thumbs" / "small").glob(f"{image['id']}-*.jpg")
    cached.unlink()
    if damage == "folder":
        (cached / "inside").mkdir(parents=True)
    elif damage == "garbage":
        cached.write_bytes(b"<html>" + bytes(range(256)) * 10)
    elif damage == "empty":
        cached.write_bytes(b"")
    else:
        cached.write_bytes(first.data[: len(first.data) // 2])
    again = client.get(url)
    assert_a_thumbnail(again)
    assert again.data == first.data  # the same thumbnail, made again
    if damage != "folder":  # a file is replaced; a folder is left alone and bypassed
        assert cached.read_bytes() == first.data
