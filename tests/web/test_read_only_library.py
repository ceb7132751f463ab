"""A library this user cannot write is opened read-only: reads work, writes get a clear refusal.

Issue 22, item 8: a read-only folder or an immutable library.db made every command, `status`
included, crash with an SQLAlchemy OperationalError traceback, and web writes answer 500. Tests
run as root, whom chmod does not stop: the detection is tested with os.access monkeypatched, and
the read-only SQLite connection it chooses is tested for real.
"""

from __future__ import annotations

import os
import time

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from indexer.library import READ_ONLY_MESSAGE, Library, is_read_only
from indexer.schema import Label, Meta
from lookalike.cli import main
from tests.conftest import SAMPLES
from tests.web.library_setup import make_app, stored_label


@pytest.fixture
def unwritable(sample_library, monkeypatch):
    """os.access says nobody may write the sample library's folder (what a read-only mount says)."""
    real = os.access
    folder = str(sample_library.path)

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and str(path).startswith(folder):
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)
    return sample_library


def test_a_folder_or_database_nobody_may_write_is_detected(sample_library, unwritable):
    assert is_read_only(unwritable.path)
    with Library(unwritable.path) as library:
        assert library.read_only


def test_a_writable_library_is_not_read_only(sample_library):
    assert not is_read_only(sample_library.path) and not sample_library.read_only


def test_a_read_only_library_reads_and_refuses_every_write(sample_library):
    with Library(sample_library.path, read_only=True) as library:
        assert library.counts()["indexed"] == 120
        assert library.meta()["backbone"] == "efficientnet_lite0"
        with pytest.raises(OperationalError, match="readonly database"), library.Session.begin() as s:
            s.merge(Meta(key="probe", value="x"))
    assert "probe" not in sample_library.meta()


def test_status_works_and_index_refuses_in_one_line(unwritable):
    runner = CliRunner()
    status = runner.invoke(main, ["status", "--library", str(unwritable.path), "--json"])
    assert status.exit_code == 0 and status.exception is None, status.output
    assert '"indexed": 120' in status.output
    index = runner.invoke(main, ["index", str(SAMPLES), "--library", str(unwritable.path), "--quiet"])
    assert index.exit_code == 1 and "Traceback" not in index.output
    refusal = f"library {unwritable.path} is read-only for this user: nothing can be written to it"
    assert index.output == f"Error: {refusal}\n"


def test_other_writing_commands_refuse_in_one_line(unwritable):
    result = CliRunner().invoke(main, ["labels", "import", "--folders", "--library", str(unwritable.path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output == f"Error: {READ_ONLY_MESSAGE}\n"
    with Library(unwritable.path, read_only=False) as library, library.Session() as s:
        assert s.scalar(select(func.count()).select_from(Label)) == 0


def test_the_web_reads_and_answers_writes_503(sample_library, backbone):
    library = Library(sample_library.path, read_only=True)
    try:
        client = make_app(library, backbone).test_client()
        image_id = int(library.indexed_ids()[0])
        reads = (
            "/api/status", "/api/images", "/api/folders", f"/api/images/{image_id}",
            f"/api/images/{image_id}/neighbours", f"/api/images/{image_id}/suggestion", "/api/labels",
            "/api/queue", "/api/duplicates", "/api/duplicates?kind=similar", "/api/about", "/api/map",
            "/", f"/images/{image_id}", "/search", "/queue", "/duplicates", "/duplicates/remove.csv",
            "/about", "/map", f"/thumbs/{image_id}/small.jpg", f"/original/{image_id}",
        )
        for url in reads:  # the suggestions, queue and duplicates are read as stored or computed in memory
            r = client.get(url)
            for _ in range(600):  # duplicates are verified in the background: 202 until they are
                if r.status_code != 202:
                    break
                time.sleep(0.5)
                r = client.get(url)
            assert r.status_code == 200, (url, r.get_data(as_text=True)[:300])
        r = client.put(f"/api/images/{image_id}/label", json={"label": "nope"})
        assert r.status_code == 503
        assert r.get_json() == {"error": {"status": 503, "message": READ_ONLY_MESSAGE}}
        assert stored_label(library, image_id) is None
    finally:
        library.close()


def test_serve_s_app_starts_read_only_on_a_library_nobody_may_write(unwritable):
    from web import create_app, services
    from web.settings import Settings

    app = create_app(Settings(library=unwritable.path))
    with app.app_context():
        assert services().library.read_only
    client = app.test_client()
    assert client.get("/api/status").get_json() == {"status": "ok", "images": 120, "indexed": 120}
    r = client.delete(f"/api/images/{int(unwritable.indexed_ids()[0])}/label")
    assert r.status_code == 503 and r.get_json()["error"]["message"] == READ_ONLY_MESSAGE
