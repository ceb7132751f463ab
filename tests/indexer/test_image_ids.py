"""A photo's id is never given to another photo: removing the photo with the largest id and indexing a
new one must not hand the new photo the old id, or whatever still names the old photo by its id (a
label kept in Check labels, a bookmarked /images/<id>, a FAISS id) would name the new one.

SQLite reuses the largest deleted rowid unless the table is AUTOINCREMENT; libraries made before
it was are rebuilt with it when opened for writing (indexer/library.py)."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from indexer.library import KEPT_LABELS, Library
from indexer.pipeline import index_folder
from indexer.schema import Image
from tests.conftest import REPO, SAMPLES
from tests.web.library_setup import make_app

# The images table as every release before AUTOINCREMENT created it (SQLAlchemy's text, verbatim).
OLD_IMAGES = (
    "CREATE TABLE images (\n\tid INTEGER NOT NULL, \n\tpath VARCHAR NOT NULL, \n\tfolder VARCHAR NOT NULL, "
    "\n\tsize INTEGER NOT NULL, \n\tmtime FLOAT NOT NULL, \n\thash VARCHAR, \n\twidth INTEGER, "
    "\n\theight INTEGER, \n\tformat VARCHAR, \n\ttaken_at DATETIME, \n\tcamera VARCHAR, "
    "\n\tadded_at DATETIME NOT NULL, \n\tindexed_at DATETIME, \n\tstatus VARCHAR NOT NULL, \n\terror TEXT, "
    "\n\tPRIMARY KEY (id), \n\tUNIQUE (path)\n)"
)
TABLES_WITH_ROWS = ("images", "embeddings", "labels", "image_signals", "image_features", "meta")


def collection(folder: Path) -> Path:
    """Three hats and three shoes, and a seventh photo kept aside to be added later."""
    for cls in ("hat", "shoes"):
        (folder / cls).mkdir(parents=True)
        for photo in sorted((SAMPLES / cls).glob("*.jpg"))[:3]:
            shutil.copy(photo, folder / cls / photo.name)
    return sorted((SAMPLES / "dress").glob("*.jpg"))[0]


def index(library: Library, photos: Path, backbone) -> None:
    index_folder(photos, library, backbone, workers=0, engine="torch")


def ids_by_path(db: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT path, id FROM images"))


def images_sql(db: Path) -> str:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'images'").fetchone()[0]


def dump(db: Path) -> dict[str, list]:
    """Every row of the tables that hold the photos, their vectors, labels and facts, and the
    images table's indexes."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = {t: sorted(conn.execute(f"SELECT * FROM {t}")) for t in TABLES_WITH_ROWS}
        rows["indexes"] = sorted(conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'images'"))
    return rows


def to_old_schema(db: Path) -> str:
    """Rebuild the images table as earlier releases made it, without AUTOINCREMENT and without the
    sqlite_sequence row that remembers the largest id ever used (SQLite's 12-step table change)."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("BEGIN IMMEDIATE")
        indexes = [sql for (sql,) in conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'images' AND sql IS NOT NULL")]
        conn.execute(OLD_IMAGES.replace("CREATE TABLE images", "CREATE TABLE images_old", 1))
        conn.execute("INSERT INTO images_old SELECT * FROM images")
        conn.execute("DROP TABLE images")
        conn.execute("ALTER TABLE images_old RENAME TO images")
        for sql in indexes:
            conn.execute(sql)
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'").fetchone():
            conn.execute("DELETE FROM sqlite_sequence WHERE name IN ('images', 'images_old')")
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        conn.execute("COMMIT")
    finally:
        conn.close()
    old = images_sql(db)  # the same but for the quotes SQLite adds to a renamed table's name
    assert old == OLD_IMAGES.replace("images", '"images"', 1)
    return old


def test_a_new_photo_never_gets_the_id_of_a_removed_one(tmp_path, backbone):
    photos = tmp_path / "photos"
    later = collection(photos)
    with Library(tmp_path / "library", create=True) as library:
        index(library, photos, backbone)
        used = ids_by_path(library.path / "library.db")
        top_path, top = max(used.items(), key=lambda item: item[1])
        client = make_app(library, backbone).test_client()
        assert client.put(f"/api/images/{top}/label", json={"label": "hat"}).status_code == 200
        assert client.post(f"/api/labels/suspicious/{top}/keep").status_code == 200  # its label is right
        assert client.get(f"/images/{top}").status_code == 200

        (photos / top_path).unlink()
        index(library, photos, backbone)
        assert top not in ids_by_path(library.path / "library.db").values()
        assert client.get(f"/images/{top}").status_code == 404

        shutil.copy(later, photos / "hat" / "later.jpg")
        index(library, photos, backbone)
        new = ids_by_path(library.path / "library.db")["hat/later.jpg"]
        assert new > max(used.values())
        assert client.get(f"/images/{top}").status_code == 404  # a bookmark of the removed photo
        # Labelled as the removed photo was, the new photo is not taken for the one kept in Check labels.
        assert client.put(f"/api/images/{new}/label", json={"label": "hat"}).status_code == 200
        kept = library.state(KEPT_LABELS)
        assert kept == {str(top): "hat"} and str(new) not in kept
        assert new in {int(i) for i in library.load_vectors().ids()}


def test_a_library_made_before_autoincrement_is_rebuilt_with_it_when_opened(tmp_path, backbone):
    photos = tmp_path / "photos"
    later = collection(photos)
    db = tmp_path / "library" / "library.db"
    with Library(tmp_path / "library", create=True) as library:
        index(library, photos, backbone)
        used = ids_by_path(db)
        client = make_app(library, backbone).test_client()
        for image_id in used.values():
            assert client.put(f"/api/images/{image_id}/label", json={"label": "hat"}).status_code == 200
        top_path, top = max(used.items(), key=lambda item: item[1])
        assert client.post(f"/api/labels/suspicious/{top}/keep").status_code == 200
        # The photo with the largest id is removed while the library still reuses ids.
        (photos / top_path).unlink()
        index(library, photos, backbone)
    old = to_old_schema(db)
    before = dump(db)
    assert before["labels"] and before["embeddings"]

    with Library(tmp_path / "library", read_only=True) as reader:  # a reader changes nothing
        with reader.Session() as s:
            assert s.scalar(select(func.count()).select_from(Image)) == len(used) - 1
    assert images_sql(db) == old

    with Library(tmp_path / "library") as library:
        assert "AUTOINCREMENT" in images_sql(db)
        after = dump(db)
        assert after == before  # every row, label, vector and index as it was
        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert sorted(int(i) for i in library.load_vectors().ids()) == sorted(ids_by_path(db).values())

        # Foreign keys still cascade from the rebuilt table: a removed photo takes its label along.
        gone_path, gone = min(ids_by_path(db).items(), key=lambda item: item[1])
        (photos / gone_path).unlink()
        shutil.copy(later, photos / "hat" / "later.jpg")
        index(library, photos, backbone)
        now = ids_by_path(db)
        assert gone not in now.values() and now["hat/later.jpg"] > top
        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM labels WHERE image_id = ?", (gone,)).fetchone() == (0,)
            assert conn.execute("SELECT count(*) FROM embeddings WHERE image_id = ?", (gone,)).fetchone() == (0,)
        assert str(now["hat/later.jpg"]) not in library.state(KEPT_LABELS)
        assert sorted(int(i) for i in library.load_vectors().ids()) == sorted(now.values())

    with Library(tmp_path / "library") as library:  # migrated once: the next open leaves it as it is
        assert images_sql(db).count("AUTOINCREMENT") == 1


def test_a_reader_inside_a_transaction_is_undisturbed_by_the_rebuild(tmp_path, backbone):
    """The web reads while an indexer opens the library: a read transaction begun before the rebuild
    sees the old table to its end, and the rebuilt one after."""
    photos = tmp_path / "photos"
    collection(photos)
    db = tmp_path / "library" / "library.db"
    with Library(tmp_path / "library", create=True) as library:
        index(library, photos, backbone)
    to_old_schema(db)
    expected = sorted(ids_by_path(db).items())
    reader = sqlite3.connect(db, isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert sorted(reader.execute("SELECT path, id FROM images")) == expected
        with Library(tmp_path / "library"):
            assert "AUTOINCREMENT" in images_sql(db)
        assert sorted(reader.execute("SELECT path, id FROM images")) == expected
        reader.execute("COMMIT")
        assert sorted(reader.execute("SELECT path, id FROM images")) == expected
        sql = reader.execute("SELECT sql FROM sqlite_master WHERE name = 'images'").fetchone()[0]
        assert "AUTOINCREMENT" in sql
    finally:
        reader.close()


# Opens a library for writing, and is killed -9 by SQLite's statement trace as the rebuild renames
# the new images table: the old one is dropped by then, in the transaction that the kill abandons.
KILLED_MIDWAY = """
import os, signal, sys
from sqlalchemy import event
from sqlalchemy.engine import Engine
from indexer.library import Library

@event.listens_for(Engine, "connect")
def kill_midway(dbapi_connection, record):
    def trace(statement):
        if statement.startswith("ALTER TABLE"):
            os.kill(os.getpid(), signal.SIGKILL)
    dbapi_connection.set_trace_callback(trace)

Library(sys.argv[1])
"""


def test_a_rebuild_killed_midway_leaves_the_old_table_and_is_done_at_the_next_open(tmp_path, backbone):
    photos = tmp_path / "photos"
    collection(photos)
    db = tmp_path / "library" / "library.db"
    with Library(tmp_path / "library", create=True) as library:
        index(library, photos, backbone)
    old = to_old_schema(db)
    before = dump(db)
    killed = subprocess.run([sys.executable, "-c", KILLED_MIDWAY, str(db.parent)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert images_sql(db) == old and dump(db) == before
    with Library(tmp_path / "library"):
        assert "AUTOINCREMENT" in images_sql(db) and dump(db) == before
