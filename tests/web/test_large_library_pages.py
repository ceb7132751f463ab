"""Pages that switch to bounded work in large libraries: the About page's sampled evaluation."""

from __future__ import annotations

import re

from web import library_facts


def test_about_says_when_the_evaluation_is_sampled(client, monkeypatch):
    whole = client.get("/about").get_data(as_text=True)
    assert 'id="evaluation-sampled"' not in whole and 'id="evaluation"' in whole
    monkeypatch.setattr(library_facts, "EVAL_SAMPLE", 30)
    page = client.get("/about").get_data(as_text=True)
    said = re.search(r"random sample of (\d+) of the (\d+) labelled photos", page)
    labelled = re.search(r"Each of the (\d+) labelled photos", whole).group(1)
    assert int(labelled) > 30
    assert said and said.group(1) == "30" and said.group(2) == labelled
    assert "Each of the 30 labelled photos" in page



def test_browse_pages_read_an_index_not_a_sort_of_every_row(client):
    """EXPLAIN QUERY PLAN of the page statements browse runs: no temporary sort, a folder searched."""
    from sqlalchemy import event

    from web.context import EXTENSION

    engine = client.application.extensions[EXTENSION].library.engine
    statements: list[tuple[str, tuple]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.startswith("SELECT") and "FROM images" in statement and "LIMIT" in statement:
            statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        for url in ("/", "/?sort=added", "/?folder=pants"):
            statements.clear()
            assert client.get(url).status_code == 200
            assert statements, url
            if "folder" in url:
                assert any("images.folder >=" in sql for sql, _ in statements)
            with engine.connect() as conn:
                for sql, params in statements:
                    plan = " | ".join(row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params))
                    if "ORDER BY" in sql and "folder" not in url:
                        assert "TEMP B-TREE" not in plan, (url, plan)
                    if "images.folder >=" in sql:  # the page of a folder (facets scan folders on purpose)
                        assert "SEARCH images USING" in plan and "SCAN images" not in plan, plan
    finally:
        event.remove(engine, "before_cursor_execute", capture)


def test_a_huge_duplicate_group_lists_a_bounded_number_of_its_photos(tmp_path, backbone, monkeypatch):
    """One photo and five copies of it (resized and recompressed, as messaging apps do), indexed for
    real: one group of 6 copies. With the bound lowered to 3, the API and the page list 3 of them,
    the suggested keep among them, and say how many the group has; the whole group is still one
    group, its suggestion made among all 6 (the same the removal CSV acts on)."""
    from PIL import Image as PILImage

    from indexer.library import Library
    from indexer.pipeline import index_folder
    from tests.conftest import SAMPLES
    from tests.web.library_setup import jpeg_bytes, make_app
    from web import duplicates

    photos = tmp_path / "photos" / "burst"
    photos.mkdir(parents=True)
    original = sorted((SAMPLES / "dress").glob("*.jpg"))[0]
    (photos / "z-original.jpg").write_bytes(original.read_bytes())  # last by path: not among the first 3
    with PILImage.open(original) as img:
        img = img.convert("RGB")
        for i, (scale, quality) in enumerate(((0.9, 80), (0.85, 75), (0.8, 70), (0.75, 85), (0.7, 65))):
            small = img.resize((int(img.width * scale), int(img.height * scale)), PILImage.LANCZOS)
            (photos / f"copy-{i}.jpg").write_bytes(jpeg_bytes(small, quality=quality))
    for other in sorted((SAMPLES / "hat").glob("*.jpg"))[:2]:
        (photos.parent / other.name).write_bytes(other.read_bytes())
    library = Library(tmp_path / "library", create=True)
    try:
        index_folder(tmp_path / "photos", library, backbone, batch_size=8, workers=0)
        client = make_app(library, backbone).test_client()
        whole = client.get("/api/duplicates").get_json()["groups"]
        assert [(len(g["images"]), g["size"], g["truncated"]) for g in whole] == [(6, 6, False)]
        keep = whole[0]["keep"]["image_id"]
        ids = sorted(i["id"] for i in whole[0]["images"])
        assert [i["path"] for i in whole[0]["images"] if i["id"] == keep] == ["burst/z-original.jpg"]
        assert keep == ids[-1]
        assert len(whole[0]["pairs"]) > 3  # copies of one photo match each other, not only the original
        assert 'id="tier-help"' in (page := client.get("/duplicates").get_data(as_text=True))
        assert "photos shown" not in page

        monkeypatch.setattr(duplicates, "MAX_GROUP_MEMBERS", 3)
        cut = client.get("/api/duplicates").get_json()["groups"]
        assert len(cut) == 1
        group = cut[0]
        listed = [i["id"] for i in group["images"]]
        assert group["size"] == 6 and group["truncated"] is True and len(listed) == 3
        assert listed == ids[:2] + [keep]  # the first by id, and the suggested keep
        assert group["keep"] == whole[0]["keep"] and group["best_score"] == whole[0]["best_score"]
        assert all(p["a"] in listed and p["b"] in listed for p in group["pairs"])  # none naming unlisted photos
        page = client.get("/duplicates").get_data(as_text=True)
        assert page.count('class="tile') == 3
        assert "3 of 6 photos shown" in page
        assert 'class="dismiss' not in page  # "Not duplicates" would dismiss only the photos listed
        response = client.get("/duplicates/remove.csv")  # the plan still covers every photo of the group
        assert sorted(line.split(",")[1] for line in response.get_data(as_text=True).splitlines()[1:]) == \
            [str(i) for i in ids if i != keep]
    finally:
        library.close()
