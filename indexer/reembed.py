"""Crash-safe re-embedding of a whole library into another representation (tuned weights, or back).

The previous vectors keep serving until every photo has a new one:

    1. new vectors are staged batch by batch (schema.StagedEmbedding, one transaction per batch),
       computed by the normal runners and engines (OpenVINO's converted model is keyed on the
       weights' hash, so tuned weights get their own);
    2. once every indexed photo has one, a single transaction moves them into `embeddings`, stamps
       the photos' `indexed_at` (so neighbour lists and every cache keyed on
       `Library.vectors_fingerprint` see the change), and makes the representation current in the
       meta table (`representation`, `weights`, `weights_file`);
    3. the FAISS file, deleted just before that transaction, is rebuilt from the database.

Killed before step 2 commits, the library is as it was (the FAISS file, if deleted, is rebuilt
from the unchanged vectors) and `reembed` again resumes with the photos not staged yet; killed
after, it is in the new space, its FAISS file is rebuilt by whoever opens it next and written by
`reembed` again, and the meta key SWITCHING names the representation until the caller
(search.tuning) has refreshed what derives from the vectors.

`revert` goes back to the parent by re-embedding with the parent's weights the same way, rather than
keeping the previous vectors beside the new ones: that would double the database (5 GB at a million
photos), photos indexed after the switch would have no previous vector anyway, and there is one
code path to trust.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import DateTime, bindparam, delete, text, update

from indexer.cancel import check
from indexer.decode import PhotoTask
from indexer.embed import EmbeddedBatch
from indexer.library import CURRENT_REPRESENTATION, Library, LibraryError
from indexer.report import IndexReport
from indexer.representations import representation_backbone
from indexer.schema import FAILED, INDEXED, Representation, StagedEmbedding, utcnow

log = logging.getLogger(__name__)

SWITCHING = "switching"  # meta key: the representation swap_in made current, derived data not refreshed yet

Progress = Callable[[int, int], None]  # (photos with a new vector, photos in all)

_UNSTAGED = (
    "SELECT i.id, i.path FROM images i WHERE i.status = :indexed AND NOT EXISTS ("
    " SELECT 1 FROM staged_embeddings s WHERE s.representation_id = :rep AND s.image_id = i.id"
    " AND s.source_indexed_at IS i.indexed_at)"
)


@dataclass
class ReembedReport:
    """What one `reembed` call did."""

    representation_id: int
    embedded: int = 0  # photos staged by this call
    resumed: int = 0  # photos an interrupted earlier call had staged already
    failed: int = 0  # photos that no longer decode: marked failed at the switch, as `index` would
    switched: bool = False  # False: the representation was current already
    engine: str = ""
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds else 0.0


def reembed(
    library: Library,
    representation_id: int,
    *,
    device: str = "auto",
    precision: str = "auto",
    engine: str = "auto",
    runner: str = "local",
    batch_size: int = 32,
    workers: int | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> ReembedReport:
    """Embed every indexed photo with `representation_id`'s weights, then make it current.

    Holds the library's writer lock throughout. Resumes an interrupted call for the same
    representation (staged vectors of any other are dropped). Raises LibraryError (unknown
    representation, weights gone, photo folder missing, another writer), indexer.cancel.Cancelled
    when `cancel` is set; a KeyboardInterrupt passes through. Either way the library keeps its
    previous, working vectors.
    """
    from indexer.runners import get_runner

    started = time.perf_counter()
    report = ReembedReport(int(representation_id))
    with library.writer_lock():
        rep = library.representation(representation_id)
        if rep is None:
            raise LibraryError(f"no representation {representation_id} in {library.path}")
        current = library.current_representation()
        if current is not None and current.id == rep.id:
            _drop_staging(library, keep=None)
            if library.meta().get("vectors_dirty") == "1" or not library.vectors_path.exists():
                library.save_vectors(library.build_vectors(), clean=True)  # killed right after the switch
            report.seconds = time.perf_counter() - started
            return report
        root = library.root
        if root is None or not root.is_dir():
            raise LibraryError(f"the photo folder {root} of {library.path} is not there: mount it and run again")
        backbone = representation_backbone(library, rep, device=device, precision=precision)
        have, want = library.identity(), backbone.identity()
        if have and any(have.get(k) != want[k] for k in ("backbone", "preprocessing", "dim")):
            raise LibraryError(f"representation {rep.id} ({want['backbone']}, {want['dim']}-d) does not fit "
                               f"{library.path}'s vectors ({have.get('backbone')}, {have.get('dim')}-d)")
        _drop_staging(library, keep=rep.id)

        with library.engine.connect() as conn:
            todo = [PhotoTask(i, p) for i, p in conn.execute(text(_UNSTAGED), {"indexed": INDEXED, "rep": rep.id})]
        total = len(library.indexed_ids())
        report.resumed = total - len(todo)
        if report.resumed:
            log.info("resuming the re-embedding into representation %d: %d of %d photos staged already",
                     rep.id, report.resumed, total)
        if progress:
            progress(report.resumed, total)
        todo.sort(key=lambda t: t.path)
        check(cancel)
        if todo:
            run = get_runner(runner)
            run_report = IndexReport()
            for batch in run(root, todo, backbone, batch_size=batch_size, workers=workers, engine=engine,
                             report=run_report):
                stage_batch(library, rep.id, batch)
                report.embedded += len(batch.good)
                if progress:
                    progress(report.resumed + report.embedded + len(batch.bad), total)
                check(cancel)
            report.engine = run_report.engine
        report.failed = swap_in(library, rep)
        library.save_vectors(library.build_vectors(), clean=True)
    report.switched = True
    report.seconds = time.perf_counter() - started
    log.info("representation %d of %s is current: %d photos re-embedded (%d resumed), %d failed, in %.1fs",
             rep.id, library.path, report.embedded, report.resumed, report.failed, report.seconds)
    return report


def revert(library: Library, **options) -> ReembedReport:
    """Make the current representation's parent current again (re-embedding with its weights, the
    same crash-safe way as `reembed`, which takes the same keyword options). Raises LibraryError
    when the current representation has no parent."""
    current = library.current_representation()
    if current is None or current.parent_id is None:
        raise LibraryError(f"{library.path} is in its first representation: there is nothing to revert to")
    return reembed(library, current.parent_id, **options)


def stage_batch(library: Library, representation_id: int, batch: EmbeddedBatch) -> None:
    """One transaction: this batch's new vectors (and failures) beside the current ones."""
    rows = [dict(rep=representation_id, id=it.image_id, vector=vec.tobytes(), error=None)
            for it, vec in zip(batch.good, batch.vectors, strict=True)]
    rows += [dict(rep=representation_id, id=it.image_id, vector=None, error=it.error) for it in batch.bad]
    if not rows:
        return
    with library.Session.begin() as s:
        # source_indexed_at copied in SQL: the very value the resume and the switch compare with.
        s.execute(text(
            "INSERT OR REPLACE INTO staged_embeddings (representation_id, image_id, source_indexed_at, vector, error) "
            "SELECT :rep, id, indexed_at, :vector, :error FROM images WHERE id = :id"), rows)


def swap_in(library: Library, rep: Representation) -> int:
    """Move `rep`'s staged vectors in and make it current, in one transaction; the FAISS file is
    deleted first (derived: rebuilt from whichever vectors the database then holds).
    Returns how many photos failed to decode. Raises LibraryError if a photo lacks a staged vector."""
    weights = library.representation_weights(rep)
    try:
        os.remove(library.vectors_path)
    except FileNotFoundError:
        pass
    staged = (
        "SELECT s.image_id FROM staged_embeddings s JOIN images i ON i.id = s.image_id"
        " WHERE s.representation_id = :rep AND s.source_indexed_at IS i.indexed_at AND s.vector IS {} NULL"
    )
    good, bad = staged.format("NOT"), staged.format("")
    rep_only = {"rep": rep.id}
    with library.Session.begin() as s:
        missing = s.execute(text(f"SELECT count(*) FROM ({_UNSTAGED})"), {**rep_only, "indexed": INDEXED}).scalar_one()
        if missing:
            raise LibraryError(f"{missing} photos of {library.path} have no vector in representation {rep.id} "
                               f"yet: run the re-embedding again")
        failed = int(s.execute(text(f"SELECT count(*) FROM ({bad})"), rep_only).scalar_one())
        if failed:  # as `index` records a photo that no longer decodes
            s.execute(text(
                "UPDATE images SET status = :failed, error = (SELECT error FROM staged_embeddings s"
                f" WHERE s.representation_id = :rep AND s.image_id = images.id) WHERE id IN ({bad})"),
                {**rep_only, "failed": FAILED})
            s.execute(text("DELETE FROM embeddings WHERE image_id IN (SELECT id FROM images WHERE status = :failed)"),
                      {"failed": FAILED})
        s.execute(text("INSERT OR REPLACE INTO embeddings (image_id, vector) SELECT image_id, vector FROM "
                       f"staged_embeddings WHERE representation_id = :rep AND image_id IN ({good})"), rep_only)
        # A new indexed_at: Library.vectors_fingerprint changes, neighbour lists see every vector changed.
        s.execute(text(f"UPDATE images SET indexed_at = :now WHERE id IN ({good})")
                  .bindparams(bindparam("now", type_=DateTime())), {**rep_only, "now": utcnow()})
        s.execute(delete(StagedEmbedding).where(StagedEmbedding.representation_id == rep.id))
        s.execute(update(Representation).where(Representation.id == rep.id).values(activated_at=utcnow()))
        library.set_meta(s, vectors_dirty="1", weights=rep.weights, weights_file=str(weights or ""),
                         **{CURRENT_REPRESENTATION: str(rep.id), SWITCHING: str(rep.id)})
    return failed


def _drop_staging(library: Library, keep: int | None) -> None:
    """Forget staged vectors of any representation but `keep`: one staged set at a time."""
    with library.Session.begin() as s:
        query = delete(StagedEmbedding)
        if keep is not None:
            query = query.where(StagedEmbedding.representation_id != keep)
        s.execute(query)


__all__ = ["SWITCHING", "ReembedReport", "reembed", "revert", "stage_batch", "swap_in"]
