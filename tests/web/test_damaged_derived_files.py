"""A damaged `head.npz`, `queue_clusters.npz` or `map-fit.npz` is rebuilt, never a 500 or a traceback.

Issue 22, item 6: an empty or truncated file (zipfile.BadZipFile, EOFError) made a label PUT or
DELETE answer 500 after saving the label, /about, /api/queue and the suggestion endpoint 500, and
`index` print a traceback. They are derived files: read as missing (one warning), then rebuilt.
"""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import delete, select

from indexer.library import Library
from indexer.schema import MapPoint
from lookalike.cli import main
from search.labelling.head_store import HEAD_FILE, load_head
from search.labelling.labeller import Labeller
from search.labelling.queue_clusters import CLUSTERS_FILE, load_clusters
from search.map.store import FIT_FILE, load_fit, update_map
from search.searcher import Searcher
from tests.conftest import SAMPLES
from tests.web.library_setup import label_every_other, make_app, stored_label
from tests.web.test_map import finish_background_work
from web.context import EXTENSION

UNPLACED = 5  # photos without a map point: the next map update places them with the stored fit


def empty(data: bytes) -> bytes:
    return b""


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def garbage(data: bytes) -> bytes:
    return np.random.default_rng(0).bytes(len(data))


def corrupt_middle(data: bytes) -> bytes:  # the zip's directory intact, an array's bytes not (bad CRC)
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 64]) + data[middle + 64 :]


def readable(library: Library, name: str) -> bool:
    if name == HEAD_FILE:
        return load_head(library.path / HEAD_FILE) is not None
    if name == CLUSTERS_FILE:
        return load_clusters(library.path / CLUSTERS_FILE) is not None
    return load_fit(library) is not None


@pytest.fixture(scope="session")
def derived_library_dir(sample_library_dir, backbone, tmp_path_factory):
    """The labelled sample library with all three files written, and UNPLACED photos left off the map."""
    path = tmp_path_factory.mktemp("derived") / "library"
    shutil.copytree(sample_library_dir, path)
    with Library(path) as library:
        label_every_other(library)
        labeller = Labeller(Searcher(library, backbone))
        labeller.retrain()
        labeller.clusters()
        update_map(library)
        with library.Session.begin() as s:
            ids = s.scalars(select(MapPoint.image_id).order_by(MapPoint.image_id).limit(UNPLACED)).all()
            s.execute(delete(MapPoint).where(MapPoint.image_id.in_(ids)))
        assert all(readable(library, name) for name in (HEAD_FILE, CLUSTERS_FILE, FIT_FILE))
    return path


@pytest.fixture
def derived_library(derived_library_dir, tmp_path):
    shutil.copytree(derived_library_dir, tmp_path / "library")
    with Library(tmp_path / "library") as library:
        yield library


def damage_file(library: Library, name: str, damage) -> None:
    path = library.path / name
    path.write_bytes(damage(path.read_bytes()))
    assert not readable(library, name)  # this test's own read: its warning is not counted


def warnings_about(caplog, library: Library, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and str(library.path / name) in r.getMessage()]


@pytest.mark.parametrize("damage", [empty, truncated, garbage, corrupt_middle])
@pytest.mark.parametrize("name", [HEAD_FILE, CLUSTERS_FILE, FIT_FILE])
def test_the_web_answers_and_rebuilds_a_damaged_file(derived_library, backbone, name, damage, caplog):
    library = derived_library
    damage_file(library, name, damage)
    caplog.clear()
    app = make_app(library, backbone)  # started after the damage: nothing of the file is in memory
    client = app.test_client()
    image_id = int(library.indexed_ids()[0])

    with caplog.at_level(logging.WARNING):
        for url in ("/about", "/api/about", "/api/queue", f"/api/images/{image_id}/suggestion"):
            r = client.get(url)
            assert r.status_code == 200, (url, r.get_data(as_text=True)[:300])
        assert client.get("/api/queue").get_json()["items"]

        r = client.put(f"/api/images/{image_id}/label", json={"label": "mended"})
        assert r.status_code == 200, r.get_data(as_text=True)[:300]
        assert r.get_json()["label"]["label"] == "mended" and stored_label(library, image_id) == "mended"
        r = client.delete(f"/api/images/{image_id}/label")
        assert r.status_code == 200, r.get_data(as_text=True)[:300]
        assert stored_label(library, image_id) is None

        client.get("/api/map")  # places the UNPLACED photos with the stored fit: refits instead
        finish_background_work(app)
        body = client.get("/api/map").get_json()
        assert body["status"]["error"] is None and body["count"] == 120
        trainer = app.extensions[EXTENSION].labeller.trainer
        assert trainer.wait_idle(600) and trainer.last_error is None

    assert readable(library, name)  # rebuilt
    assert len(warnings_about(caplog, library, name)) == 1, caplog.text


@pytest.mark.parametrize("damage", [empty, truncated, garbage])
@pytest.mark.parametrize("name", [HEAD_FILE, CLUSTERS_FILE, FIT_FILE])
def test_index_and_map_rebuild_a_damaged_file(derived_library, name, damage):
    library = derived_library
    damage_file(library, name, damage)
    runner = CliRunner()
    for args in (["index", str(SAMPLES), "--quiet", "--workers", "0"], ["map"]):
        result = runner.invoke(main, [*args, "--library", str(library.path)])
        assert result.exit_code == 0 and result.exception is None, result.output
        assert "Traceback" not in result.output and "Aborted" not in result.output
    assert readable(library, name)
