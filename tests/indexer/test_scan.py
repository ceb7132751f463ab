"""Walking a photo tree: nested folders, hidden entries, symlink loops, non-image files."""

from __future__ import annotations

import os

from PIL import Image

from indexer.scan import scan


def make(path, size=(32, 32), color=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def test_scan_finds_images_recursively_and_skips_the_rest(tmp_path):
    make(tmp_path / "a.jpg")
    make(tmp_path / "trip" / "day1" / "b.PNG")
    make(tmp_path / ".hidden" / "c.jpg")
    make(tmp_path / ".d.jpg")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "a.jpg.xmp").write_text("<x:xmpmeta/>")  # sidecars beside photos are expected, not "ignored"
    (tmp_path / "trip" / "day1" / "b.XMP").write_text("<x:xmpmeta/>")
    result = scan(tmp_path)
    assert [f.path for f in result.files] == ["a.jpg", "trip/day1/b.PNG"]
    assert result.ignored == 1  # notes.txt
    size = (tmp_path / "a.jpg").stat().st_size
    assert result.files[0].size == size
    assert result.files[0].mtime == (tmp_path / "a.jpg").stat().st_mtime


def test_symlink_loop_is_followed_once(tmp_path):
    make(tmp_path / "photos" / "x.jpg")
    os.symlink(tmp_path / "photos", tmp_path / "photos" / "loop")  # photos/loop -> photos
    result = scan(tmp_path)
    assert [f.path for f in result.files] == ["photos/x.jpg"]
    assert result.skipped_links >= 1


def test_dangling_symlink_is_skipped(tmp_path):
    make(tmp_path / "ok.jpg")
    os.symlink(tmp_path / "gone.jpg", tmp_path / "dangling.jpg")
    result = scan(tmp_path)
    assert [f.path for f in result.files] == ["ok.jpg"]


def test_unlistable_folder_is_reported_not_fatal(tmp_path, monkeypatch):
    make(tmp_path / "ok.jpg")
    make(tmp_path / "blocked" / "y.jpg")
    # Root reads any folder, so the permission error a normal user would get is raised here.
    real_scandir = os.scandir

    def scandir(path):
        if os.path.basename(path) == "blocked":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = scan(tmp_path)
    assert [f.path for f in result.files] == ["ok.jpg"]
    assert result.unreadable_dirs == ["blocked"]


def test_scan_records_its_folders_and_tells_which_changed_since(tmp_path):
    from indexer.scan import changed_folders

    make(tmp_path / "a.jpg")
    make(tmp_path / "trip" / "day1" / "b.jpg")
    make(tmp_path / "other" / "c.jpg")
    for folder in (tmp_path, tmp_path / "trip", tmp_path / "trip" / "day1", tmp_path / "other"):
        os.utime(folder, (1e9, 1e9))  # long ago: any change from now on gives another mtime
    result = scan(tmp_path)
    assert set(result.folders) == {"", "trip", "trip/day1", "other"}
    assert changed_folders(tmp_path, result.folders) == []
    make(tmp_path / "trip" / "day1" / "new.jpg")  # an entry added
    os.rename(tmp_path / "other", tmp_path / "renamed")  # gone, and its parent changed
    assert sorted(changed_folders(tmp_path, result.folders)) == [".", "other", "trip/day1"]


def test_a_link_out_of_the_root_is_skipped_and_said_once(tmp_path, caplog):
    """A watcher scans the folder again at every batch: the warning about a link out of it is said
    once, not at every batch (27 lines for two links in one session, seen)."""
    root = tmp_path / "photos"
    make(root / "a.jpg")
    make(tmp_path / "elsewhere" / "b.jpg")
    (root / "b.jpg").symlink_to(tmp_path / "elsewhere" / "b.jpg")
    with caplog.at_level("WARNING", logger="indexer.scan"):
        for _ in range(3):
            result = scan(root)
            assert [f.path for f in result.files] == ["a.jpg"] and result.skipped_links == 1
    assert sum("a link to" in r.getMessage() for r in caplog.records) == 1
