"""Similar shots that are one moment, not one subject: a burst is the same scene within seconds.

Embedding pairs above the similar tier's threshold are only candidates. A pair is one moment when

- both photos carry an EXIF capture time (and the same camera, or no camera at all): they were taken
  at most BURST_SECONDS apart. Two times further apart, or two cameras, are two moments however
  alike the photos look (fourteen daisies in one field are fourteen photos);
- otherwise (no capture time on one of them): a much stricter test of the pixels: cosine at least
  STRICT_COSINE, and the two share the same scene point for point (at least STRICT_INLIERS keypoint
  matches agreeing on one transform, and their aligned edges correlating at least STRICT_CORRELATION).

Each kept pair says in `why` which rule grouped it; the Duplicates page shows it. Two photos with
different capture times from one camera are two exposures, so never copies of each other, however
alike: they are left to this tier (`separate_exposures`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

from indexer.library import Library
from search.duplicates.verify import Match

BURST_SECONDS = 10  # at most this far apart in EXIF capture time (same camera): one moment
STRICT_COSINE = 0.95  # without capture times: at least this alike by embedding ...
STRICT_INLIERS = 20  # ... and this many keypoint matches on one transform ...
STRICT_CORRELATION = 0.70  # ... and aligned edges correlating this much


@dataclass(frozen=True)
class Capture:
    taken_at: datetime | None
    camera: str | None


def captures(library: Library, ids: set[int]) -> dict[int, Capture]:
    from sqlalchemy import select

    from indexer.schema import Image

    wanted = sorted(ids)
    out: dict[int, Capture] = {}
    with library.Session() as s:
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            for i, taken, camera in s.execute(select(Image.id, Image.taken_at, Image.camera).where(Image.id.in_(part))):
                out[i] = Capture(taken, camera)
    return out


def timed_together(a: Capture, b: Capture) -> bool | None:
    """True: one moment by capture time; False: two moments; None: the times cannot tell."""
    if a.taken_at is None or b.taken_at is None or (a.camera is None) != (b.camera is None):
        return None
    if a.camera != b.camera:
        return False
    return abs((a.taken_at - b.taken_at).total_seconds()) <= BURST_SECONDS


def separate_exposures(library: Library, pairs: list) -> set[tuple[int, int]]:
    """The pairs whose photos carry two different EXIF capture times from one camera: two exposures
    (a burst), never an edit of one another (an edited copy keeps its original's time, or loses it)."""
    shot = captures(library, {i for p in pairs for i in (p.a, p.b)})
    out = set()
    for p in pairs:
        a, b = shot.get(p.a), shot.get(p.b)
        if (a is not None and b is not None and a.taken_at is not None and b.taken_at is not None
                and a.camera == b.camera and a.taken_at != b.taken_at):
            out.add((p.a, p.b))
    return out


def moment_pairs(library: Library, pairs: list, verify: Callable[[list[tuple[int, int]]], dict] | None) -> list:
    """The pairs (search.duplicates.candidates.Pair) that are one moment, each with its `why`.
    `verify(pairs)` gives {pair: Match} for the strict test; without it, pairs without capture times
    are left out."""
    shot = captures(library, {i for p in pairs for i in (p.a, p.b)})
    none = Capture(None, None)
    out, strict = [], []
    for p in pairs:
        a, b = shot.get(p.a, none), shot.get(p.b, none)
        together = timed_together(a, b)
        if together:
            assert a.taken_at is not None and b.taken_at is not None
            seconds = abs((a.taken_at - b.taken_at).total_seconds())
            camera = f"same camera ({a.camera})" if a.camera else "no camera named"
            out.append(replace(p, why=f"one moment: taken {seconds:.0f} s apart, {camera}"))
        elif together is None and not math.isnan(p.score) and p.score >= STRICT_COSINE:
            strict.append(p)
    if strict and verify is not None:
        verdicts: dict[tuple[int, int], Match] = verify([(p.a, p.b) for p in strict])
        for p in strict:
            m = verdicts[(p.a, p.b)]
            if m.inliers >= STRICT_INLIERS and m.correlation >= STRICT_CORRELATION:
                out.append(replace(p, inliers=m.inliers, correlation=round(m.correlation, 4), why=(
                    f"one scene, no capture time to tell: cosine {p.score:.3f}, {m.inliers} keypoint matches, "
                    f"aligned edges correlate {m.correlation:.2f}")))
    out.sort(key=lambda p: (-p.score if not math.isnan(p.score) else 1.0, p.a, p.b))
    return out
