"""The folder watcher on a real file system (inotify, and the polling observer), and the pipeline's
`settling` files: what a watched batch leaves alone."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from indexer.library import Library
from indexer.pipeline import index_folder
from indexer.watch import FolderWatcher
from tests.conftest import SAMPLES

WAIT = 120  # seconds: a deadline on a loaded machine, not a speed claim


class Batches:
    """Records each batch's `settling` set; `wait(n)` until n batches ran."""

    def __init__(self) -> None:
        self.seen: list[frozenset[str]] = []
        self.cond = threading.Condition()

    def __call__(self, settling: frozenset[str]) -> None:
        with self.cond:
            self.seen.append(settling)
            self.cond.notify_all()

    def wait(self, n: int) -> list[frozenset[str]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.seen) >= n, timeout=WAIT), self.seen
            return list(self.seen)


@pytest.fixture
def photo(tmp_path) -> bytes:
    return next(SAMPLES.rglob("*.jpg")).read_bytes()


def watch(root: Path, **options) -> tuple[FolderWatcher, Batches]:
    batches = Batches()
    watcher = FolderWatcher(root, batches, **options)
    watcher.start(catch_up=False)
    return watcher, batches


def test_a_burst_of_photos_becomes_one_batch_not_one_each(tmp_path, photo):
    watcher, batches = watch(tmp_path, debounce=2.0)
    try:
        for i in range(30):
            (tmp_path / f"p{i}.jpg").write_bytes(photo)
        seen = batches.wait(1)
        assert seen[0] == frozenset()
        assert watcher.settling == 0  # every file was ready
    finally:
        watcher.stop()
    assert len(batches.seen) < 30


def test_a_file_still_open_for_writing_waits_and_others_do_not(tmp_path, photo):
    watcher, batches = watch(tmp_path)
    try:
        with open(tmp_path / "open.jpg", "wb") as f:
            f.write(photo[:1000])
            f.flush()
            (tmp_path / "done.jpg").write_bytes(photo)
            assert batches.wait(1)[0] == {"open.jpg"}
            f.write(photo[1000:])
        n = len(batches.seen)
        assert batches.wait(n + 1)[-1] == frozenset()  # once closed, it goes in
    finally:
        watcher.stop()


def test_a_file_created_empty_waits_for_its_bytes(tmp_path, photo):
    """Opened and created before its first bytes arrive (its writer still preparing them): an empty
    file is no photo yet, and waits as one held open does, instead of failing as 'empty file'."""
    watcher, batches = watch(tmp_path)
    try:
        with open(tmp_path / "late.jpg", "wb") as f:
            (tmp_path / "done.jpg").write_bytes(photo)
            assert batches.wait(1)[0] == {"late.jpg"}
            f.write(photo)
        n = len(batches.seen)
        assert batches.wait(n + 1)[-1] == frozenset()  # once written and closed, it goes in
    finally:
        watcher.stop()


def test_a_writer_that_never_pauses_holds_back_no_other_photo(tmp_path, photo):
    """Events every 50 ms never leave the folder quiet: the batch starts anyway, without that file."""
    watcher, batches = watch(tmp_path)
    gave_up = False
    try:
        with open(tmp_path / "endless.jpg", "wb") as f:
            (tmp_path / "done.jpg").write_bytes(photo)
            started = time.monotonic()
            while not batches.seen:
                if time.monotonic() - started > WAIT:
                    gave_up = True
                    break
                f.write(b"x" * 100)
                f.flush()
                time.sleep(0.05)
        assert not gave_up and batches.seen[0] == {"endless.jpg"}
    finally:
        watcher.stop()


def test_other_files_the_library_and_hidden_files_are_no_change(tmp_path):
    library = tmp_path / "library"
    watcher = FolderWatcher(tmp_path, Batches(), ignore=[library])  # not started: events handed in
    for path in (tmp_path / "notes.txt", library / "thumbs" / "1.jpg", tmp_path / ".partial.jpg"):
        for kind in ("created", "modified", "closed", "deleted"):
            watcher.on_event(kind, str(path), False)
    watcher.on_event("opened", str(tmp_path / "a.jpg"), False)  # the indexer reading a photo
    watcher.on_event("closed_no_write", str(tmp_path / "a.jpg"), False)
    watcher.on_event("modified", str(tmp_path), True)  # a folder's listing changed: its files say how
    assert watcher.settling == 0 and not watcher._dirty
    watcher.on_event("moved", str(tmp_path / ".partial.jpg"), False, str(tmp_path / "arrived.jpg"))  # rsync
    assert watcher.settling == 1


def test_the_polling_observer_sees_new_and_deleted_photos(tmp_path, photo):
    (tmp_path / "old.jpg").write_bytes(photo)
    watcher, batches = watch(tmp_path, poll=True, settle=1.0)
    try:
        assert watcher.observer_kind == "PollingObserver"
        (tmp_path / "new.jpg").write_bytes(photo)
        batches.wait(1)
        (tmp_path / "old.jpg").unlink()
        batches.wait(2)
    finally:
        watcher.stop()


def test_a_failed_batch_is_tried_again(tmp_path, photo):
    calls: list[frozenset[str]] = []
    done = threading.Event()

    def flaky(settling: frozenset[str]) -> None:
        calls.append(settling)
        if len(calls) == 1:
            raise RuntimeError("another `lookalike index` is writing the library")
        done.set()

    watcher = FolderWatcher(tmp_path, flaky)
    watcher.start(catch_up=True)
    try:
        assert done.wait(WAIT)
        assert watcher.error is None
    finally:
        watcher.stop()


def test_settling_files_keep_their_rows_and_defer_removals(tmp_path, backbone):
    root = tmp_path / "photos"
    root.mkdir()
    files = sorted((SAMPLES / "hat").glob("*.jpg"))[:4]
    for f in files[:3]:
        shutil.copyfile(f, root / f.name)
    with Library(tmp_path / "library", create=True) as library:
        assert index_folder(root, library, backbone, workers=0).indexed == 3
        (root / files[0].name).unlink()  # gone
        (root / files[1].name).write_bytes(b"half a jpe")  # being rewritten
        (root / files[3].name).write_bytes(files[3].read_bytes()[:100])  # arriving
        report = index_folder(root, library, backbone, workers=0, settling={files[1].name, files[3].name})
        assert (report.indexed, report.removed, report.failed.total()) == (0, 0, 0)
        assert library.counts()["indexed"] == 3  # the old version of the one being rewritten is kept
        shutil.copyfile(files[1], root / files[1].name)
        shutil.copyfile(files[3], root / files[3].name)
        report = index_folder(root, library, backbone, workers=0)
        assert (report.indexed, report.removed) == (2, 1)


def test_a_library_inside_the_watched_folder_is_never_indexed(tmp_path, backbone, photo):
    """`lookalike up . --watch` in the photo folder: the library, and the thumbnails the server caches
    in it, lie inside the root. A watched batch (and any index run) leaves them out."""
    from sqlalchemy import select

    from indexer.schema import Image
    from web.thumbs import Thumbnails

    root = tmp_path / "photos"
    (root / "trip").mkdir(parents=True)
    shutil.copyfile(next((SAMPLES / "hat").glob("*.jpg")), root / "trip" / "a.jpg")
    with Library(root / "lookalike-library", create=True) as library:
        index_folder(root, library, backbone, workers=0, engine="torch")
        with library.Session() as s:
            row = s.scalars(select(Image)).one()
        assert Thumbnails(library.path / "thumbs").get(root, row, "small").is_file()  # as the server caches it
        batches = Batches()

        def run(settling: frozenset[str]) -> None:
            index_folder(root, library, backbone, workers=0, engine="torch", settling=settling)
            batches(settling)

        watcher = FolderWatcher(root, run, ignore=[library.path])
        watcher.start(catch_up=False)
        try:
            (root / "trip" / "b.jpg").write_bytes(photo)
            batches.wait(1)
        finally:
            watcher.stop()
        with library.Session() as s:
            assert sorted(s.scalars(select(Image.path))) == ["trip/a.jpg", "trip/b.jpg"]
