"""What the About page shows, computed once per state of the labels and index."""

from __future__ import annotations

import json

from search.evaluate import EvalError, evaluate
from web import labelling
from web.browse import facets
from web.context import get_session, services


def _index_key() -> tuple:
    # The vectors change only when the indexer runs: adds, re-embeds and removals all show here.
    return tuple(services().library.vectors_fingerprint())


def evaluation() -> dict | None:
    """k-NN accuracy on the current labels (leave-one-out, `EvalReport.to_dict()`), or None with
    fewer than two labelled images."""
    svc = services()
    s = svc.settings
    key = (labelling.label_version(get_session()), _index_key(), s.k, s.temperature)

    def compute():
        try:
            return evaluate(svc.library, k=s.k, temperature=s.temperature).to_dict()
        except EvalError:
            return None

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
    }
