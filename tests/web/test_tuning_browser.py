"""The About page's Tune button in a real Chromium: the tune runs in the background, the page follows it."""

from __future__ import annotations

import shutil

import pytest

from indexer.finetune import TuneConfig
from indexer.library import Library
from search.tuning import LAST_TUNE_STATE
from tests.web.library_setup import label_every_other, make_app, serving
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
    with serving(app) as url:
        yield url
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
    # Beside the accuracies, the measure the keep rule reads (untouched weights: no change).
    expect(page.locator("#tune-progress")).to_contain_text("the right labels' likelihood +0%")
    expect(page.locator("#tune-start")).to_be_enabled()
    assert live_library.state(LAST_TUNE_STATE)["kept"] is False
    shot(page, "about-tuned")
    page.reload()
    expect(page.locator("#tune-expected")).to_contain_text("was not kept")
    # Finished before this page opened: the page still shows how it ended.
    expect(page.locator("#tune-progress")).to_have_attribute("data-state", "done")


def test_check_labels_keeps_one_and_corrects_another_in_one_click_each(page, live_library):  # noqa: F811
    from sqlalchemy import select

    from indexer.schema import Image, Label

    with live_library.Session() as s:  # two labelled shoes and two labelled dresses say "hat"
        rows = s.execute(select(Label.image_id, Image.folder).join(Image).order_by(Label.image_id)).all()
    flipped = [i for i, folder in rows if folder == "shoes"][:2] + [i for i, folder in rows if folder == "dress"][:2]
    for image_id in flipped:
        answer = page.request.put(f"/api/images/{image_id}/label", data={"label": "hat"})
        assert answer.ok, answer.text()
    page.goto("/labels/check")
    items = page.locator(".check-item")
    expect(items.first).to_be_visible()
    listed = [int(x) for x in items.evaluate_all("els => els.map(e => e.dataset.id)")]
    assert set(flipped) & set(listed) and len(listed) >= 3  # 3 labels a class: some flips hide in the noise
    shot(page, "labels-check")
    found = int(page.locator("#check-found").inner_text())
    assert found >= len(listed) and page.locator("#check-kept").is_hidden()  # nothing kept yet

    # A page that lists fewer than were found: acting on its last one brings the next, not "none".
    page.goto("/labels/check?limit=1")
    expect(items).to_have_count(1)
    first = int(items.first.get_attribute("data-id"))
    items.first.locator("button.keep").click()
    expect(items).to_have_count(1)
    expect(items.first).not_to_have_attribute("data-id", str(first))
    expect(page.locator("#check-found")).to_have_text(str(found - 1))
    expect(page.locator("#check-kept")).to_have_text("1")
    page.goto("/labels/check")
    listed = [int(x) for x in items.evaluate_all("els => els.map(e => e.dataset.id)")]
    assert first not in listed and len(listed) >= 2
    found -= 1
    keep_id, fix_id = listed[:2]
    page.locator(f'.check-item[data-id="{keep_id}"] button.keep').click()
    expect(page.locator(f'.check-item[data-id="{keep_id}"]')).to_have_count(0)
    # The summary follows each click, as a reload would count: one fewer listed, one more kept.
    expect(page.locator("#check-found")).to_have_text(str(found - 1))
    expect(page.locator("#check-kept")).to_have_text("2")
    expect(page.locator("#check-kept")).to_be_visible()
    expect(page.locator("#check-summary")).to_contain_text("2 labels you kept are not listed")
    with live_library.Session() as s:
        before = s.get(Label, keep_id).label
    fix = page.locator(f'.check-item[data-id="{fix_id}"]')
    suggested = fix.get_attribute("data-suggested")
    fix.locator("button.correct").click()
    expect(page.locator(f'.check-item[data-id="{fix_id}"]')).to_have_count(0)
    expect(page.locator("#check-found")).to_have_text(str(found - 2))  # corrected: no longer listed
    expect(page.locator("#check-kept")).to_have_text("2")
    with live_library.Session() as s:
        assert s.get(Label, keep_id).label == before  # keeping changes nothing
        kept_label = page.request.get("/api/labels/suspicious").json()["kept"]
        assert kept_label == 2 and s.get(Label, fix_id).label == suggested
    page.reload()
    listed = [int(x) for x in page.locator(".check-item").evaluate_all("els => els.map(e => e.dataset.id)")]
    assert keep_id not in listed and fix_id not in listed
    page.set_viewport_size({"width": 360, "height": 740})  # a phone: nothing wider than the screen
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 360
    items = page.locator(".check-item")
    while (left := items.count()) > 0:  # keep the rest, one by one
        items.first.locator("button.keep").click()
        expect(items).to_have_count(left - 1)
    expect(page.locator("#check-empty")).to_have_text("No label looks wrong.")  # as after a reload
    counts = page.request.get("/api/labels/suspicious").json()  # what a reload would show
    expect(page.locator("#check-found")).to_have_text(str(counts["found"]))
    expect(page.locator("#check-kept")).to_have_text(str(counts["kept"]))
    assert counts["kept"] > 1
