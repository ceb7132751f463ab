"""torch's thread count is one setting for the whole process: changed by one thread at a time.

`torch.set_num_threads` resizes the intra-op pools (OpenMP, MKL, the pthreadpool) that every thread's
torch work runs on. Called from one thread while another thread is inside torch, it can crash the
process: the web trains its head in a background thread while a request cross-validates on the About
page or embeds an upload. So torch work in a thread that may run beside others holds `TORCH_LOCK`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

TORCH_LOCK = threading.RLock()  # held around torch work that may run beside other threads' torch work


@contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run the block with torch on `n` threads and no other thread in a `TORCH_LOCK` block.

    The head's problems are small: on a busy 2-core machine more threads only spin (a 300 x 1280 PCA
    took 4.4 s with the default team on 2 loaded cores, 0.13 s on one).
    """
    import torch

    with TORCH_LOCK:
        before = torch.get_num_threads()
        if before != n:
            torch.set_num_threads(n)
        try:
            yield
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)
