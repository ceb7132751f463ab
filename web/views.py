"""The HTML pages: browse, photo, search, labelling queue, duplicates, about, unlock."""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, redirect, render_template, request, session, url_for

from search.labelling.labels import MAX_LABEL_LENGTH
from web import duplicates as duplicate_review
from web import labelling, library_facts, tuning
from web.browse import Filters, facets, known_labels
from web.browse import browse as browse_query
from web.context import get_session, services
from web.ids import id_arg
from web.media import get_image
from web.payloads import image_payload
from web.security import fingerprint, token_ok

bp = Blueprint("pages", __name__)

NEIGHBOURS = 12


@bp.app_context_processor
def write_state() -> dict:
    token = services().settings.token
    unlocked = token is None or token_ok(token)
    return {"can_write": unlocked, "needs_unlock": not unlocked, "max_label_length": MAX_LABEL_LENGTH}


@bp.app_template_filter("filesize")
def filesize(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"


@bp.app_template_filter("percent")
def percent(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%".replace(".0%", "%")


@bp.get("/")
def browse():
    filters = Filters.from_args(request.args)
    ids = labelling.suggested_for(filters.suggested) if filters.suggested else None
    session_ = get_session()
    page = browse_query(session_, filters, ids)
    if filters.page > page.pages and page.total:
        return redirect(url_for("pages.browse", **filters.to_args(page=page.pages)))
    return render_template(
        "browse.html", page=page, f=filters, facets=facets(session_),
        images=[image_payload(row) for row in page.rows],
    )


@bp.get("/images/<int:image_id>")
def image(image_id: int):
    row = get_image(image_id)
    return render_template(
        "image.html", image=image_payload(row), row=row, neighbours_k=NEIGHBOURS,
        known_labels=known_labels(get_session()),
    )


@bp.get("/search")
def search():
    like = request.args.get("like")
    like_image = None
    if like:
        like_image = image_payload(get_image(id_arg(request.args, "like")))
    return render_template(
        "search.html", like=like_image, known_labels=known_labels(get_session()),
        max_upload_mb=services().settings.max_upload_mb,
    )


@bp.get("/queue")
def queue():
    return render_template("queue.html", known_labels=known_labels(get_session()), tune_hint=tuning.hint())


@bp.get("/duplicates")
def duplicates():
    kind, threshold = duplicate_review.kind_arg(request.args), duplicate_review.threshold_arg(request.args)
    return render_template("duplicates.html", **duplicate_review.duplicate_groups(kind, threshold))


@bp.get("/duplicates/remove.csv")
def duplicates_csv():
    """The review's removal plan: the paths to remove, as a CSV download."""
    kind, threshold = duplicate_review.kind_arg(request.args), duplicate_review.threshold_arg(request.args)
    try:
        plan = duplicate_review.removal_csv(kind, threshold)
    except duplicate_review.Pending as p:
        abort(503, description=f"{p}: try again in a moment")
    return Response(
        plan, mimetype="text/csv",
        headers={"Content-Disposition": f"attachment; filename=lookalike-remove-{kind}.csv"},
    )


@bp.get("/about")
def about():
    return render_template("about.html", about=library_facts.about(), tune=tuning.about_facts())


def local_path(raw: str, default: str) -> str:
    """`raw` if it is a path on this site, else `default`: no open redirect, no header injection.

    Judged as a browser reads a Location: browsers drop tabs and line breaks and read a backslash
    as a slash, so "/<tab>/evil.example" and "/<backslash>evil.example" both mean "//evil.example",
    another host. A control character or space anywhere refuses the value (a line break would
    also break the header).
    """
    if not raw or any(c <= " " or c == "\x7f" for c in raw):
        return default
    seen = raw.replace("\\", "/")
    parts = urlsplit(seen)
    if not seen.startswith("/") or seen.startswith("//") or parts.scheme or parts.netloc:
        return default
    return raw


@bp.route("/unlock", methods=["GET", "POST"])
def unlock():
    token = services().settings.token
    next_url = local_path(request.values.get("next", ""), url_for("pages.browse"))
    if token is None:
        return redirect(next_url)
    error = None
    if request.method == "POST":
        given = request.form.get("token", "")
        if hmac.compare_digest(given.encode(), token.encode()):
            session["unlocked"] = fingerprint(token)
            return redirect(next_url)
        error = "That is not the server's token."
    return render_template("unlock.html", next_url=next_url, error=error), 401 if error else 200

