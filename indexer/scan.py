"""Walking a photo tree: every image file under a root, with its size and mtime, without opening it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from indexer.imageio import EXTENSIONS

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
    skipped_links: int = 0
    ignored: int = 0  # files whose extension is not an image format's


def scan(root: Path) -> ScanResult:
    """Image files under `root` by extension; hidden entries skipped, symlink loops broken.

    Symlinked folders are followed once each (by device and inode), so a link back up the tree
    cannot loop; folders that cannot be listed are reported, not fatal.
    """
    root = Path(root)
    result = ScanResult()
    seen_dirs: set[tuple[int, int]] = set()
    stack: list[tuple[str, str]] = [(str(root), "")]
    while stack:
        abs_dir, rel_dir = stack.pop()
        try:
            st = os.stat(abs_dir)
            if (st.st_dev, st.st_ino) in seen_dirs:
                result.skipped_links += 1
                continue
            seen_dirs.add((st.st_dev, st.st_ino))
            with os.scandir(abs_dir) as it:
                entries = list(it)
        except OSError as e:
            log.warning("cannot read folder %s: %s", abs_dir, e)
            result.unreadable_dirs.append(rel_dir or ".")
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                if entry.is_dir():  # follows symlinks; loops are caught by seen_dirs
                    stack.append((entry.path, rel))
                elif os.path.splitext(entry.name)[1].lower() in EXTENSIONS:
                    st = entry.stat()  # follows symlinks; cached by scandir for plain files
                    result.files.append(FileEntry(rel, st.st_size, st.st_mtime))
                else:
                    result.ignored += 1
            except OSError as e:  # a dangling symlink, a file gone mid-scan
                log.warning("skipping %s: %s", entry.path, e)
                result.skipped_links += 1
    result.files.sort(key=lambda f: f.path)
    return result
