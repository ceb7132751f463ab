"""The batch job: a photo folder becomes rows in SQLite and vectors in FAISS, incrementally.

    scan (size, mtime) -> plan against the database -> moves by hash -> removals
    -> DataLoader workers, one batch per item: read, hash, decode, crop to uint8 (each item keeps
       its row id); on the CPU each worker also embeds its batch with one thread
    -> Backbone.embed (here, on a GPU) -> one transaction per batch (rows + vectors) -> FAISS add
    -> FAISS file written atomically at the end

The database is committed batch by batch and is the source of truth: killed at any moment, the
next run finds the rows still `pending` and carries on, and the FAISS file is rebuilt from the
stored vectors if the last run did not finish writing it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy import delete, insert, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from torch.utils.data import DataLoader, Dataset

from indexer.backbone import Backbone
from indexer.imageio import ImageError, load_image
from indexer.library import Library, LibraryError
from indexer.scan import FileEntry, OutsideRoot, open_inside, scan
from indexer.schema import FAILED, INDEXED, PENDING, Embedding, Image, utcnow

log = logging.getLogger(__name__)


@dataclass
class IndexReport:
    """What one run did. `failed` counts this run's new failures by reason."""

    indexed: int = 0
    unchanged: int = 0
    moved: int = 0
    removed: int = 0
    failed: Counter = field(default_factory=Counter)
    unreadable_dirs: list[str] = field(default_factory=list)
    ignored: int = 0  # files skipped by extension (not image formats)
    seconds: float = 0.0
    embed_seconds: float = 0.0  # model time, summed over the processes that ran it
    decode_seconds: float = 0.0  # read + hash + decode + crop, summed over workers

    @property
    def images_per_second(self) -> float:
        done = self.indexed + sum(self.failed.values())
        return done / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        failed = sum(self.failed.values())
        reasons = ", ".join(f"{n} {r}" for r, n in self.failed.most_common())
        line = (
            f"indexed {self.indexed}, unchanged {self.unchanged}, moved {self.moved}, "
            f"removed {self.removed}, failed {failed}" + (f" ({reasons})" if reasons else "")
        )
        if self.ignored:
            line += f", ignored {self.ignored} non-image files"
        if self.unreadable_dirs:
            line += f", unreadable folders {len(self.unreadable_dirs)}"
        return line + f" in {self.seconds:.1f}s"


def file_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


@dataclass(frozen=True)
class Decoded:
    """One dataset item: the row id it belongs to, and either pixels + facts or an error.

    `pixels` is the uint8 crop [3, H, W] (`Preprocess.crop_uint8`), normalised later per batch.
    """

    image_id: int
    pixels: torch.Tensor | None
    facts: dict
    error: str | None


class PhotoDataset(Dataset):
    """Reads, hashes and decodes photos in worker processes; a bad file yields its error."""

    def __init__(self, root: Path, items: list[tuple[int, str]], transform: Callable, min_side: int):
        self.root = root
        self.items = items
        self.transform = transform
        self.min_side = min_side

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Decoded:
        image_id, rel = self.items[i]
        facts: dict = {}
        try:
            data = open_inside(self.root, self.root / rel).read_bytes()  # no link out of the root
            facts["hash"] = file_hash(data)
            img, info = load_image(data, min_side=self.min_side)
            facts.update(
                width=info.width, height=info.height, format=info.format,
                taken_at=info.taken_at, camera=info.camera,
            )
            return Decoded(image_id, self.transform(img), facts, None)
        except ImageError as e:
            return Decoded(image_id, None, facts, str(e))
        except OSError as e:  # unreadable, vanished since the scan
            return Decoded(image_id, None, facts, f"unreadable file: {e}")
        except OutsideRoot:  # made a link out of the root since the scan
            return Decoded(image_id, None, facts, "outside the photo folder: a link to another place")
        except Exception as e:  # preprocessing of a strange image: never stop the batch
            return Decoded(image_id, None, facts, f"corrupt image: {type(e).__name__}: {e}")


def collate(items: list[Decoded]) -> tuple[list[Decoded], torch.Tensor | None]:
    good = [it.pixels for it in items if it.pixels is not None]
    return items, (torch.stack(good) if good else None)


@dataclass
class Batch:
    """One batch as a worker hands it back. Rows of `pixels`/`vectors` follow the items without error."""

    items: list[Decoded]  # pixels dropped: they travel stacked in `pixels`
    pixels: torch.Tensor | None  # uint8 [n_good, 3, H, W], unless the worker embedded them
    vectors: torch.Tensor | None  # float32 [n_good, D] when the worker embedded them
    decode_seconds: float
    model_seconds: float

    def pin_memory(self) -> Batch:  # DataLoader(pin_memory=True) calls this for CUDA
        if self.pixels is not None:
            self.pixels = self.pixels.pin_memory()
        return self


class BatchDataset(Dataset):
    """Item b is batch b: decoded (and, with `embed` set, embedded) inside one worker.

    Embedding in the workers keeps the model's work data-parallel across processes of one thread
    each; on a few CPU cores that beats one multi-threaded model fed by decoding processes, whose
    threads stall each other whenever a decoder (or anything else on the machine) takes a core.
    """

    def __init__(self, photos: PhotoDataset, batch_size: int, embed: Callable | None) -> None:
        self.photos = photos
        self.batch_size = batch_size
        self.embed = embed

    def __len__(self) -> int:
        return -(-len(self.photos) // self.batch_size)

    def __getitem__(self, b: int) -> Batch:
        t0 = time.perf_counter()
        start = b * self.batch_size
        decoded = [self.photos[i] for i in range(start, min(start + self.batch_size, len(self.photos)))]
        items, pixels = collate(decoded)
        items = [Decoded(it.image_id, None, it.facts, it.error) for it in items]
        t1 = time.perf_counter()
        vectors = None
        if self.embed is not None and pixels is not None:
            vectors = torch.from_numpy(self.embed(pixels))
            pixels = None
        return Batch(items, pixels, vectors, t1 - t0, time.perf_counter() - t1)


def _identity(batch: Any) -> Any:  # DataLoader's collate_fn: with batch_size=None, one Batch
    return batch


def _worker_init(_: int, parent: int | None = None) -> None:
    # One thread per worker: the workers share the cores between them, and a process forked after
    # the parent used OpenMP hangs if it starts an OpenMP team of its own.
    torch.set_num_threads(1)
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


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 2


def default_workers(device_type: str = "cpu") -> int:
    """CPU: one worker per core (each decodes and embeds). GPU: the cores less the main process's."""
    cores = _cores()
    return max(1, min(8, cores if device_type == "cpu" else cores - 1))


def index_folder(
    photos: Path,
    library: Library,
    backbone: Backbone,
    *,
    batch_size: int = 32,
    workers: int | None = None,
    reembed: bool = False,
    progress: bool = False,
) -> IndexReport:
    """Bring `library` in line with the photos under `photos`. Raises LibraryError on misuse."""
    started = time.perf_counter()
    root = Path(photos).expanduser().resolve()
    if not root.is_dir():
        raise LibraryError(f"{root} is not a folder")
    report = IndexReport()
    with library.writer_lock():
        _check_library(library, root, backbone, reembed)
        vectors = library.load_vectors(full_check=True)
        dirty = library.meta().get("vectors_dirty") == "1" or not library.vectors_path.exists()

        scanned = scan(root)
        report.unreadable_dirs = scanned.unreadable_dirs
        report.ignored = scanned.ignored
        plan = _plan(library, root, scanned.files, report)
        if plan.removed_ids or plan.todo:
            library.mark_vectors_dirty()
            dirty = True
        vectors.remove(plan.removed_ids)
        report.removed = len(plan.removed_ids)
        if plan.todo:
            _embed(library, root, backbone, vectors, plan, report, batch_size, workers, progress)
        if dirty:
            library.save_vectors(vectors, clean=True)
    report.seconds = time.perf_counter() - started
    return report


def _check_library(library: Library, root: Path, backbone: Backbone, reembed: bool) -> None:
    meta = library.meta()
    if meta.get("root") and meta["root"] != str(root):
        raise LibraryError(
            f"library {library.path} indexes {meta['root']}, not {root}: "
            f"use another --library for another collection"
        )
    have, want = library.identity(), backbone.identity()
    if have and (have != want or reembed):  # --reembed re-embeds every photo, same backbone or not
        if not reembed:
            differ = ", ".join(f"{k} {have.get(k)!r} -> {want[k]!r}" for k in want if have.get(k) != want[k])
            raise LibraryError(
                f"library {library.path} was embedded with another backbone ({differ}); "
                f"pass --reembed to re-embed every photo, or use another --library"
            )
        log.info("re-embedding %s with %s", library.path, backbone.name)
        library.reset_vectors()
    with library.Session.begin() as s:
        library.set_meta(s, root=str(root), **want)


@dataclass
class _Plan:
    todo: list[tuple[int, str]]  # (row id, path) to decode and embed
    changed_ids: set[int]  # rows whose old vector must leave FAISS
    removed_ids: list[int]


def _plan(library: Library, root: Path, files: list[FileEntry], report: IndexReport) -> _Plan:
    """Compare the scan with the database; apply moves and removals; insert rows for new files."""
    with library.Session() as s:
        rows = {
            r.path: r
            for r in s.execute(select(Image.id, Image.path, Image.size, Image.mtime, Image.status, Image.hash))
        }
    seen = {f.path for f in files}
    todo: list[tuple[int, str]] = []
    changed: list[tuple[FileEntry, int]] = []
    new: list[FileEntry] = []
    for f in files:
        row = rows.get(f.path)
        if row is None:
            new.append(f)
        elif row.size == f.size and row.mtime == f.mtime and row.status != PENDING:
            report.unchanged += 1
        elif row.size == f.size and row.mtime == f.mtime:
            todo.append((row.id, f.path))  # pending: an earlier run stopped before embedding it
        else:
            changed.append((f, row.id))
    missing = [row for path, row in rows.items() if path not in seen]

    with library.Session.begin() as s:
        # A new path whose bytes equal a vanished indexed file is that file, moved: keep its vector.
        by_hash: dict[str, list] = {}
        for row in missing:
            if row.hash and row.status == INDEXED:
                by_hash.setdefault(row.hash, []).append(row)
        moved_ids: set[int] = set()
        still_new = []
        for f in new:
            h = _hash_file(root / f.path) if by_hash else None
            old = by_hash[h].pop() if h in by_hash else None
            if h in by_hash and not by_hash[h]:
                del by_hash[h]
            if old is None:
                still_new.append(f)
                continue
            s.execute(
                update(Image).where(Image.id == old.id)
                .values(path=f.path, folder=_folder(f.path), size=f.size, mtime=f.mtime)
            )
            moved_ids.add(old.id)
            report.moved += 1
        removed_ids = [row.id for row in missing if row.id not in moved_ids]
        for start in range(0, len(removed_ids), 500):
            s.execute(delete(Image).where(Image.id.in_(removed_ids[start : start + 500])))
        for f, image_id in changed:
            s.execute(
                update(Image).where(Image.id == image_id)
                .values(size=f.size, mtime=f.mtime, status=PENDING, error=None)
            )
            todo.append((image_id, f.path))
        if still_new:
            now = utcnow()
            s.execute(
                insert(Image),
                [
                    dict(path=f.path, folder=_folder(f.path), size=f.size, mtime=f.mtime,
                         status=PENDING, added_at=now)
                    for f in still_new
                ],
            )
    if still_new:
        with library.Session() as s:
            ids = dict(s.execute(select(Image.path, Image.id).where(Image.status == PENDING)).all())
        todo += [(ids[f.path], f.path) for f in still_new]
    todo.sort(key=lambda t: t[1])
    return _Plan(todo, {image_id for _, image_id in changed}, removed_ids)


def _hash_file(path: Path) -> str | None:
    try:
        return file_hash(path.read_bytes())
    except OSError:
        return None


def _folder(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _embed(
    library: Library,
    root: Path,
    backbone: Backbone,
    vectors,
    plan: _Plan,
    report: IndexReport,
    batch_size: int,
    workers: int | None,
    progress: bool,
) -> None:
    device = backbone.device.type
    workers = default_workers(device) if workers is None else workers
    todo = len(plan.todo)
    if workers > 1:
        # Batches of (nearly) equal size, as many as a multiple of the workers, which take them in
        # turn: no worker idles at the end of a short run while another finishes a second batch.
        batches = -(-todo // batch_size)
        batches = -(-batches // workers) * workers
        batch_size = -(-todo // batches)
        workers = min(workers, -(-todo // batch_size))
    backbone.model  # noqa: B018 (load the weights once, before the workers fork)
    photos = PhotoDataset(root, plan.todo, backbone.preprocess.crop_uint8,
                          min_side=backbone.preprocess.resize)
    embed_in_workers = workers > 0 and device == "cpu"
    dataset = BatchDataset(photos, batch_size, backbone.embed_uint8 if embed_in_workers else None)
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        collate_fn=_identity,
        worker_init_fn=partial(_worker_init, parent=_forking_parent()) if workers else None,
        pin_memory=device == "cuda",
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
    )
    from tqdm import tqdm

    bar = tqdm(total=todo, unit="img", disable=not progress, smoothing=0.1, desc="indexing")
    for batch in loader:
        report.decode_seconds += batch.decode_seconds
        report.embed_seconds += batch.model_seconds
        if batch.vectors is not None:
            embedded = batch.vectors.numpy()
        elif batch.pixels is not None:
            t0 = time.perf_counter()
            embedded = backbone.embed_uint8(batch.pixels)
            report.embed_seconds += time.perf_counter() - t0
        else:
            embedded = np.zeros((0, backbone.dim), np.float32)
        good = [it for it in batch.items if it.error is None]
        bad = [it for it in batch.items if it.error is not None]
        _write_batch(library, good, embedded, bad)
        stale = [it.image_id for it in batch.items if it.image_id in plan.changed_ids]
        vectors.remove(stale)
        vectors.add([it.image_id for it in good], embedded)
        report.indexed += len(good)
        for it in bad:
            report.failed[it.error.split(":", 1)[0]] += 1
        bar.update(len(batch.items))
    bar.close()


def _write_batch(library: Library, good: list[Decoded], embedded: np.ndarray, bad: list[Decoded]) -> None:
    """One transaction: the good rows indexed with their vectors, the bad ones failed with a reason."""
    now = utcnow()
    with library.Session.begin() as s:
        if good:
            # Executemany statements: a few per batch instead of a SELECT + UPDATE per row.
            s.execute(
                update(Image),
                [dict(id=it.image_id, status=INDEXED, error=None, indexed_at=now, **it.facts)
                 for it in good],
            )
            upsert = sqlite_insert(Embedding)
            s.execute(
                upsert.on_conflict_do_update(
                    index_elements=[Embedding.image_id], set_={"vector": upsert.excluded.vector}
                ),
                [dict(image_id=it.image_id, vector=vec.tobytes()) for it, vec in zip(good, embedded, strict=False)],
            )
        for it in bad:
            s.execute(
                update(Image).where(Image.id == it.image_id)
                .values(status=FAILED, error=it.error, indexed_at=now, **it.facts)
            )
            s.execute(delete(Embedding).where(Embedding.image_id == it.image_id))
