"""glibc malloc tuned for a model that allocates and frees the same large buffers batch after batch.

By default glibc serves every block over a (dynamic) threshold with its own mmap and returns it to
the OS on free, and trims the heap top when 128 KiB are free: a CNN's activation buffers (tens of
MB a batch) were mapped, faulted in page by page and unmapped again at every layer. On a 2-core
AVX2 machine that was ~40 % of the indexer's CPU time spent as system time (page faults). Keeping
freed memory in the process costs nothing but the peak resident size it already reached.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger(__name__)

# mallopt parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4

_TOP_PAD = 64 << 20  # grow the heap 64 MiB at a time: fewer brk calls and first-touch faults
_done = False


def keep_freed_memory() -> bool:
    """Tell glibc to keep freed memory for reuse instead of unmapping it. True if applied.

    A no-op (False) where the C library is not glibc (macOS, musl, Windows). Settings are per
    process and inherited by forked children, so calling it before workers fork covers them too.
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = all(
        mallopt(param, value)
        for param, value in (
            (M_MMAP_MAX, 0),  # never serve a block by its own mmap: every block is reused from the heap
            (M_TRIM_THRESHOLD, 2**31 - 1),  # never give the heap top back
            (M_TOP_PAD, _TOP_PAD),
        )
    )
    _done = ok
    if not ok:
        log.info("mallopt refused the settings: the allocator keeps its defaults")
    return ok
