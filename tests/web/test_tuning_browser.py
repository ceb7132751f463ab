"""The About page's Tune button in a real Chromium: the tune runs in the background, the page follows it."""

from __future__ import annotations

import shutil
import threading

import pytest
from werkzeug.serving import make_server

from indexer.finetune import TuneConfig
from indexer.library import Library
from search.tuning import LAST_TUNE_STATE
from tests.web.library_setup import label_every_other, make_app
from tests.web.test_browser import browser, page, shot  # noqa: F401  (fixtures, over this module's live_server)
from web.context import EXTENSION

playwright = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.browser

WAIT_MS = 600_000  # a tune on a loaded 2-core machine


@pytest.fixture(scope="module")
def live_library(small_library_dir, tmp_path_factory):
    source, _ = small_library_dir
    path = tmp_path_factory.mktemp("tune-browser") / "library"
    shutil.copytree(source, path)
    library = Library(path)
    label_every_other(library)
    yield library
    library.close()


@pytest.fixture(scope="module")
def live_server(live_library, backbone):
    app = make_app(live_library, backbone)
    app.config["TUNE_CONFIG"] = TuneConfig(max_epochs=0, batch_size=8)  # quick, and never kept
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)
    tuner = app.extensions.get("lookalike-tuning")
    if tuner is not None and tuner.thread is not None:
        tuner.thread.join(timeout=WAIT_MS / 1000)
    trainer = app.extensions[EXTENSION].labeller.trainer
    assert trainer.close(timeout=120), "the background retraining did not finish"


def test_the_about_page_tunes_in_the_background_and_shows_the_result(page, live_library):  # noqa: F811
    page.goto("/about")
    expect(page.locator("#representation")).to_contain_text("not tuned on your labels")
    expect(page.locator("#tune-expected")).to_contain_text("Not measured on this library yet")
    page.locator("#tune-start").click()
    expect(page.locator("#tune-start")).to_be_disabled()
    expect(page.locator("#tune-progress")).to_have_attribute("data-state", "done", timeout=WAIT_MS)
    expect(page.locator("#tune-progress")).to_contain_text("Tuned, not kept: held-out accuracy")
    expect(page.locator("#tune-start")).to_be_enabled()
    assert live_library.state(LAST_TUNE_STATE)["kept"] is False
    shot(page, "about-tuned")
    page.reload()
    expect(page.locator("#tune-expected")).to_contain_text("was not kept")
    # Finished before this page opened: the page still shows how it ended.
    expect(page.locator("#tune-progress")).to_have_attribute("data-state", "done")
