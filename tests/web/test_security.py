"""CSRF, the write token, Host checking, pixels served by id only, caching and security headers."""

from __future__ import annotations

import io
import shutil

import pytest
from PIL import Image as PILImage
from sqlalchemy import select, update

from indexer.library import Library
from indexer.pipeline import index_folder
from indexer.schema import Image, Label
from tests.conftest import TEST_DATA
from tests.web.library_setup import make_app, stored_label


def unlabelled_id(library) -> int:
    with library.Session() as s:
        return s.scalar(select(Image.id).where(Image.id.not_in(select(Label.image_id))).limit(1))


# -- CSRF ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://localhost"},  # Fetch Metadata wins
        {"Origin": "http://evil.example"},
        {"Origin": "http://localhost:5001"},  # another port is another origin
        {"Origin": "null"},
    ],
)
def test_cross_origin_writes_are_refused(client, library, headers):
    image_id = unlabelled_id(library)
    response = client.put(f"/api/images/{image_id}/label", json={"label": "pwned"}, headers=headers)
    assert response.status_code == 403
    assert response.get_json() == {
        "error": {"status": 403, "message": "cross-origin request refused (CSRF protection)"}
    }
    assert client.post("/api/labels", json={"image_ids": [image_id], "label": "pwned"},
                       headers=headers).status_code == 403
    assert client.delete(f"/api/images/{image_id}/label", headers=headers).status_code == 403
    assert stored_label(library, image_id) is None


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
        {"Origin": "http://localhost"},  # plain-http LAN browsers send Origin, no Sec-Fetch-Site
        {},  # curl and scripts: nothing a web page could forge
    ],
)
def test_same_origin_and_non_browser_writes_pass(client, library, headers):
    image_id = unlabelled_id(library)
    response = client.put(f"/api/images/{image_id}/label", json={"label": "fine"}, headers=headers)
    assert response.status_code == 200
    assert stored_label(library, image_id) == "fine"


def test_cross_site_reads_are_allowed(client):
    assert client.get("/api/images", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200


def test_cross_origin_upload_search_is_refused_too(client):
    response = client.post("/api/search", data=b"x", content_type="image/jpeg",
                           headers={"Origin": "http://evil.example"})
    assert response.status_code == 403


# -- the token ----------------------------------------------------------------------------------


@pytest.fixture
def locked(labelled_library, backbone):
    return make_app(labelled_library, backbone, token="s3cret-token").test_client()


def test_token_guards_writes_not_reads(locked, library):
    image_id = unlabelled_id(library)
    assert locked.get(f"/api/images/{image_id}").status_code == 200
    response = locked.put(f"/api/images/{image_id}/label", json={"label": "x"})
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["error"]["status"] == 401
    wrong = locked.put(f"/api/images/{image_id}/label", json={"label": "x"},
                       headers={"Authorization": "Bearer guess"})
    assert wrong.status_code == 401
    assert stored_label(library, image_id) is None
    right = locked.put(f"/api/images/{image_id}/label", json={"label": "x"},
                       headers={"Authorization": "Bearer s3cret-token"})
    assert right.status_code == 200 and stored_label(library, image_id) == "x"


def test_unlock_page_lets_a_browser_write(locked, library):
    image_id = unlabelled_id(library)
    assert b"Unlock to edit" in locked.get("/").data
    wrong = locked.post("/unlock", data={"token": "guess", "next": "/queue"})
    assert wrong.status_code == 401 and b"not the server" in wrong.data
    right = locked.post("/unlock", data={"token": "s3cret-token", "next": "/queue"})
    assert right.status_code == 302 and right.headers["Location"] == "/queue"
    assert b"s3cret-token" not in right.headers.get("Set-Cookie", "").encode()
    assert b"Unlock to edit" not in locked.get("/").data
    response = locked.put(f"/api/images/{image_id}/label", json={"label": "y"},
                          headers={"Sec-Fetch-Site": "same-origin"})
    assert response.status_code == 200 and stored_label(library, image_id) == "y"


@pytest.mark.parametrize("next_url", ["//evil.example/", "https://evil.example/", "/\\evil.example"])
def test_unlock_never_redirects_off_site(locked, next_url):
    response = locked.post("/unlock", data={"token": "s3cret-token", "next": next_url})
    assert response.status_code == 302 and response.headers["Location"] == "/"


def test_unlock_is_csrf_protected(locked):
    response = locked.post("/unlock", data={"token": "s3cret-token"}, headers={"Sec-Fetch-Site": "cross-site"})
    assert response.status_code == 403


# -- Host ---------------------------------------------------------------------------------------


def test_other_host_names_are_refused_on_loopback(client):
    """A rebinding DNS name pointing at 127.0.0.1 must not be served."""
    assert client.get("/", headers={"Host": "evil.example:5000"}).status_code == 400
    assert client.get("/api/images", headers={"Host": "evil.example"}).status_code == 400
    assert client.get("/", headers={"Host": "127.0.0.1:5000"}).status_code == 200


def test_any_host_when_listening_beyond_loopback(labelled_library, backbone):
    client = make_app(labelled_library, backbone, host="0.0.0.0").test_client()
    assert client.get("/api/status", headers={"Host": "photos.lan:5000"}).status_code == 200


# -- pixels by id only ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "/original/..%2f..",
        "/original/..%2f..%2fetc%2fpasswd",
        "/original/../../etc/passwd",
        "/original/%2fetc%2fpasswd",
        "/thumbs/..%2f..%2fetc%2fpasswd/small.jpg",
        "/thumbs/1/..%2f..%2fsmall.jpg",
        "/thumbs/1/huge.jpg",
        "/original/999999",
        "/thumbs/999999/small.jpg",
    ],
)
def test_traversal_attempts_find_nothing(client, url):
    response = client.get(url)
    assert response.status_code == 404
    assert b"root:" not in response.data


@pytest.mark.parametrize("stored", ["../../../../etc/passwd", "/etc/passwd", "hat/../../../etc/passwd"])
def test_a_tampered_row_cannot_leave_the_collection(client, library, stored):
    image_id = unlabelled_id(library)
    with library.Session.begin() as s:
        s.execute(update(Image).where(Image.id == image_id).values(path=stored, hash="tampered"))
    for url in (f"/original/{image_id}", f"/thumbs/{image_id}/small.jpg", f"/thumbs/{image_id}/large.jpg"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert b"root:" not in response.data


def test_thumbnails_are_cached_on_disk_and_in_the_browser(client, library):
    image = client.get(f"/api/images/{unlabelled_id(library)}").get_json()
    first = client.get(image["thumb_url"])
    assert first.status_code == 200 and first.mimetype == "image/jpeg"
    assert "immutable" in first.headers["Cache-Control"] and "max-age=31536000" in first.headers["Cache-Control"]
    etag = first.headers["ETag"]
    cached = list((library.path / "thumbs" / "small").glob(f"{image['id']}-*.jpg"))
    assert len(cached) == 1 and cached[0].read_bytes() == first.data

    again = client.get(image["thumb_url"], headers={"If-None-Match": etag})
    assert again.status_code == 304 and not again.data
    unversioned = client.get(f"/thumbs/{image['id']}/small.jpg")
    assert "no-cache" in unversioned.headers["Cache-Control"] and unversioned.headers["ETag"] == etag

    with PILImage.open(io.BytesIO(first.data)) as small:
        assert max(small.size) == 360
    with PILImage.open(io.BytesIO(client.get(image["large_url"]).data)) as large:
        assert large.size == (image["width"], image["height"])  # never upscaled past the original


def test_thumbnails_are_upright(backbone, tmp_path):
    """An EXIF-rotated JPEG (orientation 6) is shown as it is meant to be seen."""
    photos = tmp_path / "rotated"
    photos.mkdir()
    shutil.copy(TEST_DATA / "bad" / "pillow__hopper_orientation_6.jpg", photos / "rotated.jpg")
    library = Library(tmp_path / "lib", create=True)
    index_folder(photos, library, backbone, workers=0)
    client = make_app(library, backbone).test_client()
    image = client.get("/api/images").get_json()["images"][0]
    with PILImage.open(TEST_DATA / "bad" / "pillow__hopper_orientation_6.jpg") as raw:
        stored = raw.size
    with PILImage.open(io.BytesIO(client.get(image["large_url"]).data)) as shown:
        assert shown.size == (stored[1], stored[0]) == (image["width"], image["height"])
    library.close()


def test_security_headers(client):
    response = client.get("/")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/api/images").headers["X-Content-Type-Options"] == "nosniff"
