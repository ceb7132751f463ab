"""The resident runner: a long-lived process (a server watching its photo folder) decodes on threads
and embeds on one engine that stays loaded between runs.

`lookalike index` pays its start once per run: the engine compiled in each forked worker. A server
that indexes a new photo every few seconds would pay it every time, and forking a process full of
threads (waitress's, a retraining's OpenBLAS) risks a deadlock. Here decoding threads feed one
engine that spreads each batch over its streams (indexer/engines.py), both kept from one run to
the next: a single new photo costs its own decode and one forward pass.

Any `Runner` (indexer/runners/__init__.py) plugs into the same driver, `indexer.pipeline.index_folder`;
this one only adds `progress` (photos done, photos in the run) for a caller to show.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from indexer.backbone import Backbone
from indexer.decode import DecodedBatch, PhotoTask, decode_batch
from indexer.embed import EmbeddedBatch, embed_batch
from indexer.engines import Engine, cores
from indexer.report import IndexReport

log = logging.getLogger(__name__)


class ResidentRunner:
    """A `Runner` whose decoding threads and engine outlive a run. One run at a time.

    `threads` decode (default: the cores); the engine runs the settings' engine with one stream a
    core. `progress(done, total)` is called as batches finish. `workers` and `embed_in_workers` of
    the Runner protocol are the process layout of the local runner and are not used here.
    """

    def __init__(self, *, threads: int | None = None, progress: Callable[[int, int], None] | None = None) -> None:
        self.threads = threads or cores()
        self.progress = progress
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="lookalike-decode")
        self._engine: Engine | None = None
        self._key: tuple | None = None
        self._run_lock = threading.Lock()

    def engine(self, backbone: Backbone, engine: str = "auto") -> Engine:
        """The loaded engine for `backbone`, built (and compiled) only when the backbone changed."""
        from indexer.engines import make_engine

        key = (backbone.name, backbone.weights_identity, backbone.precision, str(backbone.device), engine)
        if self._engine is None or key != self._key:
            log.info("loading %s (%s engine) for watched indexing", backbone.name, engine)
            model = make_engine(backbone, engine)
            model.prepare()
            crop = backbone.preprocess.crop
            import numpy as np

            model.embed_uint8(np.zeros((1, 3, crop, crop), np.uint8))  # compiles now, not on the first photo
            self._engine, self._key = model, key
        return self._engine

    def warm_up(self, backbone: Backbone, engine: str = "auto") -> None:
        """Load the engine now (a server starting), so that the first new photo does not wait for it."""
        with self._run_lock:
            self.engine(backbone, engine)

    def __call__(
        self, root: Path, tasks: Sequence[PhotoTask], backbone: Backbone, *, batch_size: int = 32,
        workers: int | None = None, engine: str = "auto", embed_in_workers: bool | None = None,
        report: IndexReport | None = None,
    ) -> Iterator[EmbeddedBatch]:
        from indexer.engines import describe

        with self._run_lock:
            model = self.engine(backbone, engine)
            if report is not None:
                report.engine = describe(model)
            # A few photos are shared out among the threads; a burst goes batch by batch.
            size = max(1, min(batch_size, -(-len(tasks) // self.threads)))
            chunks = [tasks[i : i + size] for i in range(0, len(tasks), size)]
            ahead: deque[Future[DecodedBatch]] = deque()
            done = 0
            try:
                for chunk in chunks:
                    ahead.append(self._pool.submit(decode_batch, root, chunk, backbone.preprocess))
                    if len(ahead) <= self.threads:  # keep every thread busy and one batch ready
                        continue
                    batch = embed_batch(model, ahead.popleft().result(), backbone.dim)
                    done += len(batch.items)
                    self._tell(done, len(tasks))
                    yield batch
                while ahead:
                    batch = embed_batch(model, ahead.popleft().result(), backbone.dim)
                    done += len(batch.items)
                    self._tell(done, len(tasks))
                    yield batch
            finally:  # a run abandoned half-way leaves no decode behind to race the next one
                for future in ahead:
                    future.cancel()
                for future in ahead:
                    if not future.cancelled():
                        future.exception()

    def _tell(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(done, total)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
