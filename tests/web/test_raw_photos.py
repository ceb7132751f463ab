"""RAW photos in the web app, as any photo: thumbnails made from the RAW (upright), the photo page
with its camera facts, and the original served as it is."""

from __future__ import annotations

import io

import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from indexer.library import Library
from indexer.pipeline import index_folder
from indexer.schema import Image
from tests.conftest import SAMPLES
from tests.raw_photos import make_raw_shoot
from tests.web.library_setup import make_app
from web.thumbs import SIZES


@pytest.fixture(scope="module")
def shoot(tmp_path_factory, backbone):
    base = tmp_path_factory.mktemp("rawweb")
    roles = make_raw_shoot(base / "photos", SAMPLES)
    library = Library(base / "library", create=True)
    index_folder(base / "photos", library, backbone, batch_size=4, workers=0)
    with library.Session() as s:
        ids = {path: i for i, path in s.execute(select(Image.id, Image.path))}
    yield base / "photos", library, {role: ids[path] for role, path in roles.items()}
    library.close()


@pytest.fixture
def client(shoot, backbone):
    _, library, _ = shoot
    return make_app(library, backbone).test_client()


@pytest.mark.parametrize("role", ["pair_raw", "turned", "previewed"])
@pytest.mark.parametrize("size", sorted(SIZES))
def test_a_raw_photo_has_upright_thumbnails(client, shoot, role, size):
    _, library, ids = shoot
    response = client.get(f"/thumbs/{ids[role]}/{size}.jpg")
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    thumb = PILImage.open(io.BytesIO(response.data))
    assert thumb.format == "JPEG" and max(thumb.size) <= SIZES[size]
    with library.Session() as s:
        row = s.get(Image, ids[role])
        assert (thumb.width > thumb.height) == (row.width > row.height)  # upright, as the RAW says


def test_the_photo_page_shows_the_raw_camera_facts(client, shoot):
    _, _, ids = shoot
    page = client.get(f"/images/{ids['turned']}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "NIKON CORPORATION NIKON D750" in html and "2023-12-24 18:30" in html
    assert f"/thumbs/{ids['turned']}/large.jpg" in html


def test_the_original_raw_is_served_byte_for_byte(client, shoot):
    photos, _, ids = shoot
    response = client.get(f"/original/{ids['pair_raw']}")
    assert response.status_code == 200
    assert response.data == (photos / "shots" / "IMG_0001.dng").read_bytes()


def test_a_bad_raw_has_no_thumbnail_but_a_clear_404(client, shoot):
    _, _, ids = shoot
    response = client.get(f"/thumbs/{ids['broken']}/small.jpg")
    assert response.status_code == 404
    assert "unsupported RAW" in response.get_data(as_text=True)


def test_search_by_an_uploaded_raw(client, shoot):
    photos, _, ids = shoot
    data = (photos / "shots" / "IMG_0002.dng").read_bytes()
    response = client.post("/api/search?k=1", data={"image": (io.BytesIO(data), "IMG_0002.dng")})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["query"]["format"] == "RAW" and body["query"]["height"] > body["query"]["width"]
    assert [r["image"]["id"] for r in body["results"]] == [ids["turned"]]


def test_an_uploaded_broken_raw_is_a_400(client, shoot):
    photos, _, _ = shoot
    data = (photos / "bad" / "cut.nef").read_bytes()
    response = client.post("/api/search", data={"image": (io.BytesIO(data), "x.nef")})
    assert response.status_code == 400 and "corrupt RAW" in response.get_json()["error"]["message"]
