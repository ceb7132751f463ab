"""Pseudo-labels for fine-tuning: the photos nobody labelled, each with the class a probe on the
labelled photos' stored vectors is surest of (self-training: Lee 2013, "Pseudo-Label"; Xie et al.
2020, "Noisy Student"). `lookalike tune` trains on them beside the user's labels, with the same
augmentation, so the last stages learn from the whole collection and not from a few dozen photos.

    training labels' stored vectors --fit_probe--> probe
    every other indexed photo's stored vector --probe--> (class, confidence), read chunk by chunk
    the PER_CLASS surest photos of each class --> (file, class) beside the labels
    (fewer in a class with many labels: its labels and pseudo-labels reach FILL at most)

Only the surest few of each class: on clothing_small at 8 labels a class the probe's 16 surest
photos a class were right 93-98 % of the time, against 71-78 % for all of its predictions. Training
on them took the tuned weights from +1.2 to +3.2 points over the frozen probe on the unlabelled rest
(5 draws; BENCHMARKS.md, "Pseudo-labels"). The photos the user labelled are never pseudo-labelled,
so a scoring fold's photos stay unseen by the candidate it scores.

A class the user labelled many photos of needs fewer, and they cost training time: a class gets
at most FILL minus its labels, counted over every label, so that each fold's candidate trains with
as many as the refit will. At 20 labels a class (4 pseudo-labels a class) the tuned weights gained
+4.0 and +3.4 points in 2 draws, against +1.4 on the first with 16 a class and +1.8 / +1.9 with none,
and a tune of 200 labels plus 5,000 photos re-embedded took 228 s and 155 s (235 s with 16 a class).

torch is imported inside fit_probe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from indexer.library import Library

PER_CLASS = 16  # pseudo-labelled photos a class, the surest first
FILL = 24  # ... and fewer where the class has labels: its labels plus pseudo-labels reach this at most
CHUNK = 8192  # stored vectors scored at a time: memory stays bounded at a million photos

Items = Sequence[tuple[Path, int]]
PseudoLabeller = Callable[[Items, int], list[tuple[Path, int]]]  # (training labels, classes) -> pseudo-labels


def surest(
    train_vectors: npt.NDArray[np.float32], train_codes: npt.NDArray[np.int64], n_classes: int,
    chunks: Iterable[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]],
    per_class: int | npt.NDArray[np.int64] = PER_CLASS,
) -> list[tuple[int, int]]:
    """(key, class) of the `per_class` photos of each class (one number for all, or one a class)
    that a probe fitted on the training vectors predicts with the highest probability, from (keys,
    vectors) chunks of unlabelled photos; a class predicted fewer times gives fewer. Ordered by
    class, then surest first."""
    from indexer.finetune import fit_probe
    from search.labelling.learned_head import softmax

    wanted = np.broadcast_to(np.asarray(per_class, dtype=np.int64), (n_classes,))
    if not wanted.any():
        return []
    probe = fit_probe(train_vectors, train_codes, n_classes)
    best_keys = np.zeros(0, dtype=np.int64)
    best_codes = np.zeros(0, dtype=np.int64)
    best_conf = np.zeros(0, dtype=np.float64)
    for keys, vectors in chunks:
        if not len(keys):
            continue
        probs = softmax(probe.logits(vectors).astype(np.float64))
        keys = np.concatenate([best_keys, np.asarray(keys, dtype=np.int64)])
        codes = np.concatenate([best_codes, probs.argmax(axis=1)])
        conf = np.concatenate([best_conf, probs.max(axis=1)])
        keep = np.concatenate([_top(np.flatnonzero(codes == c), conf, int(wanted[c])) for c in range(n_classes)])
        best_keys, best_codes, best_conf = keys[keep], codes[keep], conf[keep]
    return [(int(k), int(c)) for k, c in zip(best_keys, best_codes, strict=True)]


def pseudo_counts(label_codes: npt.NDArray[np.int64], n_classes: int, per_class: int = PER_CLASS,
                  fill: int = FILL) -> npt.NDArray[np.int64]:
    """Pseudo-labels to pick for each class: `per_class`, fewer where the class has many of the
    user's labels (`label_codes`, every label `tune` uses), its labels and pseudo-labels making
    `fill` at most. From every label, not a fold's share of them: each fold's candidate then trains
    with the pseudo-labels the refit will, and costs no more."""
    return np.clip(fill - np.bincount(label_codes, minlength=n_classes), 0, per_class)


def _top(rows: npt.NDArray[np.int64], conf: npt.NDArray[np.float64], n: int) -> npt.NDArray[np.int64]:
    """`rows` by confidence, highest first, at most `n` (ties by position: the lower key first)."""
    return rows[np.argsort(-conf[rows], kind="stable")[:n]]


def library_pseudo_labeller(library: Library, labelled: Items, per_class: int = PER_CLASS,
                            fill: int = FILL) -> PseudoLabeller:
    """Pseudo-labels from the library's stored vectors (the current representation's, which `tune`
    starts from), as many a class as `pseudo_counts` says for the `labelled` photos (every label,
    whichever fold trains), none of which is ever given one. Memory: the labels' ids and one chunk
    of vectors, not a map of every photo."""
    root = library.root
    id_of = _ids(library, [p for p, _ in labelled]) if root else {}
    excluded = np.fromiter(id_of.values(), dtype=np.int64, count=len(id_of))
    label_codes = np.asarray([c for _, c in labelled], dtype=np.int64)

    def pseudo(train: Items, n_classes: int) -> list[tuple[Path, int]]:
        known = [(id_of[p], c) for p, c in train if p in id_of]
        counts = pseudo_counts(label_codes, n_classes, per_class, fill)
        if not known or not counts.any() or root is None:  # every class full: no vector read
            return []
        ids, vectors = library.stored_vectors([i for i, _ in known])
        code_of = dict(known)
        codes = np.asarray([code_of[int(i)] for i in ids], dtype=np.int64)

        def unlabelled() -> Iterable[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
            for chunk_ids, chunk in library.iter_vectors(CHUNK):
                free = ~np.isin(chunk_ids, excluded)
                yield chunk_ids[free], chunk[free]

        chosen = surest(vectors, codes, n_classes, unlabelled(), counts)
        path_of = _paths(library, [k for k, _ in chosen])
        return [(root / path_of[k], c) for k, c in chosen if k in path_of]

    return pseudo


def _ids(library: Library, paths: Sequence[Path]) -> dict[Path, int]:
    """{photo file: image id} of the indexed photos among `paths` (files under the library's root)."""
    from sqlalchemy import select

    from indexer.schema import INDEXED, Image

    root = library.root
    assert root is not None
    relative = {Path(p).relative_to(root).as_posix(): Path(p) for p in paths if Path(p).is_relative_to(root)}
    out: dict[Path, int] = {}
    names = list(relative)
    with library.Session() as s:
        for start in range(0, len(names), 500):
            rows = s.execute(select(Image.id, Image.path).where(Image.status == INDEXED,
                                                                Image.path.in_(names[start : start + 500])))
            out.update({relative[path]: image_id for image_id, path in rows})
    return out


def _paths(library: Library, ids: Sequence[int]) -> dict[int, str]:
    """{image id: path under the root} of `ids`."""
    from sqlalchemy import select

    from indexer.schema import Image

    out: dict[int, str] = {}
    with library.Session() as s:
        for start in range(0, len(ids), 500):
            rows = s.execute(select(Image.id, Image.path).where(Image.id.in_(ids[start : start + 500])))
            out.update({image_id: path for image_id, path in rows})
    return out


__all__ = ["FILL", "PER_CLASS", "PseudoLabeller", "library_pseudo_labeller", "pseudo_counts", "surest"]
