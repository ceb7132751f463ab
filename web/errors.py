"""One error shape for the whole API, {"error": {"status": 404, "message": "..."}}; pages for HTML."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, make_response, render_template, request
from werkzeug.exceptions import HTTPException, InternalServerError, MethodNotAllowed

from indexer.library import READ_ONLY_MESSAGE, is_read_only_write

log = logging.getLogger(__name__)


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.path == "/api"


def error_response(status: int, message: str) -> Response:
    if wants_json():
        response = jsonify(error={"status": status, "message": message})
    else:
        try:
            response = make_response(render_template("error.html", status=status, message=message))
        except Exception:
            # No page can be built (no URL adapter, a broken template): plain text then.
            response = make_response(f"{status}: {message}\n")
            response.content_type = "text/plain; charset=utf-8"
    response.status_code = status
    return response


def handle_http_error(e: HTTPException):
    response = error_response(e.code or 500, e.description or e.name)
    if e.code == 401 and wants_json():
        response.headers["WWW-Authenticate"] = 'Bearer realm="lookalike"'
    if isinstance(e, MethodNotAllowed) and e.valid_methods:
        response.headers["Allow"] = ", ".join(e.valid_methods)
    return response


def handle_unexpected(e: Exception):
    if isinstance(e, HTTPException):
        return handle_http_error(e)
    if is_read_only_write(e):
        return error_response(503, READ_ONLY_MESSAGE)
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, InternalServerError.description)


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, handle_http_error)
    app.register_error_handler(Exception, handle_unexpected)
