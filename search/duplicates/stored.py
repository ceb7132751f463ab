"""Verifying candidate pairs from the signals stored at index time (the `image_features` table), never
from the photo files: `duplicates` then decodes nothing but a 320-px grayscale JPEG per photo.

Verdicts are stored by the two files' content hashes (`copy_verdicts`), so a pair is verified once:
a re-run after adding photos verifies only the pairs that involve the new ones. Many pairs at once
are verified on all cores, by threads that share one cache of keypoints: OpenCV and FAISS, where
the time goes, release the GIL, and a photo's keypoints, which cost about five pairs'
verification, are then computed once a run (worker processes each computed them again: 2.2 times
a photo on clothing_small, and pickled every pair's two copies to them).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path

from indexer.library import Library
from search.duplicates.locate import RegionHint, verify_hinted
from search.duplicates.verify import Features, Match, features_of_file, features_of_jpeg

log = logging.getLogger(__name__)

# Bump when verification changes: stored verdicts are then recomputed.
# 4: a crop nominated by a region hash is also looked for there by its pixels (locate.py).
# 5: a photo with few corners is detected again at a lower FAST threshold, and a whole-photo match
#    needs half its middle lined up (verify.py).
VERIFY_VERSION = 5
POOL_BLOCK = 256  # pairs handed to a verifying thread at a time (more than one block: threads)
# Photos whose keypoints and 320-px copy (about 110 kB) stay in memory during one run, in pairs'
# order (sorted by their first photo, so a photo's pairs come close together).
FEATURE_CACHE = 4096

Pair = tuple[int, int]


def _features_of(blob: bytes | None, fallback: Path | None) -> Features | None:
    if blob is not None:
        return features_of_jpeg(blob)
    return features_of_file(fallback) if fallback is not None else None


class StoredVerifier:
    """verify(a, b) from the stored grayscale copies; `many(pairs)` for a batch, on all cores.

    A photo without a stored copy (indexed by an older lookalike, before `lookalike index` added it)
    is read from its file, if `files` is true; `save()` writes this run's new verdicts.
    """

    def __init__(self, library: Library, *, files: bool = True, workers: int | None = None) -> None:
        from sqlalchemy import select

        from indexer.hashes import SIGNALS_VERSION
        from indexer.schema import CopyVerdict, Image, ImageFeaturesRow

        self.library = library
        self.root = library.root if files else None
        self.workers = workers if workers is not None else (os.cpu_count() or 1)
        with library.Session() as s:
            self.rows = {i: (p, h) for i, p, h in s.execute(select(Image.id, Image.path, Image.hash))}
            self.stored = {
                (ha, hb): Match(n, c, al, ce, sp, t, ex)
                for ha, hb, n, c, al, ce, sp, t, ex in s.execute(
                    select(CopyVerdict.hash_a, CopyVerdict.hash_b, CopyVerdict.inliers, CopyVerdict.correlation,
                           CopyVerdict.aligned, CopyVerdict.centre, CopyVerdict.spread, CopyVerdict.transform,
                           CopyVerdict.exact)
                    .where(CopyVerdict.version == VERIFY_VERSION))
            }
            self.with_features = set(s.scalars(select(ImageFeaturesRow.image_id)
                                               .where(ImageFeaturesRow.version == SIGNALS_VERSION)))
        self.new: dict[tuple[str, str], Match] = {}
        self.block = threading.local()  # .blobs: the stored copies of the block a thread verifies
        self.verified = 0  # pairs verified in this run (not answered from stored verdicts)
        self.computed: set[int] = set()  # photos whose keypoints `features` computed in this run

        @lru_cache(maxsize=FEATURE_CACHE)
        def features(i: int) -> Features | None:
            self.computed.add(i)
            return _features_of(*self._source(i))

        self.features = features

    def upright(self, ids: Iterable[int]) -> dict[int, Features]:
        """Keypoints of these photos, not of their mirror images: the reference
        search/duplicates/shared.py looks shared graphics up in. Those verified in this run are
        taken from `features`; the others' stored copies are read in one query."""
        ids = list(ids)
        blobs = self._blobs(i for i in ids if i not in self.computed)
        out = {}
        for i in ids:
            f = features_of_jpeg(blobs[i], mirror=False) if i in blobs else self.features(i)
            if f is not None:
                out[i] = f
        return out

    def release(self) -> None:
        """Let the run's keypoints (up to FEATURE_CACHE photos) go now, not at a later garbage
        collection (the cache refers to this verifier)."""
        self.features.cache_clear()
        self.computed.clear()

    def _blobs(self, ids: Iterable[int]) -> dict[int, bytes]:
        from sqlalchemy import select

        from indexer.schema import ImageFeaturesRow

        wanted = sorted(set(ids) & self.with_features)
        out: dict[int, bytes] = {}
        with self.library.Session() as s:
            for start in range(0, len(wanted), 500):
                part = wanted[start : start + 500]
                out.update(s.execute(select(ImageFeaturesRow.image_id, ImageFeaturesRow.gray)
                                     .where(ImageFeaturesRow.image_id.in_(part))).all())
        return out

    def _source(self, i: int) -> tuple[bytes | None, Path | None]:
        blobs = getattr(self.block, "blobs", {})
        if i in blobs:
            return blobs[i], None
        if i in self.with_features:
            return self._blobs([i]).get(i), None
        if self.root is not None and i in self.rows:
            return None, self.root / self.rows[i][0]
        return None, None

    def _key(self, a: int, b: int) -> tuple[str, str] | None:
        ha, hb = self.rows.get(a, ("", None))[1], self.rows.get(b, ("", None))[1]
        return (ha, hb) if ha is not None and hb is not None else None

    def known(self, a: int, b: int) -> Match | None:
        key = self._key(a, b)
        return None if key is None else self.stored.get(key) or self.new.get(key)

    def _remember(self, a: int, b: int, match: Match) -> None:
        self.verified += 1
        key = self._key(a, b)
        if key is not None:
            self.new[key] = Match(match.inliers, round(match.correlation, 4), round(match.aligned, 4),
                                  round(match.centre, 4), round(match.spread, 4), match.transform,
                                  round(match.exact, 4))

    def __call__(self, a: int, b: int, hints: tuple[RegionHint, ...] = ()) -> Match:
        known = self.known(a, b)
        if known is not None:
            return known
        fa, fb = self.features(a), self.features(b)
        if fa is None or fb is None:
            return Match(0, 0.0)  # unreadable now: not remembered, it may be readable next time
        match = verify_hinted(fa, fb, hints)
        self._remember(a, b, match)
        return match

    def many(self, pairs: list[Pair], progress: Callable[[int, int], None] | None = None,
             hints: dict[Pair, tuple[RegionHint, ...]] | None = None) -> dict[Pair, Match]:
        """Verdicts of these pairs: stored ones, and the rest verified (on all cores when many);
        `hints` are the region hints of the pairs a region hash nominated (locate.py)."""
        hints = hints or {}
        out: dict[Pair, Match] = {}
        todo = []
        for p in pairs:
            known = self.known(*p)
            if known is not None:
                out[p] = known
            else:
                todo.append(p)
        if len(todo) <= POOL_BLOCK or self.workers < 2:
            for n, p in enumerate(todo):
                if progress is not None and n % 64 == 0:
                    progress(len(out), len(pairs))
                out[p] = self(*p, hints.get(p, ()))
            return out
        out.update(self._threads(todo, lambda done: progress(len(out) + done, len(pairs)) if progress else None,
                                 hints))
        return out

    def _threads(self, todo: list[Pair], progress: Callable[[int], None],
                 hints: dict[Pair, tuple[RegionHint, ...]]) -> dict[Pair, Match]:
        """Verify blocks of pairs on `workers` threads. A thread reads the stored copies of its
        block's photos in one query (those not computed yet in this run: a block's worth in memory,
        whatever the library's size), and the keypoints are shared through `self.features`."""
        from concurrent.futures import ThreadPoolExecutor

        todo = sorted(todo)  # a block then shares its first photos, and the cache holds them
        blocks = [todo[start : start + POOL_BLOCK] for start in range(0, len(todo), POOL_BLOCK)]

        computing: dict[int, threading.Lock] = {}

        def features(i: int) -> Features | None:
            with computing.setdefault(i, threading.Lock()):  # a photo two threads want is computed once
                return self.features(i)

        def verify_block(block: list[Pair]) -> list[Match | None]:
            import faiss

            faiss.omp_set_num_threads(1)  # this thread's own setting (OpenMP's is per thread): one core each
            self.block.blobs = self._blobs({i for p in block for i in p} - self.computed)
            out: list[Match | None] = []
            try:
                for a, b in block:
                    fa, fb = features(a), features(b)
                    out.append(verify_hinted(fa, fb, hints.get((a, b), ())) if fa is not None and fb is not None
                               else None)
            finally:
                self.block.blobs = {}
            return out

        out: dict[Pair, Match] = {}
        pool = ThreadPoolExecutor(min(self.workers, len(blocks)), thread_name_prefix="verify")
        try:
            for block, results in zip(blocks, pool.map(verify_block, blocks), strict=True):
                for pair, match in zip(block, results, strict=True):
                    if match is None:  # unreadable now: not remembered, it may be readable next time
                        out[pair] = Match(0, 0.0)
                        continue
                    self._remember(*pair, match)
                    out[pair] = match
                progress(len(out))
        finally:  # Ctrl+C: the blocks being verified finish, the others never start
            pool.shutdown(wait=True, cancel_futures=True)
        return out

    def save(self) -> None:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        from indexer.schema import CopyVerdict

        if not self.new or self.library.read_only:  # a read-only library verifies again next time
            return
        rows = [dict(hash_a=ha, hash_b=hb, inliers=m.inliers, correlation=m.correlation, aligned=m.aligned,
                     centre=m.centre, spread=m.spread, transform=m.transform, exact=m.exact, version=VERIFY_VERSION)
                for (ha, hb), m in self.new.items()]
        upsert = sqlite_insert(CopyVerdict)
        upsert = upsert.on_conflict_do_update(
            index_elements=[CopyVerdict.hash_a, CopyVerdict.hash_b],
            set_={k: upsert.excluded[k]
                  for k in ("inliers", "correlation", "aligned", "centre", "spread", "transform", "exact", "version")},
        )
        with self.library.Session.begin() as s:
            for start in range(0, len(rows), 5000):
                s.execute(upsert, rows[start : start + 5000])
        self.stored.update(self.new)
        self.new = {}
