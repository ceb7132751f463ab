"""Near-duplicate groups: generated copies of real photos are found, different photos are not."""

from __future__ import annotations

import pytest
from PIL import Image as PILImage
from sqlalchemy import select

from indexer.library import Library
from indexer.pipeline import index_folder
from indexer.schema import Image
from search.duplicates import (
    DEFAULT_THRESHOLD,
    DuplicateGroup,
    find_duplicates,
    find_pairs,
    group_pairs,
)
from tests.conftest import SAMPLES

CLASSES = ["dress", "hat", "pants", "shoes", "skirt", "t-shirt"]
COPIED = ["hat", "pants", "skirt"]


@pytest.fixture(scope="module")
def copies_library(tmp_path_factory, backbone):
    """Six real photos; three of them also as a 2/3-size copy and a quality-60 re-encode."""
    base = tmp_path_factory.mktemp("dups")
    photos = base / "photos"
    expected = []
    for cls in CLASSES:
        src = min((SAMPLES / cls).glob("*.jpg"))
        (photos / cls).mkdir(parents=True)
        (photos / cls / "original.jpg").write_bytes(src.read_bytes())
        if cls in COPIED:
            img = PILImage.open(src).convert("RGB")
            img.resize((img.width * 2 // 3, img.height * 2 // 3), PILImage.Resampling.LANCZOS).save(
                photos / cls / "smaller.png"
            )
            img.save(photos / cls / "recompressed.jpg", quality=60)
            expected.append(
                {f"{cls}/original.jpg", f"{cls}/smaller.png", f"{cls}/recompressed.jpg"}
            )
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
    for g in groups:
        assert len(g.pairs) == 3  # all three pairs of each trio clear the threshold
        assert all(a < b and score > DEFAULT_THRESHOLD for a, b, score in g.pairs)
        assert [p[2] for p in g.pairs] == sorted((p[2] for p in g.pairs), reverse=True)


def test_a_threshold_of_one_finds_nothing_and_a_low_one_joins_everything(copies_library):
    library, _ = copies_library
    assert find_duplicates(library, threshold=0.9999) == []
    everything = find_duplicates(library, threshold=-1.0)
    assert len(everything) == 1 and len(everything[0].image_ids) == 12


def test_find_pairs_lists_each_pair_once(copies_library):
    library, _ = copies_library
    pairs = find_pairs(library, 0.0)
    assert len({(a, b) for a, b, _ in pairs}) == len(pairs)
    assert all(a < b for a, b, _ in pairs)
    with pytest.raises(ValueError):
        find_pairs(library, 1.5)


def test_group_pairs_joins_components_largest_first():
    pairs = [(1, 2, 0.99), (2, 3, 0.97), (10, 11, 0.999), (5, 6, 0.96), (6, 7, 0.98), (7, 8, 0.95)]
    groups = group_pairs(pairs)
    assert [g.image_ids for g in groups] == [[5, 6, 7, 8], [1, 2, 3], [10, 11]]
    assert groups[0] == DuplicateGroup([5, 6, 7, 8], [(6, 7, 0.98), (5, 6, 0.96), (7, 8, 0.95)])
    assert group_pairs([]) == []
