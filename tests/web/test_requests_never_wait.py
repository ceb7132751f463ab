"""Requests never wait for another process (an indexer finishing its run) to bring the neighbour
lists and suggestions current: they read what is stored, and label writes go through."""

from __future__ import annotations

import threading

from sqlalchemy import select

from indexer.library_files import DERIVED_LOCK_FILE, file_lock
from indexer.schema import INDEXED, Image, Label
from search.labelling.labeller import SUGGESTIONS_STATE
from search.labelling.labels import labels_fingerprint
from tests.web.library_setup import stored_label


def _finishes(fn, seconds: float = 300):
    """fn's result, run on a thread; fails (instead of hanging the suite) while it still waits."""
    out: dict = {}
    worker = threading.Thread(target=lambda: out.setdefault("result", fn()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), "the request is waiting on the derived-data lock"
    return out["result"]


def test_reads_and_label_writes_answer_while_an_indexer_holds_the_derived_lock(client, library):
    with library.Session() as s:
        unlabelled = s.scalars(select(Image.id).where(Image.status == INDEXED, Image.id.not_in(select(Label.image_id)))
                               .order_by(Image.id)).all()
    assert client.get(f"/api/images/{unlabelled[0]}/suggestion").status_code == 200  # lists and votes stored
    with file_lock(library.path / DERIVED_LOCK_FILE):  # what `lookalike index` holds while it refreshes
        with library.Session.begin() as s:  # and its new labels: the stored votes are stale
            s.add(Label(image_id=unlabelled[1], label="hat", source="user"))
        suggestion = _finishes(lambda: client.get(f"/api/images/{unlabelled[0]}/suggestion"))
        assert suggestion.status_code == 200 and suggestion.get_json()["suggestion"]["label"]
        put = _finishes(lambda: client.put(f"/api/images/{unlabelled[2]}/label", json={"label": "shoes"}))
        assert put.status_code == 200
        queue = _finishes(lambda: client.get("/api/queue?limit=5"))
        assert queue.status_code == 200 and queue.get_json()["items"]
        assert stored_label(library, unlabelled[2]) == "shoes"
    # The lock free again, the next read brings the votes current with both new labels.
    assert client.get(f"/api/images/{unlabelled[0]}/suggestion").status_code == 200
    assert library.state(SUGGESTIONS_STATE)["labels"] == labels_fingerprint(library)
