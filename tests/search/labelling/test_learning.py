"""The learning labeller on the real sample library: stored head, suggestions, queue, and the commands."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from indexer.schema import FAILED, Image, Label, SuggestedLabel
from lookalike.cli import main
from search.labelling import queue_order as queue_order_module
from search.labelling.debouncer import Debouncer
from search.labelling.head_store import HEAD_FILE, load_head
from search.labelling.labeller import Labeller
from search.labelling.labels import set_label
from search.labelling.learned_head import ALL_METHODS, KNN, METHODS
from search.labelling.queue_order import Clusters, queue_order
from search.searcher import Searcher
from tests.search.conftest import unit


def folders(library) -> dict[int, str]:
    with library.Session() as s:
        return dict(s.execute(select(Image.id, Image.folder)).all())


def label_some(library, per_class: int) -> dict[int, str]:
    """The first `per_class` photos (by path) of each folder get their folder's name."""
    done: dict[int, str] = {}
    with library.Session.begin() as s:
        seen: dict[str, int] = {}
        for image_id, folder in s.execute(select(Image.id, Image.folder).order_by(Image.path)):
            if seen.get(folder, 0) < per_class:
                seen[folder] = seen.get(folder, 0) + 1
                set_label(s, image_id, folder, source="imported")
                done[image_id] = folder
    return done


def unlabelled_suggestions(library) -> dict[int, tuple[str | None, float]]:
    with library.Session() as s:
        rows = s.execute(
            select(SuggestedLabel.image_id, SuggestedLabel.label, SuggestedLabel.confidence)
            .outerjoin(Label, Label.image_id == SuggestedLabel.image_id)
            .where(Label.image_id.is_(None))
        ).all()
    return {i: (lab, c) for i, lab, c in rows}


def test_the_head_is_stored_with_its_fingerprint_and_drives_every_suggestion(sample_library):
    label_some(sample_library, 4)
    labeller = Labeller(Searcher(sample_library))
    assert labeller.is_stale()
    head = labeller.retrain()
    assert (sample_library.path / HEAD_FILE).exists()
    stored, facts = load_head(sample_library.path / HEAD_FILE)
    assert stored.method == head.method and facts["fingerprint"] == labeller.fingerprint()
    assert not labeller.is_stale()
    assert set(head.accuracy) == set(METHODS)
    truth = folders(sample_library)
    suggestions = unlabelled_suggestions(sample_library)
    assert len(suggestions) == 80  # every unlabelled indexed photo has one
    assert all(lab is not None and 0 < c <= 1 for lab, c in suggestions.values())
    right = np.mean([lab == truth[i] for i, (lab, _) in suggestions.items()])
    assert right >= 0.8

    # A new label makes the head stale; retraining writes a new one and refreshes the suggestions.
    with sample_library.Session.begin() as s:
        set_label(s, next(iter(suggestions)), "hat")
    assert labeller.is_stale()
    token = facts["token"]
    labeller.retrain()
    assert labeller.stored()[1]["token"] != token
    assert len(unlabelled_suggestions(sample_library)) == 79


def test_a_library_with_no_labels_one_class_or_labels_on_failed_photos(sample_library):
    labeller = Labeller(Searcher(sample_library))
    head = labeller.retrain()
    assert head.method == KNN and head.classes == ()
    assert {lab for lab, _ in unlabelled_suggestions(sample_library).values()} == {None}
    assert len(labeller.queue_ids()) == 120

    with sample_library.Session.begin() as s:
        ids = s.scalars(select(Image.id).order_by(Image.id).limit(3)).all()
        for i in ids:
            set_label(s, i, "thing")
        s.get(Image, ids[0]).status = FAILED  # a label on a photo that failed to read
    head = labeller.retrain()
    assert head.method == KNN and head.classes == ("thing",)
    labels = {lab for lab, _ in unlabelled_suggestions(sample_library).values()}
    assert labels <= {"thing", None} and "thing" in labels
    assert labeller.facts()["trained_on"] == 3


def test_cold_start_queue_covers_the_collection(sample_library):
    labeller = Labeller(Searcher(sample_library))
    first = [int(i) for i in labeller.queue_ids()[:10]]
    truth = folders(sample_library)
    assert len({truth[i] for i in first}) >= 7  # 10 photos from at least 7 of the 10 classes
    # The typical photos come from distinct clusters.
    clusters = labeller.clusters()
    where = {int(i): c for i, c in zip(clusters.ids, clusters.cluster, strict=True)}
    assert len({where[i] for i in first}) == 10
    # The web queue shows the same order.
    assert [s.image_id for s in labeller.queue(limit=10)] == first


def test_queue_after_cold_start_is_lowest_margin_first_and_near_duplicates_last(monkeypatch):
    monkeypatch.setattr(queue_order_module, "POOL_SHARE", 1.0)  # one pool of every candidate
    ids = np.arange(1, 9)
    clusters = Clusters(ids, np.zeros(8, np.int64), np.linspace(0.9, 0.2, 8).astype(np.float32))
    margins = np.array([0.1, 0.2, 0.3, 0.5, 0.6, 0.7, 0.0, 0.05])  # 7 has no suggestion (margin 0)
    near = np.array([0.2, 0.3, 0.99, 0.1, 0.2, 0.3, 0.1, 0.2])  # photo 3 copies a labelled one
    order = queue_order(ids, margins, np.array([100]), clusters, near).tolist()
    # Cluster 0 is covered by nobody labelled (100 is not among the clustered ids): its typical photo
    # first; then, all in one cluster, the lowest margin first; the near-duplicate last.
    assert order == [1, 7, 8, 2, 4, 5, 6, 3]


def test_the_least_certain_come_in_pools_each_taking_the_clusters_in_turn(monkeypatch):
    # Photos 13 and 14 are labelled, one in each k-means cluster: no cold start. Margins rise with the id.
    ids = np.arange(1, 15)
    clusters = Clusters(ids, np.array([0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 1, 1, 0, 1]), np.full(14, 0.5, np.float32))
    candidates, margins = ids[:12], np.linspace(0.01, 0.9, 12)
    monkeypatch.setattr(queue_order_module, "POOL_SHARE", 0.5)  # pools of 6 photos
    order = queue_order(candidates, margins, np.array([13, 14]), clusters).tolist()
    # The first pool, the 6 lowest margins, alternates between cluster 0 (1-4) and cluster 1 (5, 6);
    # the second pool's photos all come after it, cluster 1 first (its 7 is the lowest margin there).
    assert order == [1, 5, 2, 6, 3, 4, 7, 9, 8, 10, 11, 12]
    monkeypatch.setattr(queue_order_module, "POOL_SHARE", 1.0)  # one pool: the clusters in turn throughout
    order = queue_order(candidates, margins, np.array([13, 14]), clusters).tolist()
    assert order == [1, 5, 2, 6, 3, 7, 4, 8, 9, 11, 10, 12]
    monkeypatch.setattr(queue_order_module, "POOL_SHARE", 0.01)  # pools of one: the lowest margin alone
    assert queue_order(candidates, margins, np.array([13, 14]), clusters).tolist() == candidates.tolist()


def test_near_duplicates_of_labelled_photos_go_last(vector_library):
    vectors = unit(np.eye(6)[[0, 0, 1, 2, 3, 4, 5]] + 0.001 * np.arange(7)[:, None])  # 1 and 2 are twins
    library = vector_library(vectors)
    with library.Session.begin() as s:
        set_label(s, 1, "a")
        set_label(s, 3, "b")
    labeller = Labeller(Searcher(library), k=3)
    order = [int(i) for i in labeller.queue_ids()]
    assert order[-1] == 2 and sorted(order) == [2, 4, 5, 6, 7]


def test_debouncer_runs_once_after_a_burst():
    calls = []
    d = Debouncer(lambda: calls.append(1), delay=0.05)
    for _ in range(5):
        d.request()
    assert d.wait_idle(10)
    assert calls == [1] and d.runs == 1


def test_debouncer_close_lets_a_run_finish_and_drops_one_not_started():
    """At exit every debouncer is closed (atexit): a retrain in progress ends before the
    interpreter finalises (a daemon thread inside torch then aborts the process, status 134)."""
    import threading

    started, release, calls = threading.Event(), threading.Event(), []

    def work():
        started.set()
        release.wait(10)
        calls.append(1)

    d = Debouncer(work, delay=0)
    d.request()
    assert started.wait(10)
    d.request()  # due after the run in progress: close() drops it
    threading.Timer(0.05, release.set).start()
    assert d.close(timeout=10)
    assert calls == [1] and d.runs == 1


# -- the commands -------------------------------------------------------------------------------------


@pytest.fixture
def run():
    runner = CliRunner()
    return lambda *args: runner.invoke(main, [str(a) for a in args])


def test_learn_suggest_and_queue_commands(run, sample_library):
    lib = str(sample_library.path)
    result = run("learn", "--library", lib, "--json")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    assert facts["labelled"] == 0 and facts["method"] == KNN and facts["accuracy"] == {}
    assert "too few" in run("learn", "--library", lib).output

    result = run("queue", "--library", lib, "-n", 5, "--json")
    assert result.exit_code == 0, result.output
    queue = json.loads(result.output)
    assert len(queue) == 5 and all(set(q) == {"id", "path"} for q in queue)

    result = run("labels", "import", "--folders", "--library", lib)  # still works; the head goes stale
    assert result.exit_code == 0 and "set 120 labels" in result.output and "retrains" in result.output
    assert Labeller(Searcher(sample_library)).is_stale()
    with sample_library.Session.begin() as s:
        for i in s.scalars(select(Image.id).where(Image.id % 3 == 0)).all():
            s.delete(s.get(Label, i))
    result = run("learn", "--library", lib, "--json")
    facts = json.loads(result.output)
    assert set(facts["accuracy"]) == set(METHODS)
    assert facts["method"] in METHODS and facts["target_precision"] == 0.95
    assert facts["threshold"] is not None and 0 < facts["threshold"] <= 1  # the samples reach 95 %
    text = run("learn", "--library", lib).output
    assert "<- chosen" in text and "knn" in text

    result = run("suggest", "--library", lib, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    with sample_library.Session() as s:
        unlabelled = set(s.scalars(select(Image.id).where(Image.id.not_in(select(Label.image_id)))))
    assert {r["id"] for r in rows} == unlabelled and unlabelled
    assert all(list(r) == ["id", "path", "label", "confidence"] for r in rows)
    assert np.mean([r["label"] == r["path"].split("/")[0] for r in rows]) >= 0.75
    assert all(0 < r["confidence"] <= 1 for r in rows)

    queue = json.loads(run("queue", "--library", lib, "-n", 3, "--json").output)
    assert {q["id"] for q in queue} <= unlabelled


def test_commands_refuse_a_missing_library(run, tmp_path):
    for command in ("learn", "suggest", "queue"):
        result = run(command, "--library", tmp_path / "nope")
        assert result.exit_code != 0 and "Traceback" not in result.output
        assert result.output.strip().count("\n") == 0


def test_eval_reports_the_methods_side_by_side_and_with_few_labels(run, labelled_samples):
    result = run("eval", "--library", labelled_samples.path, "--labels-per-class", 3, "--json")
    assert result.exit_code == 0, result.output
    facts = json.loads(result.output)
    for key in ("top1", "top5", "precision_at_10", "mean_ap", "k", "temperature", "images", "classes"):
        assert key in facts  # the keys eval always had
    assert set(facts["methods"]) == set(METHODS) and facts["chosen"] in METHODS
    assert facts["methods"][facts["chosen"]] == max(facts["methods"].values())
    few = facts["labels_per_class"]
    assert few["n"] == 3 and few["draws"] == 5
    assert set(few["accuracy"]) == {*METHODS, "chosen"}
    assert all(0 < a <= 1 for a in few["accuracy"].values())
    text = run("eval", "--library", labelled_samples.path).output
    assert "cross-validated" in text and "the labeller would use" in text
    # The precision said is the one measured at the threshold, not the target asked for.
    anything = run("eval", "--library", labelled_samples.path, "--target-precision", "0").output
    said = next(line for line in anything.splitlines() if line.startswith("suggestions with confidence"))
    assert "(target 0%)" in said and " are 0% right" not in said


@pytest.mark.parametrize("method", ALL_METHODS)
def test_predictions_read_in_chunks_equal_one_pass(sample_library, monkeypatch, method):
    """Issue 12: suggestions are predicted PREDICT_CHUNK photos at a time (lists and vectors read per
    chunk), so a million photos never sit in memory as Python rows; chunking changes no result."""
    from dataclasses import replace

    from search.labelling import labeller as labeller_module
    from search.labelling.labeller import labelled_set
    from search.labelling.learned_head import train_head, train_probe, train_projection

    label_some(sample_library, 4)
    labeller = Labeller(Searcher(sample_library))
    labeller.refresh()
    data = labelled_set(sample_library)
    trained = train_head(data.vectors, data.labels, labeller.k, labeller.temperature)
    codes = np.array([trained.classes.index(lab) for lab in data.labels])
    head = replace(trained, method=method, probe=train_probe(data.vectors, codes, len(trained.classes)),
                   projection=train_projection(data.vectors, codes, 0))
    whole = labeller.predict_all(head)
    monkeypatch.setattr(labeller_module, "PREDICT_CHUNK", 7)
    chunked = labeller.predict_all(head)
    assert len(whole.ids) == 120 and whole.ids.tolist() == chunked.ids.tolist()
    assert whole.winner.tolist() == chunked.winner.tolist()
    # The heads multiply in float64: a chunk's shape may still change the order BLAS sums in, which
    # moves a float64 result by a few ulps (~1e-16), never by anything a person could see.
    np.testing.assert_allclose(chunked.confidence, whole.confidence, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(chunked.margin, whole.margin, rtol=1e-12, atol=1e-15)
    truth = folders(sample_library)
    assert np.mean([whole.label(i) == truth[int(x)] for i, x in enumerate(whole.ids)]) >= 0.5  # chance: 0.1


def test_queue_clusters_fit_on_a_sample_and_assign_every_photo(sample_library, monkeypatch):
    """The queue's k-means reads the vectors in chunks; with the whole library as its sample it is
    the in-memory k-means, and with a smaller sample every photo still gets a cluster."""
    from search.labelling import queue_order
    from search.labelling.queue_order import kmeans

    labeller = Labeller(Searcher(sample_library))
    ids, vectors = sample_library.stored_vectors()
    streamed, in_memory = labeller.clusters(), kmeans(ids, vectors)
    assert streamed.ids.tolist() == in_memory.ids.tolist() == ids.tolist()
    assert streamed.cluster.tolist() == in_memory.cluster.tolist()
    np.testing.assert_allclose(streamed.closeness, in_memory.closeness, atol=1e-6)

    monkeypatch.setattr(queue_order, "KMEANS_SAMPLE", 40)
    labeller._clusters = None
    sampled = labeller.clusters()
    assert sampled.ids.tolist() == ids.tolist()
    assert set(sampled.cluster.tolist()) <= set(range(16)) and len(set(sampled.cluster.tolist())) >= 10


def test_queue_clusters_are_kept_beside_the_library_and_follow_adds_and_removals(sample_library):
    """Issue 12: the queue's k-means is fitted once (30 s at a million photos) and stored; after an
    index run the photos added are assigned to the stored centres and removed ones dropped."""
    from search.labelling.queue_clusters import CLUSTERS_FILE, load_clusters
    from tests.search.test_neighbour_lists import index_run

    first = Labeller(Searcher(sample_library)).clusters()
    fingerprint, centres, stored = load_clusters(sample_library.path / CLUSTERS_FILE)
    assert fingerprint == sample_library.vectors_fingerprint()
    assert stored.ids.tolist() == first.ids.tolist() and stored.cluster.tolist() == first.cluster.tolist()

    _, vectors = sample_library.stored_vectors([1])
    index_run(sample_library, add=[(10_000, vectors[0])], remove=(2,))
    again = Labeller(Searcher(sample_library)).clusters()  # another process: reads the file
    where = {int(i): (int(c), float(x)) for i, c, x in zip(again.ids, again.cluster, again.closeness, strict=True)}
    assert 2 not in where and where[10_000][0] == where[1][0]  # the copy joins its original's cluster
    assert again.ids.tolist() == sorted(where)
    before = {int(i): int(c) for i, c in zip(first.ids, first.cluster, strict=True)}
    assert all(where[i][0] == c for i, c in before.items() if i != 2)  # nobody else moved
    _, centres_after, _ = load_clusters(sample_library.path / CLUSTERS_FILE)
    np.testing.assert_array_equal(centres_after, centres)  # assigned, not refitted
