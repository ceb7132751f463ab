"""One XMP sidecar: where it lies beside its photo, the keywords in it, and a label merged into it.

A label is written as the keyword `label` in dc:subject and `parent|label` in lr:hierarchicalSubject,
the two keyword lists digiKam, Lightroom, darktable and PhotoPrism read. The keywords lookalike added
are recorded in the sidecar itself (lookalike:subject, lookalike:hierarchicalSubject), so that when
the label changes the old keyword goes, and a keyword lookalike did not add (one the user had typed
in already, even the same word) is never removed. exiv2 reads and writes the packet, every other
property included; a sidecar is only rewritten when its keywords change, and then atomically.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from indexer.exiv2io import LOOKALIKE_PREFIX, MetadataError, XmpPacket
from indexer.extensions import SIDECAR_EXTENSION
from indexer.library_files import replace_durably

DARKTABLE = "darktable"  # photo.jpg.xmp: darktable, digiKam
LIGHTROOM = "lightroom"  # photo.xmp: Lightroom, Capture One
NAMINGS = (DARKTABLE, LIGHTROOM)
DEFAULT_PARENT = "lookalike"
SEPARATOR = "|"  # of lr:hierarchicalSubject levels

SUBJECT = "Xmp.dc.subject"
HIERARCHY = "Xmp.lr.hierarchicalSubject"
WROTE_SUBJECT = f"Xmp.{LOOKALIKE_PREFIX}.subject"
WROTE_HIERARCHY = f"Xmp.{LOOKALIKE_PREFIX}.hierarchicalSubject"
KEYWORD_KEYS = (SUBJECT, HIERARCHY, WROTE_SUBJECT, WROTE_HIERARCHY)
MAX_SIDECAR_BYTES = 16 << 20  # darktable's longest edit histories are a few hundred kB


class SidecarError(Exception):
    """A sidecar that cannot be read or written; the message names it and says why."""


def sidecar_path(photo: Path, naming: str = DARKTABLE) -> Path:
    """Where a photo's sidecar lies: photo.jpg.xmp (darktable, digiKam) or photo.xmp (Lightroom)."""
    if naming == DARKTABLE:
        return photo.with_name(photo.name + SIDECAR_EXTENSION)
    if naming == LIGHTROOM:
        return photo.with_suffix(SIDECAR_EXTENSION)
    raise ValueError(f"sidecar naming must be one of {', '.join(NAMINGS)}, not {naming!r}")


def check_parent(parent: str) -> str:
    """A keyword parent: one level, not empty. Raises ValueError saying why."""
    parent = parent.strip()
    if not parent or SEPARATOR in parent:
        raise ValueError(f"the keyword parent must be one non-empty level without '{SEPARATOR}', not {parent!r}")
    return parent


def read_sidecar(path: Path) -> XmpPacket | None:
    """The sidecar's packet; None when there is none. Raises SidecarError for one that is malformed,
    unreadable, a link, or not a file: such a sidecar is never written over."""
    try:
        if path.is_symlink():
            raise SidecarError(f"{path}: a link; left alone")
        if not path.exists():
            return None
        if not path.is_file():
            raise SidecarError(f"{path}: not a file")
        if path.stat().st_size > MAX_SIDECAR_BYTES:
            raise SidecarError(f"{path}: over {MAX_SIDECAR_BYTES >> 20} MiB; not read")
        data = path.read_bytes()
    except OSError as e:
        raise SidecarError(f"{path}: cannot read it: {e.strerror or e}") from None
    try:
        return XmpPacket(data)
    except MetadataError as e:
        raise SidecarError(f"{path}: malformed XMP ({e}); left as it is") from None


def write_sidecar(path: Path, packet: XmpPacket) -> None:
    """Write the packet to `path` atomically (beside it, then renamed over it), keeping an existing
    file's permissions. Raises SidecarError: a read-only sidecar or folder, a full disk."""
    try:
        data = packet.encode()
    except MetadataError as e:
        raise SidecarError(f"{path}: exiv2 cannot write it: {e}") from None
    try:
        mode = path.stat().st_mode & 0o7777
        if not os.access(path, os.W_OK):
            raise SidecarError(f"{path}: read-only; not changed")
    except FileNotFoundError:
        mode = 0o644
    except OSError as e:
        raise SidecarError(f"{path}: {e.strerror or e}") from None
    try:
        # Not named after the sidecar: a name of 242 bytes or more would leave no room in the 255
        # bytes a file name may take for the temporary file's additions.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".lookalike-", suffix=".xmp.tmp")
    except OSError as e:
        raise SidecarError(f"{path}: cannot write in {path.parent}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        replace_durably(tmp, path)  # the user's file, shared with other tools: never left half written
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)  # gone already when the rename was done
        raise SidecarError(f"{path}: cannot write it: {e.strerror or e}") from None


@dataclass(frozen=True)
class Keywords:
    subject: list[str]  # dc:subject, flat
    hierarchy: list[str]  # lr:hierarchicalSubject, "parent|child"


def keywords_of(packet: XmpPacket) -> Keywords:
    return Keywords(packet.values(SUBJECT), packet.values(HIERARCHY))


def labels_in(keywords: Keywords, parent: str | None) -> list[str]:
    """The labels these keywords give, in order, each once: those under `parent` in the hierarchy;
    with no parent, every keyword (dc:subject, and the last level of each hierarchical one)."""
    if parent is not None:
        prefix = parent + SEPARATOR
        found = [k[len(prefix):] for k in keywords.hierarchy if k.startswith(prefix) and len(k) > len(prefix)]
    else:
        found = [*keywords.subject, *(k.rsplit(SEPARATOR, 1)[-1] for k in keywords.hierarchy)]
    return list(dict.fromkeys(k.strip() for k in found if k.strip()))


def merge_label(packet: XmpPacket, label: str | None, parent: str) -> bool:
    """Make `label` (None: no label) the packet's lookalike keyword; True when the packet changed.

    Removes the keywords lookalike recorded as its own that are no longer the label, adds the label
    where missing (recording it as lookalike's only when lookalike added it), and leaves every
    other keyword and property as it is.
    """
    subject, hierarchy = packet.values(SUBJECT), packet.values(HIERARCHY)
    ours_subject, ours_hierarchy = packet.values(WROTE_SUBJECT), packet.values(WROTE_HIERARCHY)
    new_subject, new_ours_subject = _merge(subject, ours_subject, [label] if label else [])
    new_hierarchy, new_ours_hierarchy = _merge(
        hierarchy, ours_hierarchy, [f"{parent}{SEPARATOR}{label}"] if label else []
    )
    changed = False
    for key, old, new in (
        (SUBJECT, subject, new_subject), (HIERARCHY, hierarchy, new_hierarchy),
        (WROTE_SUBJECT, ours_subject, new_ours_subject), (WROTE_HIERARCHY, ours_hierarchy, new_ours_hierarchy),
    ):
        if new != old:
            packet.set_bag(key, new)
            changed = True
    return changed


def _merge(current: list[str], ours: list[str], want: list[str]) -> tuple[list[str], list[str]]:
    """The keyword list with `want` in it and the rest of `ours` gone; and what is now lookalike's."""
    kept = [k for k in current if k not in ours or k in want]
    still_ours = [k for k in want if k in ours and k in kept]
    for k in want:
        if k not in kept:
            kept.append(k)
            still_ours.append(k)
    return kept, still_ours
