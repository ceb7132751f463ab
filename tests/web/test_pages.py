"""The HTML pages through Flask's test client: content, errors as pages, and escaping."""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import select

from indexer.library import Library
from indexer.pipeline import index_folder
from indexer.schema import Image
from tests.conftest import SAMPLES
from tests.web.library_setup import make_app

EVIL = '<img src=x onerror=alert(1)>'


def an_id(library, folder: str = "hat") -> int:
    with library.Session() as s:
        return s.scalar(select(Image.id).where(Image.folder == folder).order_by(Image.path).limit(1))


def test_browse(client):
    html = client.get("/").get_data(as_text=True)
    assert html.count('class="tile ') == 60
    assert "Showing 1–60 of <b>120</b> photos" in html
    assert '<a href="/?page=2" rel="next">Next →</a>' in html and 'rel="prev"' not in html
    page2 = client.get("/?page=2").get_data(as_text=True)
    assert page2.count('class="tile ') == 60 and 'href="/"' in page2


def test_browse_filters_keep_their_state_in_links(client):
    html = client.get("/?label=hat&sort=path&per_page=2").get_data(as_text=True)
    assert html.count('class="tile ') == 2
    assert 'href="/?label=hat&amp;sort=path&amp;page=2&amp;per_page=2"' in html
    # The name isolated (FSI ... PDI): a right-to-left name keeps its count after it, not before.
    assert '<option value="hat" selected>&#x2068;hat&#x2069; (6)</option>' in html


def test_browse_past_the_last_page_goes_to_the_last(client):
    response = client.get("/?page=99&label=hat&per_page=4")
    assert response.status_code == 302 and "page=2" in response.headers["Location"]


def test_browse_bad_parameters_are_a_400_page(client):
    response = client.get("/?page=x")
    assert response.status_code == 400 and response.mimetype == "text/html"
    assert "page must be an integer" in response.get_data(as_text=True)


def test_photo_page(client, library):
    image_id = an_id(library, "shoes")
    html = client.get(f"/images/{image_id}").get_data(as_text=True)
    assert f'data-id="{image_id}"' in html and "shoes/" in html
    assert f'href="/search?like={image_id}"' in html and f'href="/original/{image_id}"' in html
    assert '<span class="chip" title="shoes (imported)">shoes</span>' in html  # every other is labelled
    with library.Session() as s:
        row = s.get(Image, image_id)
    assert f"{row.width} × {row.height} px" in html and "JPEG" in html


def test_missing_photo_is_a_404_page(client):
    response = client.get("/images/999999")
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert "no image with id 999999" in response.get_data(as_text=True)
    assert client.get("/images/..%2f..%2fetc%2fpasswd").status_code == 404


def test_search_page_and_more_like_this(client, library):
    assert 'id="drop"' in client.get("/search").get_data(as_text=True)
    image_id = an_id(library)
    html = client.get(f"/search?like={image_id}").get_data(as_text=True)
    assert f'data-like="{image_id}"' in html and "More like" in html
    assert client.get("/search?like=abc").status_code == 400
    assert client.get("/search?like=999999").status_code == 404


def test_queue_duplicates_about_pages(client):
    assert 'id="queue"' in client.get("/queue").get_data(as_text=True)
    assert "Near-duplicates" in client.get("/duplicates").get_data(as_text=True)
    assert client.get("/duplicates?threshold=abc").status_code == 400
    assert client.get("/duplicates?kind=twins").status_code == 400
    assert 'aria-current="page"' in client.get("/duplicates?kind=similar").get_data(as_text=True)
    about = client.get("/about").get_data(as_text=True)
    assert "efficientnet_lite0" in about and 'id="knn-accuracy"' in about and "1280" in about


def test_static_files_and_no_cdn(client):
    html = client.get("/").get_data(as_text=True)
    assert "http://" not in html and "https://" not in html  # works offline
    for name in ("style.css", "app.js", "image.js", "search.js", "queue.js", "duplicates.js", "icon.svg"):
        assert client.get(f"/static/{name}").status_code == 200


def test_labels_are_escaped_everywhere(client, library):
    image_id = an_id(library, "pants")
    assert client.put(f"/api/images/{image_id}/label", json={"label": EVIL}).status_code == 200
    for url in (f"/images/{image_id}", "/?folder=pants", "/about", f"/?label={EVIL}"):
        html = client.get(url).get_data(as_text=True)
        assert EVIL not in html, url
        assert "&lt;img src=x onerror=alert(1)&gt;" in html, url


@pytest.fixture
def evil_library(tmp_path, backbone):
    """A photo whose folder and file names are HTML."""
    photos = tmp_path / "photos"
    (photos / EVIL).mkdir(parents=True)
    shutil.copy(next((SAMPLES / "hat").glob("*.jpg")), photos / EVIL / f"{EVIL}.jpg")
    library = Library(tmp_path / "lib", create=True)
    index_folder(photos, library, backbone, workers=0)
    yield library
    library.close()


def test_file_and_folder_names_are_escaped(evil_library, backbone):
    client = make_app(evil_library, backbone).test_client()
    with evil_library.Session() as s:
        image_id = s.scalar(select(Image.id))
    for url in ("/", f"/images/{image_id}", "/duplicates"):
        html = client.get(url).get_data(as_text=True)
        assert "<img src=x" not in html, url
    assert "&lt;img src=x onerror=alert(1)&gt;.jpg" in client.get(f"/images/{image_id}").get_data(as_text=True)
    assert client.get(f"/original/{image_id}").status_code == 200  # served by id, whatever its name


def test_label_inputs_take_as_many_characters_as_the_server_does(client, library):
    """Every label field stops where the server's limit is (MAX_LABEL_LENGTH), so a longer label
    is not typed in full only to be refused."""
    import re

    from search.labelling.labels import MAX_LABEL_LENGTH

    image_id = min(library.labelled)
    for url in (f"/images/{image_id}", "/search", "/queue", "/map"):
        page = client.get(url).get_data(as_text=True)
        lengths = re.findall(r'<input[^>]*\blist="known-labels"[^>]*\bmaxlength="(\d+)"', page)
        assert lengths == [str(MAX_LABEL_LENGTH)], (url, lengths)
