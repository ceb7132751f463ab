"""Stored paths name files inside the collection root and nowhere else."""

from __future__ import annotations

import os

import pytest

from web.thumbs import OutsideRoot, original_path


@pytest.mark.parametrize("rel", ["../etc/passwd", "a/../../secret.jpg", "/etc/passwd", "", "a\x00.jpg", "."])
def test_paths_leaving_the_root_are_refused(tmp_path, rel):
    with pytest.raises(OutsideRoot):
        original_path(tmp_path / "photos", rel)


def test_a_link_within_the_collection_is_served_as_its_target(tmp_path):
    root = tmp_path / "photos"
    (root / "real").mkdir(parents=True)
    (root / "real" / "x.jpg").write_bytes(b"jpeg")
    os.symlink(root / "real", root / "alias")
    path = original_path(root, "alias/x.jpg")
    assert path == (root / "real" / "x.jpg").resolve()
    assert path.read_bytes() == b"jpeg"


@pytest.mark.parametrize("link", ["linked/x.jpg", "passwd.jpg", "folder.jpg"])
def test_links_out_of_the_collection_and_non_files_are_refused(tmp_path, link):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.jpg").write_bytes(b"jpeg")
    root = tmp_path / "photos"
    (root / "inner.jpg").mkdir(parents=True)  # a folder named like a photo
    os.symlink(outside, root / "linked")
    os.symlink("/etc/passwd", root / "passwd.jpg")
    os.symlink(root / "inner.jpg", root / "folder.jpg")
    with pytest.raises(OutsideRoot):
        original_path(root, link)
