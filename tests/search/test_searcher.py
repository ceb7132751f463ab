"""Nearest neighbours: ids, scores, the query excluded, -1 padding dropped, rows in rank order."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import event, update

from indexer.imageio import ImageError
from indexer.schema import FAILED, Image
from search.searcher import NotFound, Searcher, SearchHit, hits_from_row
from tests.conftest import SAMPLES
from tests.search.conftest import unit

# Five vectors at known angles in the plane, and one orthogonal: cosines are easy to reason about.
ANGLES = [0, 10, 20, 40, 80]


def plane_vectors():
    rows = [[np.cos(np.radians(a)), np.sin(np.radians(a)), 0] for a in ANGLES] + [[0, 0, 1]]
    return unit(rows)


def test_by_id_excludes_the_query_and_ranks_by_cosine(vector_library):
    searcher = Searcher(vector_library(plane_vectors()))
    hits = searcher.by_id(1, k=3)
    assert [h.image_id for h in hits] == [2, 3, 4]
    assert hits == [SearchHit(i, pytest.approx(np.cos(np.radians(a)), abs=1e-6))
                    for i, a in ((2, 10), (3, 20), (4, 40))]


def test_k_beyond_the_library_drops_faiss_padding(vector_library):
    searcher = Searcher(vector_library(plane_vectors()))
    hits = searcher.by_id(3, k=50)
    ids = [h.image_id for h in hits]
    assert sorted(ids) == [1, 2, 4, 5, 6]  # every other image once, no -1, not itself
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_hits_from_row_drops_padding_and_excluded_ids():
    flt_max = np.finfo(np.float32).max
    scores = np.array([1.0, 0.9, 0.8, -flt_max, -flt_max], dtype=np.float32)
    ids = np.array([5, 2, 9, -1, -1])
    hits = hits_from_row(scores, ids, k=10, exclude=(5,))
    assert [h.image_id for h in hits] == [2, 9]
    assert [h.score for h in hits] == pytest.approx([0.9, 0.8])
    assert len(hits_from_row(scores, ids, k=1)) == 1


def test_by_vector_normalises_and_excludes(vector_library):
    searcher = Searcher(vector_library(plane_vectors()))
    hits = searcher.by_vector([0, 0, 5.0], k=2, exclude=(6,))
    assert hits[0].image_id != 6
    assert searcher.by_vector([0, 0, 5.0], k=1)[0] == SearchHit(6, pytest.approx(1.0))


def test_unknown_and_unindexed_images_raise_not_found(vector_library):
    library = vector_library(plane_vectors())
    with library.Session.begin() as s:
        s.execute(update(Image).where(Image.id == 2).values(status=FAILED))
    searcher = Searcher(library)
    with pytest.raises(NotFound):
        searcher.by_id(999)
    with pytest.raises(NotFound):
        searcher.by_id(2)
    with pytest.raises(NotFound, match="image 999 is not in the library or has no vector"):
        searcher.vector(999)
    assert [h.image_id for h in searcher.by_id(1, k=10)] == [3, 4, 5, 6]  # the failed image 2 is gone


def test_fetch_returns_rows_in_rank_order_in_one_query(vector_library):
    library = vector_library(plane_vectors())
    searcher = Searcher(library)
    hits = [SearchHit(5, 0.9), SearchHit(1, 0.8), SearchHit(3, 0.7), SearchHit(12345, 0.6)]
    statements = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    with library.Session() as s:
        event.listen(library.engine, "before_cursor_execute", count)
        try:
            rows = searcher.fetch(s, hits)
            labels = [row.label for row, _ in rows]  # loaded with the rows, not one query each
        finally:
            event.remove(library.engine, "before_cursor_execute", count)
    assert labels == [None, None, None]
    assert [(row.id, score) for row, score in rows] == [(5, 0.9), (1, 0.8), (3, 0.7)]  # 12345 gone
    assert len([st for st in statements if st.lstrip().upper().startswith("SELECT")]) == 1
    with library.Session() as s:
        assert searcher.fetch(s, []) == []


def test_reload_is_a_no_op_until_the_file_changes(vector_library):
    library = vector_library(plane_vectors())
    searcher = Searcher(library)
    assert searcher.reload() is False
    before = searcher.index
    library.save_vectors(library.build_vectors(), clean=True)
    assert searcher.reload() is True
    assert searcher.index is not before
    assert searcher.reload() is False


def test_by_image_finds_the_photo_itself_first(sample_library, backbone):
    searcher = Searcher(sample_library, backbone)
    photo = min((SAMPLES / "shoes").glob("*.jpg"))
    hits = searcher.by_image(photo.read_bytes(), k=5)
    with sample_library.Session() as s:
        rows = searcher.fetch(s, hits)
    assert rows[0][0].path == f"shoes/{photo.name}"
    assert rows[0][1] > 0.99
    assert len(rows) == 5


def test_by_image_accepts_a_pil_image_and_builds_the_backbone_lazily(sample_library, tmp_path):
    photo = min((SAMPLES / "hat").glob("*.jpg"))
    searcher = Searcher(sample_library)  # backbone from the library's meta, built on first use
    img = PILImage.open(photo)
    img.thumbnail((300, 300))
    hits = searcher.by_image(img, k=3)
    with sample_library.Session() as s:
        top = searcher.fetch(s, hits)[0][0]
    assert top.path == f"hat/{photo.name}"


def test_by_image_rejects_bytes_that_are_not_an_image(sample_library, backbone):
    searcher = Searcher(sample_library, backbone)
    with pytest.raises(ImageError):
        searcher.by_image(b"this is not a photo")
    buf = io.BytesIO()
    PILImage.new("RGB", (40, 40), "red").save(buf, "PNG")
    assert len(searcher.by_image(buf.getvalue(), k=2)) == 2


def test_an_empty_library_finds_nothing(tmp_path):
    from indexer.library import Library

    library = Library(tmp_path / "empty", create=True)
    try:
        assert Searcher(library).by_vector(np.ones(4), k=5) == []
    finally:
        library.close()
