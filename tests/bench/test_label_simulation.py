"""bench.label_simulation's bookkeeping for the tuned strategy, on real photos and the real backbone:
the photo files load_corpus returns are the rows of its vectors, the derived lists and graph are
rebuilt from whatever vectors they are given, and a tune without enough labels changes nothing."""

from __future__ import annotations

import shutil

import numpy as np

from bench.label_simulation import Tuner, View, load_corpus
from indexer.finetune import embed_files
from tests.conftest import shared_corpus

CLASSES = ("dress", "hat", "shoes")
PER_CLASS = 6


def test_load_corpus_paths_are_the_rows_of_its_vectors_and_views_derive_from_the_vectors(tmp_path, backbone):
    corpus = shared_corpus("clothing_small")
    photos = tmp_path / "photos"
    for c in CLASSES:
        (photos / "train" / c).mkdir(parents=True)
        for f in sorted((corpus / "train" / c).glob("*.jpg"))[:PER_CLASS]:
            shutil.copy(f, photos / "train" / c / f.name)

    vectors, truth, classes, paths = load_corpus(tmp_path / "library", photos)  # indexes, labels by folder
    assert classes == list(CLASSES) and len(paths) == len(truth) == len(vectors) == PER_CLASS * len(CLASSES)
    assert [classes[c] for c in truth] == [p.parent.name for p in paths]
    assert sorted(p.name for p in paths) == sorted(f.name for c in CLASSES for f in (photos / "train" / c).iterdir())

    # Re-embedding the files in that order gives back each row's stored vector (the tuned strategy
    # re-embeds every path and goes on with row i = paths[i]). The library was embedded by OpenVINO,
    # this by torch: on a CPU with native bf16 both run bf16 kernels of their own, whose vectors of one
    # photo agree to a cosine of 0.997 to 0.9995 (AVX512_BF16 EPYC); in fp32 above 0.999. Each row's
    # own photo is still nearer than any other photo is to any row.
    ok, again = embed_files(backbone, paths, engine="torch")
    assert ok.all()
    cosines = np.sum(again * vectors, axis=1)
    assert cosines.min() > 0.99
    others = again @ vectors.T
    np.fill_diagonal(others, -1.0)
    assert others.max() < cosines.min()
    assert (again @ vectors.T).argmax(axis=1).tolist() == list(range(len(paths)))

    view = View.of(vectors, k=5)
    ids, scores = view.nb
    assert ids.shape == scores.shape == (len(paths), 5)
    assert not (ids == np.arange(len(paths))[:, None]).any()  # a photo is not its own neighbour
    assert (np.diff(scores, axis=1) <= 0).all()  # nearest first
    np.testing.assert_allclose(scores, np.take_along_axis(vectors @ vectors.T, ids, 1), rtol=1e-5)
    assert view.graph.size == len(paths)

    # Views of other vectors (what a kept tune brings) derive from those vectors, not the first ones:
    # with the rows shifted by one, row i is the photo of row i - 1, and so are its neighbours.
    other = View.of(np.roll(vectors, 1, axis=0), k=5)
    np.testing.assert_array_equal(other.nb[0], np.roll((ids + 1) % len(paths), 1, axis=0))

    # A tune with fewer than 2 classes of 3 labels is not run and leaves the view as it was.
    tuner = Tuner(paths, every=2, max_tunes=2)
    try:
        assert [tuner.due(r, 0) for r in range(5)] == [False, False, True, False, True]
        assert not tuner.due(4, 2)
        labelled = np.zeros(len(paths), bool)
        labelled[np.flatnonzero(truth == 0)[:3]] = True
        labelled[np.flatnonzero(truth == 1)[:2]] = True
        record, after = tuner.tune(2, labelled, truth, view)
        assert after is view and not record.kept and record.p_value is None
        assert (record.labelled, record.used, record.classes) == (5, 3, 1)
        assert record.note.startswith("too few labels") and record.seconds == 0
    finally:
        tuner.close()
