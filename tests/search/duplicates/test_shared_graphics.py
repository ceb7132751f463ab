"""Memes of different photos made from one template are not copies of each other, even where the
template's banner and sticker fell in the same place and the overlay rule alone accepts them: their
matches are on graphics other photos of the library share (search/duplicates/shared.py). Real
clothing_small photos, the bench's meme edit, a real library."""

from __future__ import annotations

import pytest
from PIL import Image as PILImage

from bench.hard_copies import HARD_TRANSFORMS
from indexer.features import gray_jpeg
from search.duplicates.candidates import find_duplicates
from search.duplicates.shared import SHARED_BY
from search.duplicates.verify import MIN_OVERLAY_INLIERS, features_of_jpeg, inlier_rows, rule, verify
from tests.conftest import shared_corpus
from tests.search.duplicates.edited_sets import edited_library, group_paths, stem_of

# Two different garments (400 x 534 each) whose memes put the sticker in nearly the same place: the
# overlay rule accepts the two memes as one photo (60 matches on the banner and the sticker).
FALSE_PAIR = ("train/longsleeve/bc96eb47-531d-410f-bcae-dab5ec60db66.jpg",
              "train/shorts/3571680c-6a00-4202-8bab-1679116cbe7c.jpg")
# Memes of other photos on the same template, each beside its original: the rest of the library.
OTHERS = ("train/dress/3b384197-7b19-464b-8bd7-823d4128ce74.jpg",
          "train/dress/13e42594-f930-4cb3-b107-2df98d2feda8.jpg",
          "train/t-shirt/56df5a3e-235c-4ea8-b7e7-9244f09ae974.jpg",
          "train/pants/4cdf0860-1969-43db-9d4e-b255158c8fa0.jpg")


def memes(rels):
    corpus = shared_corpus("clothing_small")
    return [HARD_TRANSFORMS["meme"](PILImage.open(corpus / rel).convert("RGB")) for rel in rels]


def test_two_memes_of_different_photos_pass_the_overlay_rule_on_their_own():
    # Why the library-wide check is needed: on the pair alone, verification calls them a copy.
    a, b = (features_of_jpeg(gray_jpeg(m)) for m in memes(FALSE_PAIR))  # what `index` stores
    assert a is not None and b is not None
    match = verify(a, b)
    why, needed = rule(match)
    assert "part hidden" in why and needed == MIN_OVERLAY_INLIERS, match
    rows_a, rows_b, _ = inlier_rows(a, b, match.transform)
    assert len(rows_a) == len(rows_b) >= needed


@pytest.fixture(scope="module")
def meme_library(tmp_path_factory, backbone):
    library, expected = edited_library(tmp_path_factory.mktemp("memes"), backbone,
                                       {rel: ["meme"] for rel in (*FALSE_PAIR, *OTHERS)}, lookalikes=0,
                                       quality=95)  # as bench.duplicates saves its edits
    yield library, expected
    library.close()


def test_memes_of_different_photos_are_not_joined_and_each_stays_with_its_original(meme_library):
    library, expected = meme_library
    assert len(OTHERS) >= SHARED_BY  # enough other photos carry the template for it to count as shared
    groups = group_paths(library, find_duplicates(library))
    assert groups == sorted(expected, key=sorted)
    stems = [stem_of(rel) for rel in FALSE_PAIR]
    assert not any(all(any(name.startswith(s) for name in g) for s in stems) for g in groups)
