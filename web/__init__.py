"""The web UI and JSON API: a Flask app factory over one library.

The app is imported on first use, so that `web.settings` (which the command line reads at start-up)
does not pull in Flask."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from web.app import create_app
    from web.context import get_session, services

__all__ = ["create_app", "get_session", "services"]


def __getattr__(name: str) -> object:
    if name == "create_app":
        from web.app import create_app

        return create_app
    if name in ("get_session", "services"):
        from web import context

        return getattr(context, name)
    raise AttributeError(f"module 'web' has no attribute {name!r}")
