"""A library on disk: `library.db` (SQLite, the source of truth) beside `vectors.faiss` (derived).

The indexer opens it for writing (one writer at a time, guarded by a lock file);
search and web open it for reading and reconcile the FAISS file with the database.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import numpy.typing as npt
from sqlalchemy import MetaData, create_engine, delete, func, select, text, update
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.schema import CreateIndex, CreateTable

from indexer.library_files import (  # the library's file names, also importable from here
    DB_FILE,
    DERIVED_LOCK_FILE,
    LOCK_FILE,
    REPRESENTATIONS_DIR,
    VECTORS_FILE,
    file_lock,
    is_read_only,
)
from indexer.pathnames import is_utf8, printable
from indexer.schema import (
    BROWSE_INDEXES,
    CACHE_TABLES,
    INDEXED,
    SCHEMA_VERSION,
    Base,
    DismissedPair,
    Embedding,
    Image,
    Label,
    Meta,
    NeighbourSource,
    Representation,
    StagedEmbedding,
    utcnow,
)
from indexer.vectors import DEFAULT_MEMORY_BUDGET, DamagedIndexError, VectorIndex

log = logging.getLogger(__name__)
T = TypeVar("T")

BULK_CACHE_KIB = 512 << 10  # SQLite page cache of a bulk load

VECTORS_CHECKED = 32  # stored vectors compared with the FAISS file each time it is opened

# The facts that must match for vectors to be comparable.
IDENTITY_KEYS = ("backbone", "weights", "preprocessing", "dim")
LABELS_NFC = "labels_nfc"  # meta key: the labels were brought to Unicode NFC once
CURRENT_REPRESENTATION = "representation"  # meta key: id of the current Representation row
KEPT_LABELS = "kept_labels"  # meta key (web/label_check.py): {image id: the label kept as right}


def file_stamp(path: Path) -> tuple | None:
    """(inode, size, mtime) of a file, None when there is none: an atomic rewrite changes it."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class FileCache(Generic[T]):
    """What `load(path)` returns, read again only when the file's stamp changes (None: no file)."""

    def __init__(self, path: Path, load: Callable[[Path], T]) -> None:
        self.path, self.load = path, load
        self._stamp: tuple | None = None
        self._value: T | None = None

    def get(self) -> T | None:
        stamp = file_stamp(self.path)
        if stamp != self._stamp:
            self._value = self.load(self.path) if stamp else None
            self._stamp = stamp
        return self._value


def parse_state(raw: str | None) -> dict:
    """A derived state as kept in the meta table: {} when there is none or it does not parse."""
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class LibraryError(Exception):
    """A library cannot be opened or used as asked; the message says what to do."""


class DerivedBusy(Exception):
    """Another thread or process holds the derived-data lock (`Library.derived_lock(wait=False)`)."""


READ_ONLY_MESSAGE = "this library is read-only (this user cannot write its folder or database): nothing can be changed"


def is_read_only_write(e: BaseException) -> bool:
    """Whether `e` is SQLite refusing a write to a library opened read-only."""
    return isinstance(e, OperationalError) and "readonly database" in str(e.orig)


def read_only_url(db: Path) -> str:
    """SQLite opened immutable: no lock, journal or -shm file is written, so a folder nobody may
    write can still be read. A WAL left by a writer that did not close is not read."""
    return f"sqlite:///file:{db}?immutable=1&uri=true"


def _reuses_ids(conn: sqlite3.Connection) -> bool:
    """Whether the library's images table predates AUTOINCREMENT (schema.Image)."""
    row = conn.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (Image.__tablename__,)
    ).fetchone()
    return row is not None and "AUTOINCREMENT" not in row[0].upper()


class Library:
    """Handle on one library directory. Cheap to open; holds one SQLAlchemy engine."""

    def __init__(self, path: Path | str, *, create: bool = False, read_only: bool | None = None) -> None:
        """`read_only`: None decides by `is_read_only`; a read-only library reads, and any write
        raises sqlalchemy's OperationalError (a read-only database)."""
        self.path = Path(path).expanduser().resolve()
        if not is_utf8(self.path):  # SQLite and FAISS take their file names as UTF-8
            raise LibraryError(f"{printable(self.path)}: the library's path is not UTF-8: use another --library")
        db = self.path / DB_FILE
        if not db.exists():
            if not create:
                raise LibraryError(
                    f"no library at {self.path}: run `lookalike index PHOTOS_DIR --library {self.path}` first"
                )
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as e:  # a file in its place or on its way, a folder this user cannot write
                raise LibraryError(f"cannot make the library folder {self.path}: {e.strerror}") from None
        self.read_only = is_read_only(self.path) if read_only is None else read_only
        self.engine = create_engine(read_only_url(db) if self.read_only else f"sqlite:///{db}")
        self.Session = sessionmaker(self.engine, expire_on_commit=False)
        self._check_version()  # before anything is written: another schema's library is left as it is
        if self.read_only:
            return
        self._drop_stale_caches()
        Base.metadata.create_all(self.engine)
        with self.engine.begin() as conn:  # create_all adds indexes only with new tables
            for index in BROWSE_INDEXES:
                conn.execute(CreateIndex(index, if_not_exists=True))
        with self.Session.begin() as s:
            if s.get(Meta, "schema_version") is None:
                s.add(Meta(key="schema_version", value=str(SCHEMA_VERSION)))
            # New tables appear in existing libraries through create_all above (as new indexes do
            # through BROWSE_INDEXES); a library indexed before representations existed gets its
            # first one recorded from its meta here, once.
            self._sync_representation(s)
            self._labels_to_nfc(s)
        self._autoincrement_image_ids()

    def _drop_stale_caches(self) -> None:
        """A cache table (schema.CACHE_TABLES) with other columns than this release's is dropped, for
        create_all to make it anew: its rows are computed again when needed."""
        with self.engine.begin() as conn:
            for name in CACHE_TABLES:
                have = {row[1] for row in conn.exec_driver_sql(f"PRAGMA table_info({name})")}
                table = Base.metadata.tables[name]
                if have and have != set(table.columns.keys()):
                    table.drop(conn)
                    log.info("%s was made by another release: made anew", name)

    def _autoincrement_image_ids(self) -> None:
        """Rebuild an `images` table made before it was AUTOINCREMENT (schema.Image), once: until
        then SQLite gives the largest id again after its photo is removed.

        SQLite cannot alter a table into AUTOINCREMENT, so this is its "other kinds of table schema
        changes" (lang_altertable.html): foreign keys off (dropping the old table must delete no
        label), a new table, the rows copied, the old table dropped, the new one renamed, its indexes
        made again, the foreign keys checked. One transaction: a kill midway leaves the old table as
        it was, and a reader sees the old table or the new one. The new table counts on from the
        largest id the library still names anywhere, so none of those is given to another photo."""
        raw = self.engine.raw_connection()
        try:
            conn: sqlite3.Connection = raw.driver_connection  # type: ignore[assignment]
            if not _reuses_ids(conn):
                return
            isolation = conn.isolation_level
            conn.isolation_level = None  # the transaction below is explicit
            conn.execute("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if _reuses_ids(conn):  # not rebuilt meanwhile by another process
                        self._rebuild_images(conn)
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            finally:
                conn.execute("PRAGMA foreign_keys=ON")
                conn.isolation_level = isolation
        finally:
            raw.close()

    def _rebuild_images(self, conn: sqlite3.Connection) -> None:
        """The body of _autoincrement_image_ids, inside its transaction."""
        table = Base.metadata.tables[Image.__tablename__]
        new = f"{table.name}_autoincrement"
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table.name})")}
        columns = ", ".join(c for c in table.columns.keys() if c in have)
        indexes = [sql for (sql,) in conn.execute(
            "SELECT sql FROM sqlite_master WHERE type IN ('index', 'trigger') AND tbl_name = ? AND sql IS NOT NULL",
            (table.name,),
        )]
        largest = self._largest_image_id(conn)
        broken = set(conn.execute("PRAGMA foreign_key_check"))  # rows written without foreign keys
        conn.execute(str(CreateTable(table.to_metadata(MetaData(), name=new)).compile(dialect=self.engine.dialect)))
        conn.execute(f"INSERT INTO {new} ({columns}) SELECT {columns} FROM {table.name}")
        conn.execute(f"DROP TABLE {table.name}")
        conn.execute(f"ALTER TABLE {new} RENAME TO {table.name}")
        for sql in indexes:
            conn.execute(sql)
        conn.execute("DELETE FROM sqlite_sequence WHERE name IN (?, ?)", (table.name, new))
        conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table.name, largest))
        if lost := sorted(set(conn.execute("PRAGMA foreign_key_check")) - broken):  # cannot be: same ids
            raise LibraryError(
                f"library {self.path}: rebuilding its images table would leave {len(lost)} rows naming "
                f"photos that are not there (first: {lost[0][0]} row {lost[0][1]}); nothing was changed"
            )
        log.info("images: ids are no longer given again (largest so far %d)", largest)

    def _largest_image_id(self, conn: sqlite3.Connection) -> int:
        """The largest photo id the library names: its photos', and what outlives a removed photo
        (stored neighbour lists' sources, "not duplicates" verdicts, labels kept in Check labels)."""
        named = ((Image, "id"), (NeighbourSource, "image_id"), (DismissedPair, "image_a"), (DismissedPair, "image_b"))
        ids = [conn.execute(f"SELECT max({col}) FROM {model.__tablename__}").fetchone()[0] for model, col in named]
        kept = conn.execute(f"SELECT value FROM {Meta.__tablename__} WHERE key = ?", (KEPT_LABELS,)).fetchone()
        ids += [int(key) for key in parse_state(kept[0] if kept else None) if key.isascii() and key.isdigit()]
        return max((int(i) for i in ids if i is not None), default=0)

    def _labels_to_nfc(self, session: Session) -> None:
        """Labels are kept in Unicode NFC (search.labelling.labels.clean_label): a library labelled
        before that may hold "café" decomposed beside "café" composed, two labels for one. Once."""
        if session.get(Meta, LABELS_NFC) is not None:
            return
        for (label,) in session.execute(select(Label.label).distinct()).all():
            if (nfc := unicodedata.normalize("NFC", label)) != label:
                session.execute(update(Label).where(Label.label == label).values(label=nfc))
                log.info("label %r stored in Unicode NFC", nfc)
        session.add(Meta(key=LABELS_NFC, value="1"))

    def _check_version(self) -> None:
        """Refuse a library of another schema version, or a file that is no SQLite database, by a
        plain read: nothing of it is created, dropped or changed first."""
        try:
            with self.engine.connect() as conn:
                has_meta = conn.execute(text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"))
                version = (conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar()
                           if has_meta.first() else None)
        except DatabaseError as e:  # not a database, locked, unreadable
            raise LibraryError(f"cannot open the library {self.path}: {e.orig}") from None
        if version is not None and version != str(SCHEMA_VERSION):
            raise LibraryError(
                f"library {self.path} has schema version {version}, this lookalike "
                f"understands {SCHEMA_VERSION}: index into a new --library"
            )

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- meta -----------------------------------------------------------------------------------

    def meta(self) -> dict[str, str]:
        with self.Session() as s:
            return {m.key: m.value for m in s.scalars(select(Meta))}

    def set_meta(self, session: Session, **values: object) -> None:
        for key, value in values.items():
            session.merge(Meta(key=key, value=value if isinstance(value, str) else json.dumps(value)))

    def state(self, key: str, session: Session | None = None) -> dict:
        """The JSON state a piece of derived data keeps in the meta table ({} when none)."""
        if session is None:
            with self.Session() as s:
                return self.state(key, s)
        row = session.get(Meta, key)
        return parse_state(row.value if row else None)

    def save_state(self, key: str, value: dict | None, session: Session | None = None) -> None:
        """Store a derived state (None: forget it, so that the data is rebuilt)."""
        if session is None:
            with self.Session.begin() as s:
                self.save_state(key, value, s)
            return
        if value is None:
            session.execute(delete(Meta).where(Meta.key == key))
        else:
            session.merge(Meta(key=key, value=json.dumps(value)))

    @property
    def root(self) -> Path | None:
        root = self.meta().get("root")
        return Path(root) if root else None

    @property
    def dim(self) -> int | None:
        dim = self.meta().get("dim")
        return int(dim) if dim else None

    def identity(self) -> dict[str, str]:
        meta = self.meta()
        return {key: meta[key] for key in IDENTITY_KEYS if key in meta}

    # -- representations (schema.Representation) -------------------------------------------------------

    @property
    def representations_dir(self) -> Path:
        return self.path / REPRESENTATIONS_DIR

    def representations(self) -> list[Representation]:
        """Every representation recorded, oldest first."""
        with self.Session() as s:
            return list(s.scalars(select(Representation).order_by(Representation.id)))

    def representation(self, representation_id: int) -> Representation | None:
        with self.Session() as s:
            return s.get(Representation, int(representation_id))

    def current_representation(self) -> Representation | None:
        """The representation the stored vectors are in; None before the first photo is indexed."""
        with self.Session() as s:
            current = s.get(Meta, CURRENT_REPRESENTATION)
            return s.get(Representation, int(current.value)) if current is not None else None

    def root_representation(self, representation: Representation) -> Representation:
        """The first ancestor of `representation` (the backbone's own weights it was tuned from)."""
        with self.Session() as s:
            rep = representation
            seen = {rep.id}
            while rep.parent_id is not None and rep.parent_id not in seen:
                parent = s.get(Representation, rep.parent_id)
                if parent is None:
                    break
                seen.add(parent.id)
                rep = parent
            return rep

    def representation_weights(self, representation: Representation) -> Path | None:
        """The weights file of a representation as a path (None: the backbone's own weights)."""
        if not representation.weights_file:
            return None
        path = Path(representation.weights_file)
        return path if path.is_absolute() else self.path / path

    def add_representation(
        self,
        *,
        backbone: str,
        weights_file: Path | None,
        weights: str,
        weights_sha256: str | None = None,
        labels: object = None,
        parent_id: int | None = None,
        metrics: object = None,
    ) -> Representation:
        """Record a representation (not current: indexer.reembed makes it so once its vectors are in).

        `weights_file` inside the library folder is stored relative to it, so the library can move.
        `labels` and `metrics` are stored as JSON.
        """
        stored: str | None = None
        if weights_file is not None:
            path = Path(weights_file)
            try:
                stored = path.resolve().relative_to(self.path).as_posix()
            except ValueError:
                stored = str(path.resolve())
        rep = Representation(
            backbone=backbone, weights_file=stored, weights=weights, weights_sha256=weights_sha256,
            labels=None if labels is None else json.dumps(labels, sort_keys=True),
            parent_id=parent_id, metrics=None if metrics is None else json.dumps(metrics, sort_keys=True),
        )
        with self.Session.begin() as s:
            s.add(rep)
        return rep

    def set_representation_metrics(self, representation_id: int, metrics: object) -> None:
        """Replace what a representation measured (JSON): e.g. before/after accuracy."""
        with self.Session.begin() as s:
            rep = s.get(Representation, int(representation_id))
            if rep is None:
                raise LibraryError(f"no representation {representation_id} in {self.path}")
            rep.metrics = json.dumps(metrics, sort_keys=True)

    def record_representation(self, identity: dict[str, str], weights_file: Path | None) -> Representation:
        """Make the representation of this backbone identity current: called once the vectors are
        in it (an `index` run that recorded `identity`). The current one if it matches, else the
        latest with the same weights, else a new first representation (no parent)."""
        with self.Session.begin() as s:
            return self._record(s, identity["backbone"], identity["weights"], weights_file)

    def _record(self, s: Session, backbone: str, weights: str, weights_file: Path | str | None) -> Representation:
        current = s.get(Meta, CURRENT_REPRESENTATION)
        rep = s.get(Representation, int(current.value)) if current is not None else None
        if rep is not None and (rep.backbone, rep.weights) == (backbone, weights):
            return rep
        rep = s.scalars(
            select(Representation)
            .where(Representation.backbone == backbone, Representation.weights == weights)
            .order_by(Representation.id.desc())
        ).first()
        if rep is None:
            rep = Representation(backbone=backbone, weights=weights,
                                 weights_file=str(Path(weights_file).resolve()) if weights_file else None)
            s.add(rep)
            s.flush()
        rep.activated_at = utcnow()
        self.set_meta(s, **{CURRENT_REPRESENTATION: str(rep.id)})
        return rep

    def _sync_representation(self, s: Session) -> None:
        """Record the representation of a library indexed before they existed (or whose record a
        `--reembed` run reset), and keep the meta key `weights_file` (read by search to embed
        queries) pointing at the current representation's file wherever the library folder is."""
        meta = {m.key: m.value for m in s.scalars(select(Meta))}
        if "backbone" not in meta or "weights" not in meta:
            return  # nothing indexed yet
        if CURRENT_REPRESENTATION not in meta:
            self._record(s, meta["backbone"], meta["weights"], meta.get("weights_file") or None)
            return
        current = s.get(Representation, int(meta[CURRENT_REPRESENTATION]))
        if current is not None and current.weights == meta["weights"]:
            path = self.representation_weights(current)
            if str(path or "") != meta.get("weights_file", ""):
                self.set_meta(s, weights_file=str(path or ""))

    # -- writer lock ------------------------------------------------------------------------------

    def writer_lock(self) -> AbstractContextManager[None]:
        """Only one indexer may write a library at a time; none a read-only one (LibraryError)."""
        if self.read_only:
            raise LibraryError(f"library {self.path} is read-only for this user: nothing can be written to it")
        return file_lock(self.path / LOCK_FILE, busy=LibraryError(f"another `lookalike index` is writing {self.path}"))

    def derived_lock(self, *, wait: bool = True) -> AbstractContextManager[None]:
        """One process at a time rewrites what is derived from the vectors (neighbour lists, votes):
        the web server and an indexer finishing its run may both want to. Waits for the other, or
        with `wait=False` raises DerivedBusy at once."""
        return file_lock(self.path / DERIVED_LOCK_FILE,
                         busy=None if wait else DerivedBusy(f"{self.path}'s derived data is being brought current"))

    @contextmanager
    def bulk_transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, on a connection of its own, for loading millions of derived rows.

        Foreign keys are not checked row by row (each check looks up an image at random: half the
        time of 20M neighbour rows), so the caller must write only ids that exist while this
        transaction holds the write lock; the page cache is large. Commits, or rolls back on error.
        """
        conn = sqlite3.connect(self.path / DB_FILE, isolation_level=None, timeout=30)
        try:
            conn.execute("PRAGMA foreign_keys=OFF")
            conn.execute(f"PRAGMA cache_size=-{BULK_CACHE_KIB}")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()

    # -- vectors ----------------------------------------------------------------------------------

    @property
    def vectors_path(self) -> Path:
        return self.path / VECTORS_FILE

    def stored_vectors(
        self, ids: npt.ArrayLike | None = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """(ids, vectors) of indexed images from SQLite, ordered by id; all of them if ids is None.

        Filled into one preallocated array chunk by chunk: the peak is the vectors themselves
        (5 GB at 1M x 1280), not that again in blobs and joined bytes.
        """
        if ids is None:
            with self.Session() as s:
                n = s.scalar(select(func.count()).select_from(Image).where(Image.status == INDEXED)) or 0
            out_ids = np.empty(n, dtype=np.int64)
            out = np.empty((n, self.dim or 0), dtype=np.float32)
            filled = 0
            for chunk_ids, chunk in self.iter_vectors():
                m = min(len(chunk_ids), n - filled)  # rows indexed since the count wait for next time
                out_ids[filled : filled + m], out[filled : filled + m] = chunk_ids[:m], chunk[:m]
                filled += m
            return out_ids[:filled], out[:filled]
        found: list[int] = []
        chunks: list[bytes] = []
        wanted = sorted({int(i) for i in np.asarray(ids).ravel()})
        with self.engine.connect() as conn:  # plain SQL: search by id calls this once per request
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                rows = conn.exec_driver_sql(
                    "SELECT e.image_id, e.vector FROM embeddings e JOIN images i ON i.id = e.image_id "
                    f"WHERE i.status = ? AND e.image_id IN ({','.join('?' * len(part))}) ORDER BY e.image_id",
                    (INDEXED, *part))
                for image_id, blob in rows:
                    found.append(image_id)
                    chunks.append(blob)
        if not found:
            return np.zeros(0, dtype=np.int64), np.zeros((0, self.dim or 0), dtype=np.float32)
        # The blobs' length gives the dimension: no read of meta per search request (~1 ms of ORM).
        vectors = np.frombuffer(b"".join(chunks), dtype=np.float32).reshape(len(found), -1)
        return np.asarray(found, dtype=np.int64), vectors

    def iter_vectors(
        self, chunk: int = 8192, after: int = 0
    ) -> Iterator[tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]:
        """(ids, vectors) of indexed images with id > `after`, in id order, `chunk` rows at a time."""
        dim = self.dim or 0
        sql = (
            "SELECT e.image_id, e.vector FROM embeddings e JOIN images i ON i.id = e.image_id "
            "WHERE i.status = ? AND i.id > ? ORDER BY i.id LIMIT ?"
        )  # by i.id, which ix_images_status yields in order: ORDER BY e.image_id sorted every row
        # left in a temporary B-tree for each chunk (117 s instead of 1 s for 200k vectors)
        last = after
        while True:
            with self.engine.connect() as conn:
                rows = conn.exec_driver_sql(sql, (INDEXED, last, chunk)).all()
            if not rows:
                return
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), dim)
            yield ids, vectors
            last = int(ids[-1])

    def indexed_ids(self) -> npt.NDArray[np.int64]:
        with self.engine.connect() as conn:  # the driver's rows: ORM scalars took 5 s at a million
            cursor = conn.connection.driver_connection.execute(  # type: ignore[union-attr]
                "SELECT id FROM images WHERE status = ? ORDER BY id", (INDEXED,))
            return np.array(cursor.fetchall(), dtype=np.int64).reshape(-1)

    @property
    def memory_budget(self) -> int:
        """Bytes the vector index may take in RAM (`--memory-budget` as last given to the indexer)."""
        budget = self.meta().get("memory_budget")
        return int(budget) if budget else DEFAULT_MEMORY_BUDGET

    def build_vectors(self, memory_budget: int | None = None) -> VectorIndex:
        """A fresh index of every stored vector, the type chosen by the library's size and budget."""
        ids, vectors = self.stored_vectors()
        return VectorIndex.build(self.dim or vectors.shape[1], ids, vectors,
                                 memory_budget=memory_budget or self.memory_budget)

    def load_vectors(self, *, full_check: bool = False) -> VectorIndex:
        """The FAISS index, brought in line with the database.

        The database wins: ids it has that the file lacks are added from the stored vectors, ids the
        file has that the database lacks are removed. After a crashed run (`vectors_dirty`) with
        `full_check` (the indexer), the index is rebuilt whole, since a re-embedded image keeps its id.
        A file that is damaged (unreadable, or holding other vectors than a sample of the stored
        ones) is derived data: rebuilt from the database like a missing one, and with `full_check`
        marked dirty, so that the indexer writes it again.
        """
        dim = self.dim
        if dim is None:
            return VectorIndex.empty(0)
        dirty = self.meta().get("vectors_dirty") == "1"
        if not self.vectors_path.exists() or (dirty and full_check):
            return self.build_vectors()
        try:
            index = VectorIndex.load(self.vectors_path, dim)
        except FileNotFoundError:  # removed since the check: by `--reembed`, or by hand
            return self.build_vectors()
        except DamagedIndexError as e:
            return self._rebuild_damaged(str(e), full_check)
        have = index.ids()
        want = self.indexed_ids()
        extra = np.setdiff1d(have, want, assume_unique=True)
        missing = np.setdiff1d(want, have, assume_unique=True)
        if len(extra) or len(missing):
            log.info("reconciling %s: +%d -%d vectors", self.vectors_path, len(missing), len(extra))
            if not index.supports_updates:
                return self.build_vectors()
            index.remove(extra)
            index.add(*self.stored_vectors(missing))
        sample = np.random.default_rng(len(want)).choice(want, min(VECTORS_CHECKED, len(want)), replace=False)
        if not index.holds(*self.stored_vectors(sample)):
            return self._rebuild_damaged("it holds vectors that differ from the database", full_check)
        return index

    def _rebuild_damaged(self, why: str, mark_dirty: bool) -> VectorIndex:
        log.warning("%s is damaged (%s): rebuilding it from the database", self.vectors_path, why)
        if mark_dirty:
            self.mark_vectors_dirty()
        return self.build_vectors()

    def save_vectors(self, index: VectorIndex, *, clean: bool, memory_budget: int | None = None) -> VectorIndex:
        """Write the FAISS file; `clean` marks it as matching the database exactly.

        A clean index whose type no longer suits the library's size (or an HNSW graph that had to
        fall back to flat to delete) is rebuilt from the stored vectors first. Returns what was written.
        """
        budget = memory_budget or self.memory_budget
        if clean and index.should_rebuild(budget):
            index = self.build_vectors(budget)
        index.save(self.vectors_path)
        with self.Session.begin() as s:
            self.set_meta(s, vectors_dirty="0" if clean else "1", **index.describe())
        return index

    def mark_vectors_dirty(self) -> None:
        with self.Session.begin() as s:
            self.set_meta(s, vectors_dirty="1")

    def vectors_fingerprint(self) -> list[str]:
        """Changes whenever an indexer run adds, re-embeds or removes a vector: a cache key."""
        with self.Session() as s:
            row = s.execute(
                select(
                    func.count(), func.sum(Image.id), func.max(Image.id), func.max(Image.indexed_at)
                ).where(Image.status == INDEXED)
            ).one()
        return [str(v) for v in row]

    # -- counts -----------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        with self.Session() as s:
            rows = s.execute(select(Image.status, func.count()).group_by(Image.status)).all()
        by_status = dict(rows)
        return {
            "images": sum(by_status.values()),
            "indexed": by_status.get(INDEXED, 0),
            "failed": by_status.get("failed", 0),
            "pending": by_status.get("pending", 0),
        }

    def reset_vectors(self) -> None:
        """Forget every vector (for a full re-embed with another backbone); rows and labels stay.

        Representations stay as history; the next `index` run records which one is current."""
        with self.Session.begin() as s:
            s.execute(delete(Embedding))
            s.execute(delete(StagedEmbedding))
            s.query(Image).update({Image.status: "pending", Image.indexed_at: None})
            for key in (*IDENTITY_KEYS, CURRENT_REPRESENTATION):
                m = s.get(Meta, key)
                if m is not None:
                    s.delete(m)
        if self.vectors_path.exists():
            os.remove(self.vectors_path)
