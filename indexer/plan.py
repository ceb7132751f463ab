"""Stage 1, plan: compare a scan of the photo root with the database and say what to embed.

Moves (a new path with the bytes of a vanished indexed file, or a changed path with another row's
bytes: renamed over it, or two photos swapped) keep their row, label and vector, removals delete
rows, and new files get `pending` rows, so a killed run resumes from the database alone.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, insert, select, update

from indexer.backbone import Backbone
from indexer.decode import PhotoTask, hash_file
from indexer.library import Library, LibraryError
from indexer.report import IndexReport
from indexer.rows import INDEXED, PENDING, ROWS_SQL, Row, is_unchanged
from indexer.scan import FileEntry, OutsideRoot, changed_folders, open_inside
from indexer.schema import Image, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """What a run must do once moves and removals are applied: photos to decode and embed."""

    todo: tuple[PhotoTask, ...]  # sorted by path
    changed_ids: frozenset[int]  # rows whose old vector must leave FAISS when the new one arrives
    removed_ids: tuple[int, ...]  # rows deleted: their vectors leave FAISS


def check_library(library: Library, root: Path, backbone: Backbone, reembed: bool) -> None:
    """Refuse another root or another backbone's vectors; record this run's root and identity."""
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
        # weights_file: where queries find the same weights (search by an image file).
        library.set_meta(s, root=str(root), weights_file=str(backbone.weights or ""), **want)


def plan_run(
    library: Library, root: Path, files: list[FileEntry], report: IndexReport, keep: Collection[str] = (),
    *, folders: Mapping[str, int], unreadable: Collection[str] = (),
) -> Plan:
    """Compare the scan with the database; apply moves and removals; insert rows for new files.

    The rows of the paths in `keep` (files still being written, left out of `files`) stay as they are;
    with any, no row is removed this run either: a file still being written may be a vanished photo
    that is being moved by copy-and-delete, whose row (and labels) must go with it. Nor when a new
    file is gone by the time its hash is read (moved on again since the scan): a vanished photo may
    be it. Nor when a folder the scan listed (`folders`: ScanResult.folders) changed or vanished
    since: a folder renamed during the walk hides its photos under both names. A later run removes
    what is still gone. A photo still at its recorded path is never removed, nor one under a folder
    the scan could not list (`unreadable`: ScanResult.unreadable_dirs, '.' the root): whether it is
    there cannot be told."""
    with library.engine.connect() as conn:
        rows = {r[1]: Row(*r) for r in conn.exec_driver_sql(ROWS_SQL)}
    seen = {f.path for f in files}
    todo: list[PhotoTask] = []
    changed: list[tuple[FileEntry, int]] = []
    new: list[FileEntry] = []
    for f in files:
        row = rows.get(f.path)
        if row is None:
            new.append(f)
        elif is_unchanged(row, f):
            report.unchanged += 1
        elif row.size == f.size and row.mtime == f.mtime:
            # Pending (an earlier run stopped before embedding it), or failed to read: tried again.
            todo.append(PhotoTask(row.id, f.path))
        else:
            changed.append((f, row.id))
    missing = [row for path, row in rows.items() if path not in seen and path not in keep]

    with library.Session.begin() as s:
        # A new path whose bytes equal a vanished indexed file is that file, moved: keep its vector.
        # So is a changed path whose bytes are another row's (renamed over it, or two photos swapped);
        # the photo it held before is then gone, unless its bytes turn up elsewhere too.
        # A row with a hash that is not indexed (pending after an interrupted `--reembed`, failed in
        # a re-embedding that could not read it) is a photo indexed before: moved too, and embedded
        # again. A photo that failed to index keeps no hash.
        pool: dict[str, list[Row]] = {}  # the bytes a moved photo may have: vanished rows', changed ones'
        for row in [*missing, *(rows[f.path] for f, _ in changed)]:
            if row.hash:
                pool.setdefault(row.hash, []).append(row)
        stale = False  # a new file gone since the scan (moved on again): what is missing may be it

        def bytes_of(f: FileEntry) -> str | None:
            nonlocal stale
            try:
                return _hash_file(root / f.path) if pool else None
            except FileNotFoundError:
                stale = True
                raise

        def take(h: str | None) -> Row | None:
            found = pool.get(h) if h else None
            if not found:
                return None
            row = found.pop()
            if not found:
                del pool[h]  # type: ignore[arg-type]
            return row

        # A changed path that still holds its own row's bytes (touched, not edited) keeps its row.
        changed_bytes: dict[int, str | None] = {}
        for f, image_id in changed:
            try:
                changed_bytes[image_id] = h = bytes_of(f) if len(pool) > 1 or missing else None
            except FileNotFoundError:
                changed_bytes[image_id] = h = None
            if h is not None and h == rows[f.path].hash:
                pool[h].remove(rows[f.path])
                if not pool[h]:
                    del pool[h]
        moves: list[tuple[Row, FileEntry]] = []  # (the row of the bytes, the path they are at now)
        edited: list[tuple[FileEntry, int]] = []  # changed in place: the row stays, re-embedded
        for f, image_id in changed:
            h = changed_bytes[image_id]
            source = take(h) if h is not None and h != rows[f.path].hash else None
            if source is None:
                edited.append((f, image_id))
            else:
                moves.append((source, f))
        still_new = []
        for f in new:
            try:
                source = take(bytes_of(f))
            except FileNotFoundError:
                continue
            if source is None:
                still_new.append(f)
            else:
                moves.append((source, f))
        moving = {row.id for row, _ in moves}
        overwritten = {rows[f.path].id for row, f in moves if f.path in rows} - moving  # their photo is gone
        if overwritten and (keep or stale):  # it may be a file being written: nothing is decided on it now
            moves = [(row, f) for row, f in moves if f.path not in rows or rows[f.path].id not in overwritten]
            edited += [(f, image_id) for f, image_id in changed if image_id in overwritten]
            moving, overwritten = {row.id for row, _ in moves}, set()
        # A path edited in place whose row moved away holds a new photo.
        still_new += [f for f, image_id in edited if image_id in moving]
        edited = [(f, image_id) for f, image_id in edited if image_id not in moving]
        if overwritten:
            s.execute(delete(Image).where(Image.id.in_(sorted(overwritten))))
        for row, _ in moves:  # out of each other's way first (paths are unique), then into place
            s.execute(update(Image).where(Image.id == row.id).values(path=f"\x00moving\x00{row.id}"))
        for row, f in moves:
            values = dict(path=f.path, folder=folder_of(f.path), size=f.size, mtime=f.mtime)
            if row.status != INDEXED:
                values.update(status=PENDING, error=None)
                todo.append(PhotoTask(row.id, f.path))
            s.execute(update(Image).where(Image.id == row.id).values(**values))
            report.moved += 1
        gone = [row for row in missing if row.id not in moving]
        why_not = "files still being written" if keep else "a new file moved on since the scan" if stale else ""
        removed_ids = [row.id for row in _removable(root, gone, folders, unreadable, why_not)]
        report.not_removed = len(gone) - len(removed_ids)
        for start in range(0, len(removed_ids), 500):
            s.execute(delete(Image).where(Image.id.in_(removed_ids[start : start + 500])))
        removed_ids += sorted(overwritten)  # counted with the removed (pipeline: len(removed_ids))
        for f, image_id in edited:
            s.execute(
                update(Image).where(Image.id == image_id)
                .values(size=f.size, mtime=f.mtime, status=PENDING, error=None)
            )
            todo.append(PhotoTask(image_id, f.path))
        if still_new:
            now = utcnow()
            s.execute(
                insert(Image),
                [
                    dict(path=f.path, folder=folder_of(f.path), size=f.size, mtime=f.mtime,
                         status=PENDING, added_at=now)
                    for f in still_new
                ],
            )
    if still_new:
        with library.Session() as s:
            ids = dict(s.execute(select(Image.path, Image.id).where(Image.status == PENDING)).all())
        todo += [PhotoTask(ids[f.path], f.path) for f in still_new]
    todo.sort(key=lambda t: t.path)
    return Plan(tuple(todo), frozenset(image_id for _, image_id in edited), tuple(removed_ids))


def _removable(root: Path, gone: list[Row], folders: Mapping[str, int], unreadable: Collection[str],
               why_not: str) -> list[Row]:
    """The rows of `gone` (missing from the scan, not moved) to delete this run: none when the scan
    may have missed photos that are there (`why_not`, or a folder that changed while it was walked),
    never one under a folder it could not list, and never one whose photo is still at its recorded
    path. One stat per folder, a few per row."""
    if "." in unreadable:
        unreadable = [""]  # the root: every photo is under it
    hidden = tuple(f"{d}/" if d else "" for d in unreadable)
    if hidden:
        unseen = [row for row in gone if row.path.startswith(hidden)]
        if unseen:
            log.warning("%d photos under folders that could not be read kept until a later run", len(unseen))
            gone = [row for row in gone if not row.path.startswith(hidden)]
    if not gone:
        return []
    if why_not:
        log.info("%d photos missing from the scan kept until a later run: %s", len(gone), why_not)
        return []
    changed = changed_folders(root, folders)
    if changed:
        log.warning("%d photos missing from the scan kept until a later run: the folder changed while it was "
                    "scanned (%s%s)", len(gone), ", ".join(changed[:3]), ", ..." if len(changed) > 3 else "")
        return []
    there = {row.id for row in gone if _still_there(root, row.path)}
    if there:
        log.warning("%d photos missing from the scan kept: still at their paths", len(there))
    return [row for row in gone if row.id not in there]


def _still_there(root: Path, path: str) -> bool:
    """Whether a photo the scan did not list is at its recorded path all the same (renamed away and
    back while its folder was listed). One that cannot be told (a folder it cannot stat) stays too."""
    try:
        open_inside(root, root / path)
    except (FileNotFoundError, NotADirectoryError, OutsideRoot):
        return False
    except OSError:
        return True
    return True


def _hash_file(path: Path) -> str | None:
    """The file's hash; None when it cannot be read. Raises FileNotFoundError when it is gone."""
    try:
        return hash_file(path)
    except FileNotFoundError:
        raise
    except OSError:
        return None


def folder_of(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""
