"""The library's SQLite schema: one row per photo, its vector, its label, the library's identity and the
versions of its vector space (representations)."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Image.status values, defined without SQLAlchemy for the unchanged-run shortcut.
from indexer.rows import FAILED, INDEXED, PENDING  # noqa: F401

SCHEMA_VERSION = 1



def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Image(Base):
    """A photo file under the collection root. Its id is also its FAISS id.

    AUTOINCREMENT: an id is never given again, not even the largest after its photo is removed, so
    what still names a removed photo by its id (a kept label, a bookmarked URL) names no other photo.
    Libraries made before are rebuilt with it when opened (indexer/library.py).
    """

    __tablename__ = "images"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String, unique=True)  # relative to the root, '/'-separated
    folder: Mapped[str] = mapped_column(String, index=True)  # parent of path, '' for the root
    size: Mapped[int] = mapped_column(Integer)
    mtime: Mapped[float] = mapped_column(Float)
    hash: Mapped[str | None] = mapped_column(String, index=True)  # blake2b-128 of the bytes
    width: Mapped[int | None] = mapped_column(Integer)  # as displayed (after EXIF rotation)
    height: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String)
    taken_at: Mapped[datetime | None] = mapped_column(index=True)  # EXIF DateTimeOriginal
    camera: Mapped[str | None] = mapped_column(String)  # EXIF Make + Model
    added_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    indexed_at: Mapped[datetime | None] = mapped_column()
    status: Mapped[str] = mapped_column(String, default=PENDING, index=True)
    error: Mapped[str | None] = mapped_column(Text)  # "reason: detail" when status == failed

    embedding: Mapped[Embedding | None] = relationship(
        back_populates="image", cascade="all, delete-orphan", passive_deletes=True
    )
    label: Mapped[Label | None] = relationship(
        back_populates="image", cascade="all, delete-orphan", passive_deletes=True
    )

    @property
    def reason(self) -> str | None:
        """The short failure reason ("decompression bomb"), without the detail."""
        return self.error.split(":", 1)[0] if self.error else None


class Embedding(Base):
    """The image's L2-normalised float32 vector: the source of truth the FAISS file is built from."""

    __tablename__ = "embeddings"

    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    vector: Mapped[bytes] = mapped_column(LargeBinary)

    image: Mapped[Image] = relationship(back_populates="embedding")


# Label.source values.
USER = "user"
IMPORTED = "imported"
ACCEPTED = "accepted"  # an accepted nearest-neighbour suggestion
LABEL_SOURCES = (USER, IMPORTED, ACCEPTED)


class Label(Base):
    """The one current label of an image."""

    __tablename__ = "labels"

    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    label: Mapped[str] = mapped_column(String, index=True)
    source: Mapped[str] = mapped_column(String, default=USER)
    set_at: Mapped[datetime] = mapped_column(default=utcnow)

    image: Mapped[Image] = relationship(back_populates="label")


class Meta(Base):
    """Key/value facts about the library: schema version, root, backbone identity, index stats."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Neighbour(Base):
    """One entry of an image's stored top-k neighbour list (search's k-NN labelling reads these).

    The lists are derived from the vectors and rebuilt when they change; `neighbour_id` is indexed
    so a label change finds the images whose votes it touches.
    """

    __tablename__ = "neighbours"

    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0 = nearest
    neighbour_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), index=True
    )
    score: Mapped[float] = mapped_column(Float)  # cosine similarity


class SuggestedLabel(Base):
    """The current weighted k-NN vote for an image, kept in step with the labels."""

    __tablename__ = "suggestions"

    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    label: Mapped[str | None] = mapped_column(String)  # None: no labelled neighbour voted
    confidence: Mapped[float] = mapped_column(Float)  # the winner's share of the votes
    margin: Mapped[float] = mapped_column(Float, index=True)  # winner's share - runner-up's


class NeighbourSource(Base):
    """Which vector each stored neighbour list was built from (its image's `indexed_at` then).

    Comparing it with `images` gives what changed since (added, re-embedded, removed), so the lists
    are maintained by difference. No foreign key: a removed image's entry must outlive its row.
    """

    __tablename__ = "neighbour_sources"

    image_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    indexed_at: Mapped[datetime | None] = mapped_column()


class ImageSignalsRow(Base):
    """Duplicate signals of an image (indexer/hashes.py): PDQ hashes of the whole photo and its mirror."""

    __tablename__ = "image_signals"

    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    pdq: Mapped[bytes] = mapped_column(LargeBinary)  # 256 bits, packed
    pdq_mirror: Mapped[bytes] = mapped_column(LargeBinary)  # of the left-right mirrored photo
    pdq_trim: Mapped[bytes | None] = mapped_column(LargeBinary)  # without plain borders; None: none
    quality: Mapped[int] = mapped_column(Integer)  # PDQ's 0-100: below ~50 the hash says little
    version: Mapped[int] = mapped_column(Integer)  # signals.SIGNALS_VERSION that computed it


class ImageFeaturesRow(Base):
    """What verifying a duplicate pair needs of an image (indexer/features.py): a small grayscale JPEG
    and the PDQ hashes of its 90-degree turns. Written with its `image_signals` row, same version."""

    __tablename__ = "image_features"

    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    gray: Mapped[bytes] = mapped_column(LargeBinary)  # JPEG, longer side at most FEATURE_SIDE
    turns: Mapped[bytes] = mapped_column(LargeBinary)  # 3 packed 256-bit hashes: 90, 180, 270 degrees
    regions: Mapped[bytes] = mapped_column(LargeBinary)  # 10 packed 256-bit hashes of indexer.features.REGIONS
    version: Mapped[int] = mapped_column(Integer)  # indexer.hashes.SIGNALS_VERSION that computed it


class MapPoint(Base):
    """An image's place on the collection map (search/map/layout.py computes it from the vectors)."""

    __tablename__ = "map_points"

    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    x: Mapped[float] = mapped_column(Float)  # within [-1, 1]
    y: Mapped[float] = mapped_column(Float)


class DismissedPair(Base):
    """Two photos a person reviewed as "not duplicates" in one tier (search/duplicates/review.py).

    Keyed by the files' content hashes (blake2b of the bytes), so the verdict outlives re-index
    runs, moves and even a rebuilt library; the ids are kept for reference.
    """

    __tablename__ = "dismissed_pairs"

    kind: Mapped[str] = mapped_column(String, primary_key=True)  # "copies" or "similar"
    hash_a: Mapped[str] = mapped_column(String, primary_key=True)  # the smaller of the two hashes
    hash_b: Mapped[str] = mapped_column(String, primary_key=True)
    image_a: Mapped[int | None] = mapped_column(Integer)
    image_b: Mapped[int | None] = mapped_column(Integer)
    set_at: Mapped[datetime] = mapped_column(default=utcnow)


class VerifiedPair(Base):
    """A stored verification verdict (search/duplicates/verify.py) for two files, keyed by content hashes in
    the order verified: a pair is verified once, not at every `duplicates` run."""

    __tablename__ = "verified_pairs"

    hash_a: Mapped[str] = mapped_column(String, primary_key=True)
    hash_b: Mapped[str] = mapped_column(String, primary_key=True)
    inliers: Mapped[int] = mapped_column(Integer)
    correlation: Mapped[float] = mapped_column(Float)
    version: Mapped[int] = mapped_column(Integer)  # search.duplicates.candidates.VERIFY_VERSION


class CopyVerdict(Base):
    """A stored verification verdict of the copies tier (search/duplicates/verify.py) for two files,
    keyed by content hashes in the order verified; with which transform and how much of the photo
    lined up, so the evidence can say why. Supersedes `verified_pairs` (its verdicts had no reason)."""

    __tablename__ = "copy_verdicts"

    hash_a: Mapped[str] = mapped_column(String, primary_key=True)
    hash_b: Mapped[str] = mapped_column(String, primary_key=True)
    inliers: Mapped[int] = mapped_column(Integer)
    correlation: Mapped[float] = mapped_column(Float)
    aligned: Mapped[float] = mapped_column(Float)
    centre: Mapped[float] = mapped_column(Float)
    spread: Mapped[float] = mapped_column(Float)
    transform: Mapped[str] = mapped_column(String)
    exact: Mapped[float] = mapped_column(Float)  # median correlation of the cells that line up
    version: Mapped[int] = mapped_column(Integer)  # search.duplicates.candidates.VERIFY_VERSION


# Tables that only cache what can be computed again: one whose columns differ from this release's
# (made by an earlier build) is dropped and made anew when the library opens.
CACHE_TABLES = (CopyVerdict.__tablename__,)


class DuplicateChoice(Base):
    """A person's keep/remove choice for one photo of a duplicate group.

    Keyed by image id (ids survive re-index runs and moves); not by content hash, since byte-identical
    copies are exactly the photos that need different choices.
    """

    __tablename__ = "duplicate_choices"

    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    choice: Mapped[str] = mapped_column(String)  # "keep" or "remove"
    set_at: Mapped[datetime] = mapped_column(default=utcnow)


class Representation(Base):
    """One version of the space the vectors live in: a backbone with one set of weights.

    The first is the backbone the library was indexed with (its `weights_file` None for the
    backbone's own weights, or the `--weights` file given); `lookalike tune` adds fine-tuned ones,
    each with its `parent`. Which one is current is the meta key `representation` (written in the
    same transaction as the vectors it describes, see indexer/reembed.py).
    """

    __tablename__ = "representations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    backbone: Mapped[str] = mapped_column(String)  # indexer.backbone.BACKBONES name
    # Relative to the library folder for tuned weights (representations/<sha256>.pth); absolute
    # for a --weights file given to `index`; None for the backbone's own weights.
    weights_file: Mapped[str | None] = mapped_column(String)
    weights: Mapped[str] = mapped_column(String)  # Backbone.weights_identity, as the meta key `weights`
    weights_sha256: Mapped[str | None] = mapped_column(String)  # the whole digest of weights_file
    labels: Mapped[str | None] = mapped_column(Text)  # JSON: what the weights were trained on
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("representations.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    activated_at: Mapped[datetime | None] = mapped_column()  # last made current; None: never yet
    metrics: Mapped[str | None] = mapped_column(Text)  # JSON: what was measured, before and after


class StagedEmbedding(Base):
    """A vector computed for a representation that is not current yet (indexer/reembed.py).

    `source_indexed_at` is the image's `indexed_at` when it was staged: an image re-embedded by
    `index` since then (a changed file) is staged again. `vector` None: the photo failed to decode,
    `error` says why.
    """

    __tablename__ = "staged_embeddings"

    representation_id: Mapped[int] = mapped_column(
        ForeignKey("representations.id", ondelete="CASCADE"), primary_key=True
    )
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    source_indexed_at: Mapped[datetime | None] = mapped_column()
    vector: Mapped[bytes | None] = mapped_column(LargeBinary)
    error: Mapped[str | None] = mapped_column(Text)


Index("ix_images_status_path", Image.status, Image.path)
# Browse's default orders (undated last, newest first, then path): a page of a million photos reads
# 60 index entries instead of sorting every row. Created in existing libraries when opened.
BROWSE_INDEXES = (
    Index("ix_images_taken_order", Image.taken_at.is_(None), Image.taken_at.desc(), Image.path, Image.id),
    Index("ix_images_added_order", Image.added_at.is_(None), Image.added_at.desc(), Image.path, Image.id),
)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, connection_record) -> None:
    # WAL lets the web process read while the indexer writes; foreign keys make deletes cascade.
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()
