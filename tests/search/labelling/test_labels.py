"""Labels in SQLite: validation, one per image, CSV and folder import, CSV export."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from indexer.schema import IMPORTED, USER, Label
from search.labelling.labels import (
    LabelFileError,
    clear_label,
    export_csv,
    import_csv,
    import_folders,
    label_counts,
    read_csv,
    set_label,
)
from search.searcher import NotFound

PATHS = ["cats/a.jpg", "cats/b.jpg", "dogs/c.jpg", "top.jpg"]


@pytest.fixture
def library(vector_library):
    return vector_library(np.eye(4, dtype=np.float32), PATHS)


def test_set_label_strips_and_replaces(library):
    with library.Session.begin() as s:
        row = set_label(s, 1, "  tabby  ")
        assert (row.label, row.source) == ("tabby", USER)
    with library.Session.begin() as s:
        set_label(s, 1, "siamese", source="accepted")
    with library.Session() as s:
        rows = s.query(Label).all()
    assert [(r.image_id, r.label, r.source) for r in rows] == [(1, "siamese", "accepted")]


@pytest.mark.parametrize("bad", ["", "   ", "x" * 101, "two\nlines"])
def test_set_label_rejects_bad_labels(library, bad):
    with library.Session.begin() as s, pytest.raises(ValueError):
        set_label(s, 1, bad)


def test_set_label_accepts_100_characters_and_rejects_unknown_images_and_sources(library):
    with library.Session.begin() as s:
        assert len(set_label(s, 2, "y" * 100).label) == 100
        with pytest.raises(NotFound):
            set_label(s, 999, "cat")
        with pytest.raises(ValueError):
            set_label(s, 1, "cat", source="robot")


def test_clear_label_and_counts(library):
    with library.Session.begin() as s:
        set_label(s, 1, "cat")
        set_label(s, 2, "cat")
        set_label(s, 3, "dog")
    with library.Session() as s:
        assert label_counts(s) == {"cat": 2, "dog": 1}
    with library.Session.begin() as s:
        clear_label(s, 1)
        clear_label(s, 4)  # no label: nothing to do
    with library.Session() as s:
        assert label_counts(s) == {"cat": 1, "dog": 1}


def test_import_folders_labels_by_folder_name_and_skips_the_root(library):
    assert import_folders(library) == 3
    with library.Session() as s:
        labels = {r.image_id: (r.label, r.source) for r in s.query(Label)}
    assert labels == {1: ("cats", IMPORTED), 2: ("cats", IMPORTED), 3: ("dogs", IMPORTED)}
    assert import_folders(library) == 0  # nothing changed


def test_import_keeps_hand_set_labels_unless_overwrite(library):
    with library.Session.begin() as s:
        set_label(s, 1, "lion")
    import_folders(library)
    with library.Session() as s:
        assert s.get(Label, 1).label == "lion"
    import_folders(library, overwrite=True)
    with library.Session() as s:
        assert s.get(Label, 1).label == "cats"


def test_a_label_set_by_hand_while_an_import_runs_stays(library):
    """The web app labels photo 2 by hand just as the import starts writing (another connection,
    committed before the import's first write): the import must not overwrite it."""
    import sqlite3

    from sqlalchemy import event

    def hand_label(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE")) and not hand_label.done:
            hand_label.done = True
            other = sqlite3.connect(library.path / "library.db", timeout=30)
            with other:
                other.execute("INSERT INTO labels (image_id, label, source, set_at) VALUES (2, 'lion', ?, "
                              "'2026-01-01 00:00:00')", (USER,))
            other.close()

    hand_label.done = False
    event.listen(library.engine, "before_cursor_execute", hand_label)
    try:
        assert import_folders(library) == 2
    finally:
        event.remove(library.engine, "before_cursor_execute", hand_label)
    assert hand_label.done
    with library.Session() as s:
        labels = {r.image_id: (r.label, r.source) for r in s.query(Label)}
    assert labels == {1: ("cats", IMPORTED), 2: ("lion", USER), 3: ("dogs", IMPORTED)}


def test_import_csv_with_a_header_in_any_column_order(library, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(
        "split,label,path\ntrain,kitten,cats/a.jpg\ntrain,puppy,./dogs/c.jpg\ntest,x,not/there.jpg\n"
    )
    assert import_csv(library, path) == 2
    with library.Session() as s:
        assert label_counts(s) == {"kitten": 1, "puppy": 1}


def test_import_csv_without_a_header_reads_path_then_label(library, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("cats/b.jpg,cat\ntop.jpg,misc\n")
    assert import_csv(library, path) == 2


def test_labels_import_says_when_a_path_is_listed_twice(library, tmp_path):
    from click.testing import CliRunner

    from lookalike.cli import main

    path = tmp_path / "labels.csv"
    path.write_text("path,label\ncats/a.jpg,cat\ndogs/c.jpg,dog\ncats/a.jpg,kitten\n")
    assert read_csv(path) == ({"cats/a.jpg": "kitten", "dogs/c.jpg": "dog"}, 1)
    result = CliRunner().invoke(main, ["labels", "import", str(path), "--library", str(library.path)])
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first == f"set 2 labels from {path}; 1 path listed twice, the last row kept"
    with library.Session() as s:
        assert label_counts(s) == {"kitten": 1, "dog": 1}


def test_import_csv_reports_the_bad_line(library, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("path,label\ncats/a.jpg,cat\ncats/b.jpg,\n")
    with pytest.raises(LabelFileError, match="line 3"):
        import_csv(library, path)
    with library.Session() as s:
        assert label_counts(s) == {}  # nothing half-imported
    path.write_text("cats/a.jpg,cat\n\n\ncats/b.jpg,\n")  # no header, blank lines: the file's own line
    with pytest.raises(LabelFileError, match="line 4:"):
        import_csv(library, path)


def test_a_cell_that_starts_with_an_apostrophe_reads_back_as_it_was():
    from search.csv_cells import safe_cell, unsafe_cell

    for text in ("'+1", "'quoted'", "''", "=SUM(A1)", "+1", "plain", "it's"):
        assert unsafe_cell(str(safe_cell(text))) == text
    assert safe_cell("=SUM(A1)") == "'=SUM(A1)" and safe_cell("'+1") == "''+1"


def test_export_then_import_round_trips(library, tmp_path, vector_library):
    import_folders(library)
    out = tmp_path / "out.csv"
    assert export_csv(library, out) == 3
    rows = list(csv.DictReader(out.open()))
    assert [(r["path"], r["label"], r["source"]) for r in rows] == [
        ("cats/a.jpg", "cats", "imported"),
        ("cats/b.jpg", "cats", "imported"),
        ("dogs/c.jpg", "dogs", "imported"),
    ]
    other = vector_library(np.eye(4, dtype=np.float32), PATHS, name="other")
    assert import_csv(other, out) == 3
    with other.Session() as s:
        assert label_counts(s) == {"cats": 2, "dogs": 1}


def test_import_folders_on_the_sample_library(labelled_samples):
    with labelled_samples.Session() as s:
        counts = label_counts(s)
    assert len(counts) == 10 and set(counts.values()) == {12}


def test_a_label_typed_composed_or_decomposed_is_one_label(library):
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    with library.Session.begin() as s:
        set_label(s, 1, nfc)
        set_label(s, 2, nfd)
    with library.Session() as s:
        assert label_counts(s) == {nfc: 2}


def test_a_library_labelled_before_labels_were_nfc_gets_one_label_on_open(library):
    """Labels written decomposed by an older release are brought to NFC once, when the library opens."""
    from indexer.library import LABELS_NFC, Library
    from indexer.schema import Meta

    nfc, nfd = "caf\u00e9", "cafe\u0301"
    with library.Session.begin() as s:  # as an older release stored them: no normalisation, no mark
        s.add_all([Label(image_id=1, label=nfc), Label(image_id=2, label=nfd), Label(image_id=3, label="dog")])
        s.delete(s.get(Meta, LABELS_NFC))
    with Library(library.path) as reopened, reopened.Session() as s:
        assert label_counts(s) == {nfc: 2, "dog": 1}
        assert s.get(Meta, LABELS_NFC) is not None


def test_export_neutralises_formula_cells_and_import_reads_them_back(vector_library, tmp_path):
    paths = ["=1+2+cmd|calc.jpg", "@sum.jpg", "plain.jpg"]
    library = vector_library(np.eye(3, dtype=np.float32), paths)
    with library.Session.begin() as s:
        set_label(s, 1, "+cat")
        set_label(s, 2, "-1")
        set_label(s, 3, "dog")
    out = tmp_path / "out.csv"
    assert export_csv(library, out) == 3
    rows = list(csv.DictReader(out.open()))
    assert [(r["path"], r["label"]) for r in rows] == [
        ("'=1+2+cmd|calc.jpg", "'+cat"),
        ("'@sum.jpg", "'-1"),
        ("plain.jpg", "dog"),
    ]
    other = vector_library(np.eye(3, dtype=np.float32), paths, name="other")
    assert import_csv(other, out) == 3
    with other.Session() as s:
        assert label_counts(s) == {"+cat": 1, "-1": 1, "dog": 1}


def test_export_writes_through_symlinks_fifos_and_stdout(library, tmp_path):
    import os
    import threading

    from click.testing import CliRunner

    from lookalike.cli import main

    import_folders(library)
    # A symlink stays a symlink; its target gets the labels.
    target = tmp_path / "real.csv"
    target.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert export_csv(library, link) == 3
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().startswith("path,label,source,set_at")
    # A FIFO is written into, not replaced by a regular file.
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    assert export_csv(library, fifo) == 3
    reader.join()
    assert fifo.is_fifo() and got[0].count("\n") == 4
    # - is standard output; the summary goes to standard error.
    result = CliRunner().invoke(main, ["labels", "export", "-", "--library", str(library.path)])
    assert result.exit_code == 0, result.output
    assert [r["path"] for r in csv.DictReader(result.stdout.splitlines())] == [
        "cats/a.jpg", "cats/b.jpg", "dogs/c.jpg"
    ]
    assert "exported 3 labels to standard output" in result.stderr
