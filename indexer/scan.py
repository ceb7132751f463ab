"""Walking a photo tree: every image file under a root, with its size and mtime, without opening it."""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from indexer.extensions import EXTENSIONS, SIDECAR_EXTENSION
from indexer.pathnames import is_utf8, printable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the root, '/'-separated
    size: int
    mtime: float


@dataclass
class ScanResult:
    files: list[FileEntry] = field(default_factory=list)
    unreadable_dirs: list[str] = field(default_factory=list)
    skipped_links: int = 0  # loops, dangling links, links that lead out of the root
    ignored: int = 0  # files whose extension is not an image format's, and non-regular files
    bad_names: list[str] = field(default_factory=list)  # image files whose path is not UTF-8, escaped
    # Each folder listed ('' the root) and its st_mtime_ns just before: `changed_folders` tells
    # whether the tree changed while it was walked.
    folders: dict[str, int] = field(default_factory=dict)


class OutsideRoot(LookupError):
    """A path that leads out of the photo root (a '..', an absolute path, or a symlink)."""


def inside(real_root: str, path: str) -> bool:
    """Whether `path`, with every symlink resolved, is `real_root` (resolved) or under it."""
    real = os.path.realpath(path)
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def open_inside(root: Path, path: Path) -> Path:
    """`path` resolved, if it is a regular file inside `root` once every symlink is followed.

    Raises OutsideRoot otherwise, FileNotFoundError if it is gone. The indexer reads, and the web
    server serves, only what this returns: a link to /etc/passwd in the photo folder is neither.
    """
    real = Path(os.path.realpath(path))
    if not inside(os.path.realpath(root), str(real)):
        raise OutsideRoot(str(path))
    if not stat.S_ISREG(real.stat().st_mode):  # a folder, a device, a FIFO that would block
        raise OutsideRoot(str(path))
    return real


_WARNED: set[str] = set()  # a watcher scans again and again: each link out is said once a process


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        log.warning(message)


def scan(root: Path, skip: Path | None = None) -> ScanResult:
    """Regular image files under `root` by extension; hidden entries skipped, symlink loops broken.

    Symlinked folders are followed once each (by device and inode), so a link back up the tree
    cannot loop; a symlink that leads out of `root` is skipped, so nothing outside the photo
    folder is ever indexed; folders that cannot be listed, and files whose path is not UTF-8,
    are reported, not fatal. The folder `skip` (the library, when it lies inside the root: its
    cached thumbnails are no photos) is not entered.
    """
    result = ScanResult()
    result.files = sorted(_walk(Path(root), result, skip), key=lambda f: f.path)
    return result


def changed_folders(root: Path, folders: Mapping[str, int]) -> list[str]:
    """The folders of a scan (`ScanResult.folders`) whose entries may differ from what it listed:
    another mtime (an entry added, removed or renamed since), or gone. One stat per folder.

    A folder renamed while the walk goes on can hide its photos under both names (the old one gone
    when reached, the new one made after its parent was listed); its parent's mtime says so."""
    changed = []
    for rel, mtime_ns in folders.items():
        try:
            if os.stat(os.path.join(root, rel) if rel else root).st_mtime_ns != mtime_ns:
                changed.append(rel or ".")
        except OSError:
            changed.append(rel or ".")
    return changed


def has_images(root: Path) -> bool:
    """Whether `scan(root)` would find any image file; stops at the first one."""
    return next(_walk(Path(root), ScanResult()), None) is not None


def _walk(root: Path, result: ScanResult, skip: Path | None = None) -> Iterator[FileEntry]:
    """The image files of `scan`, unsorted, as they are found; the rest is counted in `result`."""
    real_root = os.path.realpath(root)
    seen_dirs: set[tuple[int, int]] = set()
    skipped = None  # the (device, inode) of `skip`
    if skip is not None:
        with contextlib.suppress(OSError):
            st = os.stat(skip)
            skipped = (st.st_dev, st.st_ino)
    stack: list[tuple[str, str]] = [(str(root), "")]
    while stack:
        abs_dir, rel_dir = stack.pop()
        try:
            st = os.stat(abs_dir)
            if (st.st_dev, st.st_ino) == skipped and rel_dir:
                continue
            if (st.st_dev, st.st_ino) in seen_dirs:
                result.skipped_links += 1
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            with os.scandir(abs_dir) as it:
                entries = list(it)
            result.folders[rel_dir] = st.st_mtime_ns  # stat before the listing: a change during it shows
        except OSError as e:
            log.warning("cannot read folder %s: %s", abs_dir, e)
            result.unreadable_dirs.append(rel_dir or ".")
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                if entry.is_symlink() and not inside(real_root, entry.path):
                    _warn_once(f"skipping {entry.path}: a link to {os.path.realpath(entry.path)}, outside {root}")
                    result.skipped_links += 1
                elif entry.is_dir():  # follows symlinks; loops are caught by seen_dirs
                    stack.append((entry.path, rel))
                elif os.path.splitext(entry.name)[1].lower() in EXTENSIONS:
                    if not is_utf8(rel):
                        # The library stores paths as UTF-8 text; os.scandir gives undecodable bytes
                        # as lone surrogates, which no UTF-8 text can hold.
                        shown = printable(rel)
                        log.warning("skipping %s: its name is not UTF-8; rename it to index it", shown)
                        result.bad_names.append(shown)
                        continue
                    st = entry.stat()  # follows symlinks; cached by scandir for plain files
                    if stat.S_ISREG(st.st_mode):
                        yield FileEntry(rel, st.st_size, st.st_mtime)
                    else:  # a FIFO or device named like a photo: reading it could block
                        result.ignored += 1
                elif not entry.name.lower().endswith(SIDECAR_EXTENSION):  # sidecars beside photos: expected
                    result.ignored += 1
            except OSError as e:  # a dangling symlink, a file gone mid-scan
                log.warning("skipping %s: %s", entry.path, e)
                result.skipped_links += 1
