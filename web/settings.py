"""The web server's settings: the library's settings (indexer.settings) plus where to listen, the
largest upload and the write token; read from the same LOOKALIKE_* variables, checked the same way."""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass

from indexer.settings import Settings as LibrarySettings
from indexer.settings import setting


@dataclass(frozen=True)
class Settings(LibrarySettings):
    """Every setting with its default, the web server's included."""

    host: str = setting("127.0.0.1", "address the web server binds")
    port: int = setting(5000, "port the web server listens on", lo=0, hi=65535)
    max_upload_mb: float = setting(20.0, "largest accepted upload, MB", lo=0, lo_open=True, hi=1024)
    token: str | None = setting(None, "token required for write actions (set when not on localhost)")


FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def is_loopback(host: str) -> bool:
    """Whether a listening address or Host name is this machine only: 127.0.0.0/8, ::1, localhost.

    The one definition: `lookalike serve` warns beyond it, and the web app accepts only loopback
    Host names while listening on it.
    """
    name = host.strip().removeprefix("[").removesuffix("]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
