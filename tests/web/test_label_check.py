"""Check labels: suspicious labels listed worst first with evidence; keep or correct in one click."""

from __future__ import annotations

from indexer.schema import Label

MISLABEL = "<b>hat</b>"  # a label that would be markup if it were not escaped


def flip(client, library, n: int) -> dict[int, str]:
    """Give n labelled shoes the label "<b>hat</b>", and every hat too: shoes that say hat look wrong."""
    ids = sorted(i for i, lab in library.labelled.items() if lab == "shoes")[:n]
    hats = [i for i, lab in library.labelled.items() if lab == "hat"]
    for image_id in hats + ids:
        assert client.put(f"/api/images/{image_id}/label", json={"label": MISLABEL}).status_code == 200
    return {i: "shoes" for i in ids}


def stored(library, image_id: int) -> str | None:
    with library.Session() as s:
        row = s.get(Label, image_id)
        return row.label if row else None


def test_flipped_labels_are_listed_worst_first_with_their_evidence(client, library):
    flipped = flip(client, library, 2)
    answer = client.get("/api/labels/suspicious").get_json()
    assert answer["checked"] == 60 and answer["found"] == len(answer["items"]) >= 2
    listed = {it["image"]["id"]: it for it in answer["items"]}
    assert set(flipped) <= set(listed)
    for image_id, truth in flipped.items():
        item = listed[image_id]
        assert item["label"] == MISLABEL and item["suggested"] == truth
        assert 0.5 <= item["confidence"] <= 1 and item["margin"] > 0
        assert item["neighbours"] and all(n["label"] is not None for n in item["neighbours"])
        assert sum(n["label"] == truth for n in item["neighbours"]) >= 1
        assert all(n["thumb_url"].startswith("/thumbs/") for n in item["neighbours"])
    margins = [it["margin"] for it in answer["items"]]
    assert margins == sorted(margins, reverse=True)  # worst first

    page = client.get("/labels/check").get_data(as_text=True)
    assert "&lt;b&gt;hat&lt;/b&gt;" in page and MISLABEL not in page  # escaped everywhere it is shown
    assert page.count('class="panel check-item"') == len(answer["items"])


def test_keep_is_remembered_and_a_correction_takes_the_photo_off_the_list(client, library):
    flipped = flip(client, library, 2)
    kept_id, fixed_id = sorted(flipped)
    answer = client.post(f"/api/labels/suspicious/{kept_id}/keep")
    assert answer.status_code == 200 and answer.get_json() == {"image_id": kept_id, "label": MISLABEL, "kept": True,
                                                     "kept_count": 1}
    assert stored(library, kept_id) == MISLABEL  # keeping changes no label
    assert client.put(f"/api/images/{fixed_id}/label", json={"label": "shoes"}).status_code == 200
    listed = {it["image"]["id"] for it in client.get("/api/labels/suspicious").get_json()["items"]}
    assert kept_id not in listed and fixed_id not in listed
    # A kept label that is changed later is checked again.
    assert client.put(f"/api/images/{kept_id}/label", json={"label": "dress"}).status_code == 200
    listed = {it["image"]["id"] for it in client.get("/api/labels/suspicious").get_json()["items"]}
    assert kept_id in listed


def test_keep_refuses_unknown_and_unlabelled_photos(client, library):
    unlabelled = next(i for i in range(1, 200) if i not in library.labelled and stored(library, i) is None)
    assert client.post("/api/labels/suspicious/999999/keep").status_code == 404
    refused = client.post(f"/api/labels/suspicious/{unlabelled}/keep")
    assert refused.status_code == 409 and "no label" in refused.get_json()["error"]["message"]
    flip(client, library, 2)
    assert len(client.get("/api/labels/suspicious?limit=1").get_json()["items"]) == 1


def test_keep_on_a_read_only_library_is_a_clear_503(library, backbone):
    from indexer.library import Library
    from tests.web.library_setup import make_app

    labelled = next(iter(library.labelled))
    read_only = Library(library.path, read_only=True)
    try:
        client = make_app(read_only, backbone).test_client()
        refused = client.post(f"/api/labels/suspicious/{labelled}/keep")
        assert refused.status_code == 503 and "read-only" in refused.get_json()["error"]["message"]
    finally:
        read_only.close()


def test_a_slow_label_check_holds_up_no_other_page(app, library, monkeypatch):
    """While the label check computes (held here until the map has answered), the map's JSON, a
    result memoized under another name, is served: one lock per name, not one for all."""
    import threading

    from web import label_check

    started, release = threading.Event(), threading.Event()
    real = label_check.suspicious

    def held(labeller):
        started.set()
        assert release.wait(120)
        return real(labeller)

    monkeypatch.setattr(label_check, "suspicious", held)
    answers: dict[str, int] = {}

    def get(name: str, url: str) -> None:
        answers[name] = app.test_client().get(url).status_code

    check = threading.Thread(target=get, args=("check", "/api/labels/suspicious"))
    check.start()
    try:
        assert started.wait(120)
        get("map", "/api/map")  # in this thread: it would wait for the check's lock before the fix
        assert answers == {"map": 200} and check.is_alive()
    finally:
        release.set()
        check.join(120)
    assert answers == {"map": 200, "check": 200}


def test_a_new_check_runs_in_the_background_and_the_last_one_answers_meanwhile(app, client, library, monkeypatch):
    """The check cross-validates every label: seconds at 60 labels, more with many. After a label
    changes, a request does not wait for the new check: the last one answers ("current": false,
    the relabelled photo left out) until the new one is done. Before any, the page says it checks."""
    import threading

    from web import label_check

    flipped = flip(client, library, 2)
    app.config["LABEL_CHECK_WAIT"] = 0
    real, release = label_check.suspicious, threading.Event()
    release.set()

    def held(labeller):
        assert release.wait(120)
        return real(labeller)

    monkeypatch.setattr(label_check, "suspicious", held)
    fixed_id, other_id = sorted(flipped)

    def answer() -> dict:
        for _ in range(600):  # until the check started by the first request is done
            body = client.get("/api/labels/suspicious").get_json()
            if not body["pending"]:
                return body
            threading.Event().wait(0.2)
        raise AssertionError("the first label check never finished")

    first = answer()
    assert first["current"] and {fixed_id, other_id} <= {it["image"]["id"] for it in first["items"]}
    release.clear()  # the next check is held until the end of the test
    try:
        assert client.put(f"/api/images/{fixed_id}/label", json={"label": "shoes"}).status_code == 200
        stale = client.get("/api/labels/suspicious").get_json()
        assert (stale["current"], stale["pending"], stale["checked"]) == (False, False, first["checked"])
        listed = {it["image"]["id"] for it in stale["items"]}
        assert other_id in listed and fixed_id not in listed  # the relabelled photo is left out
        page = client.get("/labels/check").get_data(as_text=True)
        assert 'id="check-stale"' in page and 'class="panel check-item"' in page
    finally:
        release.set()


def test_the_page_says_it_checks_before_the_first_check_is_done(app, client, library, monkeypatch):
    import threading

    from web import label_check

    app.config["LABEL_CHECK_WAIT"] = 0
    release = threading.Event()
    real = label_check.suspicious
    monkeypatch.setattr(label_check, "suspicious", lambda labeller: release.wait(120) and real(labeller))
    try:
        body = client.get("/api/labels/suspicious").get_json()
        assert (body["pending"], body["current"], body["items"]) == (True, False, [])
        page = client.get("/labels/check").get_data(as_text=True)
        assert 'id="check-pending"' in page and 'http-equiv="refresh"' in page
    finally:
        release.set()
