"""How many hand labels a person needs: a simulated labeller on a class-per-folder corpus.

python -m bench.label_simulation [--library DIR] [--photos DIR] [--round 0.015] [--tune-every 0] [--max-tunes 0]
                                 [--strategies NAME ...] [--json]

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
  coverage + spreading + tune (with --tune-every R, e.g. 4: the same, and after every R rounds the
                        backbone is tuned on the hand labels so far as `lookalike tune` decides it,
                        search.tune_decision: cross-fit, the keep rule, and when kept the refit
                        on every hand label, each beside the pseudo-labels `tune` adds
                        (search.pseudo_labels, from the current vectors); every photo of the corpus
                        is then re-embedded with the tuned weights and the neighbour lists, queue
                        clusters and spreading graph are rebuilt from the new vectors. A discarded
                        tune leaves the vectors as they were. --max-tunes caps the tunes (0: no cap).
                        The report adds each tune's labels, pseudo-labels, p-value, whether it was
                        kept, and its time: cross-fitting, refit, re-embedding, and rebuilding the
                        lists. Slow on a CPU: on clothing_small a cross-fit took ~10 min at 228 to
                        456 labels on 2 shared EPYC cores, and grows with the labels;
                        `--tune-every 4 --max-tunes 2` ran in 25 min, BENCHMARKS.md.)
k-NN is today's labeller: each photo's 20 nearest photos, the labelled ones voting exp(sim / 0.07).
It also reports accuracy on the unlabelled rest with 10 labels per class (search.labelling.compare.few_labels).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench.corpus import CLOTHING_SMALL
from search.labelling.learned_head import GRAPH_METHODS, train_head
from search.labelling.queue_order import Clusters, kmeans, queue_order
from search.labelling.spreading import Graph, build_graph, spread
from search.labelling.vote import DEFAULT_K, DEFAULT_TEMPERATURE, vote_shares

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PHOTOS = CLOTHING_SMALL
DEFAULT_LIBRARY = Path("/tmp/lookalike-bench/clothing_small-library")
TARGETS = (0.90, 0.95, 0.98)
STRATEGIES = (("random", "knn"), ("margin", "knn"), ("coverage", "learned"), ("coverage", "spreading"))
TUNED = ("coverage", "spreading+tune")  # the --tune-every strategy: coverage + spreading, the backbone tuned


@dataclass
class Run:
    queue: str
    model: str
    curve: list[tuple[int, float]] = field(default_factory=list)  # (hand labels, share correct)
    train_seconds: list[float] = field(default_factory=list)
    tunes: list[TuneRecord] = field(default_factory=list)  # the --tune-every strategy's tunes, in order

    def needed(self, target: float) -> int | None:
        return next((n for n, correct in self.curve if correct >= target - 1e-12), None)


@dataclass
class TuneRecord:
    """One tune of the simulated person's library: what cross-fitting decided and what it cost."""

    rounds: int  # rounds labelled before it
    labelled: int  # hand labels then
    used: int  # those `lookalike tune` trains on (classes with MIN_PER_CLASS labels or more)
    classes: int
    kept: bool
    p_value: float | None
    frozen_accuracy: float | None  # the pooled folds' probe accuracy, frozen (the current vectors) -> tuned
    tuned_accuracy: float | None
    stages: int = 0
    epochs: int = 0
    pseudo_labelled: int = 0  # unlabelled photos trained on beside the hand labels (search.pseudo_labels)
    cross_fit_seconds: float = 0.0
    refit_seconds: float = 0.0
    reembed_seconds: float = 0.0  # every photo of the corpus, with the refit weights (kept tunes only)
    refresh_seconds: float = 0.0  # neighbour lists, queue clusters and spreading graph from the new vectors
    note: str = ""  # why no tune ran (too few labels) or failed

    @property
    def seconds(self) -> float:
        return self.cross_fit_seconds + self.refit_seconds + self.reembed_seconds + self.refresh_seconds

    def as_dict(self) -> dict:
        return {
            "rounds": self.rounds, "labelled": self.labelled, "used": self.used, "classes": self.classes,
            "kept": self.kept, "p_value": self.p_value, "frozen_accuracy": self.frozen_accuracy,
            "tuned_accuracy": self.tuned_accuracy, "stages": self.stages, "epochs": self.epochs,
            "pseudo_labelled": self.pseudo_labelled,
            "cross_fit_seconds": round(self.cross_fit_seconds, 1), "refit_seconds": round(self.refit_seconds, 1),
            "reembed_seconds": round(self.reembed_seconds, 1), "refresh_seconds": round(self.refresh_seconds, 1),
            "seconds": round(self.seconds, 1), "note": self.note,
        }


@dataclass
class View:
    """The vectors the simulation works on (row = photo) and what derives from them, as the library
    keeps them: each photo's k nearest (ids = row numbers), the queue's clusters, the spreading graph."""

    vectors: npt.NDArray[np.float32]
    nb: tuple[np.ndarray, np.ndarray]
    clusters: Clusters
    graph: Graph

    @classmethod
    def of(cls, vectors: npt.NDArray[np.float32], k: int = DEFAULT_K) -> View:
        ids = np.arange(len(vectors), dtype=np.int64)
        nb = neighbour_lists(vectors, k)
        clusters = kmeans(ids, vectors)
        graph = build_graph(np.repeat(ids, nb[0].shape[1]), nb[0].ravel(), nb[1].ravel(), nodes=ids)
        return cls(vectors, nb, clusters, graph)


class Tuner:
    """`lookalike tune` on the simulated person's hand labels, every `every` rounds (at most
    `max_tunes` times, 0: no cap). The backbone it tunes from is the current representation's: the
    untouched one until a tune is kept, then the kept weights (as `tune` tunes the current one)."""

    def __init__(self, paths: list[Path], every: int, *, max_tunes: int = 0, backbone: str = "efficientnet_lite0",
                 engine: str = "auto", seed: int = 0, k: int = DEFAULT_K) -> None:
        from indexer.backbone import Backbone
        from indexer.library import Library

        if every < 1:
            raise ValueError("tune every 1 round or more")
        self.paths, self.every, self.max_tunes = paths, every, max_tunes
        self.engine, self.seed, self.k = engine, seed, k
        self.backbone = Backbone(backbone)
        self._scratch_dir = tempfile.TemporaryDirectory(prefix="lookalike-labsim-")
        self.scratch = Library(Path(self._scratch_dir.name), create=True)  # holds the tuned weights files

    def close(self) -> None:
        self.scratch.close()
        self._scratch_dir.cleanup()

    def due(self, rounds: int, tunes: int) -> bool:
        return rounds > 0 and rounds % self.every == 0 and (self.max_tunes <= 0 or tunes < self.max_tunes)

    def tune(self, rounds: int, labelled: npt.NDArray[np.bool_], truth: npt.NDArray[np.int64],
             view: View) -> tuple[TuneRecord, View]:
        """Tune on the labelled rows' truth; (what happened, the view to go on with: new vectors
        re-embedded from every path when the tune is kept, `view` itself otherwise)."""
        from bench.tune import corpus_pseudo_labeller
        from indexer.backbone import Backbone, BackboneError
        from indexer.finetune import TuneError, embed_files, save_weights
        from search.pseudo_labels import PER_CLASS
        from search.tune_decision import NoCandidate, cross_fit, refit
        from search.tuning import MIN_PER_CLASS

        rows = np.flatnonzero(labelled)
        counts = np.bincount(truth[rows], minlength=int(truth.max()) + 1)
        classes = np.flatnonzero(counts >= MIN_PER_CLASS)
        code = {int(c): i for i, c in enumerate(classes)}
        # search.tuning.labelled_photos: photos in path order, classes with MIN_PER_CLASS labels, codes by name
        items = sorted((self.paths[i], code[int(truth[i])]) for i in rows if int(truth[i]) in code)
        record = TuneRecord(rounds, len(rows), len(items), len(classes), False, None, None, None)
        if len(classes) < 2:
            record.note = f"too few labels: {len(classes)} classes with {MIN_PER_CLASS} or more"
            return record, view
        # as `tune` picks them from the library's stored vectors: here the current view's, no hand-labelled row
        pseudo = corpus_pseudo_labeller(self.paths, view.vectors, rows, items, PER_CLASS)
        record.pseudo_labelled = len(pseudo(items, len(classes)))
        started = time.perf_counter()
        try:
            decision = cross_fit(items, len(classes), self.backbone, self.scratch, engine=self.engine,
                                 pseudo=pseudo, seed=self.seed)
        except (TuneError, BackboneError, NoCandidate) as e:
            record.cross_fit_seconds = time.perf_counter() - started
            record.note = f"failed: {e}"
            return record, view
        record.cross_fit_seconds = time.perf_counter() - started
        score = decision.score
        record.kept, record.p_value = decision.kept, round(decision.p_value, 4)
        record.frozen_accuracy = round(score.frozen_accuracy, 4)
        record.tuned_accuracy = round(score.tuned_accuracy, 4)
        record.stages, record.epochs = decision.stages, decision.epochs
        log.info("tune after %d rounds, %d labels: frozen %.3f, tuned %.3f, p = %.4f: %s", rounds, len(items),
                 score.frozen_accuracy, score.tuned_accuracy, decision.p_value,
                 "kept" if decision.kept else "discarded")
        if not decision.kept:
            return record, view
        started = time.perf_counter()
        result = refit(items, len(classes), self.backbone, decision, pseudo=pseudo, seed=self.seed)
        saved = save_weights(self.scratch, result.state_dict)
        tuned = Backbone(self.backbone.name, weights=saved.path, device=str(self.backbone.device))
        record.refit_seconds = time.perf_counter() - started
        started = time.perf_counter()
        ok, vectors = embed_files(tuned, self.paths, engine=self.engine)
        record.reembed_seconds = time.perf_counter() - started
        if not ok.all():
            raise RuntimeError(f"{int((~ok).sum())} photos did not decode when re-embedded")
        started = time.perf_counter()
        new = View.of(vectors, self.k)
        record.refresh_seconds = time.perf_counter() - started
        self.backbone = tuned
        return record, new


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
    tuner: Tuner | None = None,
) -> Run:
    """One strategy's run. With `tuner` (model "spreading"), the backbone is tuned every
    `tuner.every` rounds and a kept tune replaces vectors, nb, clusters and graph (`Tuner.tune`)."""
    n = len(truth)
    n_classes = int(truth.max()) + 1
    nb_ids, nb_scores = nb
    rng = np.random.default_rng(seed)
    random_order = rng.permutation(n)
    labelled = np.zeros(n, bool)
    run = Run(queue, model + "+tune" if tuner is not None else model)
    ids = np.arange(n, dtype=np.int64)
    rounds = 0
    while True:
        if tuner is not None and tuner.due(rounds, len(run.tunes)):
            if graph is None:
                raise ValueError("the tuned strategy spreads: pass the graph")
            view = View(vectors, (nb_ids, nb_scores), clusters, graph)
            record, view = tuner.tune(rounds, labelled, truth, view)
            run.tunes.append(record)
            vectors, (nb_ids, nb_scores), clusters, graph = view.vectors, view.nb, view.clusters, view.graph
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
        log.info("%s+%s: %d hand labels, %.3f correct", queue, run.model, labelled.sum(), correct)
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
            order = queue_order(candidates, margin[candidates], ids[labelled], clusters, near)
        labelled[order[:round_size]] = True
        rounds += 1


def load_corpus(library_path: Path, photos: Path):
    """(vectors, truth codes, class names, photo files) of the indexed corpus, indexing it first if
    needed; row i of the vectors is the photo file paths[i]."""
    from sqlalchemy import select

    from indexer.library import Library
    from indexer.schema import Image
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
        root = lib.root
        with lib.Session() as s:
            where = dict(s.execute(select(Image.id, Image.path)).all())
    if root is None:
        raise RuntimeError(f"{library_path} has no photos folder recorded")
    paths = [root / where[int(i)] for i in data.ids]  # data.ids: the vectors' rows, in order
    classes = sorted(set(data.labels))
    code = {c: i for i, c in enumerate(classes)}
    return data.vectors, np.array([code[lab] for lab in data.labels], dtype=np.int64), classes, paths


def strategy_name(queue: str, model: str) -> str:
    return queue + " + " + model.replace("+", " + ")


def run_report(r: Run, n: int) -> dict:
    row = {
        "queue": r.queue,
        "model": r.model,
        "needed": {str(t): r.needed(t) for t in TARGETS},
        "needed_share": {str(t): None if r.needed(t) is None else round(r.needed(t) / n, 4) for t in TARGETS},
        "median_train_seconds": round(float(np.median(r.train_seconds)), 3) if r.train_seconds else None,
        "curve": r.curve,
    }
    if r.model.endswith("+tune"):
        ran = [t for t in r.tunes if t.p_value is not None]
        row.update({
            "tunes_run": len(ran),
            "tunes_kept": sum(t.kept for t in ran),
            "kept_p_values": [t.p_value for t in ran if t.kept],
            "tune_seconds": round(sum(t.seconds for t in r.tunes), 1),
            "tunes": [t.as_dict() for t in r.tunes],
        })
    return row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--library", type=Path, default=DEFAULT_LIBRARY)
    parser.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS)
    parser.add_argument("--round", type=float, default=0.015, help="share of the collection labelled per round")
    parser.add_argument("--labels-per-class", type=int, default=10, help="0: skip the few-labels accuracy")
    parser.add_argument("--tune-every", type=int, default=0,
                        help="add coverage + spreading + tune, tuning every R rounds (e.g. 4; 0: off)")
    parser.add_argument("--max-tunes", type=int, default=0, help="tunes at most in that run (0: no cap)")
    parser.add_argument("--engine", default="auto", help="engine that re-embeds after a kept tune")
    parser.add_argument("--strategies", nargs="+", default=None, metavar="NAME",
                        help="run only these (queue+model: random+knn margin+knn coverage+learned "
                             "coverage+spreading coverage+spreading+tune); default: all")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON report here, after each strategy")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    from bench.machine import cpu_flags, describe
    from search.labelling.compare import few_labels

    strategies = list(STRATEGIES) + ([TUNED] if args.tune_every > 0 else [])
    if args.strategies is not None:
        known = {f"{q}+{m}": (q, m) for q, m in strategies}
        unknown = [s for s in args.strategies if s not in known]
        if unknown:
            parser.error(f"unknown strategies {unknown}: choose among {sorted(known)} "
                         "(coverage+spreading+tune needs --tune-every)")
        strategies = [known[s] for s in args.strategies]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = [round(x, 2) for x in os.getloadavg()]
    vectors, truth, classes, paths = load_corpus(args.library, args.photos)
    n = len(truth)
    round_size = max(1, round(n * args.round))
    view = View.of(vectors, DEFAULT_K)
    nb, clusters, graph = view.nb, view.clusters, view.graph
    ids = np.arange(n, dtype=np.int64)
    out: dict = {
        "images": n,
        "classes": len(classes),
        "round": round_size,
        "runs": [],
        "labels_per_class": None,
        "started": started,
        "machine": describe(),
        "cpu_flags": cpu_flags(),
        "load_average": {"start": load_before},
    }
    if args.tune_every > 0:
        out["tune_every"] = args.tune_every
        out["max_tunes"] = args.max_tunes
    runs = []
    for q, m in strategies:
        wall = time.perf_counter()
        if (q, m) == TUNED:
            tuner = Tuner(paths, args.tune_every, max_tunes=args.max_tunes, engine=args.engine)
            try:
                run = simulate(vectors, truth, q, "spreading", round_size, nb, clusters, graph=graph, tuner=tuner)
            finally:
                tuner.close()
        else:
            run = simulate(vectors, truth, q, m, round_size, nb, clusters, graph=graph)
        runs.append(run)
        out["runs"].append({**run_report(run, n), "wall_seconds": round(time.perf_counter() - wall, 1)})
        if args.out:  # after every strategy: a long run that is stopped keeps what it measured
            args.out.write_text(json.dumps(out, indent=2))
    few = None
    if args.labels_per_class > 0:
        few = few_labels(vectors, [classes[c] for c in truth], args.labels_per_class, DEFAULT_K, DEFAULT_TEMPERATURE,
                         graph=graph, nodes=ids)
        out["labels_per_class"] = {"n": few.per_class, "draws": few.draws, "accuracy": few.accuracy,
                                   "std": few.spread}
    out["load_average"]["end"] = [round(x, 2) for x in os.getloadavg()]
    if args.out:
        args.out.write_text(json.dumps(out, indent=2))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{n} photos, {len(classes)} classes, rounds of {round_size} hand labels")
        width = max([24] + [len(strategy_name(r["queue"], r["model"])) for r in out["runs"]])
        print("queue + suggestions".ljust(width + 1) + "  ".join(f"to {t:.0%}".rjust(14) for t in TARGETS))
        for r in out["runs"]:
            cells = []
            for t in TARGETS:
                need = r["needed"][str(t)]
                cells.append("never".rjust(14) if need is None else f"{need:>5} ({need / n:5.1%})".rjust(14))
            print(f"{strategy_name(r['queue'], r['model']):<{width}} " + "  ".join(cells))
        for r in out["runs"]:
            if "tunes" not in r:
                continue
            print(f"{strategy_name(r['queue'], r['model'])}: {r['tunes_run']} tunes run, {r['tunes_kept']} kept, "
                  f"{r['tune_seconds']:.0f} s tuning and re-embedding")
            for t in r["tunes"]:
                what = t["note"] or (f"{'kept' if t['kept'] else 'discarded'}, p = {t['p_value']:.4f}, "
                                     f"scored {t['frozen_accuracy']:.3f} -> {t['tuned_accuracy']:.3f}, "
                                     f"{t['pseudo_labelled']} pseudo-labelled")
                print(f"  after {t['rounds']} rounds ({t['labelled']} hand labels): {what}; cross-fit "
                      f"{t['cross_fit_seconds']:.0f} s, refit {t['refit_seconds']:.0f} s, re-embed "
                      f"{t['reembed_seconds']:.0f} s, lists {t['refresh_seconds']:.0f} s")
        if few is not None:
            print(f"accuracy on the rest with {few.per_class} labels per class (mean of {few.draws} draws): "
                  + ", ".join(f"{m} {a:.3f}" for m, a in few.accuracy.items()))
    return out


if __name__ == "__main__":
    main()
