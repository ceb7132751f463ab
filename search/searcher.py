"""Nearest neighbours in a library: by indexed image, by any image, by vector; rows in rank order."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from sqlalchemy.orm import Session

from indexer.imageio import load_image, to_rgb
from indexer.library import Library, LibraryError, file_stamp
from indexer.settings import Settings
from indexer.vectors import VectorIndex

if TYPE_CHECKING:  # torch: imported only when a query needs embedding
    from indexer.backbone import Backbone
    from indexer.engines import Engine

log = logging.getLogger(__name__)

PADDING = -1e30  # FAISS pads missing results with -FLT_MAX: a score at or below this is no result


class NotFound(LookupError):
    """No such image, or it has no vector (not indexed yet, or unreadable)."""


@dataclass(frozen=True)
class SearchHit:
    image_id: int
    score: float  # cosine similarity, -1..1


class Searcher:
    """Searches one library's FAISS index. Safe for concurrent reads from many threads.

    The index is loaded once and swapped whole by `reload()` when the indexer rewrites the file,
    so a search in flight keeps the index object it started with.
    """

    def __init__(
        self, library: Library, backbone: Backbone | None = None, *, settings: Settings | None = None
    ) -> None:
        self.library = library
        self._backbone = backbone
        self._engine: Engine | None = None
        # Device, precision and engine for queries; backbone and weights come from the library.
        self.settings = settings or Settings.from_env()
        self._lock = threading.Lock()  # guards reload and the lazy backbone
        self._embed_lock = threading.Lock()  # one forward pass at a time: they share the cores
        self._index: VectorIndex | None = None
        self._stamp: tuple | None = None
        # The library's meta `weights` when the query backbone was taken: `lookalike tune` (or
        # --revert) switching the representation changes it, and queries must embed with the new one.
        self._weights: str | None = library.meta().get("weights") if backbone is not None else None
        # What the loaded index holds: the library's vectors fingerprint when it matched the
        # database exactly, None while an indexer run is under way (derived data keys on this).
        self.source: list[str] | None = None
        self.reload()

    # -- the index --------------------------------------------------------------------------------

    @property
    def index(self) -> VectorIndex:
        if self._index is None:
            self.reload()
        return self._index  # type: ignore[return-value]

    def reload(self) -> bool:
        """Re-read the FAISS file if the indexer rewrote it since the last load. True if it did.

        Costs one stat() when nothing changed.
        """
        stamp = file_stamp(self.library.vectors_path)
        if self._index is not None and stamp == self._stamp:
            if self.source is None and self.library.meta().get("vectors_dirty") != "1":
                # Loaded between the indexer writing this file and marking it clean: it is clean.
                self.source = self.library.vectors_fingerprint()
            return False
        with self._lock:
            if self._index is not None and stamp == self._stamp:
                return False
            before = self.library.vectors_fingerprint()
            clean = self.library.meta().get("vectors_dirty") != "1"
            index = self.library.load_vectors()  # reconciled with the database, which wins
            same = clean and self.library.vectors_fingerprint() == before
            self._index, self._stamp, self.source = index, stamp, before if same else None
            log.info(
                "loaded %s: %d vectors (%s)", self.library.vectors_path, index.ntotal, index.kind
            )
            return True

    # -- the backbone, for queries that are not in the library ---------------------------------------

    @property
    def backbone(self) -> Backbone:
        """The library's own backbone, built on first use and again after the library's
        representation changed (its meta `weights`); raises LibraryError if it cannot be."""
        self._forget_stale_backbone()
        backbone = self._backbone
        if backbone is None:
            with self._lock:
                if self._backbone is None:
                    weights = self.library.meta().get("weights")
                    self._backbone, self._engine, self._weights = self._library_backbone(), None, weights
                backbone = self._backbone
        return backbone

    def _forget_stale_backbone(self) -> None:
        """Drop the query backbone and engine if the library's weights are no longer theirs (one
        small SQLite read a query)."""
        if self._backbone is None:
            return
        weights = self.library.meta().get("weights")
        if weights != self._weights:
            with self._lock:
                if self._backbone is not None and weights != self._weights:
                    log.info("the library's weights are now %s: rebuilding the query backbone", weights)
                    self._backbone, self._engine = None, None

    @property
    def engine(self) -> Engine:
        """The engine that embeds queries (the settings' engine, device and precision)."""
        backbone = self.backbone  # rebuilt (and the engine dropped) after a representation switch
        engine = self._engine
        if engine is None:
            from indexer.engines import EngineError, make_engine

            with self._lock:
                if self._engine is None:
                    try:
                        self._engine = make_engine(backbone, self.settings.engine)
                    except EngineError as e:
                        raise LibraryError(f"cannot embed queries: {e}") from None
                engine = self._engine
        return engine

    def warm_up(self) -> None:
        """Load (and compile) the query model now rather than on the first query."""
        self.engine.prepare()
        self.engine.embed_uint8(np.zeros((1, 3, self.backbone.preprocess.crop, self.backbone.preprocess.crop),
                                         dtype=np.uint8))

    def _library_backbone(self) -> Backbone:
        """The backbone the library recorded: its name and weights file, so that a library indexed
        with --weights FILE embeds queries with that file."""
        from indexer.backbone import Backbone, BackboneError

        meta = self.library.meta()
        identity = self.library.identity()
        name = identity.get("backbone")
        if not name:
            raise LibraryError(
                f"library {self.library.path} has no vectors yet: index some photos first"
            )
        weights = meta.get("weights_file") or None
        try:
            backbone = Backbone(name, weights=Path(weights) if weights else None,
                                device=self.settings.device, precision=self.settings.precision)
        except BackboneError as e:
            raise LibraryError(f"cannot build the library's backbone {name!r}: {e}") from None
        if backbone.identity() != identity:
            raise LibraryError(
                f"library {self.library.path} was embedded with {identity.get('weights')}; this "
                f"process would embed queries with {backbone.weights_identity}: the weights file changed"
            )
        return backbone

    # -- queries ----------------------------------------------------------------------------------

    def vector(self, image_id: int) -> npt.NDArray[np.float32]:
        """The stored unit vector [D] of an indexed image. Raises NotFound."""
        ids, vectors = self.library.stored_vectors([int(image_id)])
        if not len(ids):
            raise NotFound(f"image {image_id} is not in the library or has no vector")
        return vectors[0]

    def by_id(self, image_id: int, k: int = 20) -> list[SearchHit]:
        """The k nearest neighbours of an indexed image, itself excluded. Raises NotFound."""
        return self.by_vector(self.vector(image_id), k, exclude=(int(image_id),))

    def by_vector(
        self, vector: npt.ArrayLike, k: int = 20, exclude: Iterable[int] = ()
    ) -> list[SearchHit]:
        """The k nearest neighbours of a vector [D] (normalised here), best first."""
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        norm = float(np.linalg.norm(query))
        if norm > 0:
            query = query / norm
        return self.batch(query, k, exclude=[tuple(int(i) for i in exclude)])[0]

    def by_image(self, data: bytes | PILImage.Image, k: int = 20) -> list[SearchHit]:
        """Neighbours of an image file's bytes or a PIL image, embedded as the library embeds.

        Raises indexer.imageio.ImageError for bytes that are not a usable image.
        """
        if isinstance(data, PILImage.Image):
            img = to_rgb(data)
        else:
            img, _ = load_image(bytes(data), min_side=self.backbone.preprocess.resize)
        engine = self.engine
        crop = self.backbone.preprocess.crop_uint8
        with self._embed_lock:
            vector = engine.embed_uint8(crop(img).unsqueeze(0))[0]
        return self.by_vector(vector, k)

    def batch(
        self,
        queries: npt.NDArray[np.float32],
        k: int,
        exclude: list[tuple[int, ...]] | None = None,
    ) -> list[list[SearchHit]]:
        """Neighbours of many unit vectors [N, D]; `exclude[i]` are ids dropped from row i."""
        k = int(k)
        if k < 1:
            raise ValueError("k must be at least 1")
        index = self.index
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if index.ntotal == 0:
            return [[] for _ in queries]
        if queries.shape[1] != index.dim:
            raise ValueError(f"query has {queries.shape[1]} dimensions, the library {index.dim}")
        extra = max((len(e) for e in exclude), default=0) if exclude else 0
        scores, ids = index.search(queries, k + extra)
        return [
            hits_from_row(row_scores, row_ids, k, exclude[i] if exclude else ())
            for i, (row_scores, row_ids) in enumerate(zip(scores, ids, strict=False))
        ]

    # -- rows ---------------------------------------------------------------------------------------

    def fetch(self, session: Session, hits: list[SearchHit]) -> list[tuple[ImageRow, float]]:
        """The hits' rows in rank order with their scores, in one query.

        Rows deleted since the search are left out.
        """
        return fetch_images(session, hits)


def hits_from_row(
    scores: npt.NDArray[np.float32], ids: npt.NDArray[np.int64], k: int, exclude: Iterable[int] = ()
) -> list[SearchHit]:
    """One FAISS result row as hits: -1 padding and excluded ids dropped, at most k kept."""
    skip = set(exclude)
    hits = []
    for score, image_id in zip(scores, ids, strict=False):
        if image_id < 0 or image_id in skip:
            continue
        hits.append(SearchHit(int(image_id), float(score)))
        if len(hits) == k:
            break
    return hits


@dataclass(frozen=True, slots=True)
class LabelRow:
    label: str
    source: str
    set_at: datetime | None


@dataclass(frozen=True, slots=True)
class ImageRow:
    """An image's row as results show it, read without the ORM: a search shows 20 of them per
    request, and 20 ORM objects (with their labels) took ~1 ms of a 5 ms answer at a million photos."""

    id: int
    path: str
    folder: str
    size: int
    mtime: float
    hash: str | None
    width: int | None
    height: int | None
    format: str | None
    taken_at: datetime | None
    camera: str | None
    added_at: datetime | None
    status: str
    error: str | None
    label: LabelRow | None


_ROWS_SQL = (
    "SELECT i.id, i.path, i.folder, i.size, i.mtime, i.hash, i.width, i.height, i.format, i.taken_at, "
    "i.camera, i.added_at, i.status, i.error, l.label, l.source, l.set_at "
    "FROM images i LEFT JOIN labels l ON l.image_id = i.id WHERE i.id IN ({})"
)


def fetch_images(session: Session, hits: list[SearchHit]) -> list[tuple[ImageRow, float]]:
    if not hits:
        return []
    ids = tuple(h.image_id for h in hits)
    rows = session.connection().exec_driver_sql(_ROWS_SQL.format(",".join("?" * len(ids))), ids)
    by_id = {}
    for r in rows:
        label = LabelRow(r[14], r[15], _when(r[16])) if r[14] is not None else None
        by_id[r[0]] = ImageRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], _when(r[9]), r[10],
                               _when(r[11]), r[12], r[13], label)
    return [(by_id[h.image_id], h.score) for h in hits if h.image_id in by_id]


def _when(value: str | None) -> datetime | None:
    """A DateTime column as SQLAlchemy stores it in SQLite ('2026-11-24 10:00:00.000000')."""
    return datetime.fromisoformat(value) if value else None
