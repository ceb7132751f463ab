"""Cross-origin (CSRF) protection, the optional write token, and response security headers.

CSRF: state-changing requests are refused when a browser says they come from another origin.
This is the header-based check of Go 1.25's net/http CrossOriginProtection (after Filippo
Valsorda's "CSRF" write-up; the OWASP cheat sheet's Fetch Metadata defence):

1. GET, HEAD and OPTIONS are always allowed (no route changes state on them).
2. `Sec-Fetch-Site: same-origin` or `none` (typed in the address bar) is allowed; any other value
   (`same-site`, `cross-site`) is refused. Every current browser sends it to https and localhost.
3. Without Sec-Fetch-Site (plain-http LAN addresses, older browsers), an `Origin` header must name
   this very host: browsers always send Origin on cross-origin POST/PUT/DELETE.
4. With neither header the request is not from a browser (curl, scripts) and cannot be forged
   by a web page, so it is allowed.

It needs no token plumbing through templates and JS, keeps the API usable from curl, and fails
closed for browsers. Being served only on loopback Host names while listening on loopback closes
the DNS-rebinding hole such a check would otherwise leave (a page of evil.example whose name
resolves to 127.0.0.1 or ::1 is "same origin" to the browser, but its requests say
`Host: evil.example`).

Token: with `settings.token` set, writes also need `Authorization: Bearer <token>` (API clients)
or a session that was unlocked with it on /unlock (browsers). Reads never do, including
POST /api/search (a search by an uploaded photo changes nothing). `lookalike serve` warns when it
listens beyond loopback without one.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from flask import Flask, abort, current_app, request, session

from web.context import services
from web.settings import is_loopback

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Reached without the token: the form that checks it, and the reads that are POSTs.
TOKEN_EXEMPT_ENDPOINTS = frozenset({"pages.unlock", "api.search_upload"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "img-src 'self' blob: data:",  # blob: previews an upload before it is sent
        "script-src 'self'",
        "style-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def init_app(app: Flask) -> None:
    app.before_request(check_host)
    app.before_request(check_request)
    app.after_request(add_security_headers)


def host_name(host: str) -> str:
    """The name in a Host header, without the port and IPv6 brackets: '[::1]:5000' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") > 1:  # a bare IPv6 address, as some clients send it
        return host
    return host.partition(":")[0]


def trusted_host_names(listen: str) -> frozenset[str] | None:
    """The Host names served while listening on `listen`: the loopback names on loopback, any
    name (None) beyond it, where the token guards writes instead."""
    if not is_loopback(listen):
        return None
    return LOOPBACK_NAMES | {host_name(listen)}


def check_host() -> None:
    trusted = trusted_host_names(services().settings.host)
    if trusted is not None and host_name(request.headers.get("Host", "")) not in trusted:
        abort(400, description="this server answers only to its loopback names (localhost, 127.0.0.1, [::1])")


def is_cross_origin() -> bool:
    """Whether a browser tells us this request was made by a page of another origin."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    if origin == "null":  # sandboxed frames, file: pages, some redirects
        return True
    parts = urlsplit(origin)
    # Host only, as Go does: behind a TLS-terminating proxy the scheme we see is http.
    return parts.netloc.lower() != request.host.lower()


def token_ok(token: str) -> bool:
    """The request carries the token, or comes from a session unlocked with it."""
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() == "bearer" and bearer_matches(given.strip(), token):
        return True
    unlocked = session.get("unlocked")
    return isinstance(unlocked, str) and hmac.compare_digest(unlocked.encode(), fingerprint(token).encode())


def bearer_matches(given: str, token: str) -> bool:
    """Whether a Bearer value is the token, compared as bytes in constant time.

    A WSGI server hands header bytes over decoded as latin-1 (PEP 3333), so they are taken back to
    bytes first: a client that sends the token in UTF-8 (curl, a browser) matches its UTF-8 bytes,
    and one that sends it in latin-1 (Python's http.client), its latin-1 bytes.
    """
    try:
        raw = given.encode("latin-1")
    except UnicodeEncodeError:  # not bytes from a server: text handed over as it is
        raw = given.encode()
    try:
        as_latin1 = token.encode("latin-1")
    except UnicodeEncodeError:
        as_latin1 = b""
    in_utf8 = hmac.compare_digest(raw, token.encode())
    in_latin1 = bool(as_latin1) and hmac.compare_digest(raw, as_latin1)
    return in_utf8 or in_latin1


def fingerprint(token: str) -> str:
    """What an unlocked session stores: the token itself never goes into the cookie."""
    key = current_app.secret_key
    assert isinstance(key, bytes)  # create_app sets 32 random bytes
    return hmac.new(key, token.encode(), "sha256").hexdigest()


def check_request() -> None:
    if request.method in SAFE_METHODS:
        return
    if is_cross_origin():
        abort(403, description="cross-origin request refused (CSRF protection)")
    if request.endpoint in TOKEN_EXEMPT_ENDPOINTS:
        return
    token = services().settings.token
    if token is not None and not token_ok(token):
        abort(401, description="changes need the server's token: unlock at /unlock, or send "
                               "'Authorization: Bearer <token>'")


def add_security_headers(response):
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    return response
