"""The batch job on real files, the real backbone, a real SQLite file and a real FAISS index."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sqlalchemy import select

from indexer.backbone import Backbone, BackboneError
from indexer.imageio import load_image
from indexer.library import Library, LibraryError
from indexer.pipeline import index_folder
from indexer.schema import FAILED, INDEXED, PENDING, Embedding, Label
from indexer.schema import Image as Row
from tests.conftest import REPO, SAMPLES, TEST_DATA


def photo(path, seed, size=(96, 72), mode="RGB"):
    """A distinct, textured picture (noise over a gradient) so every file embeds differently."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    base = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * rng.uniform(0.2, 1, 3)
    pixels = np.clip(base + rng.normal(0, 40, (h, w, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "RGBA":
        img = img.convert("RGBA")
        img.putalpha(128)
    elif mode == "L":
        img = img.convert("L")
    img.save(path)
    return path


@pytest.fixture
def tree(tmp_path):
    """A messy little collection: nested folders, RGBA, grayscale, EXIF-rotated, broken files."""
    root = tmp_path / "photos"
    photo(root / "a" / "red.jpg", 1)
    photo(root / "a" / "b" / "alpha.png", 2, mode="RGBA")
    photo(root / "gray.jpg", 3, mode="L")
    photo(root / "c" / "d.webp", 4)
    photo(root / "e.jpg", 5)
    rotated = Image.open(photo(root / "rot-src.jpg", 6, size=(80, 40)))
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated.save(root / "rot.jpg", exif=exif)
    os.remove(root / "rot-src.jpg")
    good = (root / "e.jpg").read_bytes()
    (root / "broken.jpg").write_bytes(good[: len(good) // 2])
    (root / "empty.png").write_bytes(b"")
    (root / "readme.txt").write_text("not a photo")
    shutil.copy(TEST_DATA / "bad" / "pillow__decompression_bomb.gif", root / "bomb.gif")
    return root


@pytest.fixture
def library(tmp_path):
    lib = Library(tmp_path / "library", create=True)
    yield lib
    lib.close()


def rows(library):
    with library.Session() as s:
        return {r.path: r for r in s.scalars(select(Row))}


def stored(library, image_id):
    with library.Session() as s:
        return np.frombuffer(s.get(Embedding, image_id).vector, dtype=np.float32)


GOOD = {"a/red.jpg", "a/b/alpha.png", "gray.jpg", "c/d.webp", "e.jpg", "rot.jpg"}


def test_index_records_every_file(tree, library, backbone):
    report = index_folder(tree, library, backbone, batch_size=4, workers=1)
    assert report.indexed == len(GOOD)
    assert dict(report.failed) == {"corrupt image": 1, "empty file": 1, "decompression bomb": 1}
    assert report.ignored == 1
    by_path = rows(library)
    assert {p for p, r in by_path.items() if r.status == INDEXED} == GOOD
    assert by_path["bomb.gif"].status == FAILED
    assert by_path["bomb.gif"].error.startswith("decompression bomb: ")
    assert by_path["a/b/alpha.png"].folder == "a/b"
    assert (by_path["rot.jpg"].width, by_path["rot.jpg"].height) == (40, 80)
    assert by_path["e.jpg"].hash and by_path["e.jpg"].size == (tree / "e.jpg").stat().st_size
    vectors = library.load_vectors()
    assert vectors.ntotal == len(GOOD)
    assert sorted(vectors.ids()) == sorted(by_path[p].id for p in GOOD)
    ids, matrix = library.stored_vectors()
    assert matrix.shape == (len(GOOD), 1280)
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1, atol=1e-5)
    assert library.meta()["backbone"] == "efficientnet_lite0"
    assert library.meta()["vectors_dirty"] == "0"


def test_each_row_gets_its_own_vector(tree, library, backbone):
    """Failed files in the middle of a batch must not shift vectors onto the wrong rows."""
    index_folder(tree, library, backbone, batch_size=3, workers=1)
    by_path = rows(library)
    paths = sorted(GOOD)
    fresh = backbone.embed_images([load_image(tree / p, min_side=256)[0] for p in paths])
    kept = np.stack([stored(library, by_path[p].id) for p in paths])
    similarity = kept @ fresh.T
    assert list(similarity.argmax(axis=1)) == list(range(len(paths)))
    assert similarity.diagonal().min() > 0.99


def test_indexing_with_workers_leaves_sigchld_as_it_found_it(tree, tmp_path):
    """torch's first multi-worker DataLoader installs a Python SIGCHLD handler for good; the local
    runner's process layout puts the old one back (indexer/runners/local.py says why). A fresh
    process, so torch really installs it: its own flag shows it did."""
    script = f"""
import signal
from pathlib import Path
import torch.utils.data._utils.signal_handling as torch_signals
from indexer.backbone import Backbone
from indexer.library import Library
from indexer.pipeline import index_folder
before = signal.getsignal(signal.SIGCHLD)
with Library(Path({str(tmp_path / "library")!r}), create=True) as library:
    report = index_folder(Path({str(tree)!r}), library, Backbone("efficientnet_lite0"), workers=1,
                          embed_in_workers=True)
print(report.indexed, torch_signals._SIGCHLD_handler_set, signal.getsignal(signal.SIGCHLD) is before)
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(len(GOOD)), "True", "True"]


def test_partial_last_batch_and_in_process_decoding(tree, library, backbone):
    report = index_folder(tree, library, backbone, batch_size=4, workers=0)
    assert report.indexed == len(GOOD)
    # Each batch is one transaction stamping its rows with one indexed_at: 9 files, 4 + 4 + 1.
    with library.Session() as s:
        stamps = s.execute(select(Row.indexed_at, Row.path).order_by(Row.path)).all()
    batches: dict = {}
    for stamp, path in stamps:
        batches.setdefault(stamp, []).append(path)
    assert sorted(len(paths) for paths in batches.values()) == [1, 4, 4]
    in_order = [paths for _, paths in sorted(batches.items())]
    assert [p for paths in in_order for p in paths] == sorted(p for _, p in stamps)  # path order


def test_rerun_skips_unchanged_files_without_decoding(tree, library, backbone):
    index_folder(tree, library, backbone, workers=1)
    before = rows(library)
    again = index_folder(tree, library, backbone, workers=1)
    assert (again.indexed, again.moved, again.removed, sum(again.failed.values())) == (0, 0, 0, 0)
    assert again.unchanged == len(before)
    assert again.embed_seconds == 0
    assert {p: r.id for p, r in rows(library).items()} == {p: r.id for p, r in before.items()}


def test_changed_file_is_reembedded_under_the_same_id(tree, library, backbone):
    index_folder(tree, library, backbone, workers=1)
    row = rows(library)["a/red.jpg"]
    old = stored(library, row.id)
    photo(tree / "a" / "red.jpg", 99)
    os.utime(tree / "a" / "red.jpg", (row.mtime + 10, row.mtime + 10))
    report = index_folder(tree, library, backbone, workers=1)
    assert report.indexed == 1 and report.unchanged == len(rows(library)) - 1
    new_row = rows(library)["a/red.jpg"]
    assert new_row.id == row.id and new_row.hash != row.hash
    new = stored(library, row.id)
    assert float(old @ new) < 0.99
    vectors = library.load_vectors()
    assert vectors.ntotal == len(GOOD)
    assert np.allclose(vectors.index.reconstruct(int(row.id)), new, atol=1e-6)


def test_deleted_file_leaves_sqlite_and_faiss(tree, library, backbone):
    index_folder(tree, library, backbone, workers=1)
    gone = rows(library)["c/d.webp"].id
    os.remove(tree / "c" / "d.webp")
    report = index_folder(tree, library, backbone, workers=1)
    assert report.removed == 1 and report.indexed == 0
    assert "c/d.webp" not in rows(library)
    vectors = library.load_vectors()
    assert gone not in set(vectors.ids()) and vectors.ntotal == len(GOOD) - 1
    with library.Session() as s:
        assert s.get(Embedding, gone) is None


def test_moved_file_keeps_its_id_label_and_vector(tree, library, backbone):
    index_folder(tree, library, backbone, workers=1)
    row = rows(library)["e.jpg"]
    with library.Session.begin() as s:
        s.add(Label(image_id=row.id, label="sunset"))
    (tree / "moved" / "deeper").mkdir(parents=True)
    os.rename(tree / "e.jpg", tree / "moved" / "deeper" / "renamed.jpg")
    report = index_folder(tree, library, backbone, workers=1)
    assert (report.moved, report.indexed, report.removed) == (1, 0, 0)
    moved = rows(library)["moved/deeper/renamed.jpg"]
    assert moved.id == row.id and moved.folder == "moved/deeper"
    assert "e.jpg" not in rows(library)
    with library.Session() as s:
        assert s.get(Label, row.id).label == "sunset"
    assert library.load_vectors().ntotal == len(GOOD)


def test_photos_swapped_or_renamed_over_another_keep_their_labels(tree, library, backbone):
    """Two photos swapped (a.jpg <-> b.jpg), and one renamed over another (c.jpg onto d.jpg): each
    path that now holds another row's bytes is that row, moved, with its label and vector; the
    photo that was overwritten is gone. Before, each path kept its own row and label on the other
    photo's bytes, and c.jpg's label went with its row."""
    for name, seed in (("a", 11), ("b", 12), ("c", 13), ("d", 14)):
        photo(tree / "s" / f"{name}.jpg", seed, size=(96 + seed, 72))  # sizes differ: each path changes
    index_folder(tree, library, backbone, workers=1)
    before = rows(library)
    ids = {name: before[f"s/{name}.jpg"].id for name in "abcd"}
    with library.Session.begin() as s:
        for name, image_id in ids.items():
            s.add(Label(image_id=image_id, label=f"photo {name}"))
    vectors = {name: stored(library, image_id) for name, image_id in ids.items()}
    s_dir = tree / "s"
    os.rename(s_dir / "a.jpg", s_dir / "swap.tmp")
    os.rename(s_dir / "b.jpg", s_dir / "a.jpg")
    os.rename(s_dir / "swap.tmp", s_dir / "b.jpg")
    os.rename(s_dir / "c.jpg", s_dir / "d.jpg")
    report = index_folder(tree, library, backbone, workers=1)
    assert (report.moved, report.removed, report.indexed) == (3, 1, 0)
    after = rows(library)
    assert (after["s/a.jpg"].id, after["s/b.jpg"].id, after["s/d.jpg"].id) == (ids["b"], ids["a"], ids["c"])
    assert "s/c.jpg" not in after
    with library.Session() as s:
        labels = {path: s.get(Label, after[path].id).label for path in ("s/a.jpg", "s/b.jpg", "s/d.jpg")}
        assert s.get(Label, ids["d"]) is None  # the overwritten photo and its label are gone
    assert labels == {"s/a.jpg": "photo b", "s/b.jpg": "photo a", "s/d.jpg": "photo c"}
    for name in "abc":
        assert np.array_equal(stored(library, ids[name]), vectors[name])  # moved, not re-embedded
    library_vectors = library.load_vectors()
    assert ids["d"] not in set(library_vectors.ids()) and library_vectors.ntotal == len(GOOD) + 3
    assert index_folder(tree, library, backbone, workers=1).unchanged == len(after)  # and it stays so


def test_a_photo_read_while_it_is_being_written_is_left_pending_not_failed(tree, library, backbone, monkeypatch):
    """A copy or a download caught half-written decodes as a truncated image. When its size has moved
    since the scan, it is not a broken photo: left pending for the next run, which indexes it."""
    import indexer.decode as decode

    whole = (tree / "e.jpg").read_bytes()
    growing = tree / "incoming" / "new.jpg"
    growing.parent.mkdir()
    growing.write_bytes(whole[: len(whole) // 2])
    real = decode.decode_photo

    def writer_goes_on(root, task, preprocess):
        out = real(root, task, preprocess)
        if task.path == "incoming/new.jpg" and growing.stat().st_size < len(whole):
            with open(growing, "ab") as f:  # the writer appends the rest while the run goes on
                f.write(whole[len(whole) // 2 :])
        return out

    monkeypatch.setattr(decode, "decode_photo", writer_goes_on)
    report = index_folder(tree, library, backbone, workers=1)
    assert report.changing == 1 and "corrupt image" in report.failed and report.failed["corrupt image"] == 1
    assert "1 photos changing while read left for a later run" in report.summary()
    assert rows(library)["incoming/new.jpg"].status == PENDING  # broken.jpg, which never changes, is failed
    monkeypatch.undo()
    again = index_folder(tree, library, backbone, workers=1)
    assert again.indexed == 1 and again.changing == 0 and rows(library)["incoming/new.jpg"].status == INDEXED


def test_a_file_moved_again_after_the_scan_keeps_its_label(tree, library, backbone):
    """Moved twice in a row (a folder dragged in, then renamed): the scan lists the first new path,
    which is gone by the time the plan reads it. The run must not delete the row it was."""
    from indexer.scan import scan

    index_folder(tree, library, backbone, workers=1)
    row = rows(library)["e.jpg"]
    with library.Session.begin() as s:
        s.add(Label(image_id=row.id, label="sunset"))
    (tree / "inbox").mkdir()
    os.rename(tree / "e.jpg", tree / "inbox" / "e.jpg")
    scanned = scan(tree)
    (tree / "sorted").mkdir()
    os.rename(tree / "inbox" / "e.jpg", tree / "sorted" / "e.jpg")
    report = index_folder(tree, library, backbone, workers=1, scanned=scanned)
    assert report.removed == 0 and rows(library)["e.jpg"].id == row.id
    report = index_folder(tree, library, backbone, workers=1)
    assert (report.moved, report.indexed, report.removed) == (1, 0, 0)
    assert rows(library)["sorted/e.jpg"].id == row.id and "e.jpg" not in rows(library)
    with library.Session() as s:
        assert s.get(Label, row.id).label == "sunset"
    assert library.load_vectors().ntotal == len(GOOD)


def test_a_folder_renamed_during_the_scan_keeps_its_photos_and_labels(tree, library, backbone, monkeypatch):
    """Renamed a -> renamed once the root is listed: the scan finds a gone and never sees renamed, so
    a's photos are missing from it though they never left. The run removes nothing; the next one
    finds them moved."""
    index_folder(tree, library, backbone, workers=1)
    before = rows(library)
    red, alpha = before["a/red.jpg"].id, before["a/b/alpha.png"].id
    with library.Session.begin() as s:
        s.add(Label(image_id=red, label="sunset"))
    os.utime(tree, (1e9, 1e9))  # long ago: the rename gives the root another mtime
    real_scandir = os.scandir
    renamed = []

    def list_then_rename(path):
        with real_scandir(path) as it:
            entries = list(it)
        if os.fspath(path) == str(tree) and not renamed:  # the root is listed, a not entered yet
            os.rename(tree / "a", tree / "renamed")
            renamed.append(path)
        return contextlib.nullcontext(entries)

    monkeypatch.setattr(os, "scandir", list_then_rename)
    report = index_folder(tree, library, backbone, workers=1)
    monkeypatch.setattr(os, "scandir", real_scandir)
    assert renamed and report.unreadable_dirs == ["a"]  # the scan did miss both names
    assert (report.removed, report.moved) == (0, 0)
    assert report.not_removed == 2
    assert "2 missing photos kept for a later run" in report.summary()
    after = rows(library)
    assert {p: r.id for p, r in after.items()} == {p: r.id for p, r in before.items()}
    with library.Session() as s:
        assert s.get(Label, red).label == "sunset"

    report = index_folder(tree, library, backbone, workers=1)
    assert (report.moved, report.indexed, report.removed, report.not_removed) == (2, 0, 0, 0)
    after = rows(library)
    assert (after["renamed/red.jpg"].id, after["renamed/b/alpha.png"].id) == (red, alpha)
    assert "a/red.jpg" not in after and "a/b/alpha.png" not in after
    with library.Session() as s:
        assert s.get(Label, red).label == "sunset"
    assert library.load_vectors().ntotal == len(GOOD)


def test_a_photo_the_scan_missed_at_its_own_path_keeps_its_row(tree, library, backbone):
    """A photo renamed away and back while its folder was listed is missing from the scan but still
    at its recorded path: however the scan came to miss it, its row (and label) stays."""
    from indexer.scan import scan

    index_folder(tree, library, backbone, workers=1)
    row = rows(library)["c/d.webp"]
    with library.Session.begin() as s:
        s.add(Label(image_id=row.id, label="kept"))
    listed = os.stat(tree / "c").st_mtime_ns
    os.rename(tree / "c" / "d.webp", tree / "c" / "d.tmp")
    scanned = scan(tree)
    os.rename(tree / "c" / "d.tmp", tree / "c" / "d.webp")
    os.utime(tree / "c", ns=(listed, listed))  # as if c had not changed: only the photo's own check is left
    report = index_folder(tree, library, backbone, workers=1, scanned=scanned)
    assert report.removed == 0
    assert report.not_removed == 1
    assert rows(library)["c/d.webp"].id == row.id
    with library.Session() as s:
        assert s.get(Label, row.id).label == "kept"
    report = index_folder(tree, library, backbone, workers=1)
    assert (report.unchanged, report.removed, report.not_removed) == (len(rows(library)), 0, 0)


def test_another_backbone_is_refused_unless_reembed(tree, library, backbone, tmp_path):
    index_folder(tree, library, backbone, workers=1)
    # Other weights for the same architecture: the default file with one tensor changed.
    from indexer.backbone import _lite0_weights_file

    sd = torch.load(_lite0_weights_file(), map_location="cpu", weights_only=True)
    sd["_fc.bias"] = sd["_fc.bias"] + 1
    other_file = tmp_path / "other-lite0.pth"
    torch.save(sd, other_file)
    other = Backbone("efficientnet_lite0", weights=other_file, device="cpu")
    with pytest.raises(LibraryError, match="--reembed"):
        index_folder(tree, library, other, workers=1)
    report = index_folder(tree, library, other, workers=1, reembed=True)
    assert report.indexed == len(GOOD)
    assert library.meta()["weights"] == other.identity()["weights"]
    assert library.load_vectors().ntotal == len(GOOD)


def test_another_root_is_refused(tree, library, backbone, tmp_path):
    index_folder(tree, library, backbone, workers=1)
    other = tmp_path / "elsewhere"
    photo(other / "x.jpg", 7)
    with pytest.raises(LibraryError, match="another --library"):
        index_folder(other, library, backbone, workers=1)


def test_faiss_file_is_rebuilt_from_the_database(tree, library, backbone):
    index_folder(tree, library, backbone, workers=1)
    ids, matrix = library.stored_vectors()
    os.remove(library.vectors_path)
    rebuilt = library.load_vectors()
    assert sorted(rebuilt.ids()) == sorted(ids)
    for i, v in zip(ids, matrix, strict=False):
        assert np.allclose(rebuilt.index.reconstruct(int(i)), v)
    # A file that lost an id and kept a removed one is brought back in line on open.
    stale = library.load_vectors()
    stale.remove([ids[0]])
    stale.add([10_000], matrix[:1])
    stale.save(library.vectors_path)
    reconciled = library.load_vectors()
    assert sorted(reconciled.ids()) == sorted(ids)


def test_missing_weights_are_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(BackboneError, match="does not exist"):
        Backbone("efficientnet_lite0", weights=tmp_path / "nope.pth")
    with pytest.raises(BackboneError, match="unknown backbone"):
        Backbone("vgg-nonexistent")
    # No network here and nothing under TORCH_HOME: torchvision's download fails, with advice.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    resnet = Backbone("resnet50", device="cpu")
    with pytest.raises(BackboneError, match="--weights"):
        _ = resnet.model


def test_resnet50_loads_a_weights_file(tmp_path):
    import torchvision

    file = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), file)
    b = Backbone("resnet50", weights=file, device="cpu", precision="fp32")
    v = b.embed_images([Image.new("RGB", (64, 64), (10, 20, 30))])
    assert v.shape == (1, 2048)
    assert b.identity()["weights"].startswith("sha256:")


# -- quality with the real offline weights ----------------------------------------------------------


def recompress(path, scale=0.6, quality=70) -> bytes:
    img = Image.open(path).convert("RGB")
    img = img.resize((int(img.width * scale), int(img.height * scale)), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def test_a_photo_and_its_resized_recompressed_copy_are_nearest_neighbours(sample_library, backbone):
    library = sample_library
    vectors = library.load_vectors()
    by_path = rows(library)
    picks = sorted(by_path)[::15]  # 8 photos across the classes
    for path in picks:
        copy = backbone.embed_images([load_image(recompress(SAMPLES / path), min_side=256)[0]])
        scores, ids = vectors.search(copy, 2)
        assert ids[0, 0] == by_path[path].id, path
        assert scores[0, 0] > 0.9 and scores[0, 0] - scores[0, 1] > 0.05


@pytest.mark.parametrize(
    "path, expected",
    [
        ("pants/030a5708-f6d7-441f-86ee-0b51b33f3f51.jpg", "jean, blue jean, denim"),
        ("t-shirt/10053308-100b-4249-a638-ec23b4df4138.jpg", "jersey, T-shirt, tee shirt"),
        ("shorts/18260a42-3e2a-4bc6-b530-69135bf90434.jpg", "swimming trunks, bathing trunks"),
    ],
)
def test_real_photos_get_sensible_imagenet_classes(path, expected, backbone):
    """Guards the weight-key mapping: a wrong mapping gives garbage classes."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    probs = backbone.classify([load_image(SAMPLES / path)[0]])[0]
    p, i = probs.max(0)
    assert info.index_to_description(int(i)) == expected
    assert p > 0.5


def test_reembed_embeds_every_photo_again_with_the_same_backbone(tree, library, backbone):
    first = index_folder(tree, library, backbone, workers=0)
    assert first.indexed == len(GOOD)
    before = {p: r.indexed_at for p, r in rows(library).items()}
    report = index_folder(tree, library, backbone, workers=0, reembed=True)
    assert report.indexed == len(GOOD) and report.unchanged == 0
    assert sum(report.failed.values()) == 3  # the broken files are tried again too
    after = rows(library)
    assert all(after[p].indexed_at > before[p] for p in before)
    assert library.load_vectors().ntotal == len(GOOD)


def test_a_photo_moved_while_a_reembed_was_interrupted_keeps_its_label(tree, library, backbone):
    index_folder(tree, library, backbone, workers=0)
    row = rows(library)["e.jpg"]
    with library.Session.begin() as s:
        s.add(Label(image_id=row.id, label="sunset"))
    library.reset_vectors()  # where `index --reembed` starts: killed before its first batch was written
    (tree / "moved").mkdir()
    os.rename(tree / "e.jpg", tree / "moved" / "e.jpg")
    report = index_folder(tree, library, backbone, workers=0)  # the next run resumes
    assert (report.moved, report.removed, report.indexed) == (1, 0, len(GOOD))
    moved = rows(library)["moved/e.jpg"]
    assert moved.id == row.id and moved.status == INDEXED and "e.jpg" not in rows(library)
    with library.Session() as s:
        assert s.get(Label, row.id).label == "sunset"
    assert library.load_vectors().ntotal == len(GOOD)


def test_classify_uses_a_torchvision_backbones_own_classifier(tmp_path):
    """Random weights, saved and loaded as a weights file: classify must equal the untouched model's
    softmax over its 1000 logits (not over the 1280 features)."""
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.get_model("efficientnet_b0", weights=None).eval()
    weights = tmp_path / "b0.pt"
    torch.save(reference.state_dict(), weights)
    net = Backbone("efficientnet_b0", weights=weights, device="cpu", precision="fp32")
    images = [load_image(p)[0] for p in sorted((SAMPLES / "hat").glob("*.jpg"))[:2]]
    probs = net.classify(images)
    assert probs.shape == (2, 1000)
    with torch.inference_mode():
        expected = reference(torch.stack([net.transform(im) for im in images])).softmax(dim=1)
    assert torch.allclose(probs, expected, atol=1e-5)
    assert net.embed_images(images).shape == (2, 1280)  # the features still skip the classifier


# Decodes each file given with decode_photo in a fresh process and prints its error and how far the
# peak resident memory rose (ru_maxrss, KiB on Linux): the memory itself, not a time.
DECODE_AND_MEASURE = """
import resource, sys
from pathlib import Path
from indexer.backbone import Preprocess
from indexer.decode import PhotoTask, decode_photo

pre = Preprocess(256, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
root = Path(sys.argv[1])
decode_photo(root, PhotoTask(0, "good.jpg"), pre)  # everything a decode imports or allocates, once
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for name in sys.argv[2:]:
    print(decode_photo(root, PhotoTask(0, name), pre).error)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_a_huge_file_named_like_a_photo_is_failed_without_being_read_whole(tmp_path, library, backbone):
    """Issue 22, item 4: a 1.5 GB `sparse.jpg` raised peak memory by twice its size, read whole before
    Pillow found it was no image. The header is sniffed first, a file over MAX_FILE_BYTES is refused
    by its size, and the hash is read in chunks. Sparse files: 1.5 GB each that take no disk."""
    from indexer.imageio import MAX_FILE_BYTES

    root = tmp_path / "photos"
    good = photo(root / "good.jpg", 1)
    with open(root / "sparse.jpg", "wb") as f:  # zeros: no format's header
        f.truncate(1536 << 20)
    shutil.copy(good, root / "huge.jpg")  # a real JPEG, followed by 1.5 GB of zeros
    with open(root / "huge.jpg", "r+b") as f:
        f.truncate(1536 << 20)
    assert (root / "huge.jpg").stat().st_size > MAX_FILE_BYTES

    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", DECODE_AND_MEASURE, str(root), "sparse.jpg", "huge.jpg"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    sparse_error, huge_error, rise_mib = done.stdout.splitlines()
    assert sparse_error == f"not an image: cannot identify image file '{root / 'sparse.jpg'}'"
    assert huge_error == "too large to decode: a 1.50 GiB file, over the 1.00 GiB allowed"
    assert int(rise_mib) < 64, f"peak memory rose by {rise_mib} MiB"

    report = index_folder(root, library, backbone, batch_size=4, workers=1)
    assert report.indexed == 1
    assert dict(report.failed) == {"not an image": 1, "too large to decode": 1}
    by_path = rows(library)
    assert by_path["sparse.jpg"].status == by_path["huge.jpg"].status == FAILED
    assert by_path["huge.jpg"].error == huge_error


def test_a_file_hashed_in_chunks_has_the_hash_of_its_bytes(tmp_path):
    from indexer.decode import HASH_CHUNK, file_hash, hash_file

    data = np.random.default_rng(0).bytes(2 * HASH_CHUNK + 123)  # two whole chunks and a part
    (tmp_path / "x.jpg").write_bytes(data)
    assert hash_file(tmp_path / "x.jpg") == file_hash(data)


def test_photos_under_a_folder_the_scan_cannot_list_keep_their_rows_until_it_can(tree, library, backbone,
                                                                                  monkeypatch):
    """A folder that cannot be listed (permissions, a network share that dropped) hides whether its
    photos are there: their rows and labels stay, even for one that is really gone, until a scan
    that can list the folder removes it."""
    index_folder(tree, library, backbone, workers=1)
    row = rows(library)["c/d.webp"]
    with library.Session.begin() as s:
        s.add(Label(image_id=row.id, label="kept"))
    (tree / "c" / "d.webp").unlink()  # really gone, but the scan cannot know it
    real_scandir = os.scandir

    def refuse_c(path):
        if os.path.basename(os.fspath(path)) == "c":
            raise PermissionError(13, "Permission denied", os.fspath(path))  # root reads any folder
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_c)
    report = index_folder(tree, library, backbone, workers=1)
    monkeypatch.setattr(os, "scandir", real_scandir)
    assert report.unreadable_dirs == ["c"] and (report.removed, report.not_removed) == (0, 1)
    assert rows(library)["c/d.webp"].id == row.id
    with library.Session() as s:
        assert s.get(Label, row.id).label == "kept"

    report = index_folder(tree, library, backbone, workers=1)  # c can be listed again
    assert (report.removed, report.not_removed) == (1, 0) and "c/d.webp" not in rows(library)
