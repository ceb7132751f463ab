"""Requests an attacker or a careless client sends: every one gets a clear 4xx, never a 500,
never a redirect off the site, never a write it should not make."""

from __future__ import annotations

import io
import re
from datetime import datetime

import pytest
from PIL import Image as PILImage
from sqlalchemy import select, update

from indexer.schema import Image, Label
from tests.web.library_setup import make_app, stored_label

HUGE = 2**63  # one past SQLite's largest integer
IDS = [str(HUGE), str(2**64), "1180591620717411303424", "9" * 30, "1" * 5000]


def unlabelled_id(library) -> int:
    with library.Session() as s:
        return s.scalar(select(Image.id).where(Image.id.not_in(select(Label.image_id))).order_by(Image.id).limit(1))


def photo_bytes() -> bytes:
    buf = io.BytesIO()
    PILImage.new("RGB", (64, 48), (200, 30, 30)).save(buf, "JPEG")
    return buf.getvalue()


# -- ids beyond 64 bits ---------------------------------------------------------------------------


def routes_with_ids(app) -> list[tuple[str, str]]:
    """(method, URL template) of every route whose URL holds an integer: '/api/images/{id}'."""
    out = []
    for rule in app.url_map.iter_rules():
        if not re.search(r"<int(\(.*?\))?:\w+>", rule.rule):
            continue
        url = re.sub(r"<int(\(.*?\))?:\w+>", "{id}", rule.rule)
        url = re.sub(r"<[^>]+>", "small", url)  # the thumbnail size, the only other argument
        out += [(method, url) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return out


def test_every_route_with_an_id_answers_huge_ids_with_404(app, client):
    routes = routes_with_ids(app)
    # The ones the issue lists, at least: the converter is checked on every route, present and future.
    for expected in ("/api/images/{id}", "/api/images/{id}/neighbours", "/api/images/{id}/suggestion",
                     "/api/images/{id}/label", "/images/{id}", "/thumbs/{id}/small.jpg", "/original/{id}"):
        assert any(url == expected for _, url in routes), expected
    for method, url in routes:
        for huge in IDS:
            response = client.open(url.format(id=huge), method=method, json={"label": "x"})
            assert response.status_code == 404, (method, url, huge, response.data[:200])


@pytest.mark.parametrize("others", [[HUGE], [2**64], [-(2**63) - 1], [True]])
def test_label_many_refuses_ids_beyond_64_bits(client, library, others):
    image_id = unlabelled_id(library)
    response = client.post("/api/labels", json={"image_ids": [image_id, *others], "label": "x"})
    assert response.status_code == 400
    assert "image_ids" in response.get_json()["error"]["message"]
    assert stored_label(library, image_id) is None  # all or nothing


def test_search_like_a_huge_id_is_404(client):
    assert client.get(f"/search?like={HUGE}").status_code == 404


def test_search_like_takes_every_id_a_photo_page_takes_and_no_other(client, library):
    """?like= reads ids up to web.ids.MAX_ID, as /images/<id> does: the largest id finds its photo
    (it was clamped to 2**62 before, another id), one past it or a negative one is no photo (404)."""
    from indexer.schema import PENDING
    from web.ids import MAX_ID

    with library.Session.begin() as s:
        for image_id in (2**62, MAX_ID):
            s.add(Image(id=image_id, path=f"last/{image_id}.jpg", folder="last", size=1, mtime=0.0, status=PENDING))
    for image_id in (2**62, 2**62 + 1, MAX_ID, MAX_ID + 1, -1, -(2**70)):
        page, like = client.get(f"/images/{image_id}"), client.get(f"/search?like={image_id}")
        assert like.status_code == page.status_code, (image_id, like.status_code, page.status_code)
        if image_id in (2**62, MAX_ID):
            assert like.status_code == 200 and f'data-like="{image_id}"' in like.get_data(as_text=True)
        else:
            assert like.status_code == 404, image_id


# -- dates at the end of the calendar -------------------------------------------------------------


def test_the_last_day_of_the_calendar_is_a_valid_bound(client, library):
    with library.Session.begin() as s:
        ids = s.scalars(select(Image.id).order_by(Image.id).limit(3)).all()
        for image_id, taken in zip(ids, (datetime(1999, 5, 1), datetime(2024, 2, 1), datetime(9999, 12, 31, 23)),
                                   strict=True):
            s.execute(update(Image).where(Image.id == image_id).values(taken_at=taken))
    for url in ("/api/images?to=9999-12-31", "/api/images?from=0001-01-01&to=9999-12-31"):
        response = client.get(url)
        assert response.status_code == 200
        assert sorted(i["id"] for i in response.get_json()["images"]) == sorted(ids)  # the dated ones
    assert [i["id"] for i in client.get("/api/images?from=9999-12-31").get_json()["images"]] == [ids[2]]
    assert [i["id"] for i in client.get("/api/images?to=2000-01-01").get_json()["images"]] == [ids[0]]
    page = client.get("/?to=9999-12-31")
    assert page.status_code == 200 and b"of <b>3</b> photos matching" in page.data


def test_a_date_past_the_calendar_is_400(client):
    response = client.get("/api/images?to=10000-01-01")
    assert response.status_code == 400 and "to must be a date" in response.get_json()["error"]["message"]


# -- /unlock?next= ----------------------------------------------------------------------------------


@pytest.fixture
def locked(labelled_library, backbone):
    return make_app(labelled_library, backbone, token="s3cret-token").test_client()


BAD_NEXT = [
    "/%09/evil.example/",  # the browser drops the tab: //evil.example/
    "/%0A/evil.example/",
    "/%0D/evil.example/",
    "%09//evil.example/",
    "/%5C/evil.example/",  # backslash
    "/%0AX",  # a line break in the Location header
    "/%0D%0ASet-Cookie:%20a=b",
    "/%00x",
    "/%20/evil.example/",
    "https:/evil.example/",
    "/\\evil.example",
    "javascript:alert(1)",
]


@pytest.mark.parametrize("next_", BAD_NEXT)
def test_unlock_sends_a_bad_next_home(client, locked, next_):
    # Without a token /unlock redirects at once; with one, after the right token is posted.
    for response in (
        client.get(f"/unlock?next={next_}"),
        locked.post(f"/unlock?next={next_}", data={"token": "s3cret-token"}),
    ):
        assert response.status_code == 302
        assert response.headers["Location"] == "/"
    page = locked.get(f"/unlock?next={next_}")
    assert page.status_code == 200 and b"evil.example" not in page.data


@pytest.mark.parametrize("next_", ["/queue", "/images/3?x=1", "/?label=hat&page=2"])
def test_unlock_keeps_a_local_next(client, next_):
    response = client.get("/unlock", query_string={"next": next_})
    assert response.status_code == 302 and response.headers["Location"] == next_


# -- the token: reads never need it ---------------------------------------------------------------


def test_search_by_upload_is_a_read_and_needs_no_token(locked, library):
    response = locked.post("/api/search?k=3", data=photo_bytes(), content_type="image/jpeg")
    assert response.status_code == 200, response.data
    assert len(response.get_json()["results"]) == 3
    # Writes still do, and a cross-site upload is still refused.
    assert locked.put(f"/api/images/{unlabelled_id(library)}/label", json={"label": "x"}).status_code == 401
    cross = locked.post("/api/search", data=photo_bytes(), content_type="image/jpeg",
                        headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403


def test_the_api_docs_say_what_the_code_does():
    from tests.web.library_setup import REPO

    text = (REPO / "web" / "API.md").read_text()
    assert "Reads never need it" in text
    assert "`POST /api/search`, which is a read" in text


# -- Host names on loopback (DNS rebinding) -------------------------------------------------------


@pytest.mark.parametrize("listen", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_on_loopback_only_loopback_host_names_are_served(labelled_library, backbone, listen):
    client = make_app(labelled_library, backbone, host=listen).test_client()
    image_id = unlabelled_id(labelled_library)
    rebinding = {"Host": "evil.example:5000", "Sec-Fetch-Site": "same-origin"}
    response = client.put(f"/api/images/{image_id}/label", json={"label": "pwned"}, headers=rebinding)
    assert response.status_code == 400
    assert stored_label(labelled_library, image_id) is None
    for host in ("evil.example", "[::2]:5000", "127.0.0.1.evil.example", "localhost.evil.example:5000"):
        assert client.get("/api/status", headers={"Host": host}).status_code == 400, host
    for host in ("127.0.0.1:5000", "localhost:5000", "[::1]:5000", "[::1]", "::1", "LOCALHOST"):
        assert client.get("/api/status", headers={"Host": host}).status_code == 200, host
    same = client.put(f"/api/images/{image_id}/label", json={"label": "fine"},
                      headers={"Host": "[::1]:5000", "Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 200 and stored_label(labelled_library, image_id) == "fine"


@pytest.mark.parametrize("listen", ["0.0.0.0", "::", "192.168.1.20"])
def test_beyond_loopback_any_host_name_is_served(labelled_library, backbone, listen):
    client = make_app(labelled_library, backbone, host=listen).test_client()
    assert client.get("/api/status", headers={"Host": "photos.lan:5000"}).status_code == 200
