"""What the About and Duplicates pages show, computed once per state of the labels and index."""

from __future__ import annotations

import json
from collections.abc import Mapping

from flask import abort

from search.duplicates import DEFAULT_THRESHOLD, find_duplicates
from search.evaluate import EvalError, evaluate
from web import labelling
from web.browse import facets
from web.context import get_session, services
from web.payloads import image_payload

MAX_GROUPS = 500


def threshold_arg(args: Mapping[str, str]) -> float:
    """?threshold= as a cosine similarity in (0, 1]; the search layer's default when not given.

    :raise 400: not a number in range.
    """
    raw = args.get("threshold")
    if raw in (None, ""):
        return DEFAULT_THRESHOLD
    try:
        value = float(raw)
    except ValueError:
        abort(400, description="threshold must be a number")
    if not 0 < value <= 1:
        abort(400, description="threshold must be in (0, 1]")
    return value


def _index_key() -> tuple:
    # The vectors change only when the indexer runs: adds, re-embeds and removals all show here.
    return tuple(services().library.vectors_fingerprint())


def duplicate_groups(threshold: float) -> list[dict]:
    """Near-duplicate groups, biggest first, each with its members' payloads and pair scores."""
    svc = services()
    groups = svc.memoized(
        "duplicates", (threshold, _index_key()),
        lambda: find_duplicates(svc.library, threshold=threshold),
    )
    groups = sorted(groups, key=lambda g: -len(g.image_ids))[:MAX_GROUPS]
    rows = labelling.rows_by_id(get_session(), (i for g in groups for i in g.image_ids))
    out = []
    for g in groups:
        members = [image_payload(rows[i]) for i in g.image_ids if i in rows]
        pairs = [_pair(p) for p in g.pairs]
        best = max((p["score"] for p in pairs), default=None)
        out.append({"images": members, "pairs": pairs, "best_score": best})
    return out


def _pair(pair) -> dict:
    a, b, score = pair
    return {"a": int(a), "b": int(b), "score": round(float(score), 4)}


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
