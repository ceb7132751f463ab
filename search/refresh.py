"""An index run and what follows it: photos into the library, then the neighbour lists, the
suggestions and the queue's clusters brought up to date, so the web has nothing to redo."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from indexer.report import IndexReport
from indexer.settings import Settings

if TYPE_CHECKING:  # torch: imported only when a run starts
    from indexer.backbone import Backbone
    from indexer.library import Library


class IndexFailed(Exception):
    """An index run cannot start or go on; the message says why in one line."""


@dataclass(frozen=True)
class IndexRun:
    report: IndexReport
    make_backbone: Callable[[], Backbone]

    @cached_property
    def backbone(self) -> Backbone:
        """What embedded: its precision is the one resolved for this machine. Built when asked for
        after a run that had nothing to do (search.unchanged), which needs none."""
        return self.make_backbone()


def index_and_refresh(
    settings: Settings, photos: Path, *, reembed: bool = False, progress: bool = True, refresh: bool = True
) -> IndexRun:
    """Index `photos` into the settings' library, then (with `refresh`) `update_suggestions`.

    The library is created only once there is something to put in it: a bad backbone or a folder
    without photos leaves no library folder behind. A library another indexer holds is reported
    before torch is imported or a model loaded. `--engine ray` is `--runner ray` on the engine
    auto picks. A run on a folder and library unchanged since the last complete run is answered
    by search.unchanged, which imports neither SQLAlchemy nor FAISS. Raises IndexFailed.
    """
    from search.unchanged import record_run, unchanged_run

    shortcut = unchanged_run(settings, photos) if not reembed else None
    if shortcut is not None and shortcut.report is not None:
        return IndexRun(shortcut.report, lambda: _backbone(settings))
    from indexer.hashes import missing_signals
    from indexer.library import DB_FILE, Library, LibraryError
    from indexer.scan import has_images

    exists = (Path(settings.library) / DB_FILE).exists()
    opened: Library | None = None  # an existing library, checked here and then indexed into
    try:
        if exists:
            opened = Library(settings.library)
            with opened.writer_lock():
                pass
    except LibraryError as e:
        if opened is not None:
            opened.close()
        raise IndexFailed(str(e)) from None
    from indexer.backbone import BackboneError
    from indexer.engines import EngineError
    from indexer.pipeline import index_folder
    from indexer.runners import get_runner
    from indexer.runners.ray import RayUnavailable

    try:
        runner_name, engine = settings.runner, settings.engine
        if engine == "ray":  # `--engine ray` (issue 12's contract) is `--runner ray` on the engine auto picks
            runner_name, engine = "ray", "auto"
        runner = get_runner(runner_name, ray_address=settings.ray_address)
        backbone = _backbone(settings)
        if settings.weights is not None:
            backbone.model  # noqa: B018  (a user's weights file is loaded, and refused, before the library is touched)
        if not exists and not has_images(photos):
            raise IndexFailed(
                f"no photos found under {photos} (looked for .jpg, .png, .heic, .webp and other image "
                f"files): nothing to index, no library created"
            )
        with opened or Library(settings.library, create=True) as library:
            report = index_folder(photos, library, backbone, batch_size=settings.batch_size,
                                  workers=settings.workers, reembed=reembed, progress=progress,
                                  memory_budget=settings.memory_budget, runner=runner, engine=engine,
                                  scanned=shortcut.scanned if shortcut is not None else None)
            if report.engine:
                with library.Session.begin() as s:
                    library.set_meta(s, engine=report.engine)
            if refresh:
                update_suggestions(settings, library, backbone, progress=progress)
            # A rerun now would change nothing, unless some photo's signals could not be read.
            settled = refresh and not missing_signals(library)
        if settled:
            record_run(settings, photos)
        return IndexRun(report, lambda: backbone)
    except (LibraryError, BackboneError, EngineError, RayUnavailable, ValueError) as e:
        raise IndexFailed(str(e)) from None
    finally:
        if opened is not None:
            opened.close()


def _backbone(settings: Settings) -> Backbone:
    from indexer.backbone import Backbone

    return Backbone(settings.backbone, weights=settings.weights, device=settings.device,
                    precision=settings.precision)


def update_suggestions(settings: Settings, library: Library, backbone: Backbone, *, progress: bool) -> None:
    """Bring the neighbour lists and suggestions up to date after a run (by difference once they
    exist): the new photos' suggestions are there at once, and the web has nothing to redo. The
    web's labeller, so that what is stored is what the web would store."""
    from search.labelling.labeller import Labeller
    from search.searcher import Searcher

    labeller = Labeller(Searcher(library, backbone), k=settings.k, temperature=settings.temperature)
    if labeller.labels_changed():  # or no head yet: train it here rather than at the web's start
        labeller.retrain()
    else:  # new photos get k-NN votes now; the web retrains on the new vectors in the background
        labeller.refresh(progress=progress)
    labeller.clusters()  # the labelling queue's clusters, by difference: the web's first queue is quick
