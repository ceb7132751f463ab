"""Stage 4, write: an embedded batch becomes rows in SQLite (one transaction) and vectors in FAISS.

Only the driver process writes. The database is committed batch by batch and is the source of truth:
killed at any moment, the next run finds the rows still `pending` and carries on.
"""

from __future__ import annotations

import os

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from indexer.embed import EmbeddedBatch
from indexer.hashes import write_signals
from indexer.library import Library
from indexer.plan import Plan
from indexer.report import IndexReport
from indexer.schema import FAILED, INDEXED, Embedding, Image, ImageFeaturesRow, ImageSignalsRow, utcnow
from indexer.vectors import VectorIndex


def write_batch(library: Library, vectors: VectorIndex, plan: Plan, batch: EmbeddedBatch,
                report: IndexReport) -> None:
    """Store one batch: rows, then the in-memory FAISS index (saved to disk by the run's end)."""
    good = batch.good
    changing = store_rows(library, batch)
    vectors.remove([it.image_id for it in batch.items if it.image_id in plan.changed_ids])
    vectors.add([it.image_id for it in good], batch.vectors)
    report.indexed += len(good)
    report.decode_seconds += batch.decode_seconds
    report.embed_seconds += batch.embed_seconds
    report.changing += len(changing)
    for it in batch.bad:
        if it.image_id not in changing:
            report.failed[str(it.error).split(":", 1)[0]] += 1


def store_rows(library: Library, batch: EmbeddedBatch) -> set[int]:
    """One transaction: the good rows indexed with their vectors, the bad ones failed with a reason,
    but those whose file changed since the scan: still being written (a copy, a download), they are
    left pending for the next run, not failed. Returns those ids."""
    good, bad = batch.good, batch.bad
    now = utcnow()
    changing = _changed_since_scan(library, [it.image_id for it in bad])
    bad = [it for it in bad if it.image_id not in changing]
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
                [dict(image_id=it.image_id, vector=vec.tobytes())
                 for it, vec in zip(good, batch.vectors, strict=True)],
            )
            write_signals(s, [(it.image_id, it.signals) for it in good if it.signals is not None])
        for it in bad:
            s.execute(
                update(Image).where(Image.id == it.image_id)
                .values(status=FAILED, error=it.error, indexed_at=now, **it.facts)
            )
            s.execute(delete(Embedding).where(Embedding.image_id == it.image_id))
            s.execute(delete(ImageSignalsRow).where(ImageSignalsRow.image_id == it.image_id))
            s.execute(delete(ImageFeaturesRow).where(ImageFeaturesRow.image_id == it.image_id))
    return changing


def _changed_since_scan(library: Library, image_ids: list[int]) -> set[int]:
    """Of these rows, those whose file's size or mtime is no longer what the scan recorded (or that
    is gone): a photo read while it was being written, not a broken one."""
    if not image_ids:  # the usual batch: nothing failed, nothing to look at
        return set()
    root = library.root
    if root is None:
        return set()
    with library.Session() as s:
        rows = s.execute(select(Image.id, Image.path, Image.size, Image.mtime).where(Image.id.in_(image_ids))).all()
    changing = set()
    for image_id, path, size, mtime in rows:
        try:
            st = os.stat(root / path)
        except OSError:
            changing.add(image_id)
            continue
        if (st.st_size, st.st_mtime) != (size, mtime):
            changing.add(image_id)
    return changing
