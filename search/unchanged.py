"""`lookalike index` on a folder and library that have not changed since the last complete run: told
from a scan and the stamps of the library's files, without SQLAlchemy, NumPy, FAISS or a model.

A complete run (`search.refresh.index_and_refresh`, suggestions refreshed, nothing left to retry)
ends by writing LAST_RUN_FILE beside the database: the photo folder, the settings, a stamp of the
code that ran, and the stamp (inode, size, mtime, ctime) of every file of the library and of the
weights file the backbone is named by. A later run with the same folder, settings and code, on a
library whose files all carry the same stamps (no label set since, no FAISS file replaced or
damaged, no suggestion rewritten by the web), whose folder scans to exactly the rows of the database
(each file the same size and mtime, none pending or failed to read, none gone), would change
nothing: it is not run, and its report counts every photo unchanged. Anything else runs the whole
path, which writes the file again at its end. The shortcut only ever declines: a missing, stale or unreadable file, a
library another indexer holds, any error, all mean the whole path.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from indexer.library_files import DB_FILE, LOCK_FILE, REPRESENTATIONS_DIR, file_lock, is_read_only
from indexer.report import IndexReport
from indexer.rows import ROWS_SQL, Row, is_unchanged
from indexer.scan import FileEntry, ScanResult, scan
from indexer.settings import Settings

log = logging.getLogger(__name__)

LAST_RUN_FILE = "last_run.json"  # beside the database: what the last complete run left
FORMAT = 1
CODE_PACKAGES = ("indexer", "search", "web", "lookalike")  # the code whose change voids the shortcut


class _Busy(Exception):
    """Another process holds the writer lock: the whole path reports it."""


@dataclass(frozen=True)
class Shortcut:
    report: IndexReport | None = None  # the run's, when it had nothing to do
    scanned: ScanResult | None = None  # else the scan it made, which the whole path need not make again


def unchanged_run(settings: Settings, photos: Path) -> Shortcut:
    """The report of a run with nothing to do, or what the whole path can use."""
    started = time.perf_counter()
    library = Path(settings.library).expanduser().resolve()
    scanned = None
    try:
        recorded = json.loads((library / LAST_RUN_FILE).read_text())
        if is_read_only(library):
            return Shortcut()
        root = Path(photos).expanduser().resolve()
        with file_lock(library / LOCK_FILE, busy=_Busy()):
            if recorded != _state(settings, root, library):
                return Shortcut()
            scanned = scan(root, skip=library)
            if not _rows_match(library, scanned.files) or _library_files(library) != recorded["files"]:
                return Shortcut(scanned=scanned)  # the second test: a write while the rows were read
    except Exception as e:  # a busy library, a file gone, a BackboneError: the whole path says it properly
        log.debug("no shortcut: %r", e)
        return Shortcut(scanned=scanned)
    report = IndexReport(unchanged=len(scanned.files), unreadable_dirs=scanned.unreadable_dirs,
                         ignored=scanned.ignored, bad_names=scanned.bad_names)
    report.seconds = time.perf_counter() - started
    log.info("%s: nothing changed since its last complete run (%s)", library, LAST_RUN_FILE)
    return Shortcut(report=report)


def record_run(settings: Settings, photos: Path) -> None:
    """After a complete run: what the next one compares with. Skipped while another indexer holds
    the library; a failure to write costs the next run its shortcut only."""
    library = Path(settings.library).expanduser().resolve()
    try:
        with file_lock(library / LOCK_FILE, busy=_Busy()):
            state = _state(settings, Path(photos).expanduser().resolve(), library)
            tmp = library / f".{LAST_RUN_FILE}.tmp"
            tmp.write_text(json.dumps(state))
            os.replace(tmp, library / LAST_RUN_FILE)
    except Exception as e:  # the run itself succeeded
        log.info("%s not written: %s", LAST_RUN_FILE, e)


def _state(settings: Settings, root: Path, library: Path) -> dict:
    from indexer.backbone import weights_source

    weights = weights_source(settings.backbone, settings.weights)
    return {
        "format": FORMAT,
        "root": str(root),
        "settings": {f.name: str(getattr(settings, f.name)) for f in dataclasses.fields(Settings)},
        "code": _code_stamp(),
        "weights": [str(weights), _stamp(weights)] if weights else None,
        "files": _library_files(library),
    }


def _stamp(path: Path | str) -> list[int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]  # ctime: no tool sets it back


def _library_files(library: Path) -> dict[str, list[int]]:
    """The stamp of every file of the library folder and of its representations; not this file,
    nor SQLite's shared-memory index (readers write it). Folders (thumbnails) are not followed."""
    out: dict[str, list[int]] = {}
    for folder, prefix in ((library, ""), (library / REPRESENTATIONS_DIR, f"{REPRESENTATIONS_DIR}/")):
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.name.startswith(".") or entry.name in (LAST_RUN_FILE, f"{DB_FILE}-shm"):
                continue
            if entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                out[prefix + entry.name] = [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    return out


def _code_stamp() -> list[int]:
    """Changes when the code changes (an upgrade, an edit): a newer lookalike may migrate a library
    or compute what an older one did not, which its first run must do."""
    top = Path(__file__).resolve().parents[1]
    count = newest = size = 0
    for package in CODE_PACKAGES:
        for folder, dirs, files in os.walk(top / package):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            for name in files:
                if name.endswith(".py"):
                    st = os.stat(os.path.join(folder, name))
                    count, size, newest = count + 1, size + st.st_size, max(newest, st.st_mtime_ns)
    return [count, size, newest]


def _rows_match(library: Path, files: list[FileEntry]) -> bool:
    """Whether the database holds exactly these files, each unchanged (indexer.rows: plan's rule).

    Read without writing anything: the database file alone (`immutable`) when no write-ahead log is
    there (every commit is in it), else read-only beside the process that keeps the log open."""
    db = library / DB_FILE
    wal = os.path.exists(f"{db}-wal")
    conn = sqlite3.connect(f"{db.as_uri()}?{'mode=ro' if wal else 'immutable=1'}", uri=True)
    try:
        rows = {r[1]: Row(*r) for r in conn.execute(ROWS_SQL)}
    finally:
        conn.close()
    if len(rows) != len(files):
        return False
    for f in files:
        row = rows.get(f.path)
        if row is None or not is_unchanged(row, f):
            return False
    return True
