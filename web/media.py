"""Pixels: cached thumbnails and originals, both reached by image id only."""

from __future__ import annotations

import logging
import mimetypes
import unicodedata
from urllib.parse import quote

from flask import Blueprint, Response, abort, request, send_file

from indexer.imageio import ImageError
from indexer.schema import Image
from web.context import get_session, services
from web.thumbs import SIZES, OutsideRoot, original_path, version_of

log = logging.getLogger(__name__)

bp = Blueprint("media", __name__)

YEAR = 365 * 24 * 3600


def ascii_file_name(name: str) -> str:
    """`name` as plain ASCII for a header's `filename`: accents dropped (NFKD), other non-ASCII
    characters left out, and control characters, quotes and backslashes (which clients unescape
    differently, RFC 6266 appendix D) made "_"."""
    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    return "".join("_" if c < " " or c in '\x7f"\\' else c for c in plain)


def set_download_name(response: Response, name: str) -> None:
    """Content-Disposition: inline, naming any file (RFC 6266): a plain ASCII `filename` for old
    clients and, when that is not the name itself, the exact name as `filename*` (RFC 5987:
    percent-encoded UTF-8, where a newline is %0A and cannot split the header)."""
    fallback = ascii_file_name(name)
    exact = {"filename*": f"UTF-8''{quote(name, safe='!#$&+-.^_`|~')}"} if fallback != name else {}
    response.headers.set("Content-Disposition", "inline", filename=fallback, **exact)


def get_image(image_id: int) -> Image:
    """The image row.

    :raise 404: no image has this id.
    """
    row = get_session().get(Image, image_id)
    if row is None:
        abort(404, description=f"no image with id {image_id}")
    return row


def collection_root():
    root = services().library.root
    if root is None:
        abort(404, description="this library has not indexed a folder yet")
    return root


@bp.get("/thumbs/<int:image_id>/<size>.jpg")
def thumb(image_id: int, size: str):
    if size not in SIZES:
        abort(404, description=f"no thumbnail size {size!r}; sizes: {', '.join(SIZES)}")
    row = get_image(image_id)
    try:
        path = services().thumbnails.get(collection_root(), row, size)
    except OutsideRoot:
        log.warning("image %d has a path outside the collection root: %r", row.id, row.path)
        abort(404, description=f"image {image_id} cannot be shown")
    except ImageError as e:
        abort(404, description=f"image {image_id} cannot be shown: {e.reason}")
    version = version_of(row)
    # A URL naming the current version never changes content: cache it for good. Any other
    # (no ?v=, or a stale one) is revalidated against the ETag.
    immutable = request.args.get("v") == version
    response = send_file(
        path, mimetype="image/jpeg", etag=f"{image_id}-{size}-{version}", conditional=True,
        max_age=YEAR if immutable else 0,
    )
    response.cache_control.private = True
    if immutable:
        response.cache_control.immutable = True
    else:
        response.cache_control.no_cache = True
    return response


@bp.get("/original/<int:image_id>")
def original(image_id: int):
    row = get_image(image_id)
    try:
        path = original_path(collection_root(), row.path)
        mimetype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if not mimetype.startswith("image/") or mimetype == "image/svg+xml":  # SVG can carry script
            mimetype = "application/octet-stream"
        response = send_file(  # opens the file: one the server's user may not read raises here
            path, mimetype=mimetype, conditional=True, etag=f"o{image_id}-{version_of(row)}", max_age=0,
            download_name=ascii_file_name(path.name),  # Werkzeug refuses a name with a newline in it
        )
    except OutsideRoot:
        log.warning("image %d has a path outside the collection root: %r", row.id, row.path)
        abort(404, description=f"image {image_id} cannot be served")
    except OSError:
        abort(404, description=f"the file of image {image_id} is gone or unreadable: {row.path}")
    set_download_name(response, path.name)
    response.cache_control.private = True
    response.cache_control.no_cache = True
    return response
