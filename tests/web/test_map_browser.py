"""The Map page in a real Chromium on a live server: draw, hover, lasso a cluster, label it, find it in SQLite.

Screenshots go to tests/artifacts/ (map.png, map-lasso.png, map-labelled.png).
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from indexer.schema import INDEXED, Image, Label
from tests.web import test_browser
from tests.web.library_setup import ARTIFACTS

# The live server, its library and the Chromium page of the browser tests, as fixtures here too.
browser = test_browser.browser
live_library = test_browser.live_library
live_server = test_browser.live_server
page = test_browser.page

playwright = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect  # noqa: E402

pytestmark = pytest.mark.browser


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Convex hull, counter-clockwise (Andrew's monotone chain)."""
    pts = sorted(set(points))

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    upper: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def grown(polygon, by: float):
    """The polygon pushed `by` pixels outwards from its centre, so points on its edge are inside."""
    cx = sum(p[0] for p in polygon) / len(polygon)
    cy = sum(p[1] for p in polygon) / len(polygon)
    out = []
    for x, y in polygon:
        d = max(((x - cx) ** 2 + (y - cy) ** 2) ** 0.5, 1e-6)
        out.append((x + (x - cx) / d * by, y + (y - cy) / d * by))
    return out


def open_map(page, count: int) -> None:
    page.goto("/map")
    # The first visit computes the layout in the background; the page polls until it is there.
    expect(page.locator("#map-count")).to_have_text(f"{count} photos", timeout=300_000)
    expect(page.locator("#map-note")).to_be_hidden(timeout=300_000)


def test_map_draws_hovers_and_labels_a_lassoed_cluster(page, live_library):
    with live_library.Session() as s:
        indexed = s.scalars(select(Image.id).where(Image.status == INDEXED)).all()
        shoes = s.scalars(select(Image.id).where(Image.folder == "shoes", Image.status == INDEXED)).all()
    open_map(page, len(indexed))
    assert page.evaluate("() => LKMap.renderer") in ("webgl", "2d")
    expect(page.locator("#map-legend")).to_contain_text("unlabelled")
    # Something was really drawn: the canvas is not one flat colour.
    colours = page.evaluate("""() => {
        const c = document.getElementById('map-canvas');
        const copy = document.createElement('canvas'); copy.width = c.width; copy.height = c.height;
        const ctx = copy.getContext('2d'); ctx.drawImage(c, 0, 0);
        const px = ctx.getImageData(0, 0, copy.width, copy.height).data;
        const seen = new Set();
        for (let i = 0; i < px.length; i += 4 * 97) seen.add(px[i] << 16 | px[i + 1] << 8 | px[i + 2]);
        return seen.size;
    }""")
    assert colours > 3
    shot(page, "map")

    box = page.locator("#map-stage").bounding_box()

    def at(image_id: int) -> tuple[float, float]:
        x, y = page.evaluate("(id) => LKMap.toScreen(id)", image_id)
        return box["x"] + x, box["y"] + y

    # Hovering a point shows its thumbnail.
    x, y = at(shoes[0])
    page.mouse.move(x, y)
    expect(page.locator("#map-tip")).to_be_visible()
    expect(page.locator("#map-tip-img")).to_have_attribute("src", re.compile(r"^/thumbs/\d+/small\.jpg$"))

    # Draw a lasso around the shoes.
    page.click("#map-lasso")
    ring = grown(hull([at(i) for i in shoes]), 14)
    page.mouse.move(*ring[0])
    page.mouse.down()
    for point in ring[1:] + ring[:1]:
        page.mouse.move(*point, steps=6)
    page.mouse.up()
    selected = page.evaluate("() => LKMap.selectedIds()")
    assert set(shoes) <= set(selected)
    expect(page.locator("#map-selected")).to_have_text(f"{len(selected)} selected")
    expect(page.locator("#map-thumbs li")).to_have_count(len(selected))
    shot(page, "map-lasso")

    page.fill("#map-label", "lasso shoes")
    page.click("#map-apply")
    expect(page.locator("#toast")).to_contain_text(f"{len(selected)} photos labelled")
    with live_library.Session() as s:
        stored = dict(s.execute(select(Label.image_id, Label.label).where(Label.image_id.in_(indexed))).all())
        sources = set(s.scalars(select(Label.source).where(Label.image_id.in_(selected))))
    assert {i for i, label in stored.items() if label == "lasso shoes"} == set(selected)
    assert sources == {"user"}
    expect(page.locator("#map-legend")).to_contain_text(f"lasso shoes {len(selected)}")
    page.click("#map-clear")
    expect(page.locator("#map-strip")).to_be_hidden()
    page.select_option("#map-colour", "suggested")
    expect(page.locator("#map-legend")).to_contain_text("lasso shoes")
    shot(page, "map-labelled")

    # A click on a point opens its photo.
    page.click("#map-pan")
    x, y = at(shoes[0])
    page.mouse.click(x, y)
    expect(page).to_have_url(re.compile(rf"/images/{shoes[0]}$"))
