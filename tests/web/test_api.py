"""The JSON API through Flask's test client, on the indexed sample photos with half of them labelled."""

from __future__ import annotations

import io
import json
from datetime import datetime

import pytest
from click.testing import CliRunner
from PIL import Image as PILImage
from sqlalchemy import select, update

from indexer.schema import INDEXED, Image, Label, Meta, Neighbour
from lookalike.cli import main
from search.neighbour_lists import NEIGHBOURS_STATE
from tests.conftest import SAMPLES, TEST_DATA
from tests.web.library_setup import jpeg_bytes, make_app, near_duplicate_of, stored_label
from web.context import EXTENSION

BAD = TEST_DATA / "bad"


def error_of(response) -> dict:
    """The one error shape: {"error": {"status": <int>, "message": <str>}} and nothing else."""
    body = response.get_json()
    assert response.content_type == "application/json"
    assert set(body) == {"error"} and set(body["error"]) == {"status", "message"}
    assert body["error"]["status"] == response.status_code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def first_id(library, *where) -> int:
    with library.Session() as s:
        return s.scalar(select(Image.id).where(*where).order_by(Image.path).limit(1))


def unlabelled_id(library) -> int:
    return first_id(library, Image.status == INDEXED, Image.id.not_in(select(Label.image_id)))


# -- error shape --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, url, status",
    [
        ("GET", "/api/images/999999", 404),
        ("GET", "/api/images/999999/neighbours", 404),
        ("GET", "/api/images/999999/suggestion", 404),
        ("PUT", "/api/images/999999/label", 404),
        ("DELETE", "/api/images/999999/label", 404),
        ("GET", "/api/no-such-endpoint", 404),
        ("GET", "/api/images?page=two", 400),
        ("GET", "/api/images?sort=size", 400),
        ("GET", "/api/images?from=yesterday", 400),
        ("GET", "/api/images/1/neighbours?k=many", 400),
        ("GET", "/api/duplicates?threshold=2", 400),
        ("GET", "/api/duplicates?kind=twins", 400),
        ("POST", "/api/duplicates/dismiss", 400),
        ("PUT", "/api/duplicates/choices/999999", 404),
        ("POST", "/api/images", 405),
        ("GET", "/api/search", 405),
        ("POST", "/api/search", 400),
        ("POST", "/api/labels", 400),
    ],
)
def test_every_error_has_the_one_shape(client, method, url, status):
    kwargs = {"json": {"label": "x"}} if method == "PUT" else {}
    response = client.open(url, method=method, **kwargs)
    assert response.status_code == status
    error_of(response)


def test_error_messages_say_what_is_wrong(client):
    assert error_of(client.get("/api/images/999999"))["message"] == "no image with id 999999"
    assert "page must be an integer" in error_of(client.get("/api/images?page=two"))["message"]
    assert client.post("/api/images").headers["Allow"]  # 405 names what is allowed


@pytest.mark.parametrize(
    "url",
    [
        "/api/images/..%2f..%2fetc%2fpasswd",
        "/api/images/../../etc/passwd",
        "/api/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd/neighbours",
        "/api/images/-1",
        "/api/images/1.5",
    ],
)
def test_paths_are_never_image_ids(client, url):
    response = client.get(url)
    assert response.status_code == 404
    error_of(response)
    assert b"root:" not in response.data


# -- browsing -----------------------------------------------------------------------------------


def test_list_pages_through_the_collection(client):
    first = client.get("/api/images?per_page=50&sort=path").get_json()
    assert first["total"] == 120 and first["pages"] == 3 and len(first["images"]) == 50
    paths = [i["path"] for i in first["images"]]
    assert paths == sorted(paths)
    third = client.get("/api/images?per_page=50&sort=path&page=3").get_json()
    assert len(third["images"]) == 20 and third["images"][-1]["path"] > paths[-1]
    desc = client.get("/api/images?per_page=5&sort=path&order=desc").get_json()
    assert desc["images"][0]["path"] == third["images"][-1]["path"]


def test_page_sizes_are_capped(client):
    body = client.get("/api/images?per_page=100000").get_json()
    assert body["per_page"] == 200 and len(body["images"]) == 120
    assert client.get("/api/images?per_page=0").get_json()["per_page"] == 1


def test_filters(client, library):
    by_label = client.get("/api/images?label=hat").get_json()
    assert by_label["total"] == 6 and {i["label"]["label"] for i in by_label["images"]} == {"hat"}
    unlabelled = client.get("/api/images?unlabelled=1&per_page=200").get_json()
    assert unlabelled["total"] == 60 and all(i["label"] is None for i in unlabelled["images"])
    folder = client.get("/api/images?folder=shoes").get_json()
    assert folder["total"] == 12 and {i["folder"] for i in folder["images"]} == {"shoes"}
    assert client.get("/api/images?folder=sho").get_json()["total"] == 0  # a folder, not a prefix
    assert client.get("/api/images?status=failed").get_json()["total"] == 0
    assert client.get("/api/images?failed=1").get_json()["total"] == 0


def test_date_range_and_capture_date_sort(client, library):
    ids = [first_id(library, Image.folder == f) for f in ("dress", "hat", "pants")]
    with library.Session.begin() as s:
        for day, image_id in zip((1, 15, 28), ids, strict=False):
            s.execute(update(Image).where(Image.id == image_id).values(taken_at=datetime(2024, 2, day, 12)))
    body = client.get("/api/images?from=2024-02-10&to=2024-02-28").get_json()
    assert [i["id"] for i in body["images"]] == [ids[2], ids[1]]  # newest first
    oldest = client.get("/api/images?sort=taken&order=asc&per_page=3").get_json()["images"]
    assert [i["id"] for i in oldest] == ids  # dated photos first, undated after
    assert oldest[0]["taken_at"] == "2024-02-01T12:00:00"


def test_suggested_label_filter(client, library):
    body = client.get("/api/images?suggested=shoes&per_page=200").get_json()
    assert body["total"] >= 1
    for image in body["images"]:
        assert image["label"] is None
        suggestion = client.get(f"/api/images/{image['id']}/suggestion").get_json()["suggestion"]
        assert suggestion["label"] == "shoes"


def test_one_image_and_its_urls(client, library):
    image_id = first_id(library, Image.folder == "hat")
    image = client.get(f"/api/images/{image_id}").get_json()
    assert image["id"] == image_id and image["path"].startswith("hat/") and image["format"] == "JPEG"
    assert image["width"] > 0 and image["height"] > 0 and image["searchable"] is True
    assert image["label"] == {"label": "hat", "source": "imported", "set_at": image["label"]["set_at"]}
    assert client.get(image["thumb_url"]).status_code == 200
    assert client.get(image["original_url"]).data == (SAMPLES / image["path"]).read_bytes()
    assert client.get("/api/folders").get_json()["folders"][0] == {"folder": "dress", "count": 12}


# -- neighbours and suggestions -------------------------------------------------------------------


def test_neighbours_rank_by_score_exclude_the_query_and_cap_k(client, library):
    image_id = first_id(library, Image.folder == "shoes")
    body = client.get(f"/api/images/{image_id}/neighbours?k=10").get_json()
    scores = [r["score"] for r in body["results"]]
    assert len(scores) == 10 and scores == sorted(scores, reverse=True)
    assert image_id not in [r["image"]["id"] for r in body["results"]]
    assert sum(r["image"]["folder"] == "shoes" for r in body["results"]) >= 5  # real similarity
    capped = client.get(f"/api/images/{image_id}/neighbours?k=100000").get_json()
    assert capped["k"] == 200 and len(capped["results"]) == 119


def test_neighbours_come_from_the_stored_list_while_it_matches_the_index(app, client, library):
    labeller = app.extensions[EXTENSION].labeller
    labeller.refresh()  # the lists, built from the loaded index
    image_id = first_id(library, Image.folder == "hat")
    searched = labeller.searcher.by_id(image_id, k=10)
    body = client.get(f"/api/images/{image_id}/neighbours?k=10").get_json()
    assert [r["image"]["id"] for r in body["results"]] == [h.image_id for h in searched]  # flat: exact
    # Results are read without the ORM: each shows exactly what the image's own answer shows.
    assert any(r["image"]["label"] for r in body["results"])
    for r in body["results"]:
        assert r["image"] == client.get(f"/api/images/{r['image']['id']}").get_json()

    # A mark in the stored list shows through: the answer is read from it, not searched.
    with library.Session.begin() as s:
        s.execute(update(Neighbour).where(Neighbour.image_id == image_id, Neighbour.rank == 0)
                  .values(score=0.123))
    body = client.get(f"/api/images/{image_id}/neighbours?k=10").get_json()
    assert body["results"][0]["score"] == 0.123

    # Lists built from other vectors than the loaded index's, or shorter than k: the index is searched.
    longer = client.get(f"/api/images/{image_id}/neighbours?k=30").get_json()
    assert longer["results"][0]["score"] == round(searched[0].score, 4)
    with library.Session.begin() as s:
        state = s.get(Meta, NEIGHBOURS_STATE)
        state.value = json.dumps({**json.loads(state.value), "vectors": ["other"]})
    body = client.get(f"/api/images/{image_id}/neighbours?k=10").get_json()
    assert [r["score"] for r in body["results"]] == [round(h.score, 4) for h in searched]


def test_suggestion_shows_the_votes(client, library):
    image_id = unlabelled_id(library)
    body = client.get(f"/api/images/{image_id}/suggestion").get_json()
    s = body["suggestion"]
    assert s["label"] in {"dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts",
                          "skirt", "t-shirt"}
    assert 0 < s["confidence"] <= 1 and 0 <= s["margin"] <= s["confidence"]
    voters = [e for e in s["evidence"] if e["label"] is not None]
    assert voters and all(e["thumb_url"] for e in voters)
    assert [e["score"] for e in s["evidence"]] == sorted((e["score"] for e in s["evidence"]), reverse=True)


# -- labels -------------------------------------------------------------------------------------


def test_set_change_and_clear_a_label(client, library):
    image_id = unlabelled_id(library)
    put = client.put(f"/api/images/{image_id}/label", json={"label": "  red dress "})
    assert put.status_code == 200 and put.get_json()["label"]["label"] == "red dress"
    assert stored_label(library, image_id) == "red dress"
    client.put(f"/api/images/{image_id}/label", json={"label": "dress", "source": "accepted"})
    with library.Session() as s:
        row = s.get(Label, image_id)
        assert (row.label, row.source) == ("dress", "accepted")
    cleared = client.delete(f"/api/images/{image_id}/label")
    assert cleared.status_code == 200 and cleared.get_json()["label"] is None
    assert stored_label(library, image_id) is None


@pytest.mark.parametrize(
    "body, message",
    [
        ({"label": ""}, "empty"),
        ({"label": "   "}, "empty"),
        ({"label": 3}, "text"),
        ({"label": "x" * 101}, "at most 100"),
        ({"label": "two\nlines"}, "control"),
        ({"label": "ok", "source": "imported"}, "source"),
        ({}, "text"),
    ],
)
def test_bad_labels_are_refused(client, library, body, message):
    image_id = unlabelled_id(library)
    response = client.put(f"/api/images/{image_id}/label", json=body)
    assert response.status_code == 400 and message in error_of(response)["message"]
    assert stored_label(library, image_id) is None


def test_label_needs_a_json_object(client, library):
    image_id = unlabelled_id(library)
    response = client.put(f"/api/images/{image_id}/label", data="label=x",
                          content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400 and "JSON" in error_of(response)["message"]


def test_label_several_at_once_all_or_nothing(client, library):
    with library.Session() as s:
        ids = s.scalars(select(Image.id).where(Image.id.not_in(select(Label.image_id))).limit(3)).all()
    response = client.post("/api/labels", json={"image_ids": ids, "label": "batch"})
    assert response.status_code == 200 and response.get_json()["labelled"] == 3
    assert [stored_label(library, i) for i in ids] == ["batch"] * 3

    more = [first_id(library, Image.id.not_in(select(Label.image_id)))]
    response = client.post("/api/labels", json={"image_ids": more + [999999], "label": "never"})
    assert response.status_code == 404 and "999999" in error_of(response)["message"]
    assert stored_label(library, more[0]) is None  # rolled back with the bad id

    for body in ({"image_ids": [], "label": "x"}, {"image_ids": ["1"], "label": "x"},
                 {"image_ids": list(range(1001)), "label": "x"}):
        assert client.post("/api/labels", json=body).status_code == 400
    counts = client.get("/api/labels").get_json()
    assert {"label": "batch", "count": 3} in counts["labels"] and counts["unlabelled"] == 57


def test_a_label_updates_the_suggestions_that_depend_on_it(client, library):
    """Label every voter of an image "zebra": its suggestion becomes zebra at once."""
    image_id = unlabelled_id(library)
    before = client.get(f"/api/images/{image_id}/suggestion").get_json()["suggestion"]
    assert before["label"] != "zebra"
    voters = [e["image_id"] for e in before["evidence"]]
    assert client.post("/api/labels", json={"image_ids": voters, "label": "zebra"}).status_code == 200
    after = client.get(f"/api/images/{image_id}/suggestion").get_json()["suggestion"]
    assert after["label"] == "zebra" and after["confidence"] == 1.0


def test_queue_is_unlabelled_and_in_the_order_of_lookalike_queue(client, library):
    labeller = client.application.extensions["lookalike"].labeller
    labeller.retrain()  # what the background thread does after a label change; now, so both read one head
    body = client.get("/api/queue?limit=15").get_json()
    assert body["unlabelled"] == 60 and len(body["items"]) == 15
    ids = [item["image"]["id"] for item in body["items"]]
    cli = CliRunner().invoke(main, ["queue", "--library", str(library.path), "-n", "15", "--json"])
    assert cli.exit_code == 0, cli.output
    assert [q["id"] for q in json.loads(cli.output)] == ids  # one order, web and command line
    # After the typical photos of unlabelled clusters, each suggested class's photos come least certain first.
    clusters = labeller.clusters()
    with library.Session() as s:
        labelled = set(s.scalars(select(Label.image_id)))
    covered = {c for i, c in zip(clusters.ids, clusters.cluster, strict=True) if int(i) in labelled}
    typical = len(set(clusters.cluster.tolist()) - covered)
    by_class: dict[str, list[float]] = {}
    for item in body["items"][typical:]:
        by_class.setdefault(item["suggestion"]["label"], []).append(item["suggestion"]["margin"])
    assert all(m == sorted(m) for m in by_class.values()) and len(by_class) > 1
    assert all(item["image"]["label"] is None for item in body["items"])
    assert "hat" in body["labels"]
    rest = client.get("/api/queue?limit=1000&offset=15").get_json()
    assert rest["limit"] == 200 and len(rest["items"]) == 45
    assert not {i["image"]["id"] for i in body["items"]} & {i["image"]["id"] for i in rest["items"]}

    first = body["items"][0]["image"]["id"]
    client.put(f"/api/images/{first}/label", json={"label": "done"})
    again = client.get("/api/queue?limit=200").get_json()
    assert first not in [i["image"]["id"] for i in again["items"]] and again["unlabelled"] == 59


# -- search by upload ---------------------------------------------------------------------------


def test_upload_finds_its_near_duplicate_first(client, library):
    original = first_id(library, Image.folder == "shorts")
    with library.Session() as s:
        path = library.root / s.get(Image, original).path
    data = near_duplicate_of(path)
    for response in (
        client.post("/api/search?k=5", data={"image": (io.BytesIO(data), "copy.jpg")}),
        client.post("/api/search?k=5", data=data, content_type="image/jpeg"),  # raw body
    ):
        assert response.status_code == 200, response.data
        body = response.get_json()
        assert body["results"][0]["image"]["id"] == original and body["results"][0]["score"] > 0.9
        assert len(body["results"]) == 5 and body["query"]["format"] == "JPEG"


@pytest.mark.parametrize(
    "name, reason",
    [
        ("pillow__decompression_bomb.gif", "decompression bomb"),
        ("pillow__truncated_jpeg.jpg", "corrupt image"),
        ("generated__zero_bytes.jpg", "no photo in the request"),
        ("pillow__test-ole-file.doc", "not an image"),
    ],
)
def test_bad_uploads_are_400_never_500(client, name, reason):
    data = (BAD / name).read_bytes()
    response = client.post("/api/search", data={"image": (io.BytesIO(data), name)})
    assert response.status_code == 400
    message = error_of(response)["message"]
    assert reason in message and "0x" not in message


def test_text_posing_as_an_image_is_400(client):
    response = client.post("/api/search", data=b"<html>not a photo</html>", content_type="image/png")
    assert response.status_code == 400 and "not an image" in error_of(response)["message"]


def test_oversize_upload_is_413(labelled_library, backbone):
    app = make_app(labelled_library, backbone, max_upload_mb=0.05)  # 52 kB
    client = app.test_client()
    big = jpeg_bytes(PILImage.effect_noise((400, 400), 80).convert("RGB"), quality=95)
    assert len(big) > 60_000
    for response in (
        client.post("/api/search", data={"image": (io.BytesIO(big), "big.jpg")}),
        client.post("/api/search", data=big, content_type="image/jpeg"),
    ):
        assert response.status_code == 413
        error_of(response)


# -- library ------------------------------------------------------------------------------------


def test_about(client):
    body = client.get("/api/about").get_json()
    assert body["images"] == 120 and body["indexed"] == 120 and body["labelled"] == 60
    assert body["backbone"] == "efficientnet_lite0" and body["dim"] == 1280
    assert body["index_type"] and body["index_size"] == 120
    assert {"label": "hat", "count": 6} in body["labels"]
    ev = body["evaluation"]
    assert ev["images"] == 60 and ev["classes"] == 10 and 0.5 < ev["top1"] <= 1


def test_about_without_labels_has_no_evaluation(sample_library, backbone):
    body = make_app(sample_library, backbone).test_client().get("/api/about").get_json()
    assert body["labelled"] == 0 and body["evaluation"] is None


def test_duplicates_groups_each_copy_with_its_original(small_library, backbone):
    client = make_app(small_library, backbone).test_client()
    body = client.get("/api/duplicates").get_json()
    assert body["kind"] == "copies" and body["missing_signals"] == 0
    groups = sorted(sorted(i["path"] for i in g["images"]) for g in body["groups"])
    assert groups == sorted(sorted(pair) for pair in small_library.copies.items())
    for g in body["groups"]:
        originals = [i for i in g["images"] if i["path"] in small_library.copies.values()]
        assert g["keep"]["image_id"] == originals[0]["id"] and g["keep"]["reason"]
        assert [i["action"] for i in g["images"]] == ["keep" if i["suggested"] else "remove" for i in g["images"]]
        assert all(p["hash_distance"] is not None or p["inliers"] is not None for p in g["pairs"])
    similar = client.get("/api/duplicates?kind=similar&threshold=0.9999").get_json()
    assert similar["kind"] == "similar" and similar["groups"] == []


def test_dismissing_a_group_and_choosing_per_photo(small_library, backbone):
    client = make_app(small_library, backbone).test_client()
    groups = client.get("/api/duplicates").get_json()["groups"]
    first = groups[0]
    ids = [i["id"] for i in first["images"]]
    kept = first["keep"]["image_id"]
    other = next(i for i in ids if i != kept)

    assert client.put(f"/api/duplicates/choices/{other}", json={"choice": "keep"}).get_json() == {
        "image_id": other, "choice": "keep"}
    after = client.get("/api/duplicates").get_json()["groups"]
    mine = next(g for g in after if g["images"][0]["id"] in ids)
    actions = {i["id"]: (i["action"], i["chosen"]) for i in mine["images"]}
    assert actions == {kept: ("keep", False), other: ("keep", True)}
    assert client.put(f"/api/duplicates/choices/{other}", json={"choice": "delete"}).status_code == 400
    assert client.put(f"/api/duplicates/choices/{other}", json={"choice": None}).status_code == 200

    body = client.post("/api/duplicates/dismiss", json={"image_ids": ids, "kind": "copies"}).get_json()
    assert body == {"dismissed_pairs": 1, "image_ids": sorted(ids), "kind": "copies"}
    left = client.get("/api/duplicates").get_json()["groups"]
    assert len(left) == len(groups) - 1 and all(g["images"][0]["id"] not in ids for g in left)
    assert error_of(client.post("/api/duplicates/dismiss", json={"image_ids": [ids[0]]}))["status"] == 400
    assert error_of(client.post("/api/duplicates/dismiss", json={"image_ids": "1,2"}))["status"] == 400
    assert error_of(client.post("/api/duplicates/dismiss", json={"image_ids": ids, "kind": "x"}))["status"] == 400
    assert error_of(client.post("/api/duplicates/dismiss", json={"image_ids": [ids[0], 999999]}))["status"] == 404


def test_the_removal_csv_download(small_library, backbone):
    client = make_app(small_library, backbone).test_client()
    response = client.get("/duplicates/remove.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    lines = response.get_data(as_text=True).splitlines()
    assert lines[0] == "path,image_id,kept,kind"
    assert sorted(line.split(",")[0] for line in lines[1:]) == sorted(small_library.copies)


def test_status_for_health_checks(client):
    assert client.get("/api/status").get_json() == {"status": "ok", "images": 120, "indexed": 120}


def test_duplicates_are_found_in_the_background_and_pages_say_how_far(app, client, monkeypatch):
    """Finding duplicates reads photo files (hours at a million photos): a request waits
    DUPLICATES_WAIT seconds, then the page says how far it is and reloads itself, the API answers
    202 with the same, the CSV 503; once the thread is done, the groups come as before."""
    import threading

    from web import duplicates as review
    from web.context import EXTENSION

    release = threading.Event()
    real = review.find_tiers

    def slow(library, **kwargs):
        kwargs["progress"](3, 40)
        assert release.wait(60)
        return real(library, **kwargs)

    monkeypatch.setattr(review, "find_tiers", slow)
    app.config["DUPLICATES_WAIT"] = 0
    page = client.get("/duplicates").get_data(as_text=True)
    assert 'id="duplicates-pending"' in page and "3 of 40 candidate pairs checked" in page
    assert 'http-equiv="refresh"' in page and "No copies found" not in page
    pending = client.get("/api/duplicates")
    assert pending.status_code == 202
    assert pending.get_json()["pending"] == {"done": 3, "total": 40} and pending.get_json()["groups"] == []
    assert client.get("/duplicates/remove.csv").status_code == 503

    release.set()
    job = app.extensions[EXTENSION].jobs["duplicate-tiers"]
    assert job.finished.wait(120) and job.error is None
    done = client.get("/api/duplicates")
    assert done.status_code == 200 and "pending" not in done.get_json()
    assert 'id="duplicates-pending"' not in client.get("/duplicates").get_data(as_text=True)
    assert client.get("/duplicates/remove.csv").status_code == 200


def test_the_copies_tier_is_not_found_again_for_another_similar_threshold(app, client, monkeypatch):
    """The copies tier does not depend on the similar tier's threshold: looking at similar shots at
    0.95, then at the copies again, finds the tiers twice, not three times."""
    from web import duplicates as review

    calls: list[float] = []
    real = review.find_tiers

    def counted(library, **kwargs):
        calls.append(kwargs["similar_threshold"])
        return real(library, **kwargs)

    monkeypatch.setattr(review, "find_tiers", counted)
    first = client.get("/api/duplicates").get_json()
    assert client.get("/api/duplicates?kind=similar&threshold=0.95").status_code == 200
    again = client.get("/api/duplicates").get_json()
    assert again == first and calls == [0.9, 0.95]
    assert client.get("/api/duplicates?kind=similar&threshold=0.9").status_code == 200  # similar: its own threshold
    assert calls == [0.9, 0.95, 0.9]


def test_a_label_filter_finds_what_a_write_of_the_same_text_stored(client, library):
    """Labels are stored in NFC, stripped; the filters now read them the same way."""
    import unicodedata

    image_id = unlabelled_id(library)
    decomposed = unicodedata.normalize("NFD", "café")
    assert client.put(f"/api/images/{image_id}/label", json={"label": decomposed}).status_code == 200
    for query in (decomposed, "café", " café "):
        found = client.get("/api/images", query_string={"label": query}).get_json()
        assert [r["id"] for r in found["images"]] == [image_id], query


def test_each_label_write_answers_with_its_own_label(app, library):
    """Concurrent writes to one photo: the last one wins, and each answers with what it wrote, not
    with a later request's label (the row was read again after the write lock was let go)."""
    import threading

    image_id = unlabelled_id(library)
    answers: dict[str, str] = {}

    def put(label: str) -> None:
        body = app.test_client().put(f"/api/images/{image_id}/label", json={"label": label}).get_json()
        answers[label] = body["label"]["label"]

    threads = [threading.Thread(target=put, args=(f"c{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert answers == {f"c{i}": f"c{i}" for i in range(8)}
    assert stored_label(library, image_id) in answers
