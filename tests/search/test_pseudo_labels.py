"""Pseudo-labels (search/pseudo_labels.py) from a real library's stored vectors: the 120 sample photos
indexed with the real backbone, a few labelled. The surest photos of each class come back with the
class their folder says, never a labelled photo, and the same whether the vectors are read in one
chunk or many."""

from __future__ import annotations

import numpy as np
import pytest

from search.pseudo_labels import PER_CLASS, library_pseudo_labeller, pseudo_counts, surest

CLASSES = ["dress", "hat", "pants", "shoes"]  # four of the samples' class folders, well apart


@pytest.fixture
def labelled(sample_library):
    """(library, labels): the first 3 photos of each of CLASSES labelled by their class code, the
    next 2 of each too (a scoring fold, say), every other photo unlabelled."""
    root = sample_library.root
    labels = [(f, code) for code, c in enumerate(CLASSES) for f in sorted((root / c).glob("*.jpg"))[:5]]
    return sample_library, labels


def test_the_surest_photos_of_each_class_and_never_a_labelled_one(labelled):
    library, labels = labelled
    train = [item for i, item in enumerate(labels) if i % 5 < 3]  # 3 a class; the other 2 a class are held out
    pseudo = library_pseudo_labeller(library, labels, per_class=4)(train, len(CLASSES))
    assert len(pseudo) == 4 * len(CLASSES)
    assert [c for _, c in pseudo] == sorted(c for _, c in pseudo)  # by class
    assert not {p for p, _ in pseudo} & {p for p, _ in labels}  # held-out labels included: never chosen
    right = [p.parent.name == CLASSES[c] for p, c in pseudo]
    assert sum(right) >= 13, [(p.parent.name, CLASSES[c]) for p, c in pseudo]
    # Fewer a class: the surest of those, in the same order.
    two = library_pseudo_labeller(library, labels, per_class=2)(train, len(CLASSES))
    assert two == [item for i, item in enumerate(pseudo) if i % 4 < 2]
    assert library_pseudo_labeller(library, labels, per_class=0)(train, len(CLASSES)) == []


def test_reading_the_vectors_in_chunks_chooses_the_same(labelled):
    library, labels = labelled
    ids, vectors = library.stored_vectors()
    train_rows = np.arange(0, 120, 10)  # 12 photos of the library, labelled 0, 1, 2 in turn
    codes = np.arange(len(train_rows)) % 3
    free = np.setdiff1d(np.arange(len(ids)), train_rows)
    whole = surest(vectors[train_rows], codes, 3, [(ids[free], vectors[free])], per_class=5)
    chunks = [(ids[free[i : i + 7]], vectors[free[i : i + 7]]) for i in range(0, len(free), 7)]
    assert surest(vectors[train_rows], codes, 3, chunks, per_class=5) == whole
    assert len(whole) == 15 and not {k for k, _ in whole} & set(ids[train_rows].tolist())


def test_a_class_with_many_labels_gets_fewer(labelled):
    """A class's labels plus its pseudo-labels reach FILL at most, counted over every label (not a
    fold's share): the surest of the same choice."""
    library, labels = labelled
    assert pseudo_counts(np.array([0] * 6 + [1] * 3 + [2] * 30), 4, per_class=5, fill=8).tolist() == [2, 5, 0, 5]
    assert pseudo_counts(np.array([0] * 30), 2).tolist() == [0, PER_CLASS]  # FILL: 24
    ids, vectors = library.stored_vectors()
    train_rows = np.arange(0, 120, 10)
    codes = np.arange(len(train_rows)) % 3
    free = np.setdiff1d(np.arange(len(ids)), train_rows)
    chunks = [(ids[free], vectors[free])]
    whole = surest(vectors[train_rows], codes, 3, chunks, per_class=5)
    assert [c for _, c in whole] == [0] * 5 + [1] * 5 + [2] * 5
    assert surest(vectors[train_rows], codes, 3, chunks, per_class=np.array([2, 5, 0])) == whole[:2] + whole[5:10]
    assert surest(vectors[train_rows], codes, 3, chunks, per_class=np.array([0, 0, 0])) == []

    # Through the library, 5 labels a class: a fold that trains on 3 of them gets FILL - 5 a class,
    # as the refit on all 5 will, not FILL - 3.
    train = [item for i, item in enumerate(labels) if i % 5 < 3]
    pseudo = library_pseudo_labeller(library, labels, per_class=5, fill=7)(train, len(CLASSES))
    assert np.bincount([c for _, c in pseudo], minlength=len(CLASSES)).tolist() == [2] * len(CLASSES)
