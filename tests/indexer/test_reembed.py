"""Representations and crash-safe re-embedding (indexer/reembed.py) on a real library of sample photos
with the real backbone: the switch, a crash (an exception and a real SIGKILL) midway and its resume,
revert, and indexing new photos after a switch."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from sqlalchemy import func, select, text

from indexer import reembed as reembed_module
from indexer.backbone import Backbone
from indexer.finetune import save_weights
from indexer.library import Library, LibraryError
from indexer.pipeline import index_folder
from indexer.reembed import reembed, revert
from indexer.schema import StagedEmbedding
from tests.conftest import REPO, SAMPLES

PER_CLASS = 2  # 20 photos: a re-embedding takes seconds
OPTIONS = dict(engine="torch", workers=0, batch_size=6, device="cpu")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    for folder in sorted(p for p in SAMPLES.iterdir() if p.is_dir()):
        (root / folder.name).mkdir()
        for f in sorted(folder.glob("*.jpg"))[:PER_CLASS]:
            shutil.copy(f, root / folder.name / f.name)
    return root


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, photos, backbone):
    """A library of the photos, indexed once with the backbone's own weights, and a second set of
    weights saved into it (the backbone's, nudged: another representation of the same shape)."""
    path = tmp_path_factory.mktemp("indexed") / "library"
    with Library(path, create=True) as library:
        index_folder(photos, library, backbone, workers=0, engine="torch")
        state = {k: v.detach().clone() for k, v in backbone.model.state_dict().items()}
        generator = torch.Generator().manual_seed(0)
        weight = state["conv_head.weight"]
        state["conv_head.weight"] = weight + 0.2 * weight.std() * torch.randn(weight.shape, generator=generator)
        saved = save_weights(library, state)
    return path, saved


@pytest.fixture
def library(indexed, tmp_path):
    path = tmp_path / "library"
    shutil.copytree(indexed[0], path)
    with Library(path) as lib:
        yield lib


def add_tuned(library: Library, indexed) -> int:
    saved = indexed[1]
    current = library.current_representation()
    assert current is not None
    rep = library.add_representation(backbone=current.backbone, weights_file=library.path / saved.path.relative_to(
        indexed[0]), weights=saved.identity, weights_sha256=saved.sha256, labels={"labels": 12},
        parent_id=current.id, metrics={"before": 0.5})
    return rep.id


def vectors(library: Library) -> tuple[np.ndarray, np.ndarray]:
    return library.stored_vectors()


def staged(library: Library) -> int:
    with library.Session() as s:
        return s.scalar(select(func.count()).select_from(StagedEmbedding)) or 0


def test_an_indexed_library_records_its_first_representation(library, backbone):
    reps = library.representations()
    assert len(reps) == 1 and reps[0].parent_id is None and reps[0].weights_file is None
    assert library.current_representation().id == reps[0].id
    assert reps[0].weights == backbone.weights_identity == library.identity()["weights"]


def test_a_library_from_before_representations_gets_one_when_opened(library):
    with library.engine.begin() as conn:  # as an older lookalike left it: no table rows, no meta key
        conn.execute(text("DELETE FROM representations"))
        conn.execute(text("DELETE FROM meta WHERE key = 'representation'"))
    with Library(library.path) as reopened:
        current = reopened.current_representation()
        assert current is not None and current.weights == reopened.identity()["weights"]


def test_reembed_switches_every_vector_and_revert_returns(library, indexed):
    before_ids, before = vectors(library)
    before_fingerprint = library.vectors_fingerprint()
    first = library.current_representation()
    rep_id = add_tuned(library, indexed)
    seen = []
    report = reembed(library, rep_id, progress=lambda done, total: seen.append((done, total)), **OPTIONS)
    assert report.switched and report.embedded == len(before_ids) == 20 and report.failed == 0
    assert seen[-1] == (20, 20)
    ids, after = vectors(library)
    assert np.array_equal(ids, before_ids)
    cosine = (before * after).sum(axis=1)
    assert cosine.max() < 0.9999 and cosine.min() > 0.5  # new vectors, same photos
    assert library.current_representation().id == rep_id and staged(library) == 0
    meta = library.meta()
    assert meta["weights"] == indexed[1].identity and meta["weights_file"] == str(library.path / "representations"
                                                                                     / indexed[1].path.name)
    assert meta["vectors_dirty"] == "0" and library.vectors_fingerprint() != before_fingerprint
    index = library.load_vectors()
    assert index.ntotal == 20
    _, found = index.search(after[:1], 1)
    assert found[0, 0] == ids[0]
    # Queries embed with the weights the meta table names (as search builds its backbone).
    query_backbone = Backbone(meta["backbone"], weights=meta["weights_file"], device="cpu")
    assert query_backbone.identity() == library.identity()

    report = revert(library, **OPTIONS)
    assert report.switched and library.current_representation().id == first.id
    ids, reverted = vectors(library)
    assert (reverted * before).sum(axis=1).min() > 0.9999  # the parent's weights again
    assert library.meta()["weights"] == first.weights and library.meta()["weights_file"] == ""
    with pytest.raises(LibraryError, match="nothing to revert"):
        revert(library, **OPTIONS)


def test_a_crash_midway_leaves_the_old_vectors_serving_and_a_rerun_resumes(library, indexed, monkeypatch):
    before_ids, before = vectors(library)
    first = library.current_representation()
    rep_id = add_tuned(library, indexed)
    real_stage = reembed_module.stage_batch
    calls = []

    def crash_on_the_third_batch(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        real_stage(*args)

    monkeypatch.setattr(reembed_module, "stage_batch", crash_on_the_third_batch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        reembed(library, rep_id, **OPTIONS)
    assert staged(library) == 12  # two batches of 6 committed
    ids, now = vectors(library)
    assert np.array_equal(ids, before_ids) and np.array_equal(now, before)  # untouched
    assert library.current_representation().id == first.id and library.meta()["weights"] == first.weights
    assert library.load_vectors(full_check=True).ntotal == 20

    monkeypatch.setattr(reembed_module, "stage_batch", real_stage)
    report = reembed(library, rep_id, **OPTIONS)
    assert (report.resumed, report.embedded, report.switched) == (12, 8, True)
    assert library.current_representation().id == rep_id and staged(library) == 0
    _, after = vectors(library)
    assert (before * after).sum(axis=1).max() < 0.9999


KILLER = textwrap.dedent("""
    import os, signal, sys
    from indexer import reembed as r
    from indexer.library import Library
    real, done = r.stage_batch, []
    def stage_then_die(*args):
        real(*args)
        done.append(1)
        if len(done) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    r.stage_batch = stage_then_die
    r.reembed(Library(sys.argv[1]), int(sys.argv[2]), engine="torch", workers=0, batch_size=6, device="cpu")
""")


def test_a_sigkill_midway_leaves_a_working_library_and_a_rerun_resumes(library, indexed):
    before_ids, before = vectors(library)
    rep_id = add_tuned(library, indexed)
    child = subprocess.run([sys.executable, "-c", KILLER, str(library.path), str(rep_id)], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr
    with Library(library.path) as reopened:
        assert staged(reopened) == 12
        ids, now = vectors(reopened)
        assert np.array_equal(ids, before_ids) and np.array_equal(now, before)
        assert reopened.current_representation().parent_id is None
        report = reembed(reopened, rep_id, **OPTIONS)  # the writer lock died with the child
        assert (report.resumed, report.embedded) == (12, 8)
        assert reopened.current_representation().id == rep_id


def test_index_after_a_switch_embeds_new_photos_with_the_current_weights(library, indexed, photos, tmp_path,
                                                                        backbone):
    root = tmp_path / "photos"
    shutil.copytree(photos, root)
    with library.Session.begin() as s:  # the library's photos now live in the copy
        library.set_meta(s, root=str(root))
    rep_id = add_tuned(library, indexed)
    reembed(library, rep_id, **OPTIONS)
    new_photo = sorted((SAMPLES / "hat").glob("*.jpg"))[-1]
    shutil.copy(new_photo, root / "hat" / new_photo.name)

    report = index_folder(root, library, backbone, workers=0, engine="torch")  # the backbone's own weights
    assert report.indexed == 1
    assert library.current_representation().id == rep_id and library.meta()["weights"] == indexed[1].identity
    with library.engine.connect() as conn:
        new_id = conn.execute(text("SELECT id FROM images WHERE path = :p"),
                              {"p": f"hat/{new_photo.name}"}).scalar_one()
    _, stored = library.stored_vectors([new_id])
    tuned = Backbone(weights=library.representation_weights(library.current_representation()), device="cpu")
    from indexer.imageio import load_image

    img, _ = load_image(new_photo, min_side=tuned.preprocess.resize)
    assert float(stored[0] @ tuned.embed_images([img])[0]) > 0.9999
    assert float(stored[0] @ backbone.embed_images([img])[0]) < 0.9999


def test_a_photo_moved_before_a_reembedding_keeps_its_label_and_is_embedded_again(library, indexed, photos,
                                                                                   tmp_path, backbone):
    from search.labelling.labels import set_label

    root = tmp_path / "photos"
    shutil.copytree(photos, root)
    with library.Session.begin() as s:  # the library's photos now live in the copy
        library.set_meta(s, root=str(root))
    with library.engine.connect() as conn:
        image_id, path = conn.execute(text("SELECT id, path FROM images ORDER BY path LIMIT 1")).one()
    with library.Session.begin() as s:
        set_label(s, image_id, "keep me")
    (root / "moved").mkdir()
    (root / path).rename(root / "moved" / "renamed.jpg")  # moved while nothing runs, then tuned

    report = reembed(library, add_tuned(library, indexed), **OPTIONS)
    assert report.failed == 1  # its old path no longer reads
    report = index_folder(root, library, backbone, workers=0, engine="torch")
    assert (report.moved, report.removed, report.indexed) == (1, 0, 1)
    with library.engine.connect() as conn:
        row = conn.execute(text("SELECT i.id, i.path, i.status, l.label FROM images i JOIN labels l"
                                " ON l.image_id = i.id WHERE i.id = :id"), {"id": image_id}).one()
    assert tuple(row) == (image_id, "moved/renamed.jpg", "indexed", "keep me")
    assert library.load_vectors().ntotal == 20


KILL_AFTER_SWITCH = textwrap.dedent("""
    import os, signal, sys
    from indexer import reembed as r
    from indexer.library import Library
    from indexer.settings import Settings
    from search import tuning
    real = r.swap_in
    def swap_then_die(*args):
        real(*args)  # committed: the representation is current, its FAISS file not written yet
        os.kill(os.getpid(), signal.SIGKILL)
    r.swap_in = swap_then_die
    settings = Settings.from_env(library=sys.argv[1], engine="torch", workers=0, device="cpu", batch_size=6)
    tuning._switch(settings, Library(sys.argv[1]), int(sys.argv[2]), None, None)
""")


def test_a_sigkill_right_after_the_switch_is_finished_by_the_next_tune(library, indexed):
    """Killed between the switch's commit and the FAISS file and derived data: the next `tune`
    finishes that switch (a clean FAISS file, current neighbour lists) instead of training again."""
    from search.labelling.labeller import Labeller
    from search.searcher import Searcher
    from search.tuning import pending_representation, tune_library
    from web.settings import Settings

    rep_id = add_tuned(library, indexed)
    child = subprocess.run([sys.executable, "-c", KILL_AFTER_SWITCH, str(library.path), str(rep_id)], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr
    settings = Settings.from_env(library=str(library.path), engine="torch", workers=0, device="cpu", batch_size=6)
    with Library(library.path) as reopened:
        assert reopened.current_representation().id == rep_id
        assert pending_representation(reopened).id == rep_id  # what `tune` says it will resume
        report = tune_library(settings, reopened)  # no labels: training again would refuse
        assert report.resumed and report.representation == rep_id and report.reembedded == 0
        assert reopened.meta()["vectors_dirty"] == "0" and reopened.vectors_path.exists()
        assert pending_representation(reopened) is None
        labeller = Labeller(Searcher(reopened, settings=settings))
        assert labeller.searcher.source is not None and labeller.neighbours.current(labeller.k)


def test_a_photo_unreadable_during_a_reembedding_is_retried_by_the_next_index(library, indexed, photos,
                                                                               tmp_path, backbone):
    """A photo the re-embedding could not read (a share that dropped out, a file being replaced) is
    failed; back as it was, same size and mtime, the next `index` must embed it again, not count it
    unchanged and leave it failed until the file changes."""
    from search.labelling.labels import set_label

    root = tmp_path / "photos"
    shutil.copytree(photos, root)
    with library.Session.begin() as s:  # the library's photos now live in the copy
        library.set_meta(s, root=str(root))
    with library.engine.connect() as conn:
        image_id, path, size, mtime = conn.execute(
            text("SELECT id, path, size, mtime FROM images ORDER BY path LIMIT 1")).one()
    with library.Session.begin() as s:
        set_label(s, image_id, "keep me")
    away = tmp_path / "away.jpg"
    os.rename(root / path, away)  # unreadable while the re-embedding runs

    report = reembed(library, add_tuned(library, indexed), **OPTIONS)
    assert report.failed == 1
    with library.engine.connect() as conn:
        status, error = conn.execute(text("SELECT status, error FROM images WHERE id = :id"), {"id": image_id}).one()
    assert status == "failed" and error.startswith("unreadable file: ")
    os.rename(away, root / path)  # back, untouched
    st = os.stat(root / path)
    assert (st.st_size, st.st_mtime) == (size, mtime)

    report = index_folder(root, library, backbone, workers=0, engine="torch")
    assert (report.indexed, report.unchanged, report.moved, report.removed) == (1, 19, 0, 0)
    with library.engine.connect() as conn:
        row = conn.execute(text("SELECT i.id, i.path, i.status, i.error, l.label FROM images i JOIN labels l"
                                " ON l.image_id = i.id WHERE i.id = :id"), {"id": image_id}).one()
    assert tuple(row) == (image_id, path, "indexed", None, "keep me")
    assert library.load_vectors().ntotal == 20
    report = index_folder(root, library, backbone, workers=0, engine="torch")
    assert (report.indexed, report.unchanged) == (0, 20)
