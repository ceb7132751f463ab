"""Reviewing duplicates: the keep suggestion and its reason, choices, dismissals that survive
re-index runs, and the command line's JSON contract, removal CSV and --move-to (never a delete)."""

from __future__ import annotations

import csv
import json
import os
import shutil
from datetime import datetime

import pytest
from click.testing import CliRunner
from PIL import Image as PILImage
from sqlalchemy import select

from bench.copies import TRANSFORMS
from indexer.library import Library
from indexer.pipeline import index_folder
from indexer.schema import Image
from lookalike.cli import main
from search.duplicates.candidates import COPIES, SIMILAR, Pair, find_duplicates, onto_files
from search.duplicates.review import (
    KEEP,
    REMOVE,
    ReviewError,
    decide,
    dismiss,
    dismissed_pairs,
    move_files,
    removal_plan,
    set_choice,
    suggest_keep,
)
from tests.conftest import SAMPLES
from tests.search.duplicates.exif import save_shot


def row(i, w, h, size, taken=None, mtime=0.0, path=None):
    return Image(id=i, path=path or f"p/{i}.jpg", folder="p", width=w, height=h, size=size, taken_at=taken, mtime=mtime)


def test_keep_the_largest_then_the_least_compressed_then_the_oldest():
    s = suggest_keep([row(1, 400, 300, 50_000), row(2, 800, 600, 90_000), row(3, 96, 72, 4_000)])
    assert (s.image_id, s.reason) == (2, "largest (800 x 600)")
    s = suggest_keep([row(1, 400, 300, 20_000), row(2, 400, 300, 60_000)])
    assert s.image_id == 2 and s.reason.startswith("least compressed (0.50 bytes/pixel")
    s = suggest_keep([row(1, 400, 300, 60_000, datetime(2022, 5, 1)), row(2, 400, 300, 60_000, datetime(2019, 1, 2))])
    assert s.image_id == 2 and s.reason == "oldest (2019-01-02 00:00)"


def test_a_group_is_never_emptied():
    from search.duplicates.candidates import DuplicateGroup

    rows = {1: row(1, 800, 600, 1), 2: row(2, 400, 300, 1)}
    group = DuplicateGroup([1, 2], [])
    _, decisions = decide(group, rows, {1: REMOVE, 2: REMOVE})
    assert [(x.image_id, x.action, x.chosen) for x in decisions] == [(1, KEEP, True), (2, REMOVE, True)]
    _, decisions = decide(group, rows, {2: KEEP})
    assert [x.action for x in decisions] == [KEEP, KEEP]
    # Similar shots too: every shot marked remove by hand, the suggested one stays.
    shots = DuplicateGroup([1, 2], [], kind=SIMILAR)
    suggestion, decisions = decide(shots, rows, {1: REMOVE, 2: REMOVE})
    assert {x.image_id: x.action for x in decisions} == {suggestion.image_id: KEEP, 3 - suggestion.image_id: REMOVE}


@pytest.fixture
def collection(tmp_path, backbone):
    """A photo, a half-size WebP copy and a 3/4-size grayscale copy of it, and two other photos; indexed."""
    photos = tmp_path / "photos"
    (photos / "a").mkdir(parents=True)
    src = sorted((SAMPLES / "dress").glob("*.jpg"))[0]
    shutil.copyfile(src, photos / "a" / "original.jpg")
    img = PILImage.open(src).convert("RGB")
    TRANSFORMS["webp_half"](img).save(photos / "a" / "small.jpg", quality=80)
    gray = TRANSFORMS["grayscale"](img)
    gray.resize((img.width * 3 // 4, img.height * 3 // 4)).save(photos / "a" / "gray.jpg", quality=80)
    for n, other in enumerate(sorted((SAMPLES / "shoes").glob("*.jpg"))[:2]):  # two shots 3 s apart
        save_shot(PILImage.open(other), photos / "a" / other.name, datetime(2024, 5, 1, 12, 0, 3 * n), ("Acme", "X1"))
    library = Library(tmp_path / "library", create=True)
    index_folder(photos, library, backbone, workers=0)
    yield photos, library
    library.close()


def ids_by_path(library) -> dict[str, int]:
    with library.Session() as s:
        return {p: i for i, p in s.execute(select(Image.id, Image.path))}


def test_dismissed_groups_stay_dismissed_across_re_index_runs(collection, backbone):
    photos, library = collection
    [group] = find_duplicates(library)
    with library.Session.begin() as s:
        assert dismiss(s, group.image_ids, COPIES) == 3
    with library.Session() as s:
        assert find_duplicates(library, dismissed=dismissed_pairs(s, COPIES)) == []
    # Re-index: one copy moved to another folder, one rewritten with the same bytes (new mtime).
    (photos / "b").mkdir()
    shutil.move(photos / "a" / "gray.jpg", photos / "b" / "gray.jpg")
    os.utime(photos / "a" / "small.jpg", (1_000_000, 1_000_000))
    report = index_folder(photos, library, backbone, workers=0)
    assert report.moved == 1 and report.indexed == 1
    with library.Session() as s:
        assert find_duplicates(library, dismissed=dismissed_pairs(s, COPIES)) == []
        assert len(find_duplicates(library)) == 1  # the group itself is still found
    # The verdict is per tier and per pair: dismissing copies says nothing about similar shots.
    with library.Session() as s:
        assert dismissed_pairs(s, "similar") == set()
    with library.Session.begin() as s, pytest.raises(ReviewError):
        dismiss(s, group.image_ids[:1], COPIES)


def test_choices_change_the_removal_plan(collection):
    _, library = collection
    ids = ids_by_path(library)
    groups = find_duplicates(library)
    with library.Session() as s:
        assert sorted(r.path for r in removal_plan(s, groups)) == ["a/gray.jpg", "a/small.jpg"]
    with library.Session.begin() as s:
        set_choice(s, ids["a/gray.jpg"], KEEP)
        set_choice(s, ids["a/original.jpg"], REMOVE)
    with library.Session() as s:
        plan = sorted(r.path for r in removal_plan(s, groups))
    assert plan == ["a/original.jpg", "a/small.jpg"]
    with library.Session.begin() as s, pytest.raises(ReviewError):
        set_choice(s, ids["a/gray.jpg"], "delete")


@pytest.fixture
def run():
    def invoke(*args):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)

    return invoke


def test_duplicates_json_keeps_its_contract_and_adds_tier_and_keep(collection, run):
    photos, library = collection
    result = run("duplicates", "--library", library.path, "--json")
    assert result.exit_code == 0, result.output
    groups = json.loads(result.output)
    assert isinstance(groups, list) and len(groups) == 1
    g = groups[0]
    assert sorted(g["paths"]) == ["a/gray.jpg", "a/original.jpg", "a/small.jpg"]  # relative to the root
    ids = ids_by_path(library)
    assert g["image_ids"] == sorted(ids[p] for p in g["paths"])
    assert g["paths"] == [{v: k for k, v in ids.items()}[i] for i in g["image_ids"]]
    assert all(len(p) == 3 and p[0] < p[1] and 0 < p[2] <= 1 for p in g["pairs"])
    assert g["kind"] == "copies"
    w, h = PILImage.open(photos / "a" / "original.jpg").size
    assert g["keep"] == {"image_id": ids["a/original.jpg"], "path": "a/original.jpg", "reason": f"largest ({w} x {h})"}
    assert g["actions"] == {"a/gray.jpg": "remove", "a/original.jpg": "keep", "a/small.jpg": "remove"}
    similar = json.loads(run("duplicates", "--library", library.path, "--json", "--kind", "similar",
                             "--threshold", "0.3").output)
    assert similar and all(x["kind"] == "similar" for x in similar)
    assert all(a == "undecided" for x in similar for a in x["actions"].values())  # never pre-marked
    assert all(e["why"].startswith("one moment") for x in similar for e in x["evidence"])
    assert run("duplicates", "--library", library.path, "--kind", "twins").exit_code == 2
    wrong = run("duplicates", "--library", library.path, "--threshold", "0.8")
    assert wrong.exit_code == 2 and "--kind similar" in wrong.output


def test_remove_csv_and_move_to_never_delete(collection, run, tmp_path):
    photos, library = collection
    before = sorted(p.name for p in photos.rglob("*.jpg"))
    out = tmp_path / "remove.csv"
    result = run("duplicates", "--library", library.path, "--remove-csv", out)
    assert result.exit_code == 0, result.output
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["path"] for r in rows) == ["a/gray.jpg", "a/small.jpg"]
    assert {r["kept"] for r in rows} == {"a/original.jpg"}
    assert sorted(p.name for p in photos.rglob("*.jpg")) == before  # the CSV alone moves nothing

    inside = run("duplicates", "--library", library.path, "--move-to", photos / "trash")
    assert inside.exit_code == 1 and "inside the photo folder" in inside.output
    result = run("duplicates", "--library", library.path, "--move-to", tmp_path / "removed")
    assert result.exit_code == 0, result.output
    assert sorted(p.relative_to(tmp_path / "removed").as_posix() for p in (tmp_path / "removed").rglob("*.jpg")) == [
        "a/gray.jpg", "a/small.jpg"]
    after = sorted(p.name for p in photos.rglob("*.jpg")) + ["gray.jpg", "small.jpg"]
    assert sorted(after) == before  # moved, not deleted


def test_move_files_refuses_to_overwrite(tmp_path):
    from search.duplicates.review import Removal

    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "x.jpg").write_bytes(b"1")
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "x.jpg").write_bytes(b"2")
    with pytest.raises(ReviewError, match="not overwriting"):
        move_files([Removal("x.jpg", 1, "y.jpg", COPIES)], tmp_path / "root", tmp_path / "dest")
    assert (tmp_path / "root" / "x.jpg").read_bytes() == b"1"


def test_remove_csv_neutralises_paths_a_spreadsheet_would_run():
    from search.duplicates.review import Removal, plan_csv

    text = plan_csv([Removal("=1+2+cmd|calc.jpg", 7, "@keep.jpg", COPIES), Removal("a/b.jpg", 8, "-x.jpg", COPIES)])
    rows = list(csv.reader(text.splitlines()))
    assert rows == [
        ["path", "image_id", "kept", "kind"],
        ["'=1+2+cmd|calc.jpg", "7", "'@keep.jpg", COPIES],
        ["a/b.jpg", "8", "'-x.jpg", COPIES],
    ]


@pytest.mark.parametrize("threshold", ["-1", "0", "1.5", "nan"])
def test_cli_and_web_refuse_the_same_similar_thresholds(collection, run, tmp_path, monkeypatch, threshold):
    from web.app import create_app

    photos, library = collection
    before = sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*.jpg"))
    result = run("duplicates", "--library", library.path, "--kind", "similar", "--threshold", threshold,
                 "--move-to", tmp_path / "removed")
    assert result.exit_code == 2 and "threshold must be a cosine in (0, 1]" in result.output
    assert sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*.jpg")) == before
    assert not (tmp_path / "removed").exists()
    monkeypatch.setenv("LOOKALIKE_LIBRARY", str(library.path))
    app = create_app()
    response = app.test_client().get(f"/api/duplicates?kind=similar&threshold={threshold}")
    assert response.status_code == 400 and "(0, 1]" in response.get_data(as_text=True)


def test_move_to_checks_every_destination_before_moving_anything(collection, run, tmp_path):
    photos, library = collection
    removed = tmp_path / "removed"
    (removed / "a").mkdir(parents=True)
    (removed / "a" / "small.jpg").write_bytes(b"already here")  # the second of the two planned moves
    result = run("duplicates", "--library", library.path, "--move-to", removed)
    assert result.exit_code == 1
    assert "small.jpg exists already: not overwriting it; nothing was moved" in result.output
    assert (photos / "a" / "gray.jpg").is_file() and (photos / "a" / "small.jpg").is_file()
    assert sorted(p.name for p in removed.rglob("*")) == ["a", "small.jpg"]
    assert (removed / "a" / "small.jpg").read_bytes() == b"already here"


def test_a_symlink_and_its_target_are_one_photo_not_two_copies(collection, run, tmp_path, backbone):
    photos, library = collection
    (photos / "z").mkdir()
    (photos / "z" / "l.jpg").symlink_to("../a/original.jpg")  # shorter path, same size, age and bytes
    index_folder(photos, library, backbone, workers=0)
    ids = ids_by_path(library)
    assert "z/l.jpg" in ids
    [group] = find_duplicates(library)
    assert ids["z/l.jpg"] not in group.image_ids  # the link is the same file, not a copy
    result = run("duplicates", "--library", library.path, "--json")
    [g] = json.loads(result.output)
    assert g["keep"]["path"] == "a/original.jpg"
    assert g["actions"] == {"a/gray.jpg": "remove", "a/original.jpg": "keep", "a/small.jpg": "remove"}
    result = run("duplicates", "--library", library.path, "--move-to", tmp_path / "removed")
    assert result.exit_code == 0, result.output
    assert (photos / "a" / "original.jpg").is_file() and (photos / "z" / "l.jpg").is_file()
    index_folder(photos, library, backbone, workers=0)
    assert {"a/original.jpg", "z/l.jpg"} <= set(ids_by_path(library))


def test_a_copy_that_met_only_hard_links_of_its_original_joins_the_file_kept():
    # Ten hard links of one photo (a snapshot folder) fill a copy's eight nearest neighbours; the pair
    # it verified with a link stands for the file, kept under one path, and a link's pair with the kept
    # path is no pair at all.
    kept, links, copy = 3, (7, 9, 11), 20
    aliases = {link: kept for link in links}
    pairs = [Pair(7, copy, 0.8, None, 40, 0.9, "verified"), Pair(9, copy, 0.8, None, 41, 0.9, "verified"),
             Pair(kept, 7, 1.0, 0, why="hash"), Pair(1, 2, 0.97, 3, why="hash")]
    out = onto_files(pairs, aliases)
    assert sorted((p.a, p.b) for p in out) == [(1, 2), (kept, copy)]
    assert next(p for p in out if p.b == copy).inliers == 40  # the first pair's evidence
    assert onto_files(pairs, {}) == pairs


def test_hard_links_of_a_photo_join_no_group_but_its_copies_still_do(collection, run, backbone):
    photos, library = collection
    (photos / "snap").mkdir()
    for n in range(10):  # more paths to one file than a photo has nearest neighbours verified
        os.link(photos / "a" / "original.jpg", photos / "snap" / f"{n}.jpg")
    index_folder(photos, library, backbone, workers=0)
    ids = ids_by_path(library)
    [group] = find_duplicates(library)
    names = {p for p, i in ids.items() if i in group.image_ids}
    assert names == {"a/gray.jpg", "a/small.jpg", "snap/0.jpg"}  # the shortest path stands for the file
    result = run("duplicates", "--library", library.path, "--json")
    [g] = json.loads(result.output)
    assert g["actions"] == {"a/gray.jpg": "remove", "a/small.jpg": "remove", "snap/0.jpg": "keep"}


def test_a_group_whose_kept_photo_is_gone_or_a_changed_file_is_not_moved(collection, run, tmp_path):
    """The kept photo deleted since indexing: moving its copies would take the last one. A copy
    overwritten by another photo since: it is not the photo that was judged a copy."""
    photos, library = collection
    kept = photos / "a" / "original.jpg"
    saved = kept.read_bytes()
    kept.unlink()
    out = tmp_path / "remove.csv"
    result = run("duplicates", "--library", library.path, "--remove-csv", out, "--move-to", tmp_path / "removed")
    assert result.exit_code == 0, result.output
    assert result.output.count("not planned: ") == 2
    assert "a/original.jpg, is no longer in the photo folder" in result.output
    assert list(csv.reader(out.read_text().splitlines())) == [["path", "image_id", "kept", "kind"]]
    assert (photos / "a" / "gray.jpg").is_file() and (photos / "a" / "small.jpg").is_file()
    assert not (tmp_path / "removed").exists()  # nothing was moved

    kept.write_bytes(saved)
    os.utime(kept, ns=(0, 0))  # the kept photo back (its own change is no concern: it is not moved)
    other = sorted((SAMPLES / "hat").glob("*.jpg"))[0]
    shutil.copyfile(other, photos / "a" / "small.jpg")  # a copy replaced by another photo, not re-indexed
    result = run("duplicates", "--library", library.path, "--move-to", tmp_path / "removed")
    assert result.exit_code == 0, result.output
    assert "not planned: a/small.jpg: changed since it was indexed" in result.output
    assert sorted(p.relative_to(tmp_path / "removed").as_posix() for p in (tmp_path / "removed").rglob("*.jpg")) == [
        "a/gray.jpg"]
    assert (photos / "a" / "small.jpg").read_bytes() == other.read_bytes()


def test_move_to_a_folder_above_the_photos_that_would_put_them_back_is_refused(tmp_path):
    from search.duplicates.review import Removal

    root = tmp_path / "pp" / "edits"
    (root / "edits").mkdir(parents=True)
    (root / "edits" / "captioned.jpg").write_bytes(b"1")
    (root / "keep.jpg").write_bytes(b"2")
    with pytest.raises(ReviewError, match="is inside the photo folder"):  # pp/edits/captioned.jpg: back inside
        move_files([Removal("edits/captioned.jpg", 1, "keep.jpg", COPIES)], root, tmp_path / "pp")
    assert (root / "edits" / "captioned.jpg").read_bytes() == b"1"


def test_a_damaged_stored_hash_is_left_out_and_the_next_index_computes_it_again(collection, run, backbone):
    import sqlite3

    from indexer.library_files import DB_FILE
    from web.app import create_app
    from web.settings import Settings

    photos, library = collection
    ids = ids_by_path(library)
    with sqlite3.connect(library.path / DB_FILE) as conn:  # a short hash, and a short row of turn hashes
        conn.execute("UPDATE image_signals SET pdq = x'0011' WHERE image_id = ?", (ids["a/small.jpg"],))
        conn.execute("UPDATE image_features SET turns = x'00' WHERE image_id = ?", (ids["a/gray.jpg"],))
    result = run("duplicates", "--library", library.path, "--json")
    assert result.exit_code == 0, result.output
    assert "note: 1 photos have no duplicate signals yet" in result.output and "Traceback" not in result.output
    app = create_app(Settings(library=library.path))
    assert app.test_client().get("/api/duplicates").status_code == 200
    report = index_folder(photos, library, backbone, workers=0)
    assert report.signals_backfilled == 2
    again = run("duplicates", "--library", library.path)
    assert again.exit_code == 0 and "no duplicate signals" not in again.output
    assert "group 1: 3 photos" in again.output


def test_a_move_across_file_systems_never_leaves_half_a_photo_under_its_name(tmp_path, monkeypatch):
    """Across file systems a move is a copy then a removal: copied under a partial name and renamed
    into place, so a move killed midway leaves the photo where it was and no half file that blocks
    the next run ('exists already: not overwriting it')."""
    import errno as errnos

    from search.duplicates import review as rv

    root, target = tmp_path / "root", tmp_path / "dest"
    root.mkdir()
    (root / "x.jpg").write_bytes(b"photo")
    (root / "keep.jpg").write_bytes(b"kept")
    real_rename = os.rename

    def cross_device(src, dst):
        if str(src).startswith(str(root)):
            raise OSError(errnos.EXDEV, "Invalid cross-device link")
        real_rename(src, dst)

    def killed(src, dst, **kwargs):
        with open(dst, "wb") as f:
            f.write(b"ph")  # half of it written, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(rv.os, "rename", cross_device)
    monkeypatch.setattr(rv.shutil, "copy2", killed)
    with pytest.raises(KeyboardInterrupt):
        move_files([rv.Removal("x.jpg", 1, "keep.jpg", COPIES)], root, target)
    assert (root / "x.jpg").read_bytes() == b"photo" and not (target / "x.jpg").exists()
    monkeypatch.undo()
    monkeypatch.setattr(rv.os, "rename", cross_device)
    assert move_files([rv.Removal("x.jpg", 1, "keep.jpg", COPIES)], root, target) == ["x.jpg"]
    assert (target / "x.jpg").read_bytes() == b"photo" and not (root / "x.jpg").exists()
    assert sorted(p.name for p in target.iterdir()) == ["x.jpg"]  # the partial file was written over
