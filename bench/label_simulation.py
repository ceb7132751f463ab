"""How many hand labels a person needs: a simulated labeller on a class-per-folder corpus.

python -m bench.label_simulation [--library DIR] [--photos DIR] [--round 0.015] [--json]

The photos are indexed once into --library (reused when it exists) and labelled by folder: those
labels are the truth. The simulation then works on the stored vectors only. In rounds of --round of
the collection, the person labels (correctly) the photos the queue shows first; every other photo
takes its suggestion. After each round we count the photos whose label (hand or suggested) is
right, and report how many hand labels it took to reach 90, 95 and 98 % of the collection, for:
  random   + k-NN     (the baseline: no queue)
  margin   + k-NN     (today's queue: lowest margin first, photos with no vote last)
  coverage + learned  (search.labelling.queue_order + the head chosen by cross-validation, search.labelling.labeller)
  coverage + spreading (the same, with label spreading over the neighbour lists among the methods:
                        search.labelling.spreading, what the labeller does from 500 photos on)
k-NN is today's labeller: each photo's 20 nearest photos, the labelled ones voting exp(sim / 0.07).
It also reports accuracy on the unlabelled rest with 10 labels per class (search.labelling.compare.few_labels).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench.corpus import CLOTHING_SMALL
from search.labelling.learned_head import GRAPH_METHODS, train_head
from search.labelling.queue_order import kmeans, queue_order
from search.labelling.spreading import Graph, build_graph, spread
from search.labelling.vote import DEFAULT_K, DEFAULT_TEMPERATURE, vote_shares

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = CLOTHING_SMALL
DEFAULT_LIBRARY = Path("/tmp/lookalike-bench/clothing_small-library")
TARGETS = (0.90, 0.95, 0.98)
STRATEGIES = (("random", "knn"), ("margin", "knn"), ("coverage", "learned"), ("coverage", "spreading"))


@dataclass
class Run:
    queue: str
    model: str
    curve: list[tuple[int, float]] = field(default_factory=list)  # (hand labels, share correct)
    train_seconds: list[float] = field(default_factory=list)

    def needed(self, target: float) -> int | None:
        return next((n for n, correct in self.curve if correct >= target - 1e-12), None)


def neighbour_lists(vectors: npt.NDArray[np.float32], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each photo's k nearest other photos (ids = row numbers) and cosines, nearest first."""
    n = len(vectors)
    ids = np.zeros((n, k), dtype=np.int64)
    scores = np.zeros((n, k), dtype=np.float32)
    for start in range(0, n, 1024):
        sims = vectors[start : start + 1024] @ vectors.T
        sims[np.arange(len(sims)), np.arange(start, start + len(sims))] = -np.inf
        top = np.argpartition(-sims, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, top, 1), axis=1)
        ids[start : start + 1024] = np.take_along_axis(top, order, 1)
        scores[start : start + 1024] = np.take_along_axis(sims, ids[start : start + 1024], 1)
    return ids, scores


def stored_tally(nb_ids, nb_scores, codes_known, n_classes, temperature) -> np.ndarray:
    """Today's vote: the labelled among each photo's stored neighbours vote exp(sim / T)."""
    c = codes_known[nb_ids]  # -1: unlabelled neighbour
    voted = (c >= 0).ravel()
    rows = np.repeat(np.arange(len(nb_ids)), nb_ids.shape[1])
    return vote_shares(rows[voted], c.ravel()[voted], nb_scores.ravel()[voted], len(nb_ids), n_classes, temperature)


def simulate(
    vectors, truth, queue: str, model: str, round_size: int, nb, clusters, *, k=DEFAULT_K,
    temperature=DEFAULT_TEMPERATURE, seed=0, stop_at=TARGETS[-1], graph: Graph | None = None,
) -> Run:
    n = len(truth)
    n_classes = int(truth.max()) + 1
    nb_ids, nb_scores = nb
    rng = np.random.default_rng(seed)
    random_order = rng.permutation(n)
    labelled = np.zeros(n, bool)
    run = Run(queue, model)
    ids = np.arange(n, dtype=np.int64)
    while True:
        known = np.where(labelled, truth, -1)
        tally = stored_tally(nb_ids, nb_scores, known, n_classes, temperature)
        p = tally
        if model in ("learned", "spreading") and labelled.any():
            started = time.perf_counter()
            names = [str(c) for c in truth[labelled]]
            g = graph if model == "spreading" else None
            seeds = np.flatnonzero(labelled)  # graph nodes are row numbers
            head = train_head(vectors[labelled], names, k, temperature, seed=seed, graph=g,
                              nodes=seeds if g is not None else None)
            cols = np.array([int(c) for c in head.classes])
            local = {int(c): i for i, c in enumerate(cols)}
            lab_codes = np.array([local[int(c)] for c in truth[labelled]], dtype=np.int64)
            spread_p = None
            if g is not None and head.method in GRAPH_METHODS:
                spread_p = spread(g, seeds, lab_codes, len(cols), alpha=head.spread_alpha)
            run.train_seconds.append(time.perf_counter() - started)
            q = head.probabilities(vectors, tally[:, cols], vectors[labelled], lab_codes, spread_p)
            p = np.zeros((n, n_classes))
            p[:, cols] = q
        best = p.max(axis=1)
        pred = np.where(best > 0, p.argmax(axis=1), -1)
        correct = float(np.mean(labelled | (pred == truth)))
        run.curve.append((int(labelled.sum()), correct))
        log.info("%s+%s: %d hand labels, %.3f correct", queue, model, labelled.sum(), correct)
        if correct >= stop_at or labelled.all():
            return run
        candidates = ids[~labelled]
        second = -np.sort(-p, axis=1)[:, 1] if n_classes > 1 else np.zeros(n)
        margin = best - second
        if queue == "random":
            order = random_order[~labelled[random_order]]
        elif queue == "margin":
            no_vote = pred[candidates] < 0
            order = candidates[np.lexsort((candidates, margin[candidates], no_vote))]
        else:
            near = np.where(labelled[nb_ids[candidates]], nb_scores[candidates], -1).max(axis=1)
            order = queue_order(candidates, pred[candidates], margin[candidates], ids[labelled], clusters, near)
        labelled[order[:round_size]] = True


def load_corpus(library_path: Path, photos: Path):
    """(vectors, truth codes, class names) of the indexed corpus, indexing it first if needed."""
    from indexer.library import Library
    from search.labelling.labeller import labelled_set

    if not (library_path / "library.db").exists():
        from indexer.backbone import Backbone
        from indexer.pipeline import index_folder
        from search.labelling.labels import import_folders

        library_path.mkdir(parents=True, exist_ok=True)
        with Library(library_path, create=True) as lib:
            index_folder(photos, lib, Backbone("efficientnet_lite0"), batch_size=32, workers=None)
            import_folders(lib)
    with Library(library_path) as lib:
        data = labelled_set(lib)
    classes = sorted(set(data.labels))
    code = {c: i for i, c in enumerate(classes)}
    return data.vectors, np.array([code[lab] for lab in data.labels], dtype=np.int64), classes


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--library", type=Path, default=DEFAULT_LIBRARY)
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--round", type=float, default=0.015, help="share of the collection labelled per round")
    parser.add_argument("--labels-per-class", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    from search.labelling.compare import few_labels

    vectors, truth, classes = load_corpus(args.library, args.photos)
    n = len(truth)
    round_size = max(1, round(n * args.round))
    nb = neighbour_lists(vectors, DEFAULT_K)
    clusters = kmeans(np.arange(n, dtype=np.int64), vectors)
    ids = np.arange(n, dtype=np.int64)
    graph = build_graph(np.repeat(ids, nb[0].shape[1]), nb[0].ravel(), nb[1].ravel(), nodes=ids)
    runs = [simulate(vectors, truth, q, m, round_size, nb, clusters, graph=graph) for q, m in STRATEGIES]
    few = few_labels(vectors, [classes[c] for c in truth], args.labels_per_class, DEFAULT_K, DEFAULT_TEMPERATURE,
                     graph=graph, nodes=ids)
    out = {
        "images": n,
        "classes": len(classes),
        "round": round_size,
        "runs": [
            {
                "queue": r.queue,
                "model": r.model,
                "needed": {str(t): r.needed(t) for t in TARGETS},
                "needed_share": {str(t): None if r.needed(t) is None else round(r.needed(t) / n, 4) for t in TARGETS},
                "median_train_seconds": round(float(np.median(r.train_seconds)), 3) if r.train_seconds else None,
                "curve": r.curve,
            }
            for r in runs
        ],
        "labels_per_class": {"n": few.per_class, "draws": few.draws, "accuracy": few.accuracy, "std": few.spread},
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{n} photos, {len(classes)} classes, rounds of {round_size} hand labels")
        print("queue + suggestions      " + "  ".join(f"to {t:.0%}".rjust(14) for t in TARGETS))
        for r in out["runs"]:
            cells = []
            for t in TARGETS:
                need = r["needed"][str(t)]
                cells.append("never".rjust(14) if need is None else f"{need:>5} ({need / n:5.1%})".rjust(14))
            print(f"{r['queue'] + ' + ' + r['model']:<24} " + "  ".join(cells))
        print(f"accuracy on the rest with {few.per_class} labels per class (mean of {few.draws} draws): "
              + ", ".join(f"{m} {a:.3f}" for m, a in few.accuracy.items()))
    return out


if __name__ == "__main__":
    main()
