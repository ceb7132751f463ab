"""Labels in SQLite: set and clear one, count them, import from CSV or folder names, export to CSV."""

from __future__ import annotations

import csv
import logging
import unicodedata
from pathlib import Path
from typing import TextIO

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from indexer.library import Library
from indexer.schema import ACCEPTED, IMPORTED, LABEL_SOURCES, USER, Image, Label, utcnow
from search.csv_cells import safe_cell, unsafe_cell
from search.searcher import NotFound

log = logging.getLogger(__name__)

MAX_LABEL_LENGTH = 100


class LabelFileError(ValueError):
    """A label file that cannot be read as asked; the message says why."""


def clean_label(label: str) -> str:
    """The label in Unicode NFC (so "café" typed composed or decomposed is one label), stripped of
    surrounding space; ValueError unless 1..100 printable characters."""
    if not isinstance(label, str):
        raise ValueError("a label is text")  # not TypeError: callers map ValueError to a 400
    label = unicodedata.normalize("NFC", label).strip()
    if not label:
        raise ValueError("a label cannot be empty")
    if len(label) > MAX_LABEL_LENGTH:
        raise ValueError(f"a label has at most {MAX_LABEL_LENGTH} characters, not {len(label)}")
    if not label.isprintable():
        raise ValueError("a label cannot hold control characters or line breaks")
    return label


def set_label(session: Session, image_id: int, label: str, source: str = USER) -> Label:
    """Give an image its one current label (replacing any). Raises ValueError, NotFound.

    The caller owns the transaction; tell the Labeller afterwards (`on_label_changed`).
    """
    label = clean_label(label)
    if source not in LABEL_SOURCES:
        raise ValueError(f"unknown label source {source!r}: one of {', '.join(LABEL_SOURCES)}")
    if session.get(Image, int(image_id)) is None:
        raise NotFound(f"no image {image_id}")
    row = session.get(Label, int(image_id))
    if row is None:
        row = Label(image_id=int(image_id), label=label, source=source, set_at=utcnow())
        session.add(row)
    else:
        row.label, row.source, row.set_at = label, source, utcnow()
    session.flush()
    return row


def clear_label(session: Session, image_id: int) -> None:
    """Remove an image's label, if it has one."""
    session.execute(delete(Label).where(Label.image_id == int(image_id)))


def labels_fingerprint(library: Library) -> list[str]:
    """Changes whenever any label does (set, changed or cleared, by any process): a cache key."""
    with library.Session() as s:
        row = s.execute(
            select(
                func.count(),
                func.sum(Label.image_id),
                func.max(Label.set_at),
                func.sum(func.length(Label.label)),
            )
        ).one()
    return [str(v) for v in row]


def label_counts(session: Session) -> dict[str, int]:
    """Images per label, most frequent first."""
    rows = session.execute(
        select(Label.label, func.count())
        .group_by(Label.label)
        .order_by(func.count().desc(), Label.label)
    ).all()
    return {label: n for label, n in rows}


def _apply(library: Library, by_path: dict[str, str], *, overwrite: bool) -> int:
    """Set imported labels on the images at these paths; hand-set labels stay unless `overwrite`.

    Each label is one upsert whose condition SQLite checks as it writes: a label set by hand in
    the web app while an import runs is never overwritten by it (read first, then written, it was).
    An unchanged label keeps its row, and its set_at, so suggestions need no refresh."""
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    done = 0
    missing = 0
    now = utcnow()
    upsert = sqlite_insert(Label)
    replaces = upsert.excluded.label != Label.label
    if not overwrite:
        replaces = replaces & Label.source.not_in((USER, ACCEPTED))
    upsert = upsert.on_conflict_do_update(
        index_elements=[Label.image_id], set_=dict(label=upsert.excluded.label, source=IMPORTED, set_at=now),
        where=replaces,
    )
    with library.Session.begin() as s:
        ids = dict(s.execute(select(Image.path, Image.id)).all())
        conn = s.connection()  # Core: its result counts the rows written
        for path, label in by_path.items():
            image_id = ids.get(path)
            if image_id is None:
                missing += 1
                continue
            done += conn.execute(upsert, dict(image_id=image_id, label=label, source=IMPORTED, set_at=now)).rowcount
    if missing:
        log.warning("%d labelled paths are not in the library", missing)
    return done


def read_csv(path: Path | str) -> tuple[dict[str, str], int]:
    """The path -> label rows of a CSV with `path` and `label` columns (a header, or those two
    columns first), and how many paths were listed more than once (the last row of each wins).

    Paths are relative to the library's root, '/'-separated.
    Raises LabelFileError for an unreadable file or a bad label.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            rows = [(reader.line_num, row) for row in reader]  # the file's line each row ends on
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LabelFileError(f"cannot read {path}: {e}") from None
    rows = [(line, r) for line, r in rows if any(cell.strip() for cell in r)]
    if not rows:
        return {}, 0
    header = [cell.strip().lower() for cell in rows[0][1]]
    if "path" in header and "label" in header:
        path_col, label_col = header.index("path"), header.index("label")
        rows = rows[1:]
    else:
        path_col, label_col = 0, 1
    by_path: dict[str, str] = {}
    repeated: set[str] = set()
    for line, row in rows:
        if len(row) <= max(path_col, label_col):
            raise LabelFileError(f"{path} line {line}: expected path and label columns")
        try:
            label = clean_label(unsafe_cell(row[label_col].strip()))
        except ValueError as e:
            raise LabelFileError(f"{path} line {line}: {e}") from None
        image_path = unsafe_cell(row[path_col].strip()).replace("\\", "/").removeprefix("./")
        if image_path in by_path:
            repeated.add(image_path)
        by_path[image_path] = label
    if repeated:
        log.warning("%d paths listed more than once in %s: the last row of each kept", len(repeated), path)
    return by_path, len(repeated)


def apply_labels(library: Library, by_path: dict[str, str], *, overwrite: bool = False) -> int:
    """Set imported labels on the images at these paths; returns how many were set. Labels set by
    hand (source user or accepted) are kept unless `overwrite`."""
    return _apply(library, by_path, overwrite=overwrite)


def import_csv(library: Library, path: Path | str, *, overwrite: bool = False) -> int:
    """Labels from a CSV (see `read_csv`). Returns how many labels were set; labels set by hand
    (source user or accepted) are kept unless `overwrite`. Raises LabelFileError."""
    by_path, _ = read_csv(path)
    return _apply(library, by_path, overwrite=overwrite)


def folder_label(folder: str) -> str | None:
    """Class-per-folder: an image's label is its own folder's name (train/dress/x.jpg -> dress)."""
    name = folder.rsplit("/", 1)[-1]
    try:
        return clean_label(name)
    except ValueError:
        return None


def import_folders(library: Library, *, overwrite: bool = False) -> int:
    """Label every image by the name of the folder it is in; images at the root get none."""
    with library.Session() as s:
        rows = s.execute(select(Image.path, Image.folder)).all()
    by_path = {path: label for path, folder in rows if folder and (label := folder_label(folder))}
    return _apply(library, by_path, overwrite=overwrite)


def write_csv(library: Library, f: TextIO) -> int:
    """Write path,label,source,set_at for every labelled image, by path, to an open text file.
    Returns the row count. A cell a spreadsheet would read as a formula starts with an apostrophe;
    `read_csv` removes it."""
    with library.Session() as s:
        rows = s.execute(
            select(Image.path, Label.label, Label.source, Label.set_at)
            .join(Label)
            .order_by(Image.path)
        ).all()
    writer = csv.writer(f)
    writer.writerow(["path", "label", "source", "set_at"])
    for image_path, label, source, set_at in rows:
        writer.writerow(
            [safe_cell(image_path), safe_cell(label), source, set_at.isoformat(timespec="seconds")]
        )
    return len(rows)


def export_csv(library: Library, path: Path | str) -> int:
    """`write_csv` to a file. A regular file (or a new one) is replaced atomically: written beside
    it, then renamed over it; a symlink's target gets that, and the link stays. Anything else (a
    FIFO, a device such as /dev/stdout) is written through, never replaced. Returns the row count."""
    target = Path(path).resolve()
    if target.exists() and not target.is_file():
        with open(target, "w", newline="", encoding="utf-8") as f:
            return write_csv(library, f)
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        n = write_csv(library, f)
    tmp.replace(target)
    return n
