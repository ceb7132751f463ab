"""RAW+JPEG pairs of real RAW files: the copies tier groups each RAW with the camera's JPEG beside it
(even one graded and cropped past what pixels can match), nothing else with them, and the review
keeps the RAW, in the library and in `lookalike duplicates`."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from indexer.library import Library
from indexer.pipeline import index_folder
from indexer.schema import Image
from lookalike.cli import main
from search.duplicates.candidates import COPIES, find_duplicates
from search.duplicates.raw_pairs import raw_pairs
from search.duplicates.review import review, suggest_keep
from tests.conftest import SAMPLES
from tests.raw_photos import make_raw_shoot


@pytest.fixture(scope="module")
def shoot(tmp_path_factory, backbone):
    base = tmp_path_factory.mktemp("rawpairs")
    roles = make_raw_shoot(base / "photos", SAMPLES)
    library = Library(base / "library", create=True)
    index_folder(base / "photos", library, backbone, batch_size=4, workers=0)
    with library.Session() as s:
        ids = {path: i for i, path in s.execute(select(Image.id, Image.path))}
    yield library, {role: ids[path] for role, path in roles.items()}
    library.close()


def test_each_raw_pairs_with_the_camera_jpeg_of_its_name_and_folder(shoot):
    library, ids = shoot
    pairs = (("pair_raw", "pair_jpeg"), ("graded_raw", "graded_jpeg"))
    expected = sorted((min(ids[a], ids[b]), max(ids[a], ids[b])) for a, b in pairs)
    assert raw_pairs(library) == expected  # not the namesake in another folder, not a failed RAW


def test_the_copies_tier_groups_the_pairs_and_the_review_keeps_the_raw(shoot):
    library, ids = shoot
    groups = find_duplicates(library, kind=COPIES)
    assert sorted(sorted(g.image_ids) for g in groups) == sorted(
        sorted([ids[a], ids[b]]) for a, b in (("pair_raw", "pair_jpeg"), ("graded_raw", "graded_jpeg"))
    )
    with library.Session() as s:
        reviewed, rows = review(s, groups)
        for r in reviewed:
            raw = next(i for i in r.group.image_ids if rows[i].path.endswith(".dng"))
            assert r.suggestion.image_id == raw
            assert r.suggestion.reason == "the camera RAW (DNG)"
            assert {d.image_id: d.action for d in r.decisions} == {
                i: ("keep" if i == raw else "remove") for i in r.group.image_ids}


def test_the_raw_is_kept_even_where_the_jpeg_has_more_pixels(shoot):
    library, ids = shoot
    with library.Session() as s:
        raw, jpeg = s.get(Image, ids["pair_raw"]), s.get(Image, ids["pair_jpeg"])
        s.expunge_all()
    jpeg.width, jpeg.height = raw.width * 2, raw.height * 2  # an upscaled export beside the RAW
    assert suggest_keep([jpeg, raw]).image_id == raw.id


def test_the_duplicates_command_plans_to_remove_the_jpegs_only(shoot, tmp_path):
    library, _ = shoot
    plan = tmp_path / "remove.csv"
    result = CliRunner().invoke(main, ["duplicates", "--library", str(library.path), "--remove-csv", str(plan)])
    assert result.exit_code == 0, result.output
    assert "the camera RAW (DNG)" in result.output
    listed = plan.read_text().splitlines()[1:]
    assert sorted(line.split(",")[0] for line in listed) == ["shots/IMG_0001.JPG", "shots/IMG_0003.jpg"]


def test_a_namesake_of_another_capture_time_or_camera_is_another_shot(shoot):
    """A camera's file counter wraps at 9999: IMG_0001.CR2 of one year and IMG_0001.JPG of the next
    are two shots, and the JPEG must not be planned for removal as the RAW's copy."""
    from datetime import datetime, timedelta

    from search.duplicates.raw_pairs import same_shot

    when = datetime(2024, 5, 6, 9, 0, 0)
    assert same_shot((when, "Canon EOS 5D"), (when + timedelta(seconds=1), "Canon EOS 5D"))
    assert same_shot((when, "Canon EOS 5D"), (None, None))  # a JPEG exported without EXIF still pairs
    assert not same_shot((when, "Canon EOS 5D"), (when + timedelta(days=240), "Canon EOS 5D"))
    assert not same_shot((when, "Canon EOS 5D"), (when, "NIKON D750"))

    library, ids = shoot
    with library.Session.begin() as s:
        jpeg = s.get(Image, ids["pair_jpeg"])
        raw = s.get(Image, ids["pair_raw"])
        saved = (jpeg.taken_at, jpeg.camera)
        jpeg.taken_at, jpeg.camera = datetime(2031, 1, 1), raw.camera
    try:
        pair = tuple(sorted((ids["pair_raw"], ids["pair_jpeg"])))
        assert pair not in raw_pairs(library)
    finally:
        with library.Session.begin() as s:
            s.get(Image, ids["pair_jpeg"]).taken_at, s.get(Image, ids["pair_jpeg"]).camera = saved
    assert len(raw_pairs(library)) == 2
