"""torch's process-wide thread count is changed by one thread at a time, and given back after."""

from __future__ import annotations

import threading

import numpy as np
import torch

from indexer.engines import TorchEngine
from indexer.torch_threads import TORCH_LOCK, torch_threads


def held_elsewhere() -> bool:
    """Whether another thread than this one holds TORCH_LOCK now."""
    result = []

    def try_it():
        got = TORCH_LOCK.acquire(blocking=False)
        if got:
            TORCH_LOCK.release()
        result.append(not got)

    probe = threading.Thread(target=try_it)
    probe.start()
    probe.join()
    return result[0]


def test_the_block_runs_on_n_threads_alone_and_the_count_comes_back():
    torch.set_num_threads(2)
    with torch_threads(1):
        assert torch.get_num_threads() == 1
        assert held_elsewhere()
        with torch_threads(1):  # nested blocks (training inside cross-validation) do not deadlock
            assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    assert not held_elsewhere()


def test_a_second_thread_waits_for_the_first_to_leave():
    inside, release = threading.Event(), threading.Event()
    order: list[str] = []

    def first():
        with torch_threads(1):
            order.append("first in")
            inside.set()
            release.wait()
            order.append("first out")

    def second():
        with torch_threads(1):
            order.append("second in")

    a = threading.Thread(target=first)
    a.start()
    inside.wait()
    b = threading.Thread(target=second)
    b.start()
    assert held_elsewhere()  # b cannot be in: the first thread holds the lock
    release.set()
    a.join()
    b.join()
    assert order == ["first in", "first out", "second in"]


def test_torch_engine_holds_the_lock_while_it_embeds(monkeypatch, backbone):
    engine = TorchEngine(backbone)
    seen = []
    real = engine.backbone.embed_uint8

    def watched(batch):
        seen.append(held_elsewhere())
        return real(batch)

    monkeypatch.setattr(engine.backbone, "embed_uint8", watched)
    crop = engine.backbone.preprocess.crop
    vectors = engine.embed_uint8(np.zeros((1, 3, crop, crop), np.uint8))
    assert vectors.shape == (1, engine.backbone.dim)
    assert seen == [True]
