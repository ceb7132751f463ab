"""The web UI and JSON API: a Flask app factory over one library."""

from web.app import create_app
from web.context import get_session, services

__all__ = ["create_app", "get_session", "services"]
