"""A thumbnail of a photo with very many pixels is made one at a time, in the uploads' decode slot:
a 100-MP PNG takes ~2 GB to decode and convert, and a page of them must not take that per server
thread (the bound on a request's memory, as for uploads: web/uploads.py)."""

from __future__ import annotations

import pytest

from tests.web.test_damaged_thumbs import assert_a_thumbnail, thumb_of
from web import thumbs, uploads


@pytest.fixture
def slot_taken(monkeypatch):
    """The one decode slot held (as by an upload being searched), and a short wait for it."""
    monkeypatch.setattr(uploads, "WAIT_SECONDS", 0.05)
    assert uploads._slots.acquire(timeout=5)
    yield
    uploads._slots.release()


def test_a_photo_of_ordinary_size_is_shown_while_the_slot_is_taken(client, library, slot_taken):
    url, _ = thumb_of(client, library)
    assert_a_thumbnail(client.get(url))


def test_a_photo_with_more_pixels_than_an_upload_may_waits_for_the_slot(client, library, monkeypatch):
    url, image = thumb_of(client, library)
    monkeypatch.setattr(thumbs, "MAX_DECODED_BYTES", 1000)  # this photo counts as a huge one
    monkeypatch.setattr(uploads, "WAIT_SECONDS", 0.05)
    assert uploads._slots.acquire(timeout=5)
    try:
        busy = client.get(url)
        assert busy.status_code == 503, busy.get_data(as_text=True)[:300]
    finally:
        uploads._slots.release()
    assert_a_thumbnail(client.get(url))  # the slot free again: made, in it
    assert uploads._slots.acquire(timeout=5)  # and given back
    uploads._slots.release()
