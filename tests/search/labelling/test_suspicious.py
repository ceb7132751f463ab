"""Labels that look wrong: confident learning on cross-validated predictions, on the real sample photos."""

from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner
from sqlalchemy import delete, select

from indexer.schema import Image, Label
from lookalike.cli import main
from search.labelling.labeller import Labeller
from search.labelling.labels import set_label
from search.labelling.suspicious import rank_suspicious, suspicious
from search.searcher import Searcher

SWAPS = {"hat": "pants", "shoes": "dress", "pants": "hat"}  # a photo of the key labelled as the value


def swap_labels(library) -> dict[int, str]:
    """Relabel the first photo of each SWAPS folder wrongly; returns {image_id: its true label}.

    The skirts are unlabelled: several sample skirts look like shorts (the corpus they come from has
    real skirt/shorts label noise), and they would lead the list on merit.
    """
    swapped = {}
    with library.Session.begin() as s:
        s.execute(delete(Label).where(Label.image_id.in_(select(Image.id).where(Image.folder == "skirt"))))
        for true, wrong in SWAPS.items():
            image_id = s.scalar(select(Image.id).where(Image.folder == true).order_by(Image.path))
            set_label(s, image_id, wrong)
            swapped[image_id] = true
    return swapped


def test_confident_learning_ranks_by_margin_over_the_per_class_thresholds():
    p = np.array([
        [0.9, 0.1], [0.8, 0.2], [0.3, 0.7],  # labelled 0; the third looks like a 1
        [0.2, 0.8], [0.1, 0.9], [0.45, 0.55],  # labelled 1; the last is unsure, not suspicious
        [0.6, 0.4],  # labelled 1: 0 beats it, under class 0's mean (0.667) but over one half
        [0.0, 0.0],  # no prediction
    ])
    given = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    ranking = rank_suspicious(p, given)
    assert ranking.rows.tolist() == [2, 6]
    assert ranking.suggested.tolist() == [1, 0]
    assert np.allclose(ranking.margin, [0.4, 0.2]) and np.allclose(ranking.confidence, [0.7, 0.6])
    # Three classes, a threshold under one half: the last row's 0.49 reaches class 0's mean (0.487).
    p3 = np.array([[0.6, 0.1, 0.3], [0.5, 0.2, 0.3], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.2, 0.1, 0.7],
                   [0.6, 0.1, 0.3], [0.35, 0.25, 0.4], [0.49, 0.3, 0.21]])
    given3 = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    ranking = rank_suspicious(p3, given3)
    assert ranking.rows.tolist() == [3, 5, 7]
    assert ranking.suggested.tolist() == [2, 0, 0]
    assert np.allclose(ranking.margin, [0.5, 0.3, 0.19])


def test_a_label_no_other_photo_has_is_not_checked_and_needs_a_majority_to_be_suggested():
    """Held out, a photo whose label is its own has that class in no training fold: p(given) is 0
    whatever it shows. Every such label was listed as wrong (31 of 32 one-photo labels, seen)."""
    p = np.array([[0.8, 0.2, 0.0], [0.7, 0.3, 0.0], [0.3, 0.25, 0.45], [0.2, 0.8, 0.0], [0.1, 0.9, 0.0],
                  [0.7, 0.3, 0.0]])
    given = np.array([0, 0, 0, 1, 1, 2])  # the last photo is the only one labelled 2
    ranking = rank_suspicious(p, given)
    assert ranking.rows.tolist() == []  # not row 5 (unchecked), nor row 2 (0.45 for class 2 is no majority)
    from search.labelling.suspicious import checkable

    assert checkable(given).tolist() == [True] * 5 + [False]


def test_swapped_labels_lead_the_list(labelled_samples):
    swapped = swap_labels(labelled_samples)
    check = suspicious(Labeller(Searcher(labelled_samples), k=10))
    assert check.checked == 108
    # Real photos: a clean but ambiguous one (a dress that looks like a t-shirt) may come between the
    # swapped ones, but they come first among 108 and a clean label does not lead the list.
    assert check.suspects[0].image_id in swapped
    top = check.suspects[: 2 * len(swapped)]
    assert set(swapped) <= {s.image_id for s in top}
    for s in (s for s in top if s.image_id in swapped):
        assert s.suggested == swapped[s.image_id] and s.label == SWAPS[s.suggested]
        assert s.confidence > 0.5 and 0 < s.margin <= s.confidence
        assert s.neighbours and all(e.label is not None for e in s.neighbours)
        assert [e.score for e in s.neighbours] == sorted((e.score for e in s.neighbours), reverse=True)
        assert s.image_id not in {e.image_id for e in s.neighbours}
    margins = [s.margin for s in check.suspects]
    assert margins == sorted(margins, reverse=True)
    assert check.found == len(check.suspects)


def test_labels_suspicious_command(labelled_samples):
    swapped = swap_labels(labelled_samples)
    runner = CliRunner()
    result = runner.invoke(main, ["labels", "suspicious", "--library", str(labelled_samples.path), "--json",
                                  "--limit", "6"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == 6 and rows[0]["image_id"] in swapped and set(swapped) <= {r["image_id"] for r in rows}
    with labelled_samples.Session() as s:
        paths = dict(s.execute(select(Image.id, Image.path)).all())
        labels = dict(s.execute(select(Label.image_id, Label.label)).all())
    for r in rows:
        assert set(r) == {"image_id", "path", "label", "suggested", "confidence", "margin", "neighbours"}
        assert r["path"] == paths[r["image_id"]] and r["label"] == labels[r["image_id"]]
        assert r["suggested"] == swapped.get(r["image_id"], r["suggested"]) != r["label"]
        assert all(set(n) == {"image_id", "label", "score"} and n["label"] == labels[n["image_id"]]
                   for n in r["neighbours"])
    text = runner.invoke(main, ["labels", "suspicious", "--library", str(labelled_samples.path), "--limit", "6"])
    assert text.exit_code == 0
    lines = text.output.splitlines()
    assert len(lines) == 7 and "of 108 labelled photos look mislabelled" in lines[-1]
    assert all(f"{r['label']} -> {r['suggested']}" in line for r, line in zip(rows, lines, strict=False))


def test_too_few_labels_is_a_clear_message(sample_library):
    result = CliRunner().invoke(main, ["labels", "suspicious", "--library", str(sample_library.path)])
    assert result.exit_code == 0
    assert result.output.strip() == "too few labels to check (label at least two photos in each of two classes)"
