"""How many cores this process may use, and how many decoders the runners start: no torch here."""

from __future__ import annotations

import os


def cores() -> int:
    """The cores this process may run on (its affinity), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 2


def default_workers(device_type: str = "cpu") -> int:
    """CPU: one decoder per core. GPU: the cores less the main process's."""
    n = cores()
    return max(1, min(8, n if device_type == "cpu" else n - 1))
