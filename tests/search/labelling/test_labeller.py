"""Suggestions from stored neighbour lists: evidence, incremental refresh, the queue's pages."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sqlalchemy import select, update

from indexer.library_files import DERIVED_LOCK_FILE, file_lock
from indexer.schema import Neighbour, SuggestedLabel
from search.labelling.labeller import Labeller
from search.labelling.labels import set_label
from search.searcher import Searcher
from tests.search.conftest import unit


def clusters(per=6, seed=0):
    """Three tight clusters of `per` vectors each around orthogonal axes (ids 1..3*per, by cluster)."""
    rng = np.random.default_rng(seed)
    rows = []
    for axis in range(3):
        centre = np.zeros(8)
        centre[axis] = 1
        rows += [centre + 0.05 * rng.standard_normal(8) for _ in range(per)]
    return unit(rows)


@pytest.fixture
def library(vector_library):
    return vector_library(clusters())


def label(library, labeller, image_id, name):
    with library.Session.begin() as s:
        set_label(s, image_id, name)
    labeller.on_label_changed(image_id)


def test_suggestions_follow_the_labelled_neighbours(library):
    labeller = Labeller(Searcher(library), k=5)
    label(library, labeller, 1, "a")
    label(library, labeller, 7, "b")
    s = labeller.suggest(2)
    assert (s.label, s.confidence) == ("a", 1.0)
    assert labeller.suggest(8).label == "b"
    assert len(s.evidence) == 5
    assert 2 not in [e.image_id for e in s.evidence]  # the query is not its own neighbour
    assert [e.score for e in s.evidence] == sorted((e.score for e in s.evidence), reverse=True)
    assert {e.label for e in s.evidence} <= {"a", None}
    # Image 13's five nearest are the rest of its own, unlabelled cluster: nobody votes.
    far = labeller.suggest(13)
    assert (far.label, far.confidence, far.margin) == (None, 0.0, 0.0)
    assert {e.image_id for e in far.evidence} == {14, 15, 16, 17, 18}
    assert all(e.label is None for e in far.evidence)
    assert labeller.suggest(999) is None


def test_a_label_change_revotes_only_the_images_that_list_it(library):
    labeller = Labeller(Searcher(library), k=5)
    labeller.refresh()
    with library.Session() as s:
        dependants = set(
            s.scalars(
                select(Neighbour.image_id).where(Neighbour.neighbour_id == 1, Neighbour.rank < 5)
            )
        )
    assert dependants and 13 not in dependants
    # Mark every stored vote; only re-voted rows lose the mark.
    with library.Session.begin() as s:
        s.execute(update(SuggestedLabel).values(confidence=0.123))
    label(library, labeller, 1, "a")
    with library.Session() as s:
        marked = {r.image_id for r in s.scalars(select(SuggestedLabel)) if r.confidence == 0.123}
    assert marked == set(range(1, 19)) - dependants
    assert labeller.suggest(next(iter(dependants))).label == "a"


def test_labels_changed_by_another_process_are_picked_up(library):
    labeller = Labeller(Searcher(library), k=5)
    assert labeller.suggest(2).label is None
    with library.Session.begin() as s:  # no on_label_changed: e.g. `lookalike labels import`
        set_label(s, 1, "a")
    assert labeller.suggest(2).label == "a"


def test_new_vectors_rebuild_the_neighbour_lists(library):
    from indexer.schema import INDEXED, Embedding, Image

    labeller = Labeller(Searcher(library), k=3)
    label(library, labeller, 1, "a")
    new = unit([[0, 0, 0, 0, 0, 0, 0, 1]])[0]
    with library.Session.begin() as s:
        s.add(Image(id=100, path="img/new.jpg", folder="img", size=1, mtime=0.0, status=INDEXED))
        s.add(Embedding(image_id=100, vector=new.tobytes()))
    library.save_vectors(library.build_vectors(), clean=True)
    assert labeller.suggest(100) is not None
    assert labeller.refresh() is False  # up to date now


def test_queue_lists_every_unlabelled_image_with_its_suggestion(vector_library):
    # 3 sits halfway between a labelled "a" (1) and a labelled "b" (5); 2 and 4 lean one way.
    # 6..10 are a far cluster no label reaches with k=4. The order is queue_order's (test_learning).
    rows = [[1, 0, 0], [1, 0.3, 0], [1, 1, 0], [0.3, 1, 0], [0, 1, 0]]
    rows += [[0.01 * i, 0.02 * (i % 2), 1] for i in range(5)]
    library = vector_library(unit(rows))
    labeller = Labeller(Searcher(library), k=4)
    label(library, labeller, 1, "a")
    label(library, labeller, 5, "b")
    queue = labeller.queue()
    ids = [s.image_id for s in queue]
    assert sorted(ids) == [2, 3, 4, 6, 7, 8, 9, 10]  # every unlabelled image, no labelled one
    assert ids == [int(i) for i in labeller.queue_ids()]
    by_id = {s.image_id: s for s in queue}
    assert by_id[3].margin == pytest.approx(0.0, abs=1e-6)
    assert {by_id[2].label, by_id[4].label} == {"a", "b"}
    assert by_id[2].margin > 0.9 and by_id[4].margin > 0.9
    assert [by_id[i].label for i in (6, 7, 8, 9, 10)] == [None] * 5  # no vote
    assert [s.image_id for s in labeller.queue(limit=2, offset=1)] == ids[1:3]
    assert all(len(s.evidence) == 4 for s in queue)


def test_a_smaller_k_reuses_the_stored_lists(library):
    Labeller(Searcher(library), k=20).refresh()
    small = Labeller(Searcher(library), k=3)
    small.refresh()
    with library.Session() as s:
        assert (
            s.scalar(select(Neighbour.rank).order_by(Neighbour.rank.desc()).limit(1)) == 16
        )  # 17 others
    assert len(small.suggest(1).evidence) == 3


def _finishes(fn, seconds: float = 300):
    """fn's result, run on a thread; fails (instead of hanging the suite) while it still waits."""
    out: dict = {}
    worker = threading.Thread(target=lambda: out.setdefault("result", fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{fn} is waiting on a lock"
    return out.get("result")


def test_a_servers_labeller_reads_what_is_stored_while_another_process_refreshes(library):
    # `lookalike index` holds the derived lock while it brings lists and votes current: a server's
    # labeller (background trainer) serves the stored suggestions instead of waiting for it.
    Labeller(Searcher(library), k=5).refresh()
    server = Labeller(Searcher(library), k=5, background=True, retrain_delay=3600)
    with library.Session.begin() as s:  # a label from another process: the votes are stale
        set_label(s, 1, "a")
    with file_lock(library.path / DERIVED_LOCK_FILE):
        assert _finishes(server.refresh) is False
        assert _finishes(lambda: server.suggest(2)).label is None  # what was stored: no votes yet
    assert server.refresh() is True  # the lock free again: brought current
    assert server.suggest(2).label == "a"
    # A labeller without a background trainer (the command line's) waits its turn instead.
    waiting = Labeller(Searcher(library), k=5)
    with file_lock(library.path / DERIVED_LOCK_FILE):
        worker = threading.Thread(target=waiting.refresh, daemon=True)
        worker.start()
        worker.join(1)
        assert worker.is_alive()
    worker.join()


def test_a_label_change_never_waits_for_a_refresh_in_progress(library):
    labeller = Labeller(Searcher(library), k=5)
    labeller.refresh()
    busy, release = threading.Event(), threading.Event()

    def refreshing() -> None:  # another thread inside refresh's work, holding the labeller's lock
        with labeller._lock:
            busy.set()
            release.wait()

    holder = threading.Thread(target=refreshing, daemon=True)
    holder.start()
    busy.wait()
    try:
        with library.Session.begin() as s:
            set_label(s, 1, "a")
        _finishes(lambda: labeller.on_label_changed(1))
    finally:
        release.set()
        holder.join()
    assert labeller.suggest(2).label == "a"  # the skipped re-vote is made up by the next read
