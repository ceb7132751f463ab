"""Duplicate signals: PDQ hashes of real photos survive edits, tell different photos apart, are
stored by the pipeline in the batch's transaction, and are added to libraries indexed without them."""

from __future__ import annotations

import shutil
from itertools import combinations

import pytest
from PIL import Image as PILImage
from sqlalchemy import delete, func, select

from bench.copies import TRANSFORMS
from indexer.hashes import SIGNALS_VERSION, compute_signals, hamming, missing_signals
from indexer.imageio import load_image
from indexer.library import Library
from indexer.pipeline import index_folder
from indexer.schema import FAILED, Image, ImageSignalsRow
from search.duplicates.candidates import HASH_SURE
from tests.conftest import SAMPLES, TEST_DATA

# Edits that keep the whole picture: the hash alone must find them. (Crops, captions, letterboxes
# and rotations change the framing; verification finds those, tests/search/test_verify.py.)
HASH_VISIBLE = ["jpeg_q15", "grayscale", "squash", "thumb96", "brightness_contrast", "mirror",
                "webp_half", "blur", "palette32", "watermark"]


def photos(cls: str, n: int) -> list:
    return sorted((SAMPLES / cls).glob("*.jpg"))[:n]


def signals_of(img: PILImage.Image):
    # Through a JPEG file and load_image, as the indexer sees a copy on disk.
    return compute_signals(img.convert("RGB"))


def distance(a, b) -> int:
    """What search/duplicates.py uses: the smaller of photo-photo and mirror-photo."""
    return min(hamming(a.pdq, b.pdq), hamming(a.pdq_mirror, b.pdq))


@pytest.mark.parametrize("transform", HASH_VISIBLE)
def test_the_hash_finds_edited_copies_of_real_photos(transform, tmp_path):
    for src in photos("hat", 2) + photos("pants", 2):
        original, _ = load_image(src)
        path = tmp_path / f"{src.stem}-{transform}.jpg"
        TRANSFORMS[transform](original).save(path, quality=95)
        copy, _ = load_image(path)
        assert distance(compute_signals(original), compute_signals(copy)) <= HASH_SURE, src.name


def test_different_photos_of_the_same_kind_are_far_apart():
    signals = [compute_signals(load_image(p)[0]) for cls in ("dress", "outwear", "shoes") for p in photos(cls, 12)]
    closest = min(distance(a, b) for a, b in combinations(signals, 2))
    assert closest > HASH_SURE


def test_the_mirror_hash_is_the_hash_of_the_mirrored_photo():
    img, _ = load_image(photos("shirt", 1)[0])
    a = compute_signals(img)
    b = compute_signals(img.transpose(PILImage.Transpose.FLIP_LEFT_RIGHT))
    assert hamming(a.pdq_mirror, b.pdq) <= 4 and hamming(a.pdq, b.pdq_mirror) <= 4
    assert hamming(a.pdq, b.pdq) > HASH_SURE  # the plain hash alone would miss the mirror
    assert len(a.pdq) == 32 and 0 <= a.quality <= 100


def test_turn_and_region_hashes_are_pdqhashs():
    """indexer/features.py computes PDQ of its 64 x 64 copies with numpy, 13 at once: each hash must
    be the one pdqhash computes, as the whole photo's is, or a crop would not meet its original. The
    turns are pdqhash's bit for bit; the regions are resized in luma rather than in RGB, so a bit
    whose coefficient sits at the median may differ by the rounding of the colour channels."""
    import cv2
    import numpy as np
    import pdqhash

    from indexer.features import REGIONS, TURNS, _span, region_hashes, turn_hashes

    def pdq(rgb) -> bytes:
        return np.packbits(pdqhash.compute(np.ascontiguousarray(rgb))[0]).tobytes()

    distances = []
    for cls in ("dress", "hat", "pants", "shoes"):
        for path in photos(cls, 3):
            img = np.asarray(load_image(path)[0].convert("RGB"))
            small = cv2.resize(img, (64, 64), interpolation=cv2.INTER_AREA)
            assert turn_hashes(small) == b"".join(pdq(np.rot90(small, k=t // 90)) for t in TURNS)
            thumb = img[::3, ::3]
            h, w = thumb.shape[:2]
            ours = region_hashes(thumb)
            for i, (left, t, r, b) in enumerate(REGIONS):
                region = thumb[_span(t, b, h), _span(left, r, w)]
                theirs = pdq(cv2.resize(region, (64, 64), interpolation=cv2.INTER_AREA))
                distances.append(hamming(ours[32 * i : 32 * (i + 1)], theirs))
    assert len(distances) == 120
    assert max(distances) <= 12  # of 256 bits; a crop meets its original's region within 80
    assert sum(d == 0 for d in distances) >= len(distances) // 2


def test_photos_a_pixel_or_two_thin_get_every_signal(tmp_path, backbone):
    """Each stored region of a 1 x 700 strip has at least one pixel: rounding left some empty, and
    OpenCV's resize of an empty region failed the strip's signals, then the whole run's backfill."""
    sizes = [(1, 700), (700, 1), (1, 1), (3, 700)]
    root = tmp_path / "photos"
    root.mkdir()
    for w, h in sizes:
        strip = compute_signals(PILImage.new("RGB", (w, h), (90, 30, 200)))
        assert strip.features is not None and len(strip.features.regions) == 10 * 32
        PILImage.new("RGB", (w, h), (90, 30, 200)).save(root / f"strip_{w}x{h}.png")
    with Library(tmp_path / "lib", create=True) as library:
        report = index_folder(root, library, backbone, batch_size=4, workers=0)
        assert report.indexed == len(sizes)
        with library.Session.begin() as s:  # as a library indexed before signals existed: backfilled
            s.execute(delete(ImageSignalsRow))
        assert index_folder(root, library, backbone, workers=0).signals_backfilled == len(sizes)
        assert missing_signals(library) == []


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "photos"
    for cls in ("hat", "shoes"):
        (root / cls).mkdir(parents=True)
        for p in photos(cls, 3):
            shutil.copyfile(p, root / cls / p.name)
    shutil.copyfile(TEST_DATA / "bad" / "pillow__truncated_jpeg.jpg", root / "broken.jpg")
    return root


def test_the_pipeline_stores_signals_for_every_indexed_photo(folder, tmp_path, backbone):
    with Library(tmp_path / "lib", create=True) as library:
        report = index_folder(folder, library, backbone, batch_size=4, workers=0)
        assert report.indexed == 6 and report.signals_backfilled == 0
        with library.Session() as s:
            rows = s.execute(select(Image.path, ImageSignalsRow.pdq, ImageSignalsRow.version)
                             .join(ImageSignalsRow, ImageSignalsRow.image_id == Image.id)).all()
            failed = s.scalar(select(Image.id).where(Image.status == FAILED))
            assert s.get(ImageSignalsRow, failed) is None
        assert len(rows) == 6 and {v for _, _, v in rows} == {SIGNALS_VERSION}
        expected = compute_signals(load_image(folder / "hat" / photos("hat", 1)[0].name)[0])
        stored = next(pdq for path, pdq, _ in rows if path == f"hat/{photos('hat', 1)[0].name}")
        assert hamming(stored, expected.pdq) == 0


def test_a_library_indexed_without_signals_gets_them_on_the_next_run(folder, tmp_path, backbone):
    with Library(tmp_path / "lib", create=True) as library:
        index_folder(folder, library, backbone, batch_size=4, workers=0)
        with library.Session.begin() as s:  # as a library indexed before signals existed
            s.execute(delete(ImageSignalsRow))
        assert len(missing_signals(library)) == 6
        report = index_folder(folder, library, backbone, batch_size=4, workers=0)
        assert report.unchanged == 7 and report.indexed == 0 and report.signals_backfilled == 6
        assert "duplicate signals for 6 older photos" in report.summary()
        assert missing_signals(library) == []
        with library.Session() as s:
            assert s.scalar(select(func.count()).select_from(ImageSignalsRow)) == 6
        assert index_folder(folder, library, backbone, workers=0).signals_backfilled == 0


def test_a_letterboxed_copy_meets_its_original_without_the_bars(tmp_path):
    for src in photos("hat", 3) + photos("dress", 3):  # some with a plain studio margin, some without
        original, _ = load_image(src)
        path = tmp_path / "letterboxed.jpg"
        TRANSFORMS["letterbox"](original).save(path, quality=90)
        a, b = compute_signals(original), compute_signals(load_image(path)[0])
        assert b.pdq_trim is not None and hamming(a.pdq, b.pdq) > HASH_SURE  # the bars hide it ...
        assert hamming(a.pdq_trim or a.pdq, b.pdq_trim) <= HASH_SURE, src.name  # ... trimmed, it shows


def test_plain_and_borderless_images_have_no_trimmed_hash():
    assert compute_signals(PILImage.new("RGB", (300, 200), (40, 90, 200))).pdq_trim is None
    noise = PILImage.effect_noise((300, 200), 60).convert("RGB")
    assert compute_signals(noise).pdq_trim is None
