"""GET /api/map, the Map page and `lookalike map`, on the labelled sample library."""

from __future__ import annotations

from click.testing import CliRunner
from sqlalchemy import func, select

from indexer.schema import MapPoint
from lookalike.cli import main
from web.map_view import JOB

COLUMNS = ["id", "x", "y", "label", "suggested", "confidence", "folder"]


def finish_background_work(app) -> None:
    """Wait for the map job the last request started (a join: no sleeping, no timing)."""
    job = app.extensions.get(JOB)
    if job is not None and job._thread is not None:
        job._thread.join(timeout=600)
        assert not job.running


def test_first_request_starts_the_layout_and_never_waits_for_it(app, client, library):
    first = client.get("/api/map")
    assert first.status_code == 200
    body = first.get_json()
    assert body["status"]["computing"] is True
    assert body["points"]["id"] == [] and body["count"] == 0
    finish_background_work(app)

    body = client.get("/api/map").get_json()
    assert body["status"] == {"computing": False, "suggesting": False, "error": None}
    assert body["count"] == body["shown"] == 120 and body["downsampled"] is False
    assert body["method"] == "graph"
    points = body["points"]
    assert list(points) == COLUMNS
    assert all(len(points[c]) == 120 for c in COLUMNS)
    assert points["id"] == sorted(points["id"])
    assert all(-1 <= v <= 1 for v in points["x"] + points["y"])
    # Labels are indexes into `labels`: they decode to what SQLite holds.
    labelled = {i: body["labels"][c] for i, c in zip(points["id"], points["label"], strict=True) if c >= 0}
    assert labelled == library.labelled
    # The suggestions were computed in the background after the layout: every unlabelled photo has one.
    unlabelled = [c for i, c in zip(points["id"], points["suggested"], strict=True) if i not in library.labelled]
    assert unlabelled and all(c >= 0 for c in unlabelled)
    assert all(0 < v <= 1 for v, c in zip(points["confidence"], points["suggested"], strict=True) if c >= 0)
    assert body["folders"] == sorted(body["folders"]) and len(body["folders"]) == 10


def test_labels_show_on_the_map_at_once(app, client, library):
    client.get("/api/map")
    finish_background_work(app)
    body = client.get("/api/map").get_json()
    unlabelled = [i for i in body["points"]["id"] if i not in library.labelled][:3]
    r = client.post("/api/labels", json={"image_ids": unlabelled, "label": "from the map"})
    assert r.status_code == 200
    body = client.get("/api/map").get_json()
    code = body["labels"].index("from the map")
    got = [i for i, c in zip(body["points"]["id"], body["points"]["label"], strict=True) if c == code]
    assert got == sorted(unlabelled)


def test_refit_on_request_and_csrf(app, client, library):
    client.get("/api/map")
    finish_background_work(app)
    r = client.post("/api/map/refit")
    assert r.status_code == 202 and r.get_json()["status"]["computing"] is True
    finish_background_work(app)
    assert client.get("/api/map").get_json()["count"] == 120
    refused = client.post("/api/map/refit", headers={"Sec-Fetch-Site": "cross-site"})
    assert refused.status_code == 403
    assert refused.get_json()["error"]["status"] == 403
    assert client.delete("/api/map").status_code == 405


def test_map_page(client):
    r = client.get("/map")
    assert r.status_code == 200
    html = r.get_data(as_text=True)
    assert 'id="map-canvas"' in html and "map.js" in html
    assert 'href="/map" aria-current="page">Map</a>' in html
    assert 'href="/map"' in client.get("/").get_data(as_text=True)  # in every page's navigation


def test_lookalike_map_command(library):
    runner = CliRunner()
    result = runner.invoke(main, ["map", "--library", str(library.path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("map of 120 photos: graph layout fitted on 120 (")
    with library.Session() as s:
        assert s.scalar(select(func.count()).select_from(MapPoint)) == 120

    assert "up to date" in runner.invoke(main, ["map", "--library", str(library.path)]).output
    refit = runner.invoke(main, ["map", "--library", str(library.path), "--refit"])
    assert "graph layout fitted on 120" in refit.output


def test_lookalike_map_errors_are_one_line(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(main, ["map", "--library", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1 and missing.output.startswith("Error: no library at ")
    assert "Traceback" not in missing.output
    bad = runner.invoke(main, ["map", "--library", str(tmp_path), "--method", "tsne"])
    assert bad.exit_code == 2 and "'tsne' is not one of 'umap', 'graph'" in bad.output


def test_large_maps_are_downsampled_and_say_so(app, client, monkeypatch):
    from web import map_view

    client.get("/api/map")
    finish_background_work(app)
    monkeypatch.setattr(map_view, "MAX_POINTS", 50)
    app.extensions["lookalike"].memo.clear()
    body = client.get("/api/map").get_json()
    assert (body["count"], body["shown"], body["downsampled"]) == (120, 50, True)
    ids = body["points"]["id"]
    assert len(ids) == len(set(ids)) == 50 and ids == sorted(ids)
    assert all(len(body["points"][c]) == 50 for c in COLUMNS)
    assert client.get("/api/map").get_json()["points"]["id"] == ids  # the same sample every time
