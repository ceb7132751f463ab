"""Image ids as the web layer accepts them: SQLite integers, so at most 2^63 - 1."""

from __future__ import annotations

from collections.abc import Mapping

from flask import abort
from werkzeug.exceptions import BadRequest
from werkzeug.routing import IntegerConverter

MAX_ID = 2**63 - 1  # SQLite's INTEGER PRIMARY KEY; a larger int overflows in the driver (500)


def digits_at_most(n: int) -> str:
    """A regex matching exactly the decimal numbers 0..n (leading zeros up to n's length)."""
    s = str(n)
    options = [rf"\d{{1,{len(s) - 1}}}"] if len(s) > 1 else []
    for i, digit in enumerate(s):  # same first i digits as n, then a smaller one, then anything
        if digit != "0":
            options.append(rf"{s[:i]}[0-{int(digit) - 1}]\d{{{len(s) - i - 1}}}")
    options.append(s)
    return "(?:" + "|".join(options) + ")"


class IdConverter(IntegerConverter):
    """`<int:...>` in every route (the app installs it under that name): a number no larger than an
    id can be. A larger one matches no route at all, so every method answers 404; a converter that
    refused it only after matching would make Werkzeug answer 405 where another method's rule shares
    the path (PUT and DELETE /api/images/<id>/label)."""

    regex = digits_at_most(MAX_ID)


def is_id(value: object) -> bool:
    """A JSON value SQLite can look up as an id: an int (not a bool) that fits in 64 signed bits."""
    return type(value) is int and -MAX_ID - 1 <= value <= MAX_ID


def id_arg(args: Mapping[str, str], name: str) -> int:
    """A query parameter naming an image (`/search?like=`), read as a route reads `<int:...>`:
    the same ids and, unlike browse.int_arg, never clamped (a clamped id is another photo's).

    :raise 400: not an integer. :raise 404: below 0 or above MAX_ID, an id no photo can have.
    """
    raw = args.get(name, "")
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name} must be an integer") from None
    if not 0 <= value <= MAX_ID:
        abort(404, description=f"no image with id {value}")
    return value
