"""Per-image duplicate signals computed while indexing: PDQ hashes of the whole photo and of its mirror.

The embedding sees a centre crop, so it misses what changes colour or framing but keeps the picture
(grayscale, a 96-px thumbnail, a squashed or letterboxed copy). A perceptual hash of the whole,
uncropped image catches those. PDQ (Meta's 256-bit DCT hash, `pdqhash`) is computed on a 64x64
area-downscaled copy: the hash itself works at 64x64, so the result barely changes (a few bits of
256) and it costs well under a millisecond. The mirrored photo's hash is stored beside it, so a
mirrored copy matches by one Hamming distance like any other copy. A photo with plain borders
(letterbox bars, a white studio margin) also gets the hash of its content with those borders
trimmed, so a letterboxed copy meets its original there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from indexer.features import HASH_SIDE, ImageFeatures, compute_features

log = logging.getLogger(__name__)

HASH_BITS = 256
HASH_BYTES = HASH_BITS // 8
TRIM_SIDE = 128  # all signals start from a copy at least this size (longer side)
TRIM_STD = 6.0  # a border row or column varies less than this (gray levels, 0-255)
MIN_TRIMMED = 0.25  # keep at least this share of each side, or the photo is not a bordered one
# Bump when the way signals are computed changes: rows of an older version are recomputed.
# 2: the `image_features` row (indexer/features.py) is written beside the hashes.
# (Not bumped when the region hashes came to be resized in luma: at most a few bits of 256 apart from
# the RGB ones, where a crop meets a region within 80, so stored rows stay good.)
SIGNALS_VERSION = 2


@dataclass(frozen=True)
class ImageSignals:
    """What `compute_signals` stores for one photo: packed 256-bit hashes and PDQ's quality (0-100)."""

    pdq: bytes
    pdq_mirror: bytes
    quality: int
    pdq_trim: bytes | None = None  # of the photo without its plain borders; None: it has none
    features: ImageFeatures | None = None  # what verification needs (indexer/features.py)


def compute_signals(img: Image.Image) -> ImageSignals:
    """The duplicate signals of an upright RGB image (as `load_image` returns it)."""
    import cv2
    import pdqhash

    cv2.setNumThreads(1)  # one thread per decoding worker, as torch there
    img = img.convert("RGB") if img.mode != "RGB" else img
    # One box-filter reduction by a whole factor (Pillow's reduce: a proper low-pass, and fast),
    # to a longer side of TRIM_SIDE..2*TRIM_SIDE; everything else works on that copy.
    thumb = np.asarray(img.reduce(max(1, max(img.size) // TRIM_SIDE)))
    small = cv2.resize(thumb, (HASH_SIDE, HASH_SIDE), interpolation=cv2.INTER_AREA)
    bits, quality = pdqhash.compute(small)
    mirror_bits, _ = pdqhash.compute(np.ascontiguousarray(small[:, ::-1]))
    trim = None
    box = content_box(cv2.cvtColor(thumb, cv2.COLOR_RGB2GRAY))
    if box is not None:
        top, bottom, left, right = box
        content = cv2.resize(thumb[top:bottom, left:right], (HASH_SIDE, HASH_SIDE), interpolation=cv2.INTER_AREA)
        trim = pack(pdqhash.compute(content)[0])
    return ImageSignals(pack(bits), pack(mirror_bits), int(quality), trim, compute_features(img, small, thumb))


def content_box(gray: npt.NDArray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the photo inside its plain borders; None when it has no such
    border (or nothing much is left inside it)."""
    values = gray.astype(np.float32)
    sh, sw = values.shape
    top, bottom, left, right = 0, sh, 0, sw
    for _ in range(3):  # black bars around a white margin come off in two rounds
        inner = values[top:bottom, left:right]
        plain_rows = inner.std(axis=1) < TRIM_STD
        plain_cols = inner.std(axis=0) < TRIM_STD
        if plain_rows.all() or plain_cols.all():
            return None  # a plain image: nothing inside
        box = (
            top + int(np.argmin(plain_rows)),
            bottom - int(np.argmin(plain_rows[::-1])),
            left + int(np.argmin(plain_cols)),
            right - int(np.argmin(plain_cols[::-1])),
        )
        if box == (top, bottom, left, right):
            break
        top, bottom, left, right = box
    if (top, bottom, left, right) == (0, sh, 0, sw):
        return None
    if bottom - top < MIN_TRIMMED * sh or right - left < MIN_TRIMMED * sw:
        return None
    return top, bottom, left, right


def pack(bits: npt.ArrayLike) -> bytes:
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes()


def unpack(blob: bytes) -> npt.NDArray[np.uint8]:
    return np.unpackbits(np.frombuffer(blob, dtype=np.uint8))


def hamming(a: bytes, b: bytes) -> int:
    return int(np.unpackbits(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())


# -- storage --------------------------------------------------------------------------------------


def signal_rows(items: Iterable[tuple[int, ImageSignals]]) -> list[dict]:
    """Rows for the `image_signals` table."""
    return [
        dict(image_id=i, pdq=s.pdq, pdq_mirror=s.pdq_mirror, pdq_trim=s.pdq_trim, quality=s.quality,
             version=SIGNALS_VERSION)
        for i, s in items
    ]


def write_signals(session, items: Iterable[tuple[int, ImageSignals]]) -> None:
    """Upsert signal rows inside the caller's transaction."""
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    from indexer.schema import ImageFeaturesRow, ImageSignalsRow

    items = list(items)
    rows = signal_rows(items)
    if not rows:
        return
    upsert = sqlite_insert(ImageSignalsRow)
    session.execute(
        upsert.on_conflict_do_update(
            index_elements=[ImageSignalsRow.image_id],
            set_={k: upsert.excluded[k] for k in ("pdq", "pdq_mirror", "pdq_trim", "quality", "version")},
        ),
        rows,
    )
    features = [dict(image_id=i, gray=s.features.gray, turns=s.features.turns, regions=s.features.regions,
                     version=SIGNALS_VERSION)
                for i, s in items if s.features is not None]
    if features:
        upsert = sqlite_insert(ImageFeaturesRow)
        session.execute(
            upsert.on_conflict_do_update(
                index_elements=[ImageFeaturesRow.image_id],
                set_={k: upsert.excluded[k] for k in ("gray", "turns", "regions", "version")},
            ),
            features,
        )


def missing_signals(library) -> list[tuple[int, str]]:
    """(id, path) of indexed photos without current signals (indexed before signals existed, or a
    damaged row)."""
    from sqlalchemy import func, select

    from indexer.features import REGIONS, TURNS
    from indexer.schema import INDEXED, Image, ImageFeaturesRow, ImageSignalsRow

    damaged_features = ImageFeaturesRow.image_id.is_not(None) & (
        (func.length(ImageFeaturesRow.turns) != len(TURNS) * HASH_BYTES)
        | (func.length(ImageFeaturesRow.regions) != len(REGIONS) * HASH_BYTES))
    with library.Session() as s:
        stmt = (
            select(Image.id, Image.path)
            .outerjoin(ImageSignalsRow, ImageSignalsRow.image_id == Image.id)
            .outerjoin(ImageFeaturesRow, ImageFeaturesRow.image_id == Image.id)
            .where(Image.status == INDEXED)
            .where((ImageSignalsRow.image_id.is_(None)) | (ImageSignalsRow.version != SIGNALS_VERSION)
                   # a damaged row: a hash of another length
                   | (func.length(ImageSignalsRow.pdq) != HASH_BYTES)
                   | (func.length(ImageSignalsRow.pdq_mirror) != HASH_BYTES)
                   | (func.coalesce(func.length(ImageSignalsRow.pdq_trim), HASH_BYTES) != HASH_BYTES)
                   | damaged_features)
            .order_by(Image.path)
        )
        return [(int(i), p) for i, p in s.execute(stmt)]


def _signals_of_file(item: tuple[int, str, str]) -> tuple[int, ImageSignals | None]:
    from indexer.imageio import ImageError, load_image
    from indexer.scan import OutsideRoot, open_inside

    image_id, root, rel = item
    try:
        # By path, not bytes: a RAW is known by its extension, and a file is read only as needed.
        img, _ = load_image(open_inside(Path(root), Path(root) / rel), min_side=HASH_SIDE * 4)
        return image_id, compute_signals(img)
    except (ImageError, OSError, OutsideRoot) as e:
        log.warning("no signals for %s: %s", rel, e)
        return image_id, None
    except Exception as e:  # a strange image's hashes: as while indexing, never stop the run for them
        log.warning("no signals for %s: %s: %s", rel, type(e).__name__, e)
        return image_id, None


def backfill_signals(library, root: Path, *, workers: int = 1, batch: int = 256, progress: bool = False) -> int:
    """Compute the signals of indexed photos that lack them (a library indexed before signals
    existed). Returns how many were computed; unreadable files are skipped and logged."""
    todo = missing_signals(library)
    if not todo:
        return 0
    from concurrent.futures import ProcessPoolExecutor

    from tqdm import tqdm

    done = 0
    items = [(i, str(root), rel) for i, rel in todo]
    bar = tqdm(total=len(items), unit="img", disable=not progress, desc="duplicate signals")
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        for start in range(0, len(items), batch):
            part = items[start : start + batch]
            results = list(pool.map(_signals_of_file, part, chunksize=16) if pool else map(_signals_of_file, part))
            good = [(i, s) for i, s in results if s is not None]
            with library.Session.begin() as s:
                write_signals(s, good)
            done += len(good)
            bar.update(len(part))
    finally:
        if pool is not None:
            pool.shutdown()
        bar.close()
    return done
