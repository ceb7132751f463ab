"""The best shot of a burst: the sharpest, well exposed, from the grayscale copy stored at index time
(indexer/features.py), not the largest file.

sharpness: variance of the Laplacian (motion blur and missed focus lower it); exposure: the share of
pixels neither crushed to black nor blown to white. The score is sharpness scaled by exposure, so a
sharp but blown-out frame loses to a slightly softer one that kept its highlights.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from sqlalchemy.orm import Session

CLIPPED_LOW, CLIPPED_HIGH = 8, 247  # gray levels counted as crushed or blown


@dataclass(frozen=True)
class ShotQuality:
    sharpness: float  # variance of the Laplacian of the stored grayscale copy
    exposed: float  # share of pixels neither crushed nor blown, 0..1

    @property
    def score(self) -> float:
        return self.sharpness * self.exposed


def quality_of_jpeg(data: bytes) -> ShotQuality | None:
    import cv2
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            gray = np.asarray(img.convert("L"))
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    sharpness = float(cv2.Laplacian(gray, cv2.CV_32F).var())
    exposed = float(((gray > CLIPPED_LOW) & (gray < CLIPPED_HIGH)).mean())
    return ShotQuality(sharpness, exposed)


def shot_qualities(session: Session, ids: list[int]) -> dict[int, ShotQuality]:
    """Qualities of these photos from their stored copies (photos without one are left out)."""
    from sqlalchemy import select

    from indexer.schema import ImageFeaturesRow

    out: dict[int, ShotQuality] = {}
    wanted = sorted(set(ids))
    for start in range(0, len(wanted), 500):
        part = wanted[start : start + 500]
        for i, blob in session.execute(select(ImageFeaturesRow.image_id, ImageFeaturesRow.gray)
                                       .where(ImageFeaturesRow.image_id.in_(part))):
            q = quality_of_jpeg(blob)
            if q is not None:
                out[i] = q
    return out
