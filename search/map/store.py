"""The collection map kept in a library: points in `map_points`, the fit beside the database, kept current.

A full fit (search/layout.py) runs the first time, on request, when the backbone changed, and when
more than REFIT_SHARE of the photos are new or re-embedded since the last fit; otherwise new
photos are placed by the stored fit and nothing else moves.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt
from sqlalchemy import ColumnElement, delete, func, insert, or_, select

from indexer.library import Library, file_lock
from indexer.npz import read_npz, write_npz
from indexer.schema import INDEXED, Embedding, Image, Label, MapPoint, SuggestedLabel, utcnow
from search.map import layout

log = logging.getLogger(__name__)

MAP_STATE = "map_layout"  # meta key: MapState as JSON
FIT_FILE = "map-fit.npz"  # the projection and the fitted sample, for placing new photos
LOCK_FILE = "map.lock"
REFIT_SHARE = 0.5
_CHUNK = 20_000


class MapBusy(RuntimeError):
    """Another process or thread is computing this library's map."""


@dataclass(frozen=True)
class MapState:
    """What the meta key records about the stored layout."""

    method: str
    fitted_on: int  # photos on the map right after the last full fit
    sample: int  # of which the layout was fitted on this many; the rest were placed
    weights: str | None  # the backbone weights of the vectors it was fitted on
    updated_to: str | None  # the latest Image.indexed_at taken into account (ISO)
    computed_at: str  # when the points last changed (ISO): a cache key

    @classmethod
    def load(cls, library: Library) -> MapState | None:
        raw = library.state(MAP_STATE)
        if not raw:
            return None
        try:
            return cls(**raw)
        except (TypeError, ValueError):
            return None  # written by another version: refit


@dataclass(frozen=True)
class Pending:
    """How far the stored map is behind the library."""

    to_place: int  # indexed photos without a point, or re-embedded since they got one
    refit: bool  # whether bringing it up to date means a full fit
    total: int  # indexed photos

    @property
    def current(self) -> bool:
        return not self.to_place and not self.refit


@dataclass(frozen=True)
class MapReport:
    method: str
    refitted: bool
    sample: int  # photos the layout was fitted on (when refitted)
    placed: int  # photos placed by the stored fit
    total: int  # photos on the map now
    seconds: float

    def summary(self) -> str:
        if self.refitted:
            rest = self.total - self.sample
            more = f", placed {rest} more by their neighbours" if rest else ""
            fitted = f"{self.method} layout fitted on {self.sample}{more}"
            return f"map of {self.total} photos: {fitted} ({self.seconds:.1f}s)"
        if self.placed:
            return f"map of {self.total} photos: placed {self.placed} new ({self.seconds:.1f}s)"
        return f"map of {self.total} photos: up to date"


# -- state ----------------------------------------------------------------------------------------


def _latest_indexed(library: Library) -> datetime | None:
    with library.Session() as s:
        return s.scalar(select(func.max(Image.indexed_at)).where(Image.status == INDEXED))


def _stale_filter(state: MapState | None):
    stale: ColumnElement[bool] = MapPoint.image_id.is_(None)
    if state is not None and state.updated_to:
        stale = or_(stale, Image.indexed_at > datetime.fromisoformat(state.updated_to))
    return stale


def _stale_query(state: MapState | None, what):
    return (
        select(what)
        .select_from(Image)
        .outerjoin(MapPoint, MapPoint.image_id == Image.id)
        .where(Image.status == INDEXED, _stale_filter(state))
    )


def pending(library: Library, method: str | None = None) -> Pending:
    """What `update_map` would do now (two counting queries)."""
    state = MapState.load(library)
    with library.Session() as s:
        total = s.scalar(select(func.count()).select_from(Image).where(Image.status == INDEXED)) or 0
        stale = s.scalar(_stale_query(state, func.count())) or 0
    return Pending(stale, _needs_refit(library, state, stale, method) and total > 0, total)


def _needs_refit(library: Library, state: MapState | None, stale: int, method: str | None) -> bool:
    if state is None or not (library.path / FIT_FILE).exists():
        return True
    if method is not None and method != state.method:
        return True
    if state.weights != library.identity().get("weights"):
        return True  # other vectors: the projection means nothing for them
    return stale > REFIT_SHARE * max(state.fitted_on, 1)


# -- computing --------------------------------------------------------------------------------------


def map_lock(library: Library) -> AbstractContextManager[None]:
    """One map computation per library at a time (the CLI and the web may both try)."""
    return file_lock(library.path / LOCK_FILE,
                     busy=MapBusy(f"the map of {library.path} is being computed by another process"))


def update_map(
    library: Library, *, refit: bool = False, method: str | None = None, sample: int = layout.FIT_SAMPLE
) -> MapReport:
    """Bring the stored map up to date: a full fit when needed (or `refit`), else place new photos.

    Raises layout.LayoutError (a method this installation lacks) and MapBusy.
    """
    if method is not None:
        layout.check_method(method)
    started = time.perf_counter()
    with map_lock(library):
        state = MapState.load(library)
        updated_to = _latest_indexed(library)  # read first: photos indexed meanwhile count next time
        with library.Session() as s:
            stale_ids = np.fromiter(s.scalars(_stale_query(state, Image.id).order_by(Image.id)), dtype=np.int64)
        fit = None if refit or _needs_refit(library, state, len(stale_ids), method) else load_fit(library)
        if fit is None:
            if method is None:  # keep the method the map was made with, while it can run here
                known = state.method if state else None
                method = known if known in layout.available_methods() else layout.default_method()
            return _refit(library, method, sample, updated_to, started)
        assert state is not None  # a stored fit comes with its state
        for start in range(0, len(stale_ids), _CHUNK):  # bounded memory however many are new
            ids, vectors = library.stored_vectors(stale_ids[start : start + _CHUNK])
            xy = layout.place(fit, fit.projection.reduce(vectors))
            _write_points(library, ids, xy, replace_all=False)
        total = _count_points(library)
        _save_state(library, MapState(
            method=state.method, fitted_on=state.fitted_on, sample=state.sample, weights=state.weights,
            updated_to=_iso(updated_to),
            computed_at=utcnow().isoformat() if len(stale_ids) else state.computed_at,
        ))
        return MapReport(state.method, False, state.sample, len(stale_ids), total, time.perf_counter() - started)


def _refit(library: Library, method: str, sample: int, updated_to, started: float) -> MapReport:
    ids = library.indexed_ids()
    if not len(ids):
        with library.Session.begin() as s:
            s.execute(delete(MapPoint))
        return MapReport(method, True, 0, 0, 0, time.perf_counter() - started)
    result = layout.lay_out(ids, vector_chunks(library), method=method, sample=sample,
                            fetch=library.stored_vectors)
    save_fit(library, result.fit)
    _write_points(library, result.ids, result.xy, replace_all=True)
    _save_state(library, MapState(
        method=method, fitted_on=len(result.ids), sample=len(result.fit.sample_ids),
        weights=library.identity().get("weights"), updated_to=_iso(updated_to),
        computed_at=utcnow().isoformat(),
    ))
    seconds = time.perf_counter() - started
    log.info("map of %s: %s fit on %d of %d photos in %.1fs", library.path, method,
             len(result.fit.sample_ids), len(result.ids), seconds)
    return MapReport(method, True, len(result.fit.sample_ids), 0, len(result.ids), seconds)


def vector_chunks(library: Library, size: int = _CHUNK) -> layout.Chunks:
    """Every indexed vector in id order, `size` rows at a time (keyset pages: no big OFFSETs)."""

    def chunks() -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
        dim = library.dim or 0
        last = -1
        while True:
            with library.Session() as s:
                rows = s.execute(
                    select(Embedding.image_id, Embedding.vector)
                    .join(Image)
                    .where(Image.status == INDEXED, Embedding.image_id > last)
                    .order_by(Embedding.image_id)
                    .limit(size)
                ).all()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
            last = int(ids[-1])
            yield ids, vectors

    return chunks


def _write_points(library: Library, ids, xy, *, replace_all: bool) -> None:
    rows = [
        {"image_id": int(i), "x": float(x), "y": float(y)}
        for i, (x, y) in zip(ids.tolist(), np.asarray(xy, dtype=np.float64).tolist(), strict=True)
    ]
    with library.Session.begin() as s:
        if replace_all:
            s.execute(delete(MapPoint))
        else:
            for start in range(0, len(rows), 500):
                part = [r["image_id"] for r in rows[start : start + 500]]
                s.execute(delete(MapPoint).where(MapPoint.image_id.in_(part)))
        for start in range(0, len(rows), _CHUNK):
            s.execute(insert(MapPoint), rows[start : start + _CHUNK])


def _count_points(library: Library) -> int:
    with library.Session() as s:
        return s.scalar(
            select(func.count()).select_from(MapPoint).join(Image, Image.id == MapPoint.image_id)
            .where(Image.status == INDEXED)
        ) or 0


def _save_state(library: Library, state: MapState) -> None:
    library.save_state(MAP_STATE, state.__dict__)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# -- the fit file ----------------------------------------------------------------------------------


def save_fit(library: Library, fit: layout.Fit) -> None:
    """Write the fit atomically: a crash leaves the old file or the new one."""
    write_npz(library.path / FIT_FILE, {
        "method": np.array(fit.method), "mean": fit.projection.mean, "components": fit.projection.components,
        "sample_ids": fit.sample_ids, "sample_reduced": fit.sample_reduced, "sample_xy": fit.sample_xy,
    })


def load_fit(library: Library) -> layout.Fit | None:
    """The stored fit; None when there is none or it is damaged (then the map is refitted): a file
    that does not read, or arrays that do not fit together or with the library's vectors."""
    dim = library.dim

    def checked(f) -> layout.Fit:
        fit = layout.Fit(
            method=str(f["method"]), projection=layout.Projection(f["mean"], f["components"]),
            sample_ids=f["sample_ids"], sample_reduced=f["sample_reduced"], sample_xy=f["sample_xy"],
        )
        mean, components = fit.projection.mean, fit.projection.components
        n = len(fit.sample_ids)
        if not (mean.ndim == 1 and components.ndim == 2 and components.shape[0] == mean.shape[0]
                and (dim is None or mean.shape[0] == dim) and fit.sample_ids.ndim == 1
                and fit.sample_reduced.shape == (n, components.shape[1]) and fit.sample_xy.shape == (n, 2)):
            raise ValueError("arrays of shapes that do not fit together")
        if not all(np.isfinite(a).all() for a in (mean, components, fit.sample_reduced, fit.sample_xy)):
            raise ValueError("values that are not finite")
        return fit

    return read_npz(library.path / FIT_FILE, checked)


# -- reading ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MapColumns:
    """The points of the map, one entry per photo in each column, ascending id."""

    ids: npt.NDArray[np.int64]
    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.float32]
    label: npt.NDArray[np.int32]  # index into `labels`, -1 unlabelled
    suggested: npt.NDArray[np.int32]  # index into `labels`, -1 no suggestion
    confidence: npt.NDArray[np.float32]  # the suggestion's confidence, 0 without one
    folder: npt.NDArray[np.int32]  # index into `folders`
    labels: list[str]
    folders: list[str]

    def take(self, positions: npt.NDArray[np.int64]) -> MapColumns:
        return MapColumns(
            self.ids[positions], self.x[positions], self.y[positions], self.label[positions],
            self.suggested[positions], self.confidence[positions], self.folder[positions],
            self.labels, self.folders,
        )


def read_points(library: Library) -> MapColumns:
    """Every indexed photo that has a point, with its label, stored suggestion and folder."""
    stmt = (
        select(Image.id, MapPoint.x, MapPoint.y, Label.label, SuggestedLabel.label,
               SuggestedLabel.confidence, Image.folder)
        .join(MapPoint, MapPoint.image_id == Image.id)
        .outerjoin(Label, Label.image_id == Image.id)
        .outerjoin(SuggestedLabel, SuggestedLabel.image_id == Image.id)
        .where(Image.status == INDEXED)
        .order_by(Image.id)
    )
    with library.Session() as s:
        rows = s.execute(stmt).all()
    n = len(rows)
    ids, x, y, label, suggested, confidence, folder = (list(c) for c in zip(*rows, strict=True)) if n else ([],) * 7
    labels = sorted({v for v in label if v is not None} | {v for v in suggested if v is not None})
    folders = sorted(set(folder))
    code = {name: i for i, name in enumerate(labels)}
    folder_code = {name: i for i, name in enumerate(folders)}
    return MapColumns(
        ids=np.asarray(ids, dtype=np.int64),
        x=np.asarray(x, dtype=np.float32),
        y=np.asarray(y, dtype=np.float32),
        label=np.asarray([code.get(v, -1) for v in label], dtype=np.int32),
        suggested=np.asarray([code.get(v, -1) for v in suggested], dtype=np.int32),
        confidence=np.asarray([c or 0.0 for c in confidence], dtype=np.float32),
        folder=np.asarray([folder_code[f] for f in folder], dtype=np.int32),
        labels=labels,
        folders=folders,
    )
