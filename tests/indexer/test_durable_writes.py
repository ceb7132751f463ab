"""Files a database row or the user depends on are put in place durably: their bytes flushed, the
rename, then their folder flushed (indexer.library_files.replace_durably). A power cut cannot be
staged in a test; what is checked is that each flush reaches the real file and folder, in order."""

from __future__ import annotations

import os

import numpy as np

from indexer.exiv2io import XmpPacket
from indexer.vectors import VectorIndex
from search.labelling.xmp_sidecar import merge_label, sidecar_path, write_sidecar


def record_fsyncs(monkeypatch, events):
    """os.fsync still flushes; each call also notes what it flushed (by /proc's name of the fd)."""
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.fspath(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)


def test_the_vectors_file_and_its_folder_are_flushed_around_the_rename(tmp_path, monkeypatch):
    index = VectorIndex(8)
    vectors = np.eye(8, dtype=np.float32)
    index.add(np.arange(8), vectors)
    events: list[tuple[str, str]] = []
    record_fsyncs(monkeypatch, events)
    path = tmp_path / "vectors.faiss"
    index.save(path)
    assert events == [("fsync", str(path) + ".tmp"), ("replace", str(path)), ("fsync", str(tmp_path))]
    assert VectorIndex.load(path, 8).ntotal == 8 and not (tmp_path / "vectors.faiss.tmp").exists()


def test_an_xmp_sidecar_is_flushed_before_and_after_it_replaces_the_users_file(tmp_path, monkeypatch):
    photo = tmp_path / "IMG_0001.CR2"
    photo.write_bytes(b"raw")
    events: list[tuple[str, str]] = []
    record_fsyncs(monkeypatch, events)
    packet = XmpPacket()
    assert merge_label(packet, "sunset", "lookalike")
    sidecar = sidecar_path(photo)
    write_sidecar(sidecar, packet)
    assert [kind for kind, _ in events] == ["fsync", "replace", "fsync"]
    assert events[1] == ("replace", str(sidecar)) and events[2] == ("fsync", str(tmp_path))
    assert events[0][1].startswith(str(tmp_path / ".lookalike-"))  # the temporary file's own bytes
    assert b"sunset" in sidecar.read_bytes()
