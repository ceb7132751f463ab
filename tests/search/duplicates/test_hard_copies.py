"""Hard copies of real photos (a quarter-area crop, a meme, stickers, a photo of a screen, a screenshot,
a collage, 90-degree turns) are verified as copies, from the signals stored at index time alone; look-
alikes of the same subject are not; a re-run verifies only the pairs of new photos."""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select

from bench.hard_copies import HARD_TRANSFORMS
from indexer.features import gray_jpeg
from indexer.imageio import load_image
from indexer.library import Library
from indexer.pipeline import index_folder
from indexer.schema import CopyVerdict, Image
from search.duplicates.candidates import find_duplicates, find_tiers
from search.duplicates.verify import features_of_jpeg, judge, verify
from tests.conftest import SAMPLES, shared_corpus

LOOKALIKES = [  # different garments shot on the same wall, hanger and light: their backgrounds match
    ("outwear/463bbfd1-880b-4537-abb8-8ef98c2894c5.jpg", "outwear/7151d08d-0d6a-4648-a304-084bb74c6d1e.jpg"),
    ("outwear/7151d08d-0d6a-4648-a304-084bb74c6d1e.jpg", "outwear/9ce16112-faef-414a-8021-a93388421dc4.jpg"),
    ("shorts/42862c34-640f-40e1-9187-f2f7749523cd.jpg", "shorts/b21eba8d-0bde-44c5-b689-01fbc1ffc4be.jpg"),
    ("skirt/24963db3-649c-4f04-8da3-0375ede8e0a6.jpg", "skirt/f4b934fc-e326-4f72-b535-53288b8b82d3.jpg"),
]


# Different trousers laid on one patterned couch, shot one by one (clothing_small): a homography fits
# the couch's pattern with 40-82 matches and half the cells line up, as when an overlay hides part of
# one photo. They were reported as copies, so a removal plan would have taken three of them out.
ON_ONE_COUCH = [
    ("train/pants/9f0c5ed6-08d2-49dc-a27e-da7d9bb2e23a.jpg",
     "validation/pants/bbb6d814-4f2e-4311-9d53-ff081cb0d5f6.jpg"),
    ("train/pants/9f0c5ed6-08d2-49dc-a27e-da7d9bb2e23a.jpg", "train/pants/d49fe040-1e56-4a6f-8514-2967b3495ad1.jpg"),
    ("validation/pants/5081af53-6dd0-454b-be59-e9575b031f98.jpg",
     "validation/pants/bbb6d814-4f2e-4311-9d53-ff081cb0d5f6.jpg"),
]


def stored(img: PILImage.Image):
    """Features as verification sees a photo: from the grayscale copy the indexer stores."""
    return features_of_jpeg(gray_jpeg(img))


@pytest.mark.parametrize("edit", list(HARD_TRANSFORMS))
def test_each_hard_edit_of_real_photos_is_verified_as_a_copy(edit):
    passed = 0
    sources = [sorted((SAMPLES / cls).glob("*.jpg"))[0] for cls in ("dress", "hat", "pants")]
    for src in sources:
        original, _ = load_image(src)
        a, b = stored(HARD_TRANSFORMS[edit](original)), stored(original)
        assert a is not None and b is not None
        passed += bool(judge(verify(a, b))) and bool(judge(verify(b, a)))  # either way round
    assert passed >= 2, f"{edit}: {passed} of {len(sources)}"


@pytest.mark.parametrize("a,b", LOOKALIKES)
def test_look_alikes_of_the_same_subject_are_not(a, b):
    fa, fb = stored(load_image(SAMPLES / a)[0]), stored(load_image(SAMPLES / b)[0])
    assert fa is not None and fb is not None
    assert not judge(verify(fa, fb)) and not judge(verify(fb, fa))


@pytest.mark.parametrize("a,b", ON_ONE_COUCH)
def test_different_photos_on_one_patterned_background_are_not_copies(a, b):
    corpus = shared_corpus("clothing_small")
    fa, fb = stored(load_image(corpus / a)[0]), stored(load_image(corpus / b)[0])
    assert fa is not None and fb is not None
    for m in (verify(fa, fb), verify(fb, fa)):
        assert m.inliers >= 30  # the couch matches: what decides is how the match lines up
        assert not judge(m), judge(m)


@pytest.fixture(scope="module")
def hard_library(tmp_path_factory, backbone):
    """A real photo with four hard edits, among look-alikes; indexed, then the photo folder removed."""
    base = tmp_path_factory.mktemp("hard")
    photos = base / "photos"
    photos.mkdir()
    src = sorted((SAMPLES / "dress").glob("*.jpg"))[1]
    img = PILImage.open(src).convert("RGB")
    img.save(photos / "original.jpg", quality=95)
    edits = ["meme", "screenshot", "rotate90", "embedded"]
    for edit in edits:
        HARD_TRANSFORMS[edit](img).save(photos / f"{edit}.jpg", quality=92)
    for other in sorted((SAMPLES / "dress").glob("*.jpg"))[2:7]:
        shutil.copyfile(other, photos / f"other-{other.name}")
    library = Library(base / "library", create=True)
    index_folder(photos, library, backbone, batch_size=8, workers=0)
    shutil.rmtree(photos)  # from here on, only the library's stored signals are left
    yield library, {"original.jpg", *(f"{e}.jpg" for e in edits)}
    library.close()


def paths(library, groups) -> list[set[str]]:
    with library.Session() as s:
        by_id = dict(s.execute(select(Image.id, Image.path)).all())
    return [{by_id[i] for i in g.image_ids} for g in groups]


def test_verification_reads_nothing_but_the_stored_signals(hard_library):
    library, expected = hard_library
    groups = find_duplicates(library)
    assert paths(library, groups) == [expected]
    assert all(p.why for g in groups for p in g.pairs)  # each pair says why it is a copy


def test_a_re_run_verifies_only_the_pairs_of_new_photos(backbone, tmp_path, monkeypatch):
    from search.duplicates.stored import StoredVerifier

    photos = tmp_path / "photos"
    photos.mkdir()
    img = PILImage.open(sorted((SAMPLES / "shoes").glob("*.jpg"))[0]).convert("RGB")
    img.save(photos / "shoe.jpg", quality=95)
    HARD_TRANSFORMS["embedded"](img).save(photos / "shoe-embedded.jpg", quality=92)
    for other in sorted((SAMPLES / "shoes").glob("*.jpg"))[1:5]:
        shutil.copyfile(other, photos / other.name)
    with Library(tmp_path / "library", create=True) as lib:
        index_folder(photos, lib, backbone, batch_size=8, workers=0)
        first = find_tiers(lib)
        new = PILImage.open(sorted((SAMPLES / "hat").glob("*.jpg"))[0]).convert("RGB")
        new.save(photos / "hat.jpg", quality=95)
        HARD_TRANSFORMS["stickers"](new).save(photos / "hat-stickers.jpg", quality=92)
        index_folder(photos, lib, backbone, batch_size=8, workers=0)
        with lib.Session() as s:
            new_ids = set(s.scalars(select(Image.id).where(Image.path.in_(["hat.jpg", "hat-stickers.jpg"]))))
        verified: list[tuple[int, int]] = []
        call = StoredVerifier.__call__

        def recording(self, a, b, hints=()):
            if self.known(a, b) is None:
                verified.append((a, b))
            return call(self, a, b, hints)

        monkeypatch.setattr(StoredVerifier, "__call__", recording)
        monkeypatch.setattr("search.duplicates.stored.POOL_BLOCK", 10**9)  # in this thread, to be seen
        again = find_tiers(lib)
    assert len(first.copies) >= 1 and len(again.copies) > len(first.copies)
    assert verified and all(a in new_ids or b in new_ids for a, b in verified)


def every_pair(library) -> tuple[list[int], list[tuple[int, int]], dict]:
    """The library's photo ids, every pair of them, and their verdicts verified in this thread."""
    from search.duplicates import stored

    with library.Session() as s:
        ids = sorted(s.scalars(select(Image.id)))
    pairs = [(a, b) for a in ids for b in ids if a < b]
    return ids, pairs, stored.StoredVerifier(library, workers=1).many(pairs)


def test_threads_give_the_verdicts_of_one_thread_computing_each_photo_once(hard_library, monkeypatch):
    """Many pairs are verified by threads sharing one cache of keypoints: the verdicts are those of
    one thread, and each photo's keypoints are computed once in the run, though its pairs are in
    several blocks (a worker process per core computed them once per worker)."""
    from search.duplicates import stored

    library, _ = hard_library
    ids, pairs, here = every_pair(library)
    computed: list[int] = []
    fresh = stored.StoredVerifier(library, workers=1).upright(ids)
    real = stored.features_of_jpeg

    def counting(blob, mirror=True):  # every photo's keypoints come from its stored copy here
        computed.append(1)
        return real(blob, mirror)

    monkeypatch.setattr(stored, "features_of_jpeg", counting)
    monkeypatch.setattr(stored, "POOL_BLOCK", 7)  # several blocks, on threads
    threaded = stored.StoredVerifier(library, workers=2)
    assert threaded.many(pairs) == here and any(judge(m) for m in here.values())
    assert len(computed) == len(ids) and len(pairs) > 3 * stored.POOL_BLOCK
    # The shared-graphics check's upright keypoints of these photos come from that cache too: the
    # same keypoints as from their stored copies, none computed again.
    reused = threaded.upright(ids)
    assert len(computed) == len(ids) and sorted(reused) == sorted(fresh) == ids
    assert all(np.array_equal(reused[i].points, fresh[i].points)
               and np.array_equal(reused[i].descriptors, fresh[i].descriptors) for i in ids)


def test_the_shared_keypoints_stay_within_their_bound(hard_library, monkeypatch):
    from search.duplicates import stored

    library, _ = hard_library
    ids, pairs, here = every_pair(library)
    monkeypatch.setattr(stored, "POOL_BLOCK", 5)
    monkeypatch.setattr(stored, "FEATURE_CACHE", 3)
    bounded = stored.StoredVerifier(library, workers=2)
    assert bounded.many(pairs) == here
    info = bounded.features.cache_info()
    assert info.maxsize == 3 and info.currsize == 3 and info.misses > len(ids)


def test_threads_hold_the_stored_copies_of_one_block_at_a_time(hard_library, monkeypatch):
    """Each verifying thread reads its own block's stored copies (~15 kB a photo), not the whole
    run's at once: at a million photos that would be gigabytes."""
    from search.duplicates import stored

    library, _ = hard_library
    ids, pairs, here = every_pair(library)
    monkeypatch.setattr(stored, "POOL_BLOCK", 3)
    threaded = stored.StoredVerifier(library, workers=2)
    reads: list[int] = []
    real = threaded._blobs

    def reading(wanted):
        got = real(wanted)
        reads.append(len(got))
        return got

    monkeypatch.setattr(threaded, "_blobs", reading)
    assert threaded.many(pairs) == here
    assert len(ids) > 2 * stored.POOL_BLOCK and reads and max(reads) <= 2 * stored.POOL_BLOCK
    assert sum(reads) >= len(ids)  # every photo's copy was read, a block at a time


def test_stored_verdicts_from_another_release_are_verified_again(hard_library, tmp_path):
    """copy_verdicts only caches verdicts: a table with other columns (an earlier build's) is made
    anew when the library opens, instead of failing every `duplicates` with 'no such column'."""
    library, expected = hard_library
    copy = tmp_path / "library"
    shutil.copytree(library.path, copy)
    db = sqlite3.connect(copy / "library.db")
    with db:
        db.execute("DROP TABLE copy_verdicts")
        db.execute("CREATE TABLE copy_verdicts (hash_a TEXT, hash_b TEXT, inliers INTEGER, correlation FLOAT, "
                   "aligned FLOAT, centre FLOAT, spread FLOAT, transform TEXT, version INTEGER, "
                   "PRIMARY KEY (hash_a, hash_b))")
        db.execute("INSERT INTO copy_verdicts VALUES ('a', 'b', 1, 0.1, 0.1, 0.1, 0.1, 'similarity', 3)")
    db.close()
    with Library(copy) as reopened:
        assert paths(reopened, find_duplicates(reopened)) == [expected]
        with reopened.Session() as s:
            assert s.scalar(select(func.count()).select_from(CopyVerdict)) > 0
            assert s.get(CopyVerdict, ("a", "b")) is None
