"""Check labels: the labelled photos whose label looks wrong (`search.labelling.suspicious`), worst first.

    GET  /labels/check                          the page: each photo, its label, what it looks like, the evidence
    GET  /api/labels/suspicious?limit=N         the same as JSON
    POST /api/labels/suspicious/<id>/keep       the label is right: not listed again while it stays the same

Correcting a label is the ordinary PUT /api/images/<id>/label. Kept labels live in the library's
meta (KEPT_LABELS, {image id: the label kept}); a label changed since it was kept is checked again.
The check cross-validates every label, so it is computed once per state of the labels and the index.
"""

from __future__ import annotations

from flask import Blueprint, abort, jsonify, render_template, request

from indexer.library import KEPT_LABELS, READ_ONLY_MESSAGE
from search.labelling.suspicious import Check, suspicious
from web import labelling
from web.browse import int_arg
from web.context import get_session, services
from web.media import get_image
from web.payloads import image_payload, image_urls

bp = Blueprint("label_check", __name__)

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


def kept() -> dict[str, str]:
    return dict(services().library.state(KEPT_LABELS) or {})


def check() -> Check:
    """Every suspicious label (memoized per labels and index)."""
    svc = services()
    key = (labelling.label_version(get_session()), tuple(svc.library.vectors_fingerprint()))
    return svc.memoized("suspicious", key, lambda: suspicious(svc.labeller))


def listing(limit: int) -> dict:
    """The suspicious labels not kept, worst first, at most `limit`, as payloads with their evidence."""
    result = check()
    keep = kept()
    suspects = [s for s in result.suspects if keep.get(str(s.image_id)) != s.label]
    shown = suspects[:limit]
    ids = [s.image_id for s in shown] + [e.image_id for s in shown for e in s.neighbours]
    rows = labelling.rows_by_id(get_session(), ids)
    items = []
    for s in shown:
        row = rows.get(s.image_id)
        if row is None or row.label is None or row.label.label != s.label:  # relabelled since the check
            continue
        items.append({
            "image": image_payload(row), "label": s.label, "suggested": s.suggested,
            "confidence": round(s.confidence, 4), "margin": round(s.margin, 4),
            "neighbours": [
                {"image_id": e.image_id, "label": e.label, "score": round(float(e.score), 4),
                 **(image_urls(rows[e.image_id]) if e.image_id in rows else {})}
                for e in s.neighbours
            ],
        })
    return {"items": items, "found": len(suspects), "checked": result.checked, "kept": len(keep)}


@bp.get("/labels/check")
def page():
    limit = int_arg(request.args, "limit", DEFAULT_LIMIT, lo=1, hi=MAX_LIMIT)
    return render_template("label_check.html", check=listing(limit))


@bp.get("/api/labels/suspicious")
def api_list():
    limit = int_arg(request.args, "limit", DEFAULT_LIMIT, lo=1, hi=MAX_LIMIT)
    return jsonify(listing(limit))


@bp.post("/api/labels/suspicious/<int:image_id>/keep")
def api_keep(image_id: int):
    """Remember that this photo's current label is right; "kept_count": the labels kept in all now
    (the page's summary shows it). :raise 404: no such photo; 409: unlabelled; 503: a read-only library."""
    if services().library.read_only:
        abort(503, description=READ_ONLY_MESSAGE)
    row = get_image(image_id)
    if row.label is None:
        abort(409, description=f"image {image_id} has no label to keep")
    svc = services()
    with svc.write_lock:
        keep = kept()
        keep[str(image_id)] = row.label.label
        svc.library.save_state(KEPT_LABELS, keep)
    return jsonify(image_id=image_id, label=row.label.label, kept=True, kept_count=len(keep))
