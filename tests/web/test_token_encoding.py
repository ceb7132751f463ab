"""A write token outside latin-1 works in an `Authorization: Bearer` header (issue 22, item 18).

HTTP header bytes reach a WSGI app decoded as latin-1 (PEP 3333). A client that types
`Bearer pässwörd` sends UTF-8 bytes, which the app compared as mojibake: 401 for the right token.
"""

from __future__ import annotations

import http.client
import json
import threading

import pytest
from sqlalchemy import select

from indexer.schema import Image
from tests.web.library_setup import make_app, stored_label

TOKEN = "pässwörd-日本"


@pytest.fixture
def app(labelled_library, backbone):
    return make_app(labelled_library, backbone, token=TOKEN)


def an_image(library) -> int:
    with library.Session() as s:
        return s.scalar(select(Image.id).limit(1))


def as_wsgi_sees(raw: bytes) -> str:
    """A header's bytes as a WSGI server hands them to the app (PEP 3333: latin-1)."""
    return raw.decode("latin-1")


def test_a_utf8_bearer_token_is_accepted_and_a_wrong_one_refused(app, library):
    client = app.test_client()
    image_id = an_image(library)
    url = f"/api/images/{image_id}/label"
    right = client.put(url, json={"label": "hat"},
                       headers={"Authorization": as_wsgi_sees(f"Bearer {TOKEN}".encode())})
    assert right.status_code == 200, right.get_data(as_text=True)
    assert stored_label(library, image_id) == "hat"
    for wrong in ("Bearer pässwörd-日", "Bearer passwoerd-日本", f"Basic {TOKEN}"):
        refused = client.put(url, json={"label": "x"}, headers={"Authorization": as_wsgi_sees(wrong.encode())})
        assert refused.status_code == 401 and refused.get_json()["error"]["status"] == 401
    assert stored_label(library, image_id) == "hat"


def test_a_latin1_token_sent_as_latin1_still_works(labelled_library, backbone):
    """Python's http.client encodes header values as latin-1: what worked before keeps working."""
    client = make_app(labelled_library, backbone, token="pässwörd").test_client()
    image_id = an_image(labelled_library)
    response = client.put(f"/api/images/{image_id}/label", json={"label": "hat"},
                          headers={"Authorization": as_wsgi_sees("Bearer pässwörd".encode("latin-1"))})
    assert response.status_code == 200, response.get_data(as_text=True)


def test_the_unlock_form_takes_the_same_token(app):
    client = app.test_client()
    response = client.post("/unlock", data={"token": TOKEN, "next": "/queue"})
    assert response.status_code == 302 and response.headers["Location"].endswith("/queue")


def test_a_live_server_takes_the_raw_utf8_header(app, library):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        image_id = an_image(library)
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)
        body = json.dumps({"label": "shoe"}).encode()
        conn.putrequest("PUT", f"/api/images/{image_id}/label")
        conn.putheader("Authorization", f"Bearer {TOKEN}".encode())  # the bytes, UTF-8, as curl sends them
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        assert response.status == 200, response.read()
        conn.close()
        assert stored_label(library, image_id) == "shoe"
    finally:
        server.shutdown()
        thread.join(timeout=10)
