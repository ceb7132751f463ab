"""Similar shots are one moment: bursts made from real photos (small shifts, crops, exposure changes,
capture times seconds apart) group; different photos of one subject do not; nothing in the tier is
marked for removal until a person chooses, and the suggested shot is the sharpest."""

from __future__ import annotations

from datetime import datetime, timedelta
from itertools import combinations

import pytest
from PIL import Image as PILImage
from PIL import ImageEnhance, ImageFilter
from sqlalchemy import select

from indexer.library import Library
from indexer.pipeline import index_folder
from indexer.schema import Image
from search.duplicates.candidates import SIMILAR, find_tiers, groups_of
from search.duplicates.moments import Capture, timed_together
from search.duplicates.review import UNDECIDED, removal_plan, review
from tests.conftest import SAMPLES
from tests.search.duplicates.exif import save_shot

CAMERA = ("Acme", "Burst 3000")
START = datetime(2024, 7, 14, 15, 30, 0)


def frames(img: PILImage.Image) -> list[PILImage.Image]:
    """A burst of one scene: the camera drifts a few pixels, zooms a little, the light changes, one
    frame is shaken (blurred)."""
    w, h = img.size
    return [
        img,
        img.crop((w // 40, h // 50, w, h)).resize((w, h)),
        img.crop((0, 0, w - w // 30, h - h // 40)).resize((w, h)),
        ImageEnhance.Brightness(img.crop((w // 60, 0, w - w // 60, h))).enhance(1.15).resize((w, h)),
        img.filter(ImageFilter.GaussianBlur(2.5)),
    ]


@pytest.fixture(scope="module")
def moments_library(tmp_path_factory, backbone):
    base = tmp_path_factory.mktemp("moments")
    photos = base / "photos"
    bursts = []
    for n, cls in enumerate(("shoes", "hat")):
        img = PILImage.open(sorted((SAMPLES / cls).glob("*.jpg"))[0]).convert("RGB")
        names = []
        for k, frame in enumerate(frames(img)):
            name = f"burst-{cls}/{k}.jpg"
            save_shot(frame, photos / name, START + timedelta(hours=n, seconds=2 * k), CAMERA)
            names.append(name)
        bursts.append(names)
    # Different photos of one subject, one camera: minutes apart; and others with no capture time.
    dresses = sorted((SAMPLES / "dress").glob("*.jpg"))
    for k, src in enumerate(dresses[:6]):
        save_shot(PILImage.open(src), photos / f"dress/{k}.jpg", START + timedelta(hours=5, minutes=3 * k), CAMERA)
    for k, src in enumerate(dresses[6:12]):
        save_shot(PILImage.open(src), photos / f"dress-undated/{k}.jpg", None)
    library = Library(base / "library", create=True)
    index_folder(photos, library, backbone, batch_size=8, workers=0)
    yield library, bursts
    library.close()


def path_groups(library, groups) -> list[set[str]]:
    with library.Session() as s:
        by_id = dict(s.execute(select(Image.id, Image.path)).all())
    return [{by_id[i] for i in g.image_ids} for g in groups]


def test_bursts_group_and_different_photos_of_one_subject_do_not(moments_library):
    library, bursts = moments_library
    tiers = find_tiers(library, similar_threshold=0.5)  # even at a low similarity
    groups = path_groups(library, groups_of(tiers, SIMILAR))
    burst_pairs = [pair for names in bursts for pair in combinations(names, 2)]
    together = sum(any(set(pair) <= g for g in groups) for pair in burst_pairs)
    assert together >= 0.9 * len(burst_pairs)
    assert not any(p.startswith("dress") for g in groups for p in g)
    assert all(p.why and p.why.startswith("one moment") for p in tiers.similar)
    # A burst's frames are two exposures each: never the copies tier's, however alike.
    copied = path_groups(library, groups_of(tiers, "copies"))
    assert not any(p.startswith("burst") for g in copied for p in g)


def test_nothing_in_the_similar_tier_is_marked_for_removal_and_the_sharpest_is_suggested(moments_library):
    library, _ = moments_library
    groups = groups_of(find_tiers(library), SIMILAR)
    assert groups
    with library.Session() as s:
        reviewed, rows = review(s, groups)
        assert removal_plan(s, groups) == []
    for r in reviewed:
        assert all(d.action == UNDECIDED and not d.chosen for d in r.decisions)
        assert not rows[r.suggestion.image_id].path.endswith("/4.jpg")  # the shaken frame
        assert r.suggestion.reason.startswith("sharpest")


def test_capture_times_decide_when_they_can():
    t = datetime(2024, 1, 1, 12, 0, 0)
    assert timed_together(Capture(t, "A"), Capture(t + timedelta(seconds=10), "A"))
    assert timed_together(Capture(t, "A"), Capture(t + timedelta(seconds=11), "A")) is False
    assert timed_together(Capture(t, "A"), Capture(t, "B")) is False
    assert timed_together(Capture(t, "A"), Capture(None, "A")) is None
