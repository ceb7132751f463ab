"""bench.tune's k-NN figures on vectors whose neighbours are known, and its corpus reader on real folders."""

from __future__ import annotations

import numpy as np

from bench.tune import knn_quality, load_corpus


def _two_clusters(rng: np.random.Generator, n: int = 15) -> np.ndarray:
    """n unit vectors near e1, then n near e2 (far apart: cosine about 0 across, about 1 within)."""
    centres = np.repeat(np.eye(8, dtype=np.float32)[:2], n, axis=0)
    v = centres + 0.01 * rng.standard_normal(centres.shape).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_knn_quality_is_perfect_on_separated_classes_and_counts_a_mislabelled_photo_once():
    vectors = _two_clusters(np.random.default_rng(0))
    codes = np.repeat(np.arange(2), 15)
    assert knn_quality(vectors, codes) == {"knn_loo_top1": 1.0, "p_at_10": 1.0}

    codes[0] = 1  # a photo of the first cluster labelled as the second: its 14 neighbours outvote it
    assert knn_quality(vectors, codes)["knn_loo_top1"] == round(29 / 30, 4)


def test_load_corpus_reads_class_folders_under_splits_and_caps_each_class(tmp_path):
    for split, name, n in (("train", "hat", 3), ("test", "hat", 2), ("train", "shoes", 4)):
        folder = tmp_path / split / name
        folder.mkdir(parents=True)
        for i in range(n):
            (folder / f"{i}.jpg").write_bytes(b"")  # the reader lists files; it does not decode them
    paths, codes, classes = load_corpus(tmp_path, None, seed=0)
    assert classes == ["hat", "shoes"] and len(paths) == 9 and codes.tolist() == [0] * 5 + [1] * 4
    paths, codes, _ = load_corpus(tmp_path, 3, seed=0)
    assert codes.tolist() == [0] * 3 + [1] * 3 and len(set(paths)) == 6
