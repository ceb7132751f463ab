"""The default CPU layout: decoding threads feed one engine in this process.

On a CPU where the model is fast (OpenVINO in bf16 on AMX runs Lite0 at ~6 ms of CPU per photo),
decoding, hashing and cropping a photo cost about as much as embedding it, and the process layout
(indexer/runners/local.py: each worker process decodes and embeds its own batches) adds what
processes cost: a model compiled in every worker, batches pickled across, torch imported for the
DataLoader. Here nothing crosses a process:

    decode threads (one per core)   Pillow's decode and resize, OpenCV and PDQ release the GIL
      -> one engine                 OpenVINO's own threads, one single-thread stream per core, each
                                    stream on a whole batch: as many batches go in at once as it has
                                    streams (a stream runs a batch of 32 about a fifth cheaper per
                                    photo than two streams a batch of 16 each)
      -> this thread                writes the batches before (SQLite, FAISS) while the next embed

and nothing imports torch: the crops are numpy arrays (`Preprocess.crop_array`), and OpenVINO reads
its converted and compiled model from the cache (indexer/engines.py). Batches come out in task order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from indexer.backbone import Backbone
from indexer.decode import DecodedBatch, PhotoTask, decode_batch
from indexer.embed import EmbeddedBatch, embed_batch
from indexer.engines import Engine
from indexer.report import IndexReport
from indexer.runners.cores import default_workers


def run_local(
    root: Path, tasks: Sequence[PhotoTask], backbone: Backbone, *, batch_size: int = 32,
    workers: int | None = None, engine: str = "auto", embed_in_workers: bool | None = None,
    report: IndexReport | None = None,
) -> Iterator[EmbeddedBatch]:
    """The local runner: on a CPU, decoding threads and one engine (`run_threads`) unless
    `embed_in_workers` asks for a process layout (True: workers decode and embed; False: workers
    decode, this process embeds); on a GPU, indexer/runners/local.py's decoding workers."""
    if backbone.device_type == "cpu" and embed_in_workers is None:
        yield from run_threads(root, tasks, backbone, batch_size=batch_size, workers=workers, engine=engine,
                               report=report)
        return
    from indexer.runners.local import run_local as run_processes

    yield from run_processes(root, tasks, backbone, batch_size=batch_size, workers=workers, engine=engine,
                             embed_in_workers=embed_in_workers, report=report)


def run_threads(
    root: Path, tasks: Sequence[PhotoTask], backbone: Backbone, *, batch_size: int = 32,
    workers: int | None = None, engine: str = "auto", report: IndexReport | None = None,
) -> Iterator[EmbeddedBatch]:
    """Decode `tasks` with `workers` threads (None: one per core; 0 counts as 1) and embed them with
    one engine of all the cores; yields batches in task order, one embedding while the caller
    writes the one before."""
    from indexer.engines import describe, make_engine

    model = make_engine(backbone, engine)
    model.prepare()
    if report is not None:
        report.engine = describe(model)
    decoders = max(1, default_workers("cpu") if workers is None else workers)
    chunks = [tasks[i : i + batch_size] for i in range(0, len(tasks), batch_size)]
    streams = int(getattr(model, "streams", 1))
    ahead = decoders + streams  # decoded batches in flight: every decoder busy, the engine's next ready
    decode_pool = ThreadPoolExecutor(decoders, thread_name_prefix="decode")
    embed_pool = ThreadPoolExecutor(1, thread_name_prefix="embed")
    try:
        decoding: deque[Future[DecodedBatch]] = deque()
        embedding: deque[Future[list[EmbeddedBatch]]] = deque()
        pending = iter(chunks)

        def fill() -> None:
            while len(decoding) < ahead and (chunk := next(pending, None)) is not None:
                decoding.append(decode_pool.submit(decode_batch, root, chunk, backbone.preprocess))

        fill()
        while decoding:
            group = [decoding.popleft().result()]
            while len(group) < streams and decoding:
                group.append(decoding.popleft().result())
            fill()
            embedding.append(embed_pool.submit(embed_group, model, group, backbone.dim))
            while len(embedding) > 1:  # one group embeds while the caller writes the one before
                yield from embedding.popleft().result()
        while embedding:
            yield from embedding.popleft().result()
    finally:  # also when the caller stops early (an error, Ctrl+C): no decode goes on behind it
        decode_pool.shutdown(wait=True, cancel_futures=True)
        embed_pool.shutdown(wait=True, cancel_futures=True)


def embed_group(engine: Engine, group: list[DecodedBatch], dim: int) -> list[EmbeddedBatch]:
    """Embed decoded batches in one engine call (which spreads it over its streams); the vectors
    and the model's time go back to each batch by its share of the photos."""
    if len(group) == 1:
        return [embed_batch(engine, group[0], dim)]
    import numpy as np

    parts = [b.pixels for b in group if b.pixels is not None]
    whole = DecodedBatch((), np.concatenate(parts) if parts else None)
    embedded = embed_batch(engine, whole, dim)
    counts = [0 if b.pixels is None else len(b.pixels) for b in group]
    bounds = np.cumsum([0, *counts])
    share = embedded.embed_seconds / max(1, sum(counts))
    return [EmbeddedBatch(b.items, embedded.vectors[bounds[i] : bounds[i + 1]], b.seconds, share * counts[i])
            for i, b in enumerate(group)]

