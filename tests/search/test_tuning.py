"""`tune_library` (search/tuning.py) on a real library of sample photos with the real backbone: a tune
that measurably wins is kept (its re-embedding interrupted once, then resumed), one that cannot win is discarded,
--revert returns to the parent's vectors, and search by upload follows each switch."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import delete, func, select

from indexer.cancel import Cancelled
from indexer.finetune import TuneConfig
from indexer.library import Library
from indexer.pipeline import index_folder
from indexer.schema import Label
from indexer.settings import Settings
from search.labelling.labeller import Labeller
from search.labelling.labels import import_folders
from search.searcher import Searcher
from search.tuning import TuneFailed, labelled_photos, pending_representation, revert_library, tune_library
from tests.conftest import SAMPLES

GARMENTS = ("shirt", "t-shirt", "longsleeve", "pants", "dress", "shorts")
PER_GARMENT = 3  # of each garment, 3 photos upright and 3 others turned upside down: 36 photos, 2 classes
# A label the frozen ImageNet features carry only in part (which way up a garment was shot) and that
# the last stages can learn. 36 labels are dealt into 4 folds (search.tune_decision.scoring_folds).
# With seed 3 the folds' candidates score 0.861 vs 0.750 on all 36 photos, paired test p = 0.004:
# kept (0.889 vs 0.750, p = 0.001, in fp32); seed 2 was kept at p = 0.010 (p = 0.038 in fp32), seeds
# 0 and 1 were not (measured on an AVX512_BF16 EPYC; these rates, not the defaults, which need more
# than 4 epochs here). On an AVX2-only CPU bf16 is emulated (so torch, not OpenVINO, runs the frozen
# stages) and seed 3 is kept there too. A win this small is fragile: it is measured, not assumed, and checked before
# the keep path is tested.
WINS = TuneConfig(max_epochs=4, batch_size=8, lr_backbone=3e-4, lr_head=1e-2, precision="bf16")
SEED = 3


def settings_for(path) -> Settings:
    return Settings.from_env(library=str(path), engine="torch", workers=0, device="cpu", batch_size=6)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, backbone):
    """Garment photos in two folders, upright and upside-down (turned copies, written as JPEG),
    indexed with the backbone's own weights and labelled by folder."""
    root = tmp_path_factory.mktemp("turned")
    for name in ("upright", "upside-down"):
        (root / name).mkdir()
    for garment in GARMENTS:
        for i, f in enumerate(sorted((SAMPLES / garment).glob("*.jpg"))[: 2 * PER_GARMENT]):
            if i % 2:
                with Image.open(f) as img:
                    img.convert("RGB").rotate(180).save(root / "upside-down" / f.name, quality=92)
            else:
                shutil.copy(f, root / "upright" / f.name)
    path = tmp_path_factory.mktemp("indexed") / "library"
    with Library(path, create=True) as library:
        index_folder(root, library, backbone, workers=0, engine="torch")
        import_folders(library)
    return path


def copy_of(path, tmp_path, name="library"):
    shutil.copytree(path, tmp_path / name)
    return Library(tmp_path / name)


@pytest.fixture(scope="module")
def tuned(indexed, tmp_path_factory):
    """A tune that wins, cancelled after its first re-embedded batch, then resumed by a second call."""
    library = copy_of(indexed, tmp_path_factory.mktemp("tuned"))
    settings = settings_for(library.path)
    cancel = threading.Event()
    seen: list[tuple[str, int, int]] = []

    def stop_midway(phase, done, total):
        seen.append((phase, done, total))
        if phase == "reembed" and done > 0:
            cancel.set()

    with pytest.raises(Cancelled):
        tune_library(settings, library, config=WINS, stages=(2,), seed=SEED, progress=stop_midway, cancel=cancel)
    interrupted = dict(pending=pending_representation(library), current=library.current_representation(),
                       vectors=library.stored_vectors())
    report = tune_library(settings, library, config=WINS, stages=(2,), seed=SEED)
    yield library, interrupted, report, seen
    library.close()


def test_a_tune_that_wins_is_kept_and_an_interrupted_reembedding_resumes(tuned, indexed):
    library, interrupted, report, seen = tuned
    with Library(indexed) as before:
        first = before.current_representation()
        ids_before, vectors_before = before.stored_vectors()
    # Interrupted: the tuned representation was recorded, the old vectors kept serving.
    assert {p for p, _, _ in seen} >= {"decode", "probe", "train", "score", "reembed"}
    assert interrupted["pending"] is not None and interrupted["pending"].parent_id == first.id
    assert interrupted["current"].id == first.id
    assert np.array_equal(interrupted["vectors"][1], vectors_before)
    # The second call resumed that re-embedding rather than training again.
    assert report.resumed and report.kept and report.representation == interrupted["pending"].id
    # Measured better on every label (each scored once, by a fold's candidate), and surely so (seed 3).
    assert report.gain > 0 and report.loglik_gain > 0 and report.n_heldout == 36 and report.p_value < 0.05
    assert 0 < report.reembedded < len(ids_before)  # the first batch was staged before the interrupt
    current = library.current_representation()
    assert current.id == report.representation and current.parent_id == first.id
    assert library.meta()["weights"] == current.weights != first.weights
    assert pending_representation(library) is None
    ids, vectors = library.stored_vectors()
    assert np.array_equal(ids, ids_before)
    cosine = (vectors * vectors_before).sum(axis=1)
    assert cosine.max() < 0.9999  # every photo has a new vector
    # The head, suggestions and lists were refreshed on the new vectors: nothing is stale.
    labeller = Labeller(Searcher(library, settings=settings_for(library.path)))
    assert not labeller.is_stale() and labeller.facts()["current"]


def test_search_by_upload_follows_the_switch_and_revert_returns_to_the_parent(tuned, indexed, tmp_path):
    library = copy_of(tuned[0].path, tmp_path)
    with Library(indexed) as before:
        first = before.current_representation()
        _, vectors_before = before.stored_vectors()
    try:
        searcher = Searcher(library, settings=settings_for(library.path))  # one long-lived process's
        ids, tuned_vectors = library.stored_vectors()
        path = library.root / library_path(library, int(ids[0]))
        hit = searcher.by_image(path.read_bytes(), k=1)[0]
        assert hit.image_id == ids[0] and hit.score > 0.99  # the query embedded with the tuned weights

        assert revert_library(settings_for(library.path), library) == len(ids)
        assert library.current_representation().id == first.id
        _, reverted = library.stored_vectors()
        assert (reverted * vectors_before).sum(axis=1).min() > 0.9999  # the parent's vectors again
        searcher.reload()
        hit = searcher.by_image(path.read_bytes(), k=1)[0]
        assert hit.image_id == ids[0] and hit.score > 0.99  # the same searcher now embeds with the parent's
        assert float(reverted[0] @ tuned_vectors[0]) < 0.9999
        with pytest.raises(TuneFailed, match="nothing to revert"):
            revert_library(settings_for(library.path), library)
    finally:
        library.close()


def library_path(library: Library, image_id: int) -> str:
    from indexer.schema import Image

    with library.Session() as s:
        return s.scalar(select(Image.path).where(Image.id == image_id))


def test_a_tune_that_cannot_win_is_discarded_and_changes_nothing(indexed, tmp_path):
    """Zero epochs: the tuned weights are the frozen ones, so the gain is 0 and nothing is kept."""
    library = copy_of(indexed, tmp_path)
    try:
        reps_before = [(r.id, r.weights) for r in library.representations()]
        ids_before, vectors_before = library.stored_vectors()
        fingerprint = library.vectors_fingerprint()
        report = tune_library(settings_for(library.path), library, config=TuneConfig(max_epochs=0, batch_size=8),
                              stages=(2,))
        assert not report.kept and report.gain == 0.0 and report.n_heldout == 36
        assert report.loglik_gain == 0.0 and report.p_value == 1.0
        assert report.representation == reps_before[0][0] and report.reembedded == 0
        assert [(r.id, r.weights) for r in library.representations()] == reps_before
        assert not list(library.representations_dir.glob("*.pth"))  # the unused weights file is gone
        ids, vectors = library.stored_vectors()
        assert np.array_equal(ids, ids_before) and np.array_equal(vectors, vectors_before)
        assert library.vectors_fingerprint() == fingerprint
    finally:
        library.close()


def test_too_few_labels_is_one_clear_error(indexed, tmp_path):
    library = copy_of(indexed, tmp_path)
    try:
        with library.Session.begin() as s:  # two photos of each class: none can be trained and scored twice
            rows = s.execute(select(Label.image_id, Label.label).order_by(Label.image_id)).all()
            keep = [i for name in {label for _, label in rows} for i in [i for i, la in rows if la == name][:2]]
            s.execute(delete(Label).where(Label.image_id.not_in(keep)))
        with pytest.raises(TuneFailed, match="too few labels to tune"):
            tune_library(settings_for(library.path), library)
    finally:
        library.close()


def test_the_unlabelled_photos_are_pseudo_labelled_and_no_scored_label_is_trained_on(indexed, tmp_path, monkeypatch):
    """With a third of the photos unlabelled, each fold's candidate and the refit train on some of
    them too (search.pseudo_labels); a fold's scored photos are never among what it trains on."""
    import search.pseudo_labels as pseudo_labels

    library = copy_of(indexed, tmp_path)
    calls: list[tuple[list, list]] = []
    real = pseudo_labels.library_pseudo_labeller

    def recording(library, labelled, per_class=pseudo_labels.PER_CLASS):
        labeller = real(library, labelled, per_class)

        def pseudo(train, n_classes):
            chosen = labeller(train, n_classes)
            calls.append((list(train), chosen))
            return chosen

        return pseudo

    monkeypatch.setattr(pseudo_labels, "library_pseudo_labeller", recording)
    try:
        with library.Session.begin() as s:  # 6 photos of each class unlabelled, 12 labelled
            rows = s.execute(select(Label.image_id, Label.label).order_by(Label.image_id)).all()
            drop = [i for name in {label for _, label in rows} for i in [i for i, la in rows if la == name][:6]]
            s.execute(delete(Label).where(Label.image_id.in_(drop)))
        labelled = {p for p, _ in labelled_photos(library)[0]}
        report = tune_library(settings_for(library.path), library, config=TuneConfig(max_epochs=1, batch_size=8),
                              stages=(2,))
        assert report.n_heldout == 24 and report.pseudo_labelled > 0
        # 4 folds (24 labels), each trained on 3 quarters of them; then the refit on all 24 when kept.
        assert [len(train) for train, _ in calls] == [18] * 4 + ([24] if report.kept else [])
        for _, chosen in calls:
            assert chosen and not {p for p, _ in chosen} & labelled  # only unlabelled photos
    finally:
        library.close()


def test_labels_made_during_a_tune_are_not_counted_as_trained_on(indexed, tmp_path):
    """The last tune's "labelled" (what the queue's hint to tune again counts from) is the labels the
    tune read when it began: one set while it trains counts as new afterwards."""
    from search.labelling.labels import set_label
    from search.tuning import LAST_TUNE_STATE

    library = copy_of(indexed, tmp_path)
    try:
        with library.Session.begin() as s:
            image_id, label = s.execute(select(Label.image_id, Label.label).order_by(Label.image_id)).first()
            s.execute(delete(Label).where(Label.image_id == image_id))
            before = s.scalar(select(func.count()).select_from(Label))
        relabelled = threading.Event()

        def progress(*_args) -> None:  # while the tune trains: the photo labelled again
            if not relabelled.is_set():
                with library.Session.begin() as s:
                    set_label(s, image_id, label)
                relabelled.set()

        tune_library(settings_for(library.path), library, config=TuneConfig(max_epochs=0, batch_size=8),
                     stages=(2,), progress=progress)
        assert relabelled.is_set()
        assert library.state(LAST_TUNE_STATE)["labelled"] == before
        with library.Session() as s:
            assert s.scalar(select(func.count()).select_from(Label)) == before + 1
    finally:
        library.close()
