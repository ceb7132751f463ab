"""Stage 2, decode: a planned photo's file becomes an 8-bit crop plus the facts read from it.

Runs wherever the runner puts it (a decoding thread, a DataLoader worker, a Ray actor); it needs
only the photo root, the task and the backbone's `Preprocess`, all small and picklable. Pixels are
numpy arrays: decoding imports no torch, and Pillow, OpenCV and the hashes release the GIL, so
threads decode in parallel (indexer/runners/threads.py).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from indexer.backbone import Preprocess
from indexer.hashes import ImageSignals, compute_signals
from indexer.imageio import ImageError, load_image
from indexer.rows import UNREADABLE
from indexer.scan import OutsideRoot, open_inside


@dataclass(frozen=True)
class PhotoTask:
    """One photo the plan wants embedded: its row id and its path under the photo root."""

    image_id: int
    path: str


@dataclass(frozen=True)
class Decoded:
    """One photo decoded: pixels + facts (columns of its row), or the error that stopped it.

    `pixels` is the uint8 crop [H, W, 3] (`Preprocess.crop_array`), normalised later per batch.
    """

    image_id: int
    pixels: npt.NDArray[np.uint8] | None
    facts: dict = field(default_factory=dict)
    error: str | None = None
    signals: ImageSignals | None = None  # duplicate signals of the whole photo (indexer/hashes.py)


@dataclass(frozen=True)
class DecodedBatch:
    """A batch of decoded photos. Rows of `pixels` follow the items without error, in order."""

    items: tuple[Decoded, ...]  # pixels dropped: they travel stacked in `pixels`
    # uint8 [n_good, 3, H, W], a numpy array (a pinned torch tensor once `pin_memory` ran); None
    # when no item decoded
    pixels: Any
    seconds: float = 0.0

    def pin_memory(self) -> DecodedBatch:  # DataLoader(pin_memory=True) calls this for CUDA
        if self.pixels is None:
            return self
        import torch

        return replace(self, pixels=torch.as_tensor(self.pixels).pin_memory())


HASH_CHUNK = 1 << 20  # bytes read at a time to hash a file


def file_hash(data: bytes) -> str:
    """The content hash stored with a row; equal hashes mean a moved file, not a new one."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def hash_file(path: Path) -> str:
    """`file_hash` of a file's bytes, read in chunks: hashing never holds a file whole. Raises OSError."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def decode_photo(root: Path, task: PhotoTask, preprocess: Preprocess) -> Decoded:
    """Decode, hash and crop one photo. Never raises: a bad file yields its error.

    Decoded first, from the file: one that is no image, or too large, fails on its header (and its
    size) before the rest is read; a failed photo's row keeps no hash.
    """
    facts: dict = {"hash": None}
    try:
        path = open_inside(root, root / task.path)  # no link out of the root
        img, info = load_image(path, min_side=preprocess.resize)
        facts.update(
            hash=hash_file(path), width=info.width, height=info.height, format=info.format,
            taken_at=info.taken_at, camera=info.camera,
        )
        try:  # hashes of the whole, uncropped photo for the copies tier of duplicates
            signals = compute_signals(img)
        except Exception:  # a hash failure must not fail the photo; the next run retries it
            signals = None
        return Decoded(task.image_id, preprocess.crop_array(img), facts, None, signals)
    except ImageError as e:
        return Decoded(task.image_id, None, facts, str(e))
    except OSError as e:  # unreadable, vanished since the scan
        return Decoded(task.image_id, None, facts, f"{UNREADABLE}: {e}")
    except OutsideRoot:  # made a link out of the root since the scan
        return Decoded(task.image_id, None, facts, "outside the photo folder: a link to another place")
    except Exception as e:  # preprocessing of a strange image: never stop the batch
        return Decoded(task.image_id, None, facts, f"corrupt image: {type(e).__name__}: {e}")


def decode_batch(root: Path, tasks: Sequence[PhotoTask], preprocess: Preprocess) -> DecodedBatch:
    """Decode these photos and stack the good crops into one uint8 array [n, 3, H, W]."""
    started = time.perf_counter()
    decoded = [decode_photo(root, task, preprocess) for task in tasks]
    return stack_batch(decoded, time.perf_counter() - started)


def stack_batch(decoded: Sequence[Decoded], seconds: float) -> DecodedBatch:
    """Decoded photos, in order, as one batch: the good crops stacked channels-first."""
    good = [d.pixels for d in decoded if d.pixels is not None]
    items = tuple(replace(d, pixels=None) for d in decoded)
    pixels = np.ascontiguousarray(np.stack(good).transpose(0, 3, 1, 2)) if good else None
    return DecodedBatch(items, pixels, seconds)
