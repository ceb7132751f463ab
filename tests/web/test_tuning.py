"""The web's tune: POST /api/tune runs `search.tuning` in the background; progress in /api/status."""

from __future__ import annotations

import shutil
import time

import pytest
from sqlalchemy import delete, select

from indexer.finetune import TuneConfig
from indexer.library import Library
from indexer.schema import Label
from search.tuning import LAST_TUNE_STATE, tune_lock
from tests.conftest import labelled_library
from tests.web.library_setup import make_app

CLASSES = ("shirt", "t-shirt", "longsleeve")
NEVER_WINS = TuneConfig(max_epochs=0, batch_size=8)  # the head alone: the gain is 0, nothing is kept
WAIT = 600  # seconds a test polls for the background tune (a loaded 2-core machine)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, backbone):
    return labelled_library(tmp_path_factory, backbone, CLASSES, 6)


@pytest.fixture
def library(indexed, tmp_path):
    shutil.copytree(indexed, tmp_path / "library")
    lib = Library(tmp_path / "library")
    yield lib
    lib.close()


def client_for(library, backbone, **config):
    app = make_app(library, backbone)
    app.config.update(config)
    return app, app.test_client()


def wait_for_end(client) -> dict:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        tuning = client.get("/api/status").get_json()["tuning"]
        if tuning["state"] != "running":
            return tuning
        time.sleep(0.2)
    raise AssertionError(f"the background tune did not end in {WAIT} s")


def test_a_background_tune_reports_progress_and_its_result(library, backbone):
    app, client = client_for(library, backbone, TUNE_CONFIG=NEVER_WINS)
    assert "tuning" not in client.get("/api/status").get_json()  # no key until a tune starts
    about = client.get("/about").get_data(as_text=True)
    assert 'id="tune-start"' in about and "Not measured on this library yet" in about

    answer = client.post("/api/tune")
    assert answer.status_code == 202
    assert answer.get_json()["tuning"]["action"] == "tune"
    done = wait_for_end(client)
    assert done["state"] == "done" and done["error"] is None
    report = done["report"]
    assert report["kept"] is False and report["frozen_accuracy"] == report["tuned_accuracy"]
    assert report["n_heldout"] == 18 and report["reembedded"] == 0  # every label scored once (by the folds' candidates)
    # The result is remembered by the library: the About page shows what it measured.
    assert library.state(LAST_TUNE_STATE)["labelled"] == 18
    about = client.get("/about").get_data(as_text=True)
    assert "was not kept" in about and "on 18 held-out labels" in about
    # The measure the keep rule reads (search.tune_decision.keep), beside the accuracies.
    assert report["loglik_gain"] == 0.0 and "the right labels' likelihood +0% on the mean" in about
    # Nothing to revert to: the representation is the first.
    refused = client.post("/api/tune/revert")
    assert refused.status_code == 409 and "first representation" in refused.get_json()["error"]["message"]


def test_a_tune_from_the_cli_holding_the_lock_refuses_a_web_tune(library, backbone):
    _, client = client_for(library, backbone)
    with tune_lock(library):  # what `lookalike tune` holds while it runs
        refused = client.post("/api/tune")
        assert refused.status_code == 409
        assert "already running" in refused.get_json()["error"]["message"]
        assert "tuning" not in client.get("/api/status").get_json()
    assert client.get("/api/status").status_code == 200  # requests never waited on it


def test_too_few_labels_refuse_a_tune(library, backbone):
    with library.Session.begin() as s:  # two photos of each class: none can be trained, stopped and scored
        keep = [row[0] for row in s.execute(select(Label.image_id).order_by(Label.image_id))][::3]
        s.execute(delete(Label).where(Label.image_id.not_in(keep)))
    _, client = client_for(library, backbone)
    refused = client.post("/api/tune")
    assert refused.status_code == 409 and "too few labels to tune" in refused.get_json()["error"]["message"]
    assert 'id="tune-blocked"' in client.get("/about").get_data(as_text=True)


def test_a_read_only_library_refuses_a_tune(indexed, backbone):
    library = Library(indexed, read_only=True)
    try:
        _, client = client_for(library, backbone)
        refused = client.post("/api/tune")
        assert refused.status_code == 503 and "read-only" in refused.get_json()["error"]["message"]
    finally:
        library.close()


def test_the_queue_hints_at_tuning_once_enough_labels_arrived(library, backbone, monkeypatch):
    from web import tuning

    _, client = client_for(library, backbone)
    monkeypatch.setattr(tuning, "FIRST_TUNE_LABELS", 18)
    assert 'id="tune-hint"' in client.get("/queue").get_data(as_text=True)
    library.save_state(LAST_TUNE_STATE, {"labelled": 18, "kept": False})  # a tune on these very labels
    assert 'id="tune-hint"' not in client.get("/queue").get_data(as_text=True)
    library.save_state(LAST_TUNE_STATE, {"labelled": 2, "kept": False})  # 16 labels since: 8x as many
    monkeypatch.setattr(tuning, "AGAIN_MIN", 10)
    page = client.get("/queue").get_data(as_text=True)
    assert 'id="tune-hint"' in page and "16 photos labelled since the last tune" in page
