"""Copies of soft, low-contrast photos, and photos shown in one app's frame.

A slightly blurred sweater on a grey carpet gives ORB 16 corners at its default FAST threshold: its
blurred, re-encoded, cropped and rotated copies had too few keypoints to verify, and its PDQ hash is
too uninformative (quality 23) to be trusted alone, so every one of them was lost. Corners are now
detected again at a lower threshold for such a photo (search/duplicates/verify.py). The same goes
for pale trousers on a wooden floor (9 corners).

Two different photos shown in the same app (status bar, title bar, comments, buttons around them)
gathered 14 matches on the shared interface, whose edges correlated 0.87 over the whole overlap,
while only a quarter of the middle (the photos) lined up: they were called copies. A whole-photo
match now needs half the middle to line up. Each screenshot is still a copy of its own photo.

Real clothing_small photos through the real indexer, among look-alikes of the same garments; the
photo folder is deleted before verification, which reads nothing but the stored signals.
"""

from __future__ import annotations

import pytest

from search.duplicates.candidates import find_duplicates
from tests.search.duplicates.edited_sets import edited_library, group_paths

SOFT = {
    "train/longsleeve/6d89acf9-e8b0-4231-9915-2854adb7a223.jpg": ["blur", "jpeg_q15", "crop80_centre", "palette32"],
    "train/pants/735b2cb6-8cd8-4103-8e8e-85888a6acb71.jpg": ["crop80_centre", "rotate4", "mirror_crop90"],
}
SCREENSHOTS = ["train/shirt/8033375c-8efe-40f6-a233-aa1577ab1b2c.jpg",
               "train/t-shirt/ad1cefda-61ff-45a9-be85-c08e4bfba327.jpg"]


@pytest.fixture(scope="module")
def library_and_expected(tmp_path_factory, backbone):
    edits = {**SOFT, **{rel: ["screenshot"] for rel in SCREENSHOTS}}
    library, expected = edited_library(tmp_path_factory.mktemp("soft"), backbone, edits)
    yield library, expected
    library.close()


def test_copies_of_soft_photos_are_found_and_two_photos_in_one_app_frame_stay_apart(library_and_expected):
    library, expected = library_and_expected
    groups = find_duplicates(library)
    assert group_paths(library, groups) == sorted(expected, key=sorted)
    assert all(p.why for g in groups for p in g.pairs)  # each pair says why it is a copy
