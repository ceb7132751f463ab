"""The JSON API under /api/: everything the pages do. Errors: {"error": {"status", "message"}}."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, jsonify, request

from indexer.library import LibraryError
from indexer.schema import INDEXED
from search.searcher import NotFound
from web import duplicates as duplicate_review
from web import labelling, library_facts, tuning
from web.browse import Filters, browse, facets, int_arg, known_labels
from web.context import get_session, services
from web.ids import is_id
from web.media import get_image
from web.payloads import evidence_ids, image_payload, result_payload, suggestion_payload
from web.uploads import decode_slot, decode_upload
from web.watching import watch_status

bp = Blueprint("api", __name__)

DEFAULT_K = 20
MAX_K = 200
MAX_QUEUE = 200


def k_arg(default: int = DEFAULT_K) -> int:
    return int_arg(request.args, "k", default, lo=1, hi=MAX_K)


def json_body() -> dict:
    """The request's JSON object.

    :raise 400: no JSON object in the body.
    """
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        abort(400, description="send a JSON object with Content-Type: application/json")
    return data


def results(hits) -> list[dict]:
    """Search hits as payloads in rank order (hits whose row vanished are dropped)."""
    return [result_payload(row, score) for row, score in services().searcher.fetch(get_session(), hits)]


# -- collection ---------------------------------------------------------------------------------


@bp.get("/status")
def status():
    """Cheap liveness check (the container's health check)."""
    counts = services().library.counts()
    payload = {"status": "ok", "images": counts["images"], "indexed": counts["indexed"]}
    tune = tuning.status_payload()  # only once a tune or revert started in this server
    if tune is not None:
        payload["tuning"] = tune
    watch = watch_status(current_app)
    if watch is not None:  # `serve --watch` only: what the watcher is indexing
        payload["watch"] = watch
    return jsonify(payload)


@bp.get("/images")
def list_images():
    f = Filters.from_args(request.args)
    ids = labelling.suggested_for(f.suggested) if f.suggested else None
    page = browse(get_session(), f, ids)
    return jsonify(
        images=[image_payload(row) for row in page.rows],
        total=page.total, page=f.page, per_page=f.per_page, pages=page.pages,
        sort=f.sort, order=f.order,
    )


@bp.get("/folders")
def folders():
    return jsonify(folders=[{"folder": name, "count": n} for name, n in facets(get_session()).folders])


@bp.get("/images/<int:image_id>")
def get_one(image_id: int):
    return jsonify(image_payload(get_image(image_id)))


@bp.get("/images/<int:image_id>/neighbours")
def neighbours(image_id: int):
    k = k_arg()
    svc = services()
    svc.searcher.reload()  # one stat() unless the indexer rewrote the index
    hits = svc.labeller.neighbours.read(image_id, k)  # the stored list, while it matches the index
    if hits is None:
        row = get_image(image_id)
        if row.status != INDEXED:
            abort(409, description=f"image {image_id} has no vector ({row.status}): nothing to compare")
        try:
            hits = svc.searcher.by_id(image_id, k=k)
        except NotFound:
            abort(409, description=f"image {image_id} is not in the search index yet")
    return jsonify(query=image_id, k=k, results=results(hits))


@bp.get("/images/<int:image_id>/suggestion")
def suggestion(image_id: int):
    get_image(image_id)
    s = labelling.suggestion_for(image_id)
    rows = labelling.rows_by_id(get_session(), evidence_ids([s]))
    return jsonify(image_id=image_id, suggestion=suggestion_payload(s, rows))


# -- labels -------------------------------------------------------------------------------------


@bp.put("/images/<int:image_id>/label")
def put_label(image_id: int):
    data = json_body()
    label = labelling.clean_label(data.get("label"))
    payload = labelling.label_images([image_id], label, source=data.get("source", "user"),
                                     after=lambda: image_payload(get_image(image_id)))
    return jsonify(payload)


@bp.delete("/images/<int:image_id>/label")
def delete_label(image_id: int):
    row = get_image(image_id)
    labelling.unlabel_image(image_id)
    return jsonify(image_payload(row))


@bp.get("/labels")
def list_labels():
    f = facets(get_session())
    return jsonify(
        labels=[{"label": name, "count": n} for name, n in f.labels],
        labelled=f.labelled, unlabelled=f.unlabelled,
    )


@bp.post("/labels")
def label_many():
    """{"image_ids": [...], "label": "..."}: one label on several images, all or nothing."""
    data = json_body()
    ids = data.get("image_ids")
    if not isinstance(ids, list) or not ids or not all(is_id(i) for i in ids):
        abort(400, description="image_ids must be a non-empty list of integer ids (below 2^63)")
    if len(ids) > labelling.MAX_BATCH:
        abort(400, description=f"at most {labelling.MAX_BATCH} images at once")
    label = labelling.clean_label(data.get("label"))
    ids = list(dict.fromkeys(ids))
    labelling.label_images(ids, label, source=data.get("source", "user"))
    return jsonify(labelled=len(ids), label=label, image_ids=ids)


@bp.get("/queue")
def queue():
    """Unlabelled images in the labelling queue's order (search/labelling/queue_order.py)."""
    limit = int_arg(request.args, "limit", 20, lo=1, hi=MAX_QUEUE)
    offset = int_arg(request.args, "offset", 0, lo=0, hi=10**9)
    suggestions = services().labeller.queue(limit=limit, offset=offset)
    session = get_session()
    rows = labelling.rows_by_id(session, [s.image_id for s in suggestions] + list(evidence_ids(suggestions)))
    items = [
        {"image": image_payload(rows[s.image_id]), "suggestion": suggestion_payload(s, rows)}
        for s in suggestions if s.image_id in rows
    ]
    return jsonify(items=items, offset=offset, limit=limit, unlabelled=facets(session).unlabelled,
                   labels=known_labels(session), learning=labelling.learning_state())


# -- search -------------------------------------------------------------------------------------


def upload_bytes() -> bytes:
    """The uploaded photo: multipart field "image" (or any single file), or a raw image body.

    :raise 400: nothing sent. :raise 413: larger than MAX_CONTENT_LENGTH (raised by Werkzeug);
    web.uploads bounds what it decodes to.
    """
    if request.mimetype == "multipart/form-data":
        upload = request.files.get("image") or next(iter(request.files.values()), None)
        if upload is None:
            abort(400, description="send the photo in the multipart field 'image'")
        data = upload.read()
    else:
        data = request.get_data(cache=False)
    if not data:
        abort(400, description="no photo in the request: send it as multipart field 'image' or as the body")
    return data


@bp.post("/search")
def search_upload():
    k = k_arg()
    data = upload_bytes()
    searcher = services().searcher
    searcher.reload()
    try:
        # Decoded in memory, never written to disk; JPEGs at reduced scale, as the indexer does.
        min_side = searcher.backbone.preprocess.resize
    except LibraryError as e:
        abort(409, description=str(e))
    with decode_slot():  # the decoded pixels and the forward pass: a few uploads at a time
        img, info = decode_upload(data, min_side)
        hits = searcher.by_image(img, k=k)
        del img
    return jsonify(
        k=k, query={"width": info.width, "height": info.height, "format": info.format, "bytes": len(data)},
        results=results(hits),
    )


# -- library ------------------------------------------------------------------------------------


@bp.get("/duplicates")
def duplicates():
    """?kind=copies|similar (copies), ?threshold= (the similar tier's cosine)."""
    kind, threshold = duplicate_review.kind_arg(request.args), duplicate_review.threshold_arg(request.args)
    found = duplicate_review.duplicate_groups(kind, threshold)
    return jsonify(found), 202 if "pending" in found else 200  # 202: still computing, ask again


@bp.post("/duplicates/dismiss")
def dismiss_duplicates():
    """{"image_ids": [...], "kind": "copies"}: these photos are not duplicates of each other, for good."""
    data = json_body()
    n = duplicate_review.dismiss(data.get("image_ids"), data.get("kind", "copies"))
    return jsonify(dismissed_pairs=n, image_ids=sorted(set(data["image_ids"])), kind=data.get("kind", "copies"))


@bp.put("/duplicates/choices/<int:image_id>")
def duplicate_choice(image_id: int):
    """{"choice": "keep" | "remove" | null}: a person's decision for one photo of a group."""
    choice = json_body().get("choice")
    duplicate_review.set_choice(image_id, choice)
    return jsonify(image_id=image_id, choice=choice)


@bp.get("/about")
def about():
    return jsonify(library_facts.about())
