"""Stored paths name files inside the collection root and nowhere else."""

from __future__ import annotations

import os

import pytest

from web.thumbs import OutsideRoot, original_path


@pytest.mark.parametrize("rel", ["../etc/passwd", "a/../../secret.jpg", "/etc/passwd", "", "a\x00.jpg", "."])
def test_paths_leaving_the_root_are_refused(tmp_path, rel):
    with pytest.raises(OutsideRoot):
        original_path(tmp_path / "photos", rel)


def test_a_symlinked_folder_inside_the_collection_is_served_through_it(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "x.jpg").write_bytes(b"jpeg")
    root = tmp_path / "photos"
    root.mkdir()
    os.symlink(outside, root / "linked")  # the scanner follows it and stores linked/x.jpg
    path = original_path(root, "linked/x.jpg")
    assert path == root / "linked" / "x.jpg"
    assert path.read_bytes() == b"jpeg"
