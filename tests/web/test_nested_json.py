"""JSON nested too deeply for Python's parser is a 400 in the API's one error shape, not a 500
RecursionError (issue 22, item 9)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from indexer.schema import Image

NESTED = "[" * 100_000 + "]" * 100_000
NESTED_IN_AN_OBJECT = '{"label": ' + NESTED + "}"
ENDPOINTS = [
    ("PUT", "/api/images/{id}/label"),
    ("POST", "/api/labels"),
    ("POST", "/api/duplicates/dismiss"),
    ("PUT", "/api/duplicates/choices/{id}"),
]


@pytest.mark.parametrize("body", [NESTED, NESTED_IN_AN_OBJECT], ids=["array", "in-an-object"])
@pytest.mark.parametrize(("method", "url"), ENDPOINTS)
def test_deeply_nested_json_is_a_400_in_the_one_error_shape(client, library, method, url, body):
    with library.Session() as s:
        image_id = s.scalar(select(Image.id).limit(1))
    response = client.open(url.format(id=image_id), method=method, data=body, content_type="application/json")
    assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert response.get_json() == {"error": {
        "status": 400, "message": "send a JSON object with Content-Type: application/json"}}
    assert client.get("/api/status").status_code == 200
