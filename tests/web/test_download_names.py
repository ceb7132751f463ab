"""`/original/<id>` names any file in its Content-Disposition, per RFC 6266 / RFC 5987 (issue 22, item 11).

A file name with a newline made Werkzeug refuse the header: 500. The header now carries a plain
ASCII `filename` and the exact name, percent-encoded UTF-8, in `filename*`.
"""

from __future__ import annotations

import shutil

import pytest
from werkzeug.http import parse_options_header

from indexer.library import Library
from indexer.pipeline import index_folder
from tests.conftest import SAMPLES
from tests.web.library_setup import make_app

NAMES = {
    "line\nbreak.jpg": ('line_break.jpg', "line%0Abreak.jpg"),
    'say "hi"\r\n\\x\t.jpg': ("say _hi____x_.jpg", "say%20%22hi%22%0D%0A%5Cx%09.jpg"),
    "Café 日本\n.jpg": ("Cafe _.jpg", "Caf%C3%A9%20%E6%97%A5%E6%9C%AC%0A.jpg"),
    "plain.jpg": ("plain.jpg", None),
}


@pytest.fixture(scope="module")
def client(tmp_path_factory, backbone):
    base = tmp_path_factory.mktemp("names")
    photo = min((SAMPLES / "hat").glob("*.jpg"))
    for name in NAMES:
        (base / "photos").mkdir(exist_ok=True)
        shutil.copy(photo, base / "photos" / name)
    library = Library(base / "library", create=True)
    index_folder(base / "photos", library, backbone, workers=0)
    yield make_app(library, backbone).test_client()
    library.close()


@pytest.mark.parametrize("name", list(NAMES), ids=["newline", "quotes-and-controls", "non-ascii", "plain"])
def test_any_file_name_is_served_with_a_safe_content_disposition(client, name):
    images = client.get("/api/images?per_page=10").get_json()["images"]
    [image] = [i for i in images if i["path"] == name]
    response = client.get(image["original_url"])
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.data == (SAMPLES / "hat" / min(p.name for p in (SAMPLES / "hat").glob("*.jpg"))).read_bytes()
    header = response.headers["Content-Disposition"]
    assert not any(c in header for c in "\r\n\t\x00") and header.isascii()
    fallback, encoded = NAMES[name]
    value, params = parse_options_header(header)
    assert value == "inline"
    assert params["filename"] == (name if encoded else fallback)  # filename* wins where a client reads it
    if encoded:
        assert header.endswith(f"filename*=UTF-8''{encoded}")
        assert parse_options_header(header.rsplit("; filename*", 1)[0])[1]["filename"] == fallback
