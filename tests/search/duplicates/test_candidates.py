"""Near-duplicate tiers: edited copies of real photos group with their original and nothing else;
similar shots are a separate tier; hash search finds mirrors; photos without signals are reported."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import delete, select

from bench.copies import TRANSFORMS
from indexer.library import Library
from indexer.pipeline import index_folder
from indexer.schema import Image, ImageSignalsRow
from search.duplicates import candidates as d
from search.duplicates.candidates import COPIES, SIMILAR, DuplicateGroup, Pair, find_duplicates, find_tiers, group_pairs
from tests.conftest import SAMPLES

CLASSES = ["dress", "hat", "outwear", "pants", "shoes", "skirt", "shorts"]
COPIED = {"hat": ["webp_half", "grayscale", "crop70_corner", "mirror"], "skirt": ["jpeg_q15", "caption", "thumb96"]}


@pytest.fixture(scope="module")
def copies_library(tmp_path_factory, backbone):
    """Three real photos of each class; two of them with edited copies."""
    base = tmp_path_factory.mktemp("dups")
    photos = base / "photos"
    expected = []
    for cls in CLASSES:
        (photos / cls).mkdir(parents=True)
        sources = sorted((SAMPLES / cls).glob("*.jpg"))[:3]
        for src in sources:
            (photos / cls / src.name).write_bytes(src.read_bytes())
        if cls in COPIED:
            img = PILImage.open(sources[0]).convert("RGB")
            group = {f"{cls}/{sources[0].name}"}
            for t in COPIED[cls]:
                TRANSFORMS[t](img).save(photos / cls / f"copy-{t}.jpg", quality=92)
                group.add(f"{cls}/copy-{t}.jpg")
            expected.append(group)
    library = Library(base / "library", create=True)
    index_folder(photos, library, backbone, batch_size=8, workers=0)
    yield library, expected
    library.close()


def paths_of(library, groups):
    with library.Session() as s:
        path = dict(s.execute(select(Image.id, Image.path)).all())
    return [{path[i] for i in g.image_ids} for g in groups]


def test_copies_group_with_their_original_and_nothing_else(copies_library):
    library, expected = copies_library
    groups = find_duplicates(library)
    assert sorted(map(sorted, paths_of(library, groups))) == sorted(map(sorted, expected))
    assert [len(g.image_ids) for g in groups] == [5, 4]  # largest first
    for g in groups:
        assert g.kind == COPIES and all(p.a < p.b for p in g.pairs)
        assert all(evidenced(p) for p in g.pairs)


def evidenced(p: Pair) -> bool:
    """A close hash, or a verified match: the two ways a pair becomes a copy."""
    if p.hash_distance is not None and p.hash_distance <= d.HASH_SURE:
        return True
    return p.inliers is not None and p.inliers >= d.MIN_INLIERS and p.correlation >= d.MIN_CORRELATION


def test_the_similar_tier_leaves_out_copies_and_different_photos_of_one_subject(copies_library):
    # Copies are the other tier's; the rest are different photos of seven subjects without capture
    # times, none of them the same scene point for point: not one moment, even at cosine 0.5.
    # (Bursts that do group: test_moments.py.)
    library, _ = copies_library
    tiers = find_tiers(library, similar_threshold=0.5)
    assert tiers.copies and tiers.similar == []
    assert all(p.score >= 0.5 for p in tiers.similar)
    assert find_duplicates(library, 0.9999, kind=SIMILAR) == []
    with pytest.raises(ValueError):
        find_duplicates(library, kind="twins")
    with pytest.raises(ValueError):
        find_tiers(library, similar_threshold=1.5)


def test_dismissed_pairs_leave_their_group(copies_library):
    library, _ = copies_library
    big = find_duplicates(library)[0]
    dismissed = {(a, b) for a in big.image_ids for b in big.image_ids if a < b}
    assert len(find_duplicates(library, dismissed=dismissed)) == 1


def test_without_signals_copies_come_from_embeddings_and_the_gap_is_counted(copies_library, tmp_path):
    library, _ = copies_library
    import shutil

    shutil.copytree(library.path, tmp_path / "copy")
    with Library(tmp_path / "copy") as old:
        with old.Session.begin() as s:
            s.execute(delete(ImageSignalsRow))
        tiers = find_tiers(old)
        assert tiers.missing_signals == 21 + 7
        assert all(p.hash_distance is None for p in tiers.copies)


def test_hash_search_finds_mirrors_and_is_the_same_flat_or_bucketed(monkeypatch):
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (300, 32), dtype=np.uint8)
    mirrors = rng.integers(0, 256, (300, 32), dtype=np.uint8)
    ids = np.arange(1, 301, dtype=np.int64)
    codes[10] = codes[3]
    codes[10, 31] ^= 0b101  # 2 bits from photo 4
    codes[20] = mirrors[5]  # photo 21 is photo 6 mirrored
    codes[20, 30] ^= 0b10000000  # in a late bit: buckets key on the low frequencies
    trims = codes[[40]].copy()
    codes[50] = trims[0]  # photo 51 is photo 41's content without its borders
    codes[50, 31] ^= 1
    hashes = d.Hashes(ids, codes, mirrors, np.full(300, 100, np.int32), np.array([41]), trims)
    flat = d.hash_pairs(hashes, 10)
    assert flat == {(4, 11): 2, (6, 21): 1, (41, 51): 1}
    monkeypatch.setattr(d, "HASH_FLAT_MAX", 0)
    assert d.hash_pairs(hashes, 10) == flat


def test_group_pairs_joins_components_largest_first():
    def p(a, b, s):
        return Pair(a, b, s)

    pairs = [p(1, 2, 0.99), p(2, 3, 0.97), p(10, 11, 0.999), p(5, 6, 0.96), p(6, 7, 0.98), p(7, 8, 0.95)]
    groups = group_pairs(pairs)
    assert [g.image_ids for g in groups] == [[5, 6, 7, 8], [1, 2, 3], [10, 11]]
    assert groups[0] == DuplicateGroup([5, 6, 7, 8], [p(6, 7, 0.98), p(5, 6, 0.96), p(7, 8, 0.95)], COPIES)
    assert group_pairs([]) == []


def test_verdicts_are_stored_and_not_recomputed(copies_library, tmp_path, monkeypatch):
    import shutil

    import search.duplicates.stored
    from indexer.schema import CopyVerdict

    library, _ = copies_library
    shutil.copytree(library.path, tmp_path / "copy")
    with Library(tmp_path / "copy") as lib:
        first = find_tiers(lib)
        with lib.Session() as s:
            stored = s.query(CopyVerdict).count()
        assert stored > 0 and any(p.inliers is not None for p in first.copies)

        def no_more(*args):
            raise AssertionError("verified again")

        monkeypatch.setattr(search.duplicates.stored, "verify_hinted", no_more)
        again = find_tiers(lib)
        assert again.copies == first.copies


def test_photos_a_pixel_thin_are_verified_without_a_crash(tmp_path, backbone):
    """Two identical 1 x 1 images (a PNG and its JPEG) and a 1 x 2 one beside real photos: their
    hashes nominate them, and verification must not crash in OpenCV's keypoint pyramid (it did:
    `lookalike duplicates` on a folder holding such files failed with a cv2.error)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for src in sorted((SAMPLES / "hat").glob("*.jpg"))[:2]:
        (photos / src.name).write_bytes(src.read_bytes())
    PILImage.new("RGB", (1, 1), (200, 10, 10)).save(photos / "dot.png")
    PILImage.new("RGB", (1, 1), (200, 10, 10)).save(photos / "dot.jpg", quality=95)
    PILImage.new("RGB", (1, 2), (20, 10, 10)).save(photos / "line.png")
    with Library(tmp_path / "library", create=True) as library:
        report = index_folder(photos, library, backbone, workers=0)
        assert report.indexed == 5 and not report.failed
        tiers = find_tiers(library, verify=True)  # it returns
        grouped = [paths for groups in (tiers.copies, tiers.similar) for paths in paths_of(library, groups)]
        assert not any(path.endswith(".jpg") and path != "dot.jpg" for group in grouped for path in group)
