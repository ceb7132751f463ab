"""Check labels: the labelled photos whose label looks wrong (`search.labelling.suspicious`), worst first.

    GET  /labels/check                          the page: each photo, its label, what it looks like, the evidence
    GET  /api/labels/suspicious?limit=N         the same as JSON
    POST /api/labels/suspicious/<id>/keep       the label is right: not listed again while it stays the same

Correcting a label is the ordinary PUT /api/images/<id>/label. Kept labels live in the library's
meta (KEPT_LABELS, {image id: the label kept}); a label changed since it was kept is checked again.
The check cross-validates every label (seconds, more with many labels), so it is computed once per
state of the labels and the index, in a background thread: a request waits for it at most
LABEL_CHECK_WAIT seconds, then is answered from the last check ("current": false; the labels changed
since are left out), or, before any, with "pending": true.
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, jsonify, render_template, request

from indexer.library import KEPT_LABELS, READ_ONLY_MESSAGE
from search.labelling.suspicious import Check, suspicious
from web import labelling
from web.browse import int_arg
from web.context import get_session, in_background, services
from web.media import get_image
from web.payloads import image_payload, image_urls

bp = Blueprint("label_check", __name__)

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
LABEL_CHECK_WAIT = 5.0  # seconds a request waits for a new check; then the last one answers


def kept() -> dict[str, str]:
    return dict(services().library.state(KEPT_LABELS) or {})


def check() -> tuple[Check | None, bool]:
    """(the check, whether it is of the current labels and index), computed in the background: the
    last finished check while a newer one runs (None before the first)."""
    svc = services()
    key = (labelling.label_version(get_session()), tuple(svc.library.vectors_fingerprint()))
    job = in_background(svc, "suspicious", key, lambda _progress: suspicious(svc.labeller),
                        wait=current_app.config["LABEL_CHECK_WAIT"])
    if job.key == key and job.finished.is_set():
        if job.error is not None:
            raise job.error
        svc.memo["suspicious"] = (key, job.value)
        return job.value, True
    last = svc.memo.get("suspicious")
    return (last[1] if last else None), False


def listing(limit: int) -> dict:
    """The suspicious labels not kept, worst first, at most `limit`, as payloads with their evidence;
    "current": whether the check is of the labels as they are now (a newer one is running if not),
    "pending": no check has finished yet."""
    result, current = check()
    keep = kept()
    if result is None:
        return {"items": [], "found": 0, "checked": 0, "kept": len(keep), "current": False, "pending": True}
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
    return {"items": items, "found": len(suspects), "checked": result.checked, "kept": len(keep),
            "current": current, "pending": False}


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
