"""Near-duplicate groups in two tiers: copies of one photo, and similar shots.

    candidates: PDQ hash pairs within HASH_CANDIDATE bits (FAISS binary range search; the mirror
                hash and the hash without plain borders included) + each photo's nearest
                embeddings above COSINE_CANDIDATE (FAISS search) + photos whose hash or mirror hash
                is within REGION_CANDIDATE bits of a stored region of another (a heavy crop)
    copies:     hash distance <= HASH_SURE (both hashes informative), or ORB + RANSAC verification
                (search/duplicates/verify.py) finds >= MIN_INLIERS matches agreeing on one transform,
                or a crop its region hash nominated is found there by its pixels (locate.py),
                or a RAW and the camera's JPEG of one shot (search/duplicates/raw_pairs.py);
                a verified copy that alone joins two groups must pass on more than graphics other
                photos share (search/duplicates/shared.py)
    similar:    embedding pairs above SIMILAR_THRESHOLD that are not copies
    groups:     connected components of the remaining pairs, largest first

Pairs a person dismissed as "not duplicates" (search/duplicates/review.py) are dropped before grouping.
The thresholds come from `python -m bench.duplicates` (BENCHMARKS.md, "Near-duplicates").
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from indexer.hashes import HASH_BYTES
from indexer.library import Library
from search.duplicates.locate import RegionHint
from search.duplicates.shared import drop_shared_graphics
from search.duplicates.stored import VERIFY_VERSION, StoredVerifier  # noqa: F401 (re-exported)
from search.duplicates.verify import MIN_CORRELATION, MIN_INLIERS, judge, rule  # noqa: F401 (re-exported)
from search.neighbour_lists import stored_pairs

if TYPE_CHECKING:
    from search.duplicates.verify import Match

log = logging.getLogger(__name__)

COPIES = "copies"
SIMILAR = "similar"
KINDS = (COPIES, SIMILAR)

# The old single-threshold method's cosine: the bench's baseline, and what the labelling queue counts as
# a near-duplicate of a labelled photo (search/labelling/queue_order.py). The similar tier's default is
# SIMILAR_THRESHOLD below.
# On clothing_small distinct garments shot the same way reach cosine 0.948; its one real duplicate is 1.0.
DEFAULT_THRESHOLD = 0.95
# Similar shots: bursts and the same scene moments apart. Below ~0.90 different garments photographed
# alike on clothing_small start to join (80 pairs of them above 0.90): a judgement, see docs/design.md.
SIMILAR_THRESHOLD = 0.90


def check_similar_threshold(value: float) -> float:
    """The similar tier's cosine threshold, checked: in (0, 1], the one range the CLI and the web
    accept (at 0 or below nearly every pair is "similar"). Raises ValueError saying so."""
    if not 0.0 < value <= 1.0:  # NaN fails too
        raise ValueError(f"threshold must be a cosine in (0, 1], not {value:g}")
    return value

# PDQ Hamming distances (of 256 bits; the smaller of photo-photo and mirror-photo). Measured on edited
# copies of clothing_small photos among same-class look-alikes (bench/duplicates.py): every copy the
# hash can see (re-encoded, gray, squashed, thumbnail, blurred, recoloured, mirrored) is within
# HASH_SURE, and the closest look-alike pair was further than that.
HASH_SURE = 40
HASH_CANDIDATE = 90  # up to here a hash match only nominates the pair for verification
MIN_QUALITY = 30  # PDQ quality below this: a nearly flat image, whose hash matches too much
# Embedding candidates: each photo's EMBED_NEIGHBOURS nearest above COSINE_CANDIDATE are verified.
# A 70 % corner crop or a letterboxed copy can fall to cosine ~0.65 with its original.
COSINE_CANDIDATE = 0.60
EMBED_NEIGHBOURS = 8
REGION_HASHES = 10  # the stored hashes of regions of the photo (indexer/features.py REGIONS)
REGION_CANDIDATE = 80  # a photo this close to a region of another is verified as its crop
TURN_HASHES = 3  # the stored hashes of the photo turned by 90, 180 and 270 degrees (indexer/features.py)
HASH_FLAT_MAX = 20_000  # exact binary search up to here; above, buckets on the steadiest bits
HASH_BUCKET_BITS = 16
_CHUNK = 1024
PROGRESS_EVERY = 64  # candidate pairs between progress reports
LIST_PAIRS = 20  # the similar tier's pairs per photo when the stored neighbour lists give them


@dataclass(frozen=True)
class Pair:
    """Why two photos are in a group. `score` is the embedding cosine (nan when one has no vector)."""

    a: int  # the smaller id
    b: int
    score: float
    hash_distance: int | None = None  # PDQ bits that differ, the mirror included
    inliers: int | None = None  # verified keypoint matches, when verification ran
    correlation: float | None = None  # of the aligned pixels, when verification ran
    why: str | None = None  # in words: the rule that made the pair a copy, or the similar shots one moment


@dataclass(frozen=True)
class DuplicateGroup:
    image_ids: list[int]  # ascending
    pairs: list[Pair]  # the pairs that joined it, most similar first
    kind: str = COPIES


@dataclass
class Candidates:
    """Every candidate pair, keyed (a, b) with a < b, and what each signal said about it."""

    cosine: dict[tuple[int, int], float] = field(default_factory=dict)
    hash_distance: dict[tuple[int, int], int] = field(default_factory=dict)
    region: dict[tuple[int, int], int] = field(default_factory=dict)  # a photo near a region of the other
    hints: dict[tuple[int, int], tuple[RegionHint, ...]] = field(default_factory=dict)  # ... near which
    low_quality: set[int] = field(default_factory=set)  # ids whose hash says little
    missing_signals: int = 0  # indexed photos without hashes (indexed before they existed)


# -- embeddings -----------------------------------------------------------------------------------------


def find_pairs(library: Library, threshold: float) -> list[tuple[int, int, float]]:
    """Every pair of indexed images with cosine above `threshold`, each once, most similar first.

    Uses the library's index: exact while it is flat, approximate (missing some pairs) beyond.
    Once the stored neighbour lists are current, they answer instead (each photo's LIST_PAIRS
    nearest: a crowd of look-alikes still joins one group through them).
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError("threshold is a cosine similarity between -1 and 1")
    stored = stored_pairs(library, threshold, LIST_PAIRS)
    if stored is not None:
        return sorted(((a, b, score) for (a, b), score in stored.items()), key=lambda p: (-p[2], p[0], p[1]))
    index = library.load_vectors()
    ids, vectors = library.stored_vectors()
    pairs: list[tuple[int, int, float]] = []
    if index.ntotal == 0 or not len(ids):
        return pairs
    for start in range(0, len(ids), _CHUNK):
        lims, scores, found = index.range_search(vectors[start : start + _CHUNK], threshold)
        rows = np.repeat(ids[start : start + _CHUNK], np.diff(lims).astype(np.int64))
        keep = found > rows  # each pair once, never an image with itself
        pairs.extend(zip(rows[keep].tolist(), found[keep].tolist(), scores[keep].tolist(), strict=True))
    pairs.sort(key=lambda p: (-p[2], p[0], p[1]))
    return pairs


# -- hashes ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hashes:
    """The stored PDQ hashes of indexed photos, as [n, 32] byte arrays in id order."""

    ids: npt.NDArray[np.int64]
    codes: npt.NDArray[np.uint8]
    mirrors: npt.NDArray[np.uint8]
    quality: npt.NDArray[np.int32]
    trim_ids: npt.NDArray[np.int64]  # the photos with plain borders ...
    trims: npt.NDArray[np.uint8]  # ... and the hashes of their content without them
    turn_ids: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))  # photos with ...
    turns: npt.NDArray[np.uint8] = field(default_factory=lambda: np.zeros((0, HASH_BYTES), np.uint8))  # ... turn hashes
    region_ids: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))  # photos with ...
    regions: npt.NDArray[np.uint8] = field(default_factory=lambda: np.zeros((0, HASH_BYTES), np.uint8))  # ... regions


def stored_hashes(library: Library) -> Hashes:
    from sqlalchemy import select

    from indexer.schema import INDEXED, Image, ImageFeaturesRow, ImageSignalsRow

    stmt = (
        select(ImageSignalsRow.image_id, ImageSignalsRow.pdq, ImageSignalsRow.pdq_mirror, ImageSignalsRow.quality,
               ImageSignalsRow.pdq_trim)
        .join(Image, Image.id == ImageSignalsRow.image_id)
        .where(Image.status == INDEXED)
        .order_by(ImageSignalsRow.image_id)
    )
    with library.Session() as s:
        rows = s.execute(stmt).all()
        turned = s.execute(
            select(ImageFeaturesRow.image_id, ImageFeaturesRow.turns, ImageFeaturesRow.regions)
            .join(Image, Image.id == ImageFeaturesRow.image_id)
            .where(Image.status == INDEXED)
            .order_by(ImageFeaturesRow.image_id)
        ).all()

    def codes(blobs: list[bytes]) -> npt.NDArray[np.uint8]:
        return np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(blobs), HASH_BYTES)

    # A damaged row (a blob of another length) is left out, and counted among the photos without
    # signals: the next `lookalike index` computes them again (indexer.hashes.missing_signals).
    whole = [r for r in rows
             if len(r[1]) == HASH_BYTES == len(r[2]) and (r[4] is None or len(r[4]) == HASH_BYTES)]
    turned = [r for r in turned
              if len(r[1]) == TURN_HASHES * HASH_BYTES and len(r[2]) == REGION_HASHES * HASH_BYTES]
    if len(whole) < len(rows):
        log.warning("%d photos' stored duplicate hashes are damaged: left out until `lookalike index` "
                    "computes them again", len(rows) - len(whole))
    rows = whole

    trimmed = [(r[0], r[4]) for r in rows if r[4] is not None]
    return Hashes(
        np.asarray([r[0] for r in rows], dtype=np.int64),
        codes([r[1] for r in rows]),
        codes([r[2] for r in rows]),
        np.asarray([r[3] for r in rows], dtype=np.int32),
        np.asarray([i for i, _ in trimmed], dtype=np.int64),
        codes([blob for _, blob in trimmed]),
        np.repeat(np.asarray([r[0] for r in turned], dtype=np.int64), TURN_HASHES),
        codes([r[1][k : k + HASH_BYTES] for r in turned for k in range(0, TURN_HASHES * HASH_BYTES, HASH_BYTES)]),
        np.repeat(np.asarray([r[0] for r in turned], dtype=np.int64), REGION_HASHES),
        codes([r[2][k : k + HASH_BYTES] for r in turned for k in range(0, REGION_HASHES * HASH_BYTES, HASH_BYTES)]),
    )


def _binary_index(codes: npt.NDArray[np.uint8], flat: bool):
    """Exact Hamming search while it is cheap; beyond HASH_FLAT_MAX, FAISS's IndexBinaryHash, which
    only compares codes whose first HASH_BUCKET_BITS bits are within one flip of the query's."""
    import faiss

    if flat:
        index = faiss.IndexBinaryFlat(HASH_BYTES * 8)
        index.add(codes)
        return index
    buckets = faiss.IndexBinaryHash(HASH_BYTES * 8, HASH_BUCKET_BITS)
    buckets.nflip = 1
    buckets.add(codes)
    return buckets


def _steady_first(codes: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Bits reordered so the lowest DCT frequencies (which edits change least) come first: the
    buckets of IndexBinaryHash then key on them. PDQ's bits are the 16x16 coefficients, row-major."""
    bits = np.unpackbits(codes, axis=1)
    return np.packbits(bits[:, _STEADY_ORDER], axis=1)


# Coefficient (row, col) sorted by row + col, the lowest frequencies first.
_STEADY_ORDER = np.array(sorted(range(256), key=lambda i: (i // 16 + i % 16, i)), dtype=np.int64)


def hash_pairs(hashes: Hashes, radius: int) -> dict[tuple[int, int], int]:
    """{(a, b): distance} for photos whose hashes differ in at most `radius` bits: photo against
    photo, mirrored photo against photo, photo turned by 90, 180 or 270 degrees against photo, and for
    photos with plain borders, content against content and content against photo (a letterboxed copy
    meets its original there)."""
    out: dict[tuple[int, int], int] = {}
    if len(hashes.ids) < 2:
        return out
    # One index holds every photo's hash and every bordered photo's content hash; the queries are
    # the hashes, the mirror hashes and the content hashes.
    base_ids = np.concatenate([hashes.ids, hashes.trim_ids])
    base = np.concatenate([hashes.codes, hashes.trims])
    query_ids = np.concatenate([hashes.ids, hashes.ids, hashes.trim_ids, hashes.turn_ids])
    queries = np.concatenate([hashes.codes, hashes.mirrors, hashes.trims, hashes.turns])
    return _range_pairs(base_ids, base, query_ids, queries, radius)


def region_pairs(hashes: Hashes, radius: int) -> dict[tuple[int, int], tuple[int, tuple[RegionHint, ...]]]:
    """{(a, b): (distance, hints)} for photos one of which, whole or mirrored, is within `radius` bits
    of a region of the other (indexer/features.py REGIONS): a heavy crop and its original, the crop
    perhaps mirrored. Each hint says which photo is the crop, near which region, and whether mirrored
    (search/duplicates/locate.py looks for it there), nearest first; distance is the nearest's. Only
    candidates for verification.

    A mirrored crop needs no hash of its own: each photo's mirror hash is stored beside its hash."""
    found_near: dict[tuple[int, int], list[tuple[int, RegionHint]]] = {}
    if len(hashes.ids) < 2 or not len(hashes.region_ids):
        return {}
    n = len(hashes.ids)
    base = np.concatenate([hashes.codes, hashes.mirrors])
    flat = 2 * n <= HASH_FLAT_MAX
    queries = hashes.regions
    if not flat:
        base, queries = _steady_first(base), _steady_first(queries)
    index = _binary_index(np.ascontiguousarray(base), flat)
    step = _CHUNK * 16
    for start in range(0, len(hashes.region_ids), step):
        # FAISS's binary range search keeps distances strictly below the radius given.
        lims, dist, found = index.range_search(np.ascontiguousarray(queries[start : start + step]), radius + 1)
        rows = np.repeat(np.arange(start, min(start + step, len(hashes.region_ids))), np.diff(lims).astype(np.int64))
        for row, hit, d in zip(rows.tolist(), found.tolist(), dist.tolist(), strict=True):
            owner, crop = int(hashes.region_ids[row]), int(hashes.ids[hit % n])
            if owner != crop:
                key = (crop, owner) if crop < owner else (owner, crop)
                found_near.setdefault(key, []).append((int(d), RegionHint(crop < owner, row % REGION_HASHES, hit >= n)))
    out = {}
    for key, near in found_near.items():
        near.sort()
        out[key] = (near[0][0], tuple(hint for _, hint in near))
    return out


def _range_pairs(base_ids, base, query_ids, queries, radius: int) -> dict[tuple[int, int], int]:
    out: dict[tuple[int, int], int] = {}
    flat = len(base_ids) <= HASH_FLAT_MAX
    if not flat:
        base, queries = _steady_first(base), _steady_first(queries)
    index = _binary_index(np.ascontiguousarray(base), flat)
    step = _CHUNK * 16
    for start in range(0, len(query_ids), step):
        # FAISS's binary range search keeps distances strictly below the radius given.
        lims, dist, found = index.range_search(np.ascontiguousarray(queries[start : start + step]), radius + 1)
        rows = np.repeat(query_ids[start : start + step], np.diff(lims).astype(np.int64))
        other = base_ids[found]
        keep = rows != other
        for a, b, d in zip(rows[keep].tolist(), other[keep].tolist(), dist[keep].tolist(), strict=True):
            key = (a, b) if a < b else (b, a)
            if d < out.get(key, radius + 1):
                out[key] = int(d)
    return out


# -- candidates, verification, tiers -------------------------------------------------------------------


def embedding_pairs(library: Library, min_cosine: float, k: int) -> dict[tuple[int, int], float]:
    """{(a, b): cosine} for each photo's k nearest neighbours above `min_cosine` (a FAISS search of
    the library's index: a range search bounded to k per photo, so a crowd of look-alikes costs
    at most k verifications per photo). The stored neighbour lists answer once they are current."""
    stored = stored_pairs(library, min_cosine, k)
    if stored is not None:
        return stored
    index = library.load_vectors()
    ids, vectors = library.stored_vectors()
    out: dict[tuple[int, int], float] = {}
    if index.ntotal < 2 or not len(ids):
        return out
    for start in range(0, len(ids), _CHUNK):
        scores, found = index.search(vectors[start : start + _CHUNK], k + 1)
        rows = np.repeat(ids[start : start + _CHUNK], found.shape[1])
        found, scores = found.ravel(), scores.ravel()
        keep = (found >= 0) & (found != rows) & (scores >= min_cosine)
        for a, b, score in zip(rows[keep].tolist(), found[keep].tolist(), scores[keep].tolist(), strict=True):
            out[(a, b) if a < b else (b, a)] = score
    return out


def candidates(library: Library, *, cosine: float = COSINE_CANDIDATE, radius: int = HASH_CANDIDATE,
               k: int = EMBED_NEIGHBOURS) -> Candidates:
    """Candidate pairs from both signals, with the embedding cosine of every hash pair filled in."""
    cand = Candidates()
    cand.cosine = embedding_pairs(library, cosine, k)
    hashes = stored_hashes(library)
    cand.missing_signals = max(0, library.counts()["indexed"] - len(hashes.ids))
    if cand.missing_signals:
        log.warning(
            "%d photos have no duplicate signals (indexed before they existed): run `lookalike index` "
            "to add them; until then only their embeddings find copies", cand.missing_signals
        )
    cand.low_quality = set(hashes.ids[hashes.quality < MIN_QUALITY].tolist())
    cand.hash_distance = hash_pairs(hashes, radius)
    regions = region_pairs(hashes, REGION_CANDIDATE)
    cand.region = {key: d for key, (d, _) in regions.items()}
    cand.hints = {key: hints for key, (_, hints) in regions.items()}
    _fill_cosines(library, cand)
    return cand


def _fill_cosines(library: Library, cand: Candidates) -> None:
    todo = [p for p in {*cand.hash_distance, *cand.region} if p not in cand.cosine]
    if not todo:
        return
    wanted = sorted({i for p in todo for i in p})
    ids, vectors = library.stored_vectors(wanted)
    row = {int(i): n for n, i in enumerate(ids)}
    for a, b in todo:
        if a in row and b in row:
            cand.cosine[(a, b)] = float(vectors[row[a]] @ vectors[row[b]])


Verifier = Callable[[int, int], "Match"]


def file_verifier(library: Library) -> StoredVerifier:
    """The verifier `find_tiers` uses: stored signals, the file only for a photo indexed without them."""
    return StoredVerifier(library)


def copy_pairs(cand: Candidates, verify: Verifier | None,
               progress: Callable[[int, int], None] | None = None) -> list[Pair]:
    """The candidate pairs that are copies: sure by hash, or verified. Without a verifier only the
    hash decides. `progress(done, total)` hears how far it is, every PROGRESS_EVERY pairs. A verifier
    with a `many(pairs, progress, hints)` method verifies the whole batch at once (on all cores), and
    looks for a crop near the region its hash met (`Candidates.hints`, search/duplicates/locate.py)."""
    out = []
    todo: list[tuple[int, int]] = []
    keys = sorted(set(cand.cosine) | set(cand.hash_distance) | set(cand.region))
    for key in keys:
        a, b = key
        score = cand.cosine.get(key, math.nan)
        d = cand.hash_distance.get(key)
        informative = a not in cand.low_quality and b not in cand.low_quality
        if d is not None and d <= HASH_SURE and informative:
            out.append(Pair(a, b, score, d, why=f"the whole photos' PDQ hashes differ in {int(d)} of 256 bits"))
            continue
        if verify is None or not ((d is not None and informative) or score >= COSINE_CANDIDATE
                                  or key in cand.region):
            continue
        todo.append(key)
    if verify is None or not todo:
        return out
    many = getattr(verify, "many", None)
    if many is not None:
        verdicts = many(todo, progress, {key: cand.hints[key] for key in todo if key in cand.hints})
    else:
        verdicts = {}
        for done, key in enumerate(todo):
            if progress is not None and done % PROGRESS_EVERY == 0:
                progress(done, len(todo))
            verdicts[key] = verify(*key)
    by_keypoints = {}  # the pairs keypoint matches made copies: (the transform, the matches the rule needs)
    for key in todo:
        match = verdicts[key]
        why, needed = rule(match)
        if why:
            out.append(Pair(key[0], key[1], cand.cosine.get(key, math.nan), cand.hash_distance.get(key),
                            match.inliers, round(match.correlation, 4), why))
            if needed:
                by_keypoints[key] = (match.transform, needed)
    if by_keypoints and isinstance(verify, StoredVerifier):
        out = drop_shared_graphics(out, by_keypoints, verify, keys)
    out.sort(key=lambda p: (p.a, p.b))
    return out


def group_pairs(pairs: Iterable[Pair], kind: str = COPIES) -> list[DuplicateGroup]:
    """Connected components of the pair graph, largest first (then by best score, then ids)."""
    pairs = list(pairs)
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    for p in pairs:
        ra, rb = root(p.a), root(p.b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[int]] = {}
    for x in list(parent):
        members.setdefault(root(x), []).append(x)
    edges: dict[int, list[Pair]] = {r: [] for r in members}
    for p in pairs:
        edges[root(p.a)].append(p)

    def strength(p: Pair) -> tuple:
        return (-_rank(p), p.a, p.b)

    groups = [DuplicateGroup(sorted(members[r]), sorted(edges[r], key=strength), kind) for r in members]
    groups.sort(key=lambda g: (-len(g.image_ids), -_rank(g.pairs[0]), g.image_ids[0]))
    return groups


def _rank(p: Pair) -> float:
    return -1.0 if math.isnan(p.score) else p.score


@dataclass(frozen=True)
class Tiers:
    """Both tiers' pairs (before dismissals), and how many photos lacked hashes."""

    copies: list[Pair]
    similar: list[Pair]
    missing_signals: int

    def pairs(self, kind: str) -> list[Pair]:
        return self.copies if kind == COPIES else self.similar


def find_tiers(library: Library, *, similar_threshold: float = SIMILAR_THRESHOLD, verify: bool = True,
               progress: Callable[[int, int], None] | None = None) -> Tiers:
    """Copy pairs and similar-shot pairs of the whole library (verification reads the signals stored
    at index time); `progress(done, total)` follows the candidate pairs. Similar shots are the
    embedding pairs above `similar_threshold` that are one moment (search/duplicates/moments.py)."""
    from search.duplicates.moments import moment_pairs, separate_exposures

    check_similar_threshold(similar_threshold)
    cand = candidates(library)
    verifier = file_verifier(library) if verify else None
    copies = copy_pairs(cand, verifier, progress)
    exposures = separate_exposures(library, copies)  # a burst's frames: similar shots, not copies
    copies = [p for p in copies if (p.a, p.b) not in exposures]
    similar = [
        Pair(a, b, s, cand.hash_distance.get((a, b))) for a, b, s in find_pairs(library, similar_threshold)
    ]
    copies += shot_pairs(library, cand, {(p.a, p.b) for p in copies})
    aliases = one_file_aliases(library, {i for p in (*copies, *similar) for i in (p.a, p.b)})
    copies = onto_files(copies, aliases)
    copied = {(p.a, p.b) for p in copies}
    similar = [p for p in onto_files(similar, aliases) if (p.a, p.b) not in copied]
    similar = moment_pairs(library, similar, verifier.many if verifier is not None else None)
    if verifier is not None:
        verifier.save()
        verifier.release()
    return Tiers(copies, similar, cand.missing_signals)


def shot_pairs(library: Library, cand: Candidates, known: set[tuple[int, int]]) -> list[Pair]:
    """Each RAW+JPEG pair (search/duplicates/raw_pairs.py) not among `known`, as a copies pair."""
    from search.duplicates.raw_pairs import WHY, raw_pairs

    return [
        Pair(a, b, cand.cosine.get((a, b), math.nan), cand.hash_distance.get((a, b)), why=WHY)
        for a, b in raw_pairs(library) if (a, b) not in known
    ]


def onto_files(pairs: list[Pair], aliases: dict[int, int]) -> list[Pair]:
    """The pairs with every alias replaced by the path kept for its file, each pair of two files once
    (the first of them), none of a file with itself. A copy that met only an alias of its original
    (a folder of hard-linked snapshots crowds a photo's nearest neighbours with one file) still joins
    the original's group."""
    if not aliases:
        return pairs
    out: dict[tuple[int, int], Pair] = {}
    for p in pairs:
        a, b = aliases.get(p.a, p.a), aliases.get(p.b, p.b)
        if a != b:
            key = (a, b) if a < b else (b, a)
            out.setdefault(key, replace(p, a=key[0], b=key[1]))
    return list(out.values())


def one_file_aliases(library: Library, ids: set[int]) -> dict[int, int]:
    """{alias: the path kept} for those of these photos that are another path to one file also among
    them: a symlink (or a path through a linked folder) to it, or a second hard link. They are not
    copies and join no group, so a review never keeps a link while moving its target away. Of the
    paths to one file the one kept in groups is reached without a link if any, else the shortest."""
    from sqlalchemy import select

    from indexer.schema import Image

    root = library.root
    if root is None or not ids:
        return {}
    wanted = sorted(ids)
    paths: dict[int, str] = {}
    with library.Session() as s:
        for start in range(0, len(wanted), 500):
            part = wanted[start : start + 500]
            paths.update(s.execute(select(Image.id, Image.path).where(Image.id.in_(part))).all())
    real_root = os.path.realpath(root)
    by_file: dict[tuple[int, int], list[tuple[bool, int, str, int]]] = {}
    for image_id, path in paths.items():
        full = os.path.join(real_root, path)
        try:
            st = os.stat(full)
        except OSError:
            continue  # gone: nothing to protect
        linked = os.path.realpath(full) != full
        by_file.setdefault((st.st_dev, st.st_ino), []).append((linked, len(path), path, image_id))
    aliases: dict[int, int] = {}
    for names in by_file.values():
        if len(names) > 1:
            names.sort()
            aliases.update((image_id, names[0][-1]) for *_, image_id in names[1:])
            log.info("one file under %d paths, not copies: %s", len(names), ", ".join(n[2] for n in names))
    return aliases


def find_duplicates(
    library: Library, threshold: float | None = None, *, kind: str = COPIES, dismissed: set | None = None
) -> list[DuplicateGroup]:
    """Groups of one tier among the indexed images, largest first. `threshold` is the similar tier's
    cosine; `dismissed` holds pairs (a, b) to leave out (search/review.py `dismissed_pairs`)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    tiers = find_tiers(library, similar_threshold=SIMILAR_THRESHOLD if threshold is None else threshold)
    return groups_of(tiers, kind, dismissed)


def groups_of(tiers: Tiers, kind: str, dismissed: set | None = None) -> list[DuplicateGroup]:
    dismissed = dismissed or set()
    return group_pairs((p for p in tiers.pairs(kind) if (p.a, p.b) not in dismissed), kind)
