"""Long names in a real Chromium: a folder, file names and labels with no place to break a line
(as long as a label may be) must not make any page wider than the screen, on a desktop or a phone."""

from __future__ import annotations

import shutil

import pytest
from sqlalchemy import select

from indexer.library import Library
from indexer.pipeline import index_folder
from indexer.schema import Image
from search.labelling.labels import MAX_LABEL_LENGTH, set_label
from tests.conftest import SAMPLES
from tests.web.library_setup import make_app, serving
from tests.web.test_browser import PHONES, browser, shot  # noqa: F401  (fixture)
from web.context import EXTENSION

playwright = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.browser

FOLDER = "holiday_" + "x" * 150
LABELS = {cls: (cls + "_" + "w" * MAX_LABEL_LENGTH)[:MAX_LABEL_LENGTH] for cls in ("hat", "dress")}
WAIT_MS = 120_000  # the map is laid out in the background
SCREENS = {"desktop": {"width": 1360, "height": 900}, "phone": PHONES["390x844"]}


@pytest.fixture(scope="module")
def long_library(tmp_path_factory, backbone):
    """Four hats and four dresses in one long-named folder under long file names; all but one of
    each class labelled with a label of the longest length allowed."""
    base = tmp_path_factory.mktemp("long-names")
    folder = base / "photos" / FOLDER
    folder.mkdir(parents=True)
    for cls in LABELS:
        for i, photo in enumerate(sorted((SAMPLES / cls).glob("*.jpg"))[:4]):
            shutil.copy(photo, folder / f"IMG_{cls}_{i}_{'y' * 180}.jpg")
    library = Library(base / "library", create=True)
    index_folder(base / "photos", library, backbone, workers=0)
    with library.Session.begin() as s:
        for image_id, path in s.execute(select(Image.id, Image.path).order_by(Image.path)):
            cls = "hat" if "_hat_" in path else "dress"
            if "_0_" not in path:
                set_label(s, image_id, LABELS[cls], source="imported")
    yield library
    library.close()


@pytest.fixture(scope="module")
def live_server(long_library, backbone):
    app = make_app(long_library, backbone)
    with serving(app) as url:
        yield url
    trainer = app.extensions[EXTENSION].labeller.trainer
    assert trainer.close(timeout=120), "the background retraining did not finish"


@pytest.mark.parametrize("screen", list(SCREENS))
def test_long_names_and_labels_fit_the_screen(browser, live_server, long_library, screen):  # noqa: F811
    with long_library.Session() as s:
        ids = dict(s.execute(select(Image.path, Image.id)).all())
    labelled = next(i for path, i in ids.items() if "_1_" in path)
    unlabelled = next(i for path, i in ids.items() if "_0_" in path)
    viewport = SCREENS[screen]
    context = browser.new_context(base_url=live_server, viewport=viewport)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    problems: list[str] = []
    try:
        for url, ready in [
            ("/", "#grid .tile"), ("/about", "#label-counts"), ("/queue", "#q-choices button"),
            ("/map", "#map-legend li"), (f"/images/{labelled}", "#neighbours .tile"),
            (f"/images/{unlabelled}", "#suggested-label"), ("/labels/check", "#check-summary"),
            ("/duplicates", "h1"), (f"/search?like={labelled}", "#results .tile"),
        ]:
            page.goto(url)
            expect(page.locator(ready).first).to_be_visible(timeout=WAIT_MS)
            page.wait_for_load_state("networkidle")
            wide = page.evaluate("() => document.documentElement.scrollWidth")
            if wide > viewport["width"]:
                problems.append(f"{url} is {wide} px wide on a {viewport['width']} px screen")
                name = url.strip("/").split("/")[0].split("?")[0] or "browse"
                shot(page, f"long-names-{screen}-{name}", full_page=False)
        assert not problems, "\n".join(problems)
        assert not errors, errors
    finally:
        context.close()
