"""The Ray runner: decode and embed as Ray Data stages on a cluster; this process (the driver) writes.

    tasks (driver) -> ray.data.from_items -> map_batches(DecodeEmbed actors, model loaded once each)
                   -> iter_batches back on the driver -> indexer.write (SQLite + FAISS, as local)

On CPU-only clusters each actor decodes and embeds its own batch with one thread (the local runner's
layout). Where the cluster has GPUs, decoding runs as CPU tasks and embedding in one actor per GPU.
Workers read the photos at the same path as the driver: put them on storage every node mounts.
Optional: `pip install 'lookalike[ray]'`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexer.backbone import Backbone, Preprocess
from indexer.decode import Decoded, DecodedBatch, PhotoTask, decode_batch
from indexer.embed import EmbeddedBatch, embed_batch
from indexer.engines import choose_engine, make_engine
from indexer.report import IndexReport

log = logging.getLogger(__name__)

MAX_BLOCKS = 10_000  # input blocks of a run (one per batch up to here): Ray Data's bookkeeping stays small
INSTALL_HINT = "the ray runner needs Ray: pip install 'lookalike[ray]'"


class RayUnavailable(RuntimeError):
    """Ray is not installed, or the cluster cannot be reached."""


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise RayUnavailable(INSTALL_HINT) from None
    return ray


def decode_columns(batch: dict[str, np.ndarray], root: str, preprocess: Preprocess) -> dict[str, np.ndarray]:
    """Ray Data stage: columns image_id, path -> image_id, pixels (zeros where failed), ok, error, facts."""
    tasks = [PhotoTask(int(i), str(p)) for i, p in zip(batch["image_id"], batch["path"], strict=True)]
    decoded = decode_batch(Path(root), tasks, preprocess)
    return to_columns(decoded, preprocess.crop)


def to_columns(decoded: DecodedBatch, crop: int) -> dict[str, np.ndarray]:
    ok = np.array([it.error is None for it in decoded.items], dtype=bool)
    pixels = np.zeros((len(ok), 3, crop, crop), dtype=np.uint8)
    if decoded.pixels is not None:
        pixels[ok] = np.asarray(decoded.pixels)
    return {
        "image_id": np.array([it.image_id for it in decoded.items], dtype=np.int64),
        "pixels": pixels,
        "ok": ok,
        "error": np.array([it.error or "" for it in decoded.items], dtype=object),
        "facts": np.array([json.dumps(it.facts, default=str) for it in decoded.items], dtype=object),
        "decode_seconds": np.full(len(ok), decoded.seconds / max(len(ok), 1)),
    }


def from_columns(batch: dict[str, np.ndarray]) -> DecodedBatch:
    ok = batch["ok"].astype(bool)
    items = tuple(
        Decoded(int(i), None, _facts(f), None if good else str(e))
        for i, good, e, f in zip(batch["image_id"], ok, batch["error"], batch["facts"], strict=True)
    )
    pixels = np.ascontiguousarray(batch["pixels"][ok]) if ok.any() else None
    return DecodedBatch(items, pixels, float(batch["decode_seconds"].sum()))


def _facts(text: str) -> dict:
    from datetime import datetime

    facts = json.loads(text)
    if facts.get("taken_at"):  # a datetime before it crossed the wire
        facts["taken_at"] = datetime.fromisoformat(facts["taken_at"])
    return facts


class Embedder:
    """Ray Data actor: builds the backbone once, then embeds decoded batches (or decodes them too)."""

    def __init__(self, backbone: dict, identity: dict, root: str | None, threads: int, engine: str = "auto") -> None:
        import torch

        torch.set_num_threads(threads)
        self.backbone = Backbone(**backbone)
        if self.backbone.identity() != identity:
            raise RayUnavailable(f"a worker's backbone {self.backbone.identity()} differs from the driver's "
                                 f"{identity}: give workers the same weights file at the same path")
        self.engine = make_engine(self.backbone, engine, threads=threads)
        self.engine.prepare()  # load the weights (or the converted model) now, not in the first batch
        self.root = root

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.root is not None:  # fused: decode here as well
            batch = decode_columns(batch, self.root, self.backbone.preprocess)
        embedded = embed_batch(self.engine, from_columns(batch), self.backbone.dim)
        vectors = np.zeros((len(batch["ok"]), self.backbone.dim), dtype=np.float32)
        vectors[batch["ok"].astype(bool)] = embedded.vectors
        out = {k: batch[k] for k in ("image_id", "ok", "error", "facts", "decode_seconds")}
        out["vectors"] = vectors
        out["embed_seconds"] = np.full(len(vectors), embedded.embed_seconds / max(len(vectors), 1))
        return out


def to_embedded(batch: dict[str, np.ndarray]) -> EmbeddedBatch:
    """A batch back on the driver as the writer takes it."""
    ok = batch["ok"].astype(bool)
    items = tuple(
        Decoded(int(i), None, _facts(f), None if good else str(e))
        for i, good, e, f in zip(batch["image_id"], ok, batch["error"], batch["facts"], strict=True)
    )
    return EmbeddedBatch(items, np.ascontiguousarray(batch["vectors"][ok], dtype=np.float32),
                         float(batch["decode_seconds"].sum()), float(batch["embed_seconds"].sum()))


class RayRunner:
    """Joins the decode and embed stages on Ray Data. `address`: a cluster's (None: start one here)."""

    def __init__(self, address: str | None = None) -> None:
        self.ray = _import_ray()
        self.address = address
        if address:
            _check_reachable(address)

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
        try:
            if self.address:
                ray.init(address=self.address, **quiet)
            else:
                ray.init(include_dashboard=False, **quiet)
        except Exception as e:  # Ray raises bare Exception when its own processes start too slowly
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
            raise RayUnavailable(f"cannot start or reach {where}: {e}") from None

    def __call__(
        self, root: Path, tasks: Sequence[PhotoTask], backbone: Backbone, *, batch_size: int = 32,
        workers: int | None = None, engine: str = "auto", embed_in_workers: bool | None = None,
        report: IndexReport | None = None,
    ) -> Iterator[EmbeddedBatch]:
        self._connect()
        ray = self.ray
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), max(1, int(resources.get("CPU", 1)))
        device = "cuda" if gpus else "cpu"
        # The actors run exactly the engine and precision the driver chose and the library records
        # (the driver's resolved precision, never "auto": a worker's CPU may decide otherwise).
        engine = choose_engine(engine, device, backbone.precision).name
        if report is not None:
            report.engine = f"{engine} {backbone.precision} on ray"
        spec = {"name": backbone.name, "weights": backbone.weights, "device": device,
                "precision": backbone.precision}
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # the driver shows its own bar
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        rows = [{"image_id": t.image_id, "path": t.path} for t in tasks]
        batches = -(-len(rows) // batch_size)
        # A block per batch: an actor's output reaches the driver block by block, so blocks of many
        # batches held the first write back ~10 s (3,781 photos in 8 blocks: first batch after 18 s).
        ds = ray.data.from_items(rows, override_num_blocks=max(1, min(batches, MAX_BLOCKS)))
        if gpus:
            ds = ds.map_batches(decode_columns, fn_kwargs={"root": str(root), "preprocess": backbone.preprocess},
                                batch_size=batch_size, batch_format="numpy", num_cpus=1)
            ds = ds.map_batches(
                Embedder, fn_constructor_kwargs={"backbone": spec, "identity": backbone.identity(), "root": None,
                                                 "threads": 1, "engine": engine},
                batch_size=batch_size, batch_format="numpy", num_gpus=1,
                compute=ray.data.ActorPoolStrategy(size=workers or gpus))
        else:
            ds = ds.map_batches(
                Embedder, fn_constructor_kwargs={"backbone": spec, "identity": backbone.identity(),
                                                 "root": str(root), "threads": 1, "engine": engine},
                batch_size=batch_size, batch_format="numpy", num_cpus=1,
                compute=ray.data.ActorPoolStrategy(size=min(workers or cpus, cpus)))
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            yield to_embedded(batch)


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """A cluster address (`host:port`, `ray://host:port`) whose port does not answer is refused at
    once: ray.init retries an unreachable cluster without end. 'auto' and other forms are Ray's."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address}: {e.strerror or e}") from None
