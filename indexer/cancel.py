"""Stopping long work between steps: a threading.Event a caller (the web, a Ctrl+C handler) sets."""

from __future__ import annotations

import threading


class Cancelled(Exception):
    """The work was stopped on request; what it had committed is consistent (each caller says how)."""


def check(cancel: threading.Event | None) -> None:
    """Raise Cancelled if `cancel` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("stopped on request")
