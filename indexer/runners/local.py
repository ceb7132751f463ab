"""The local runner's process layout: DataLoader worker processes decode (and, on a CPU, embed) batches.

It runs on a GPU, and on a CPU when `embed_in_workers` is given; the default CPU layout is
indexer/runners/threads.py (decode threads feeding one engine).

On a CPU each worker decodes and embeds its own batch with one thread: the model's work is
data-parallel across processes, which on a few cores beats one multi-threaded model fed by decoding
processes, whose threads stall each other whenever a decoder (or anything else) takes a core.
With a GPU the workers only decode and this process embeds.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from indexer.allocator import keep_freed_memory
from indexer.backbone import Backbone, Preprocess
from indexer.decode import DecodedBatch, PhotoTask, decode_batch
from indexer.embed import EmbeddedBatch, embed_batch
from indexer.engines import Engine
from indexer.report import IndexReport
from indexer.runners.cores import default_workers


class BatchDataset(Dataset):
    """Item b is batch b: decoded (and, with `engine` set, embedded) inside one worker."""

    def __init__(self, root: Path, tasks: Sequence[PhotoTask], batch_size: int, preprocess: Preprocess,
                 engine: Engine | None, dim: int) -> None:
        self.root = root
        self.tasks = tasks
        self.batch_size = batch_size
        self.preprocess = preprocess
        self.engine = engine
        self.dim = dim

    def __len__(self) -> int:
        return -(-len(self.tasks) // self.batch_size)

    def __getitem__(self, b: int) -> DecodedBatch | EmbeddedBatch:
        start = b * self.batch_size
        decoded = decode_batch(self.root, self.tasks[start : start + self.batch_size], self.preprocess)
        return decoded if self.engine is None else embed_batch(self.engine, decoded, self.dim)


def run_local(
    root: Path, tasks: Sequence[PhotoTask], backbone: Backbone, *, batch_size: int = 32,
    workers: int | None = None, engine: str = "auto", embed_in_workers: bool | None = None,
    report: IndexReport | None = None,
) -> Iterator[EmbeddedBatch]:
    """Decode and embed `tasks` with worker processes; yields batches in task order.

    `engine` is auto, torch or openvino (indexer.engines); `embed_in_workers` picks the CPU layout
    (None: the measured default, `embeds_in_workers`). The engine that ran is written to `report`.
    """
    from indexer.engines import describe, make_engine

    device = backbone.device_type
    workers = default_workers(device) if workers is None else workers
    batch_size, workers = balance(len(tasks), batch_size, workers)
    in_workers = embeds_in_workers(device, workers) if embed_in_workers is None else embed_in_workers and workers > 0
    model = make_engine(backbone, engine, threads=1 if in_workers else None)
    model.prepare()  # weights loaded (or the converted model cached) once, before the workers fork
    if report is not None:
        report.engine = describe(model)
    dataset = BatchDataset(root, tasks, batch_size, backbone.preprocess, model if in_workers else None, backbone.dim)
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        collate_fn=_identity,  # type: ignore[arg-type]  # batch_size=None: items pass whole
        worker_init_fn=partial(_worker_init, parent=_forking_parent()) if workers else None,
        pin_memory=device == "cuda",
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
    )
    previous = signal.getsignal(signal.SIGCHLD)
    batches = iter(loader)  # with workers, torch installs its SIGCHLD handler here
    _restore_sigchld(previous)
    for batch in batches:
        yield batch if isinstance(batch, EmbeddedBatch) else embed_batch(model, batch, backbone.dim)


def _restore_sigchld(previous: Any) -> None:
    """Put back the SIGCHLD disposition that torch's first multi-worker DataLoader replaced.

    torch installs a Python SIGCHLD handler once per process and never removes it, so every later
    child's exit (a browser, a subprocess) runs Python code on this thread's signal stack. On a
    2-core AMX Xeon a test process that had indexed with workers died of SIGSEGV (si_code
    SI_KERNEL: the kernel failed to deliver a signal) waiting in epoll while its children (a browser,
    a server) exited; torch's was the one Python handler installed besides SIGINT's. A server that indexes
    (`lookalike up`) keeps running long after its loader is gone, so it must not keep that handler.
    The DataLoader still reports a worker that died: it checks its workers whenever a batch is
    late (torch's MP_STATUS_CHECK_INTERVAL), signal or not.
    """
    main = threading.current_thread() is threading.main_thread()
    if main and previous is not None and signal.getsignal(signal.SIGCHLD) is not previous:
        signal.signal(signal.SIGCHLD, previous)


def balance(todo: int, batch_size: int, workers: int) -> tuple[int, int]:
    """(batch size, workers): batches of (nearly) equal size, as many as a multiple of the workers,
    which take them in turn, so no worker idles at the end of a short run while another finishes."""
    if workers <= 1 or todo == 0:
        return batch_size, workers
    batches = -(-todo // batch_size)
    batches = -(-batches // workers) * workers
    batch_size = -(-todo // batches)
    return batch_size, min(workers, -(-todo // batch_size))


def embeds_in_workers(device_type: str, workers: int) -> bool:
    """On a CPU every worker embeds its own batches with a one-thread engine (see BatchDataset);
    measured against one engine of `cores` streams in this process fed by decoding workers in
    BENCHMARKS.md. On a GPU the model runs in this process."""
    return workers > 0 and device_type == "cpu"


def _identity(batch: DecodedBatch | EmbeddedBatch) -> DecodedBatch | EmbeddedBatch:
    return batch


def _worker_init(_: int, parent: int | None = None) -> None:
    # One thread per worker: the workers share the cores between them, and a process forked after
    # the parent used OpenMP hangs if it starts an OpenMP team of its own.
    torch.set_num_threads(1)
    keep_freed_memory()  # inherited from the parent when forked; spawned workers need their own
    if parent is not None:
        _die_with_parent(parent)


def _die_with_parent(parent: int) -> None:
    """Linux: a worker is killed when the indexer dies (SIGKILL included), so none lingers holding
    the library's lock file descriptor it inherited."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent:  # the indexer died before prctl took effect
        os._exit(1)


def _forking_parent() -> int | None:
    """This process's id when workers are forked from it (Linux's default), else None."""
    import multiprocessing

    method = multiprocessing.get_start_method(allow_none=True) or multiprocessing.get_all_start_methods()[0]
    return os.getpid() if method == "fork" else None
