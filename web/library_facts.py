"""What the About page shows, computed once per state of the labels and index."""

from __future__ import annotations

import json
import random

from search.labelling.evaluate import EvalError, evaluate
from web import labelling
from web.browse import facets
from web.context import get_session, services

EVAL_SAMPLE = 20_000  # labelled photos evaluated at most (a fixed random sample beyond; the page says so)


def _index_key() -> tuple:
    # The vectors change only when the indexer runs: adds, re-embeds and removals all show here.
    return tuple(services().library.vectors_fingerprint())


def evaluation() -> dict | None:
    """k-NN accuracy on the current labels (leave-one-out, `EvalReport.to_dict()`), or None with
    fewer than two labelled images."""
    svc = services()
    s = svc.settings
    key = (labelling.label_version(get_session()), _index_key(), s.k, s.temperature, EVAL_SAMPLE)

    def compute():
        from sqlalchemy import select

        from indexer.schema import Label

        with svc.library.Session() as session:
            labels = dict(session.execute(select(Label.image_id, Label.label)).all())
        labelled = len(labels)
        if labelled > EVAL_SAMPLE:  # leave-one-out is quadratic: a fixed random sample past EVAL_SAMPLE
            keep = random.Random(0).sample(sorted(labels), EVAL_SAMPLE)
            labels = {i: labels[i] for i in keep}
        try:
            report = evaluate(svc.library, k=s.k, temperature=s.temperature, labels=labels).to_dict()
        except EvalError:
            return None
        report["sampled"] = labelled > EVAL_SAMPLE
        report["sampled_from"] = labelled
        return report

    return svc.memoized("evaluation", key, compute)


def about() -> dict:
    """Counts, labels, evaluation and the backbone and index behind this library."""
    svc = services()
    meta = svc.library.meta()
    f = facets(get_session())

    def number(key):
        raw = meta.get(key)
        try:
            return json.loads(raw) if raw is not None else None
        except ValueError:
            return raw

    return {
        "library": str(svc.library.path),
        "root": meta.get("root"),
        "images": f.images,
        "indexed": f.by_status.get("indexed", 0),
        "failed": f.by_status.get("failed", 0),
        "pending": f.by_status.get("pending", 0),
        "labelled": f.labelled,
        "unlabelled": f.unlabelled,
        "labels": [{"label": name, "count": n} for name, n in f.labels],
        "backbone": meta.get("backbone"),
        "weights": meta.get("weights"),
        "preprocessing": meta.get("preprocessing"),
        "dim": number("dim"),
        "index_type": meta.get("index_type"),
        "index_size": number("index_size"),
        "k": svc.settings.k,
        "temperature": svc.settings.temperature,
        "evaluation": evaluation(),
        "learning": learning(f.labelled, f.images),
    }


def learning(labelled: int, images: int) -> dict | None:
    """The learned head's comparison of methods and what it means for this library's labelling.

    `expected_correct`: the share of the whole collection labelled right if every unlabelled photo
    took its suggestion, at the chosen method's cross-validated accuracy.
    """
    facts = labelling.learning_state()
    if facts is None:
        return None
    accuracy = facts["accuracy"].get(facts["method"])
    expected = None
    if accuracy is not None and images:
        expected = (labelled + (images - labelled) * accuracy) / images
    return {**facts, "chosen_accuracy": accuracy, "expected_correct": expected,
            "labelled_share": labelled / images if images else None}
