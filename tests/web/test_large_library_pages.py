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
