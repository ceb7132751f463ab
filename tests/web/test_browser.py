"""A real Chromium against a live server on the sample photos (after datasette's test_playwright.py).

Each page is screenshotted into tests/artifacts/ for a person to look at.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from indexer.library import Library
from indexer.schema import INDEXED, DuplicateChoice, Image, Label, SuggestedLabel
from search.duplicates.review import dismissed_pairs
from tests.web.library_setup import ARTIFACTS, label_every_other, make_app, near_duplicate_of, serving
from web.context import EXTENSION

playwright = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def live_library(small_library_dir, tmp_path_factory):
    """62 real photos, two of them near-duplicate copies, and a broken file; half labelled."""
    source, copies = small_library_dir
    path = tmp_path_factory.mktemp("browser") / "library"
    shutil.copytree(source, path)
    library = Library(path)
    library.copies = copies
    label_every_other(library)
    yield library
    library.close()


@pytest.fixture(scope="module")
def live_server(live_library, backbone):
    app = make_app(live_library, backbone)
    with serving(app) as url:
        yield url
    trainer = app.extensions[EXTENSION].labeller.trainer
    assert trainer.close(timeout=120), "the background retraining did not finish"  # before the library closes


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu"],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server, viewport={"width": 1360, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    yield page
    context.close()
    assert not errors, f"errors in the browser console: {errors}"


def shot(page, name: str, *, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    # A full-page picture should show every thumbnail, not only those scrolled into view.
    page.evaluate("() => document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager')")
    page.wait_for_load_state("networkidle")
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)


def label_of(library, image_id: int) -> tuple[str, str] | None:
    with library.Session() as s:
        row = s.get(Label, image_id)
        return (row.label, row.source) if row else None


def counts(library) -> tuple[int, int, int]:
    with library.Session() as s:
        images = s.scalar(select(func.count(Image.id)))
        labelled = s.scalar(select(func.count(Label.image_id)))
        hats = s.scalar(select(func.count(Label.image_id)).where(Label.label == "hat"))
    return images, labelled, hats


def test_browse_and_filter(page, live_library):
    images, labelled, hats = counts(live_library)
    page.goto("/")
    expect(page.locator("#grid .tile")).to_have_count(min(images, 60))
    expect(page.locator("#showing")).to_contain_text(f"of {images} photos")
    expect(page.locator(".counts")).to_contain_text(f"{images - labelled} unlabelled")
    img = page.locator("#grid .tile img").first
    img.evaluate("img => img.decode()")  # thumbnails really load and decode
    assert img.evaluate("img => img.naturalWidth") > 0
    shot(page, "browse")

    page.select_option("select[name=label]", "hat")
    page.click("button:has-text('Apply')")
    expect(page.locator("#grid .tile")).to_have_count(hats)
    expect(page.locator("#grid .chip")).to_have_text(["hat"] * hats)

    page.goto("/?status=failed")
    expect(page.locator("#grid .tile")).to_have_count(1)
    expect(page.locator("#grid .broken")).to_contain_text("corrupt image")


def test_photo_page_shows_neighbours_and_accepting_the_suggestion_stores_it(page, live_library):
    with live_library.Session() as s:
        unlabelled = s.scalars(
            select(Image.id)
            .where(Image.status == INDEXED, Image.id.not_in(select(Label.image_id)))
            .order_by(Image.path)
        ).first()
    page.goto(f"/images/{unlabelled}")
    expect(page.locator("#neighbours .tile")).to_have_count(12)
    scores = [float(t) for t in page.locator("#neighbours .score").all_text_contents()]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1
    expect(page.locator("#suggestion")).to_be_visible()
    suggested = page.locator("#suggested-label").text_content()
    assert page.locator("#suggestion .voter").count() >= 1
    expect(page.locator("#photo-img")).to_be_visible()
    shot(page, "photo")

    page.click("#accept")
    expect(page.locator("#label-chip .chip")).to_have_text(suggested)
    expect(page.locator("#label-source")).to_have_text("accepted")  # a page opened unlabelled showed none
    assert label_of(live_library, unlabelled) == (suggested, "accepted")

    page.click("#clear-label")
    expect(page.locator("#label-chip .chip")).to_have_text("unlabelled")
    expect(page.locator("#label-source")).to_have_text("")
    assert label_of(live_library, unlabelled) is None


def test_the_accept_key_does_nothing_where_the_page_offers_no_accept(page, live_library):
    """A labelled photo whose neighbours agree shows no Accept button; the A key rewrote its label
    anyway, turning an imported (or typed) label into an accepted one."""
    with live_library.Session() as s:
        labelled = s.execute(select(Label.image_id, Label.label).order_by(Label.image_id)).all()
    image_id, label = next(
        (i, lab) for i, lab in labelled
        if (page.request.get(f"/api/images/{i}/suggestion").json()["suggestion"] or {}).get("label") == lab
    )
    page.goto(f"/images/{image_id}")
    expect(page.locator("#suggestion")).to_contain_text("Neighbours agree")
    expect(page.locator("#accept")).to_have_count(0)
    # The key's handler calls fetch at once, so what it sent is known when the key press returns.
    page.evaluate("""() => {
      window.sent = [];
      const fetch = window.fetch;
      window.fetch = (url, options) => { window.sent.push(`${options.method} ${url}`); return fetch(url, options); };
    }""")
    page.keyboard.press("a")
    assert page.evaluate("() => window.sent") == []
    assert label_of(live_library, image_id) == (label, "imported")


def test_upload_finds_the_near_duplicate_first_and_labels_several(page, live_library, tmp_path):
    with live_library.Session() as s:
        original = s.scalars(select(Image).where(Image.folder == "shoes").order_by(Image.path)).first()
    copy = tmp_path / "copy-of-a-shoe.jpg"
    copy.write_bytes(near_duplicate_of(live_library.root / original.path))

    page.goto("/search")
    page.set_input_files("#file", str(copy))
    expect(page.locator("#results .tile")).to_have_count(48)
    first = page.locator("#results .tile").first
    assert int(first.get_attribute("data-id")) == original.id
    assert float(first.locator(".score").text_content()) > 0.9
    expect(page.locator("#query-img")).to_be_visible()
    shot(page, "search")

    tiles = page.locator("#results .tile")
    ids = [int(tiles.nth(i).get_attribute("data-id")) for i in (1, 2)]
    for i in (1, 2):
        tiles.nth(i).locator(".pick").check()
    expect(page.locator("#selected-count")).to_have_text("2 selected")
    page.fill("#batch-label", "<b>boots</b>")
    page.click("#batch-apply")
    expect(tiles.nth(1).locator(".chip")).to_have_text("<b>boots</b>")  # shown as text, not markup
    assert [label_of(live_library, i) for i in ids] == [("<b>boots</b>", "user")] * 2


def test_queue_accepts_with_a_key_and_skips(page, live_library):
    page.goto("/queue")
    expect(page.locator("#q-suggested")).to_be_visible()
    expect(page.locator("#q-voters .voter").first).to_be_visible()
    shot(page, "queue")
    first_path = page.locator("#q-path").text_content()
    suggested = page.locator("#q-suggested").text_content()
    with live_library.Session() as s:
        image_id = s.scalar(select(Image.id).where(Image.path == first_path))

    page.keyboard.press("Enter")
    expect(page.locator("#done")).to_have_text("1")
    assert label_of(live_library, image_id) == (suggested, "accepted")
    expect(page.locator("#q-path")).not_to_have_text(first_path)

    before = page.locator("#q-path").text_content()
    page.keyboard.press("s")
    expect(page.locator("#q-path")).not_to_have_text(before)


def suggestions_now(library) -> dict[int, tuple[str | None, float]]:
    with library.Session() as s:
        return {i: (lab, c) for i, lab, c in s.execute(select(SuggestedLabel.image_id, SuggestedLabel.label,
                                                              SuggestedLabel.confidence))}


def test_a_label_retrains_the_head_in_the_background_and_the_queue_follows(page, live_library):
    page.goto("/queue")
    status = page.locator("#q-learning")
    # The first visit starts a training in the background; the page polls until it is current.
    expect(status).to_have_attribute("data-state", "current", timeout=120_000)
    trained_on = int(re.search(r"trained on (\d+) labels", status.text_content()).group(1))
    before = suggestions_now(live_library)

    page.keyboard.press("Enter")  # accept the suggestion: one more label
    expect(page.locator("#done")).to_have_text("1")
    expect(status).to_contain_text(f"trained on {trained_on + 1} labels", timeout=120_000)
    after = suggestions_now(live_library)
    assert after != before  # the retrained head refreshed the suggestions
    shown = page.locator("#q-path").text_content()
    with live_library.Session() as s:
        shown_id = s.scalar(select(Image.id).where(Image.path == shown))
    expect(page.locator("#q-suggested")).to_have_text(after[shown_id][0])
    shot(page, "queue-learned")


def test_duplicates_review_ends_in_choices_and_dismissals(page, live_library):
    page.goto("/duplicates")
    expect(page.locator("#tier-copies")).to_have_attribute("aria-current", "page")
    groups = page.locator(".group")
    expect(groups).to_have_count(2)
    paths = sorted(sorted(g.locator(".name").all_text_contents()) for g in groups.all())
    assert paths == sorted(sorted(pair) for pair in live_library.copies.items())
    first = groups.first
    expect(first.locator(".keep-reason")).to_contain_text("keep suggested:")
    suggested = first.locator(".tile:has(.chip.suggested)")
    expect(suggested).to_have_count(1)
    expect(suggested.locator("input[value=keep]")).to_be_checked()
    shot(page, "duplicates")

    # Keep the other copy too: the choice is stored at once.
    other = first.locator(".tile:not(:has(.chip.suggested))").first
    other_id = int(other.get_attribute("data-id"))
    other.locator("input[value=keep]").check()
    expect(other).to_have_attribute("data-saved", "keep")
    with live_library.Session() as s:
        assert s.get(DuplicateChoice, other_id).choice == "keep"

    # "Not duplicates": the group leaves the page, and stays away after a reload.
    ids = sorted(int(t.get_attribute("data-id")) for t in first.locator(".tile").all())
    first.locator("button.dismiss").click()
    expect(page.locator(".group")).to_have_count(1)
    with live_library.Session() as s:
        assert (ids[0], ids[1]) in dismissed_pairs(s, "copies")
    page.reload()
    expect(page.locator(".group")).to_have_count(1)

    page.click("#tier-similar")
    expect(page.locator("#tier-similar")).to_have_attribute("aria-current", "page")
    expect(page.locator("#threshold")).to_be_visible()
    shot(page, "duplicates-similar")


def test_about_page(page):
    page.goto("/about")
    expect(page.locator("#label-counts")).to_contain_text("hat")
    expect(page.locator("#backbone")).to_contain_text("efficientnet_lite0")
    expect(page.locator("#knn-accuracy")).to_have_text(re.compile(r"\d+%"))
    expect(page.locator("#methods")).to_contain_text("linear probe")
    expect(page.locator("#methods .chosen")).to_contain_text("(used)")
    expect(page.locator("#label-efficiency")).to_contain_text("of the collection correctly")
    shot(page, "about")


# -- phones ------------------------------------------------------------------------------------------

PHONES = {"360x740": {"width": 360, "height": 740}, "390x844": {"width": 390, "height": 844}}
# Whether each element of a selector lies within the viewport's width and is the one a tap at its
# centre reaches (not clipped by its container, nor covered by another element): what "on the screen
# and usable" means for a link or a button. Scrolled to first, one at a time, where it is below.
OFF_SCREEN = """(selector) => {
  const width = document.documentElement.clientWidth;
  const bad = [];
  for (const el of document.querySelectorAll(selector)) {
    el.scrollIntoView({block: "nearest", inline: "nearest"});
    const r = el.getBoundingClientRect();
    const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
    if (r.width === 0 || r.left < 0 || r.right > width || !(hit && (hit === el || el.contains(hit))))
      bad.push(`${el.textContent.trim()} at ${Math.round(r.left)}..${Math.round(r.right)} of ${width}`);
  }
  window.scrollTo(0, 0);
  return bad;
}"""


def phone_pages(live_library) -> list[str]:
    with live_library.Session() as s:
        image_id = s.scalar(select(Image.id).where(Image.status == INDEXED).limit(1))
    return ["/", "/search", "/map", "/queue", "/duplicates", "/about", f"/images/{image_id}"]


@pytest.mark.parametrize("phone", list(PHONES))
def test_every_page_fits_a_phone(browser, live_server, live_library, phone):
    """Issue 22, items 19-20: on a phone the navigation cut "Duplicates" and hid "About", and the
    queue's photo, wider than the screen, pushed the label buttons out of sight."""
    viewport = PHONES[phone]
    context = browser.new_context(base_url=live_server, viewport=viewport, device_scale_factor=2,
                                  is_mobile=True, has_touch=True)
    page = context.new_page()
    problems: list[str] = []
    try:
        for url in phone_pages(live_library):
            page.goto(url)
            page.wait_for_load_state("networkidle")
            name = url.strip("/").split("/")[0] or "browse"
            shot(page, f"phone-{phone}-{name}", full_page=False)  # the first screen, as the phone shows it
            wide = page.evaluate("() => document.documentElement.scrollWidth")
            if wide > viewport["width"]:
                problems.append(f"{url} is {wide} px wide")
            problems += [f"{url}: {link}" for link in page.evaluate(OFF_SCREEN, ".top nav a, .top .brand")]
            assert page.locator(".top nav a").count() == 6
        page.goto("/queue")
        expect(page.locator("#q-suggested")).to_be_visible()
        photo = page.locator("#q-img").bounding_box()
        assert photo is not None
        if photo["x"] < 0 or photo["x"] + photo["width"] > viewport["width"]:
            problems.append(f"the queue's photo spans {photo['x']:.0f}..{photo['x'] + photo['width']:.0f}")
        # The label buttons: inside the screen's width, and the first of them on the first screen.
        problems += [f"/queue: {b}" for b in page.evaluate(OFF_SCREEN, "#q-choices button, #q-form button")]
        first_choice = page.locator("#q-choices button").first.bounding_box()
        assert first_choice is not None
        if first_choice["y"] + first_choice["height"] > viewport["height"]:
            problems.append(f"the first label button is below the first screen, at {first_choice['y']:.0f}")
        shot(page, f"phone-{phone}-queue", full_page=False)
        assert not problems, "\n".join(problems)
    finally:
        context.close()
