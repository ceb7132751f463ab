"""Labels as XMP keywords over a whole library: export each photo's label into its sidecar, import
keywords from sidecars and embedded XMP. One sidecar's reading and merging: xmp_sidecar.py.

A problem with one photo (a malformed sidecar, a read-only folder) is reported with its path and
the rest go on; the photo files themselves are only ever read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from indexer.exiv2io import MetadataError, XmpPacket, embedded_xmp
from indexer.library import Library
from indexer.schema import INDEXED, Image, Label
from search.labelling.labels import apply_labels, clean_label
from search.labelling.xmp_sidecar import (
    DARKTABLE,
    DEFAULT_PARENT,
    NAMINGS,
    SidecarError,
    check_parent,
    keywords_of,
    labels_in,
    merge_label,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)

log = logging.getLogger(__name__)


@dataclass
class ExportReport:
    written: int = 0  # sidecars created or changed
    unchanged: int = 0  # sidecars that already said so
    problems: list[str] = field(default_factory=list)  # "path: why", one per sidecar left alone


@dataclass
class ImportReport:
    found: int = 0  # photos whose XMP gave exactly one label
    set: int = 0  # labels stored (new or changed; hand-set labels kept unless overwriting)
    problems: list[str] = field(default_factory=list)  # "path: why", one per sidecar that could not be read
    ambiguous: list[str] = field(default_factory=list)  # "path: the labels", photos with several


def _photos(library: Library) -> list[tuple[str, str | None]]:
    """(path, label or None) of every indexed photo, by path."""
    with library.Session() as s:
        return [
            (path, label)
            for path, label in s.execute(
                select(Image.path, Label.label).outerjoin(Label).where(Image.status == INDEXED).order_by(Image.path)
            )
        ]


def export_xmp(library: Library, root: Path, *, naming: str = DARKTABLE, parent: str = DEFAULT_PARENT) -> ExportReport:
    """Write every labelled photo's label as a keyword into its sidecar (merged into an existing one,
    else a new one), and take lookalike's keyword out of the sidecars of photos no longer labelled.

    Photos that share one sidecar (Lightroom naming: IMG_1.CR2 and IMG_1.JPG) must agree on the label.
    """
    parent = check_parent(parent)
    if naming not in NAMINGS:
        raise ValueError(f"sidecar naming must be one of {', '.join(NAMINGS)}, not {naming!r}")
    report = ExportReport()
    by_sidecar: dict[Path, list[tuple[str, str | None]]] = {}
    for path, label in _photos(library):
        by_sidecar.setdefault(sidecar_path(root / path, naming), []).append((path, label))
    for sidecar, photos in by_sidecar.items():
        labels = sorted({label for _, label in photos if label is not None})
        if len(labels) > 1:
            names = ", ".join(f"{p} ({label or 'no label'})" for p, label in photos)
            report.problems.append(f"{sidecar}: shared by photos labelled differently: {names}; left as it is")
            continue
        try:
            packet = read_sidecar(sidecar)
            if packet is None:
                if not labels:
                    continue  # no label and no sidecar: nothing to say
                packet = XmpPacket()
            if merge_label(packet, labels[0] if labels else None, parent):
                write_sidecar(sidecar, packet)
                report.written += 1
            else:
                report.unchanged += 1
        except SidecarError as e:
            report.problems.append(str(e))
    return report


def photo_labels(photo: Path, parent: str | None, problems: list[str]) -> list[str]:
    """The labels a photo's XMP gives: its sidecars (both namings) and the packet embedded in it.
    Unreadable sidecars are added to `problems` and skipped."""
    found: list[str] = []
    seen: set[Path] = set()
    for naming in NAMINGS:
        sidecar = sidecar_path(photo, naming)
        if sidecar in seen:
            continue
        seen.add(sidecar)
        try:
            packet = read_sidecar(sidecar)
        except SidecarError as e:
            problems.append(str(e))
            continue
        if packet is not None:
            found += labels_in(keywords_of(packet), parent)
    try:
        embedded = embedded_xmp(photo)
    except MetadataError as e:  # a format exiv2 does not read: it has no XMP lookalike can see
        log.debug("no embedded XMP read from %s: %s", photo, e)
        embedded = None
    if embedded is not None:
        found += labels_in(keywords_of(embedded), parent)
    return list(dict.fromkeys(found))


def import_xmp(library: Library, root: Path, *, parent: str | None = DEFAULT_PARENT,
               overwrite: bool = False) -> ImportReport:
    """Label photos by their XMP keywords: those under `parent` (None: every keyword). A photo whose
    keywords give more than one label is listed in `ambiguous` and left as it is. Labels set by
    hand are kept unless `overwrite`."""
    if parent is not None:
        parent = check_parent(parent)
    report = ImportReport()
    by_path: dict[str, str] = {}
    for path, _ in _photos(library):
        labels = photo_labels(root / path, parent, report.problems)
        if not labels:
            continue
        if len(labels) > 1:
            report.ambiguous.append(f"{root / path}: {', '.join(labels)}")
            continue
        try:
            by_path[path] = clean_label(labels[0])
        except ValueError as e:
            report.problems.append(f"{root / path}: the keyword {labels[0]!r} cannot be a label: {e}")
    report.found = len(by_path)
    report.set = apply_labels(library, by_path, overwrite=overwrite)
    return report
