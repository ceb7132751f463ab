"""The labelling queue's k-means clusters of every indexed photo, stored beside the library and
kept current by difference after each index run."""

from __future__ import annotations

import json

import numpy as np
import numpy.typing as npt

from indexer.library import Library
from indexer.npz import read_npz, write_npz
from search.labelling.queue_order import Clusters, assign, cluster_count, fit_centres, sample_positions

CLUSTERS_FILE = "queue_clusters.npz"  # the queue's k-means, beside the library's SQLite file
REFIT_SHARE = 0.8  # refit the clusters once fewer than this share of photos were there when fitted


def current_clusters(
    library: Library, cached: tuple[list[str], Clusters] | None
) -> tuple[list[str], Clusters]:
    """(vectors fingerprint, clusters) of the library's photos now; `cached` when still current.

    From CLUSTERS_FILE, brought up to date by difference: photos added since are assigned to the
    stored centres, removed ones dropped; refitted when the cluster count the size asks for changes
    or most photos are new. A million photos: 30 s to fit, then milliseconds."""
    fingerprint = library.vectors_fingerprint()
    if cached is not None and cached[0] == fingerprint:
        return cached
    ids = library.indexed_ids()
    stored = load_clusters(library.path / CLUSTERS_FILE)
    if stored is not None and stored[0] == fingerprint:
        clusters = stored[2]
    elif (stored is not None and len(stored[1]) == cluster_count(len(ids))
          and np.isin(ids, stored[2].ids).mean() >= REFIT_SHARE):
        centres, old = stored[1], stored[2]
        keep = np.isin(old.ids, ids)
        new = np.setdiff1d(ids, old.ids)
        added = assign(centres, [library.stored_vectors(new)] if len(new) else [])
        clusters = merge_clusters(Clusters(old.ids[keep], old.cluster[keep], old.closeness[keep]), added)
        save_clusters(library.path / CLUSTERS_FILE, fingerprint, centres, clusters)
    else:  # fitted on a sample, then every vector assigned chunk by chunk: never all in memory
        positions = sample_positions(len(ids))
        _, sample = library.stored_vectors(ids[positions] if positions is not None else ids)
        centres = fit_centres(sample, cluster_count(len(ids)))
        clusters = assign(centres, library.iter_vectors())
        save_clusters(library.path / CLUSTERS_FILE, fingerprint, centres, clusters)
    return fingerprint, clusters


def save_clusters(path, fingerprint: list[str], centres: npt.NDArray[np.float32], clusters: Clusters) -> None:
    write_npz(path, {"fingerprint": np.array(json.dumps(fingerprint)), "centres": centres, "ids": clusters.ids,
                     "cluster": clusters.cluster, "closeness": clusters.closeness})


def load_clusters(path) -> tuple[list[str], npt.NDArray[np.float32], Clusters] | None:
    """(fingerprint, centres, clusters) as saved; None when there is none or it is damaged (then refitted)."""
    return read_npz(path, lambda f: (json.loads(str(f["fingerprint"])), f["centres"],
                                     Clusters(f["ids"], f["cluster"], f["closeness"])))


def merge_clusters(a: Clusters, b: Clusters) -> Clusters:
    ids = np.concatenate([a.ids, b.ids])
    order = np.argsort(ids, kind="stable")
    return Clusters(ids[order], np.concatenate([a.cluster, b.cluster])[order],
                    np.concatenate([a.closeness, b.closeness])[order])
