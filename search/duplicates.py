"""Near-duplicate groups: pairs above a cosine threshold (FAISS range search), joined into components."""

from __future__ import annotations

from dataclasses import dataclass

from indexer.library import Library

# Measured with the default backbone (EfficientNet-Lite0): on shared/corpora/neardup every threshold
# from 0.45 up has precision 1.0, and group recall stays on a plateau (0.746 without flips and
# rotations, 0.593 with them) from 0.88 to 0.95. On clothing_small, distinct garments shot the same
# way reach 0.948 (80 pairs above 0.90); above 0.95 only its one real duplicate remains. So 0.95:
# the top of the plateau, clear of look-alike products. Grayscale copies and small thumbnails
# (0.71-0.87) need --threshold 0.85 or lower.
DEFAULT_THRESHOLD = 0.95
_CHUNK = 1024


@dataclass(frozen=True)
class DuplicateGroup:
    image_ids: list[int]  # ascending
    pairs: list[tuple[int, int, float]]  # (smaller id, larger id, cosine), most similar first


def find_pairs(library: Library, threshold: float) -> list[tuple[int, int, float]]:
    """Every pair of indexed images with cosine above `threshold`, each once, most similar first.

    Uses the library's index: exact while it is flat, approximate (missing some pairs) beyond.
    """
    if not -1.0 <= threshold <= 1.0:
        raise ValueError("threshold is a cosine similarity between -1 and 1")
    index = library.load_vectors()
    ids, vectors = library.stored_vectors()
    pairs: list[tuple[int, int, float]] = []
    if index.ntotal == 0 or not len(ids):
        return pairs
    for start in range(0, len(ids), _CHUNK):
        lims, scores, found = index.range_search(vectors[start : start + _CHUNK], threshold)
        for row, a in enumerate(ids[start : start + _CHUNK]):
            a = int(a)
            for score, b in zip(
                scores[lims[row] : lims[row + 1]], found[lims[row] : lims[row + 1]], strict=False
            ):
                if b > a:  # each pair once, never an image with itself
                    pairs.append((a, int(b), float(score)))
    pairs.sort(key=lambda p: (-p[2], p[0], p[1]))
    return pairs


def group_pairs(pairs: list[tuple[int, int, float]]) -> list[DuplicateGroup]:
    """Connected components of the pair graph, largest first (then by best score, then ids)."""
    parent: dict[int, int] = {}

    def root(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    for a, b, _ in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    members: dict[int, list[int]] = {}
    for x in list(parent):
        members.setdefault(root(x), []).append(x)
    edges: dict[int, list[tuple[int, int, float]]] = {r: [] for r in members}
    for pair in pairs:
        edges[root(pair[0])].append(pair)
    groups = [
        DuplicateGroup(sorted(members[r]), sorted(edges[r], key=lambda p: (-p[2], p[0], p[1])))
        for r in members
    ]
    groups.sort(key=lambda g: (-len(g.image_ids), -g.pairs[0][2], g.image_ids[0]))
    return groups


def find_duplicates(library: Library, threshold: float | None = None) -> list[DuplicateGroup]:
    """Near-duplicate groups among the indexed images, largest first."""
    return group_pairs(find_pairs(library, DEFAULT_THRESHOLD if threshold is None else threshold))
