"""Fine-tuning the backbone on a few labels (issue 18): accuracy on the unlabelled rest, k-NN quality,
training and re-embedding time, frozen vs tuned.

    python -m bench.tune [--corpus DIR] [--per-class 3 8 20] [--photos-per-class 0] [--draws 1]
                         [--reembed-photos 5000] [--pseudo-per-class 16] [--json FILE]

For each draw and labels-per-class setting: draw that many labelled photos per class (the rest are the
"unlabelled rest") and tune as `lookalike tune` does (search.tune_decision): deal the labels into
scoring_folds(labels) folds, fine-tune a candidate on the other folds for each (fit_candidate: LP-FT,
beside the pseudo-labels a probe on those folds' frozen vectors is surest of, as search.pseudo_labels
picks them from the library's; --pseudo-per-class 0: none), the number of stages and epochs chosen on
its own early-stopping fold when there are enough labels), score each fold's photos frozen vs tuned by a
probe, pool them, and keep only when the tuned vectors are measured better (`keep`: the labels' mean
log-likelihood higher; the paired test's p-value is reported beside it). The final weights are refit on
every label (`refit`), kept or not, so that the bench can show what keeping them would have done. Then
re-embed `--reembed-photos` files (the corpus, cycled when it is smaller: the timing of a collection of
that size) and report:
- accuracy on the unlabelled rest of a linear probe fitted on all the labelled photos, frozen vs
  tuned, and what `tune` leaves (tuned when kept, frozen otherwise);
- k-NN leave-one-out top-1 (weighted 20-NN, T = 0.07) and P@10 over all photos, frozen vs tuned;
- cross-fitting (training and scoring the folds), refit and re-embedding time (the three add up to
  `tune`'s work but for the refresh; a discarded tune stops after the cross-fitting),
  with the CPU's flags (or the GPU) and the load average.

The defaults (every photo, 5,000 re-embedded) take about an hour on a loaded 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.corpus import CLOTHING_SMALL
from bench.machine import cpu_flags
from indexer.backbone import Backbone
from indexer.finetune import TuneConfig, embed_files, probe_accuracy, save_weights
from indexer.library import Library
from search.pseudo_labels import PER_CLASS, Items, PseudoLabeller, pseudo_counts, surest
from search.tune_decision import DEFAULT_STAGES, cross_fit, refit

DEFAULT_CORPUS = CLOTHING_SMALL
K, TEMPERATURE = 20, 0.07


def load_corpus(root: Path, per_class: int | None, seed: int) -> tuple[list[Path], np.ndarray, list[str]]:
    """Photos under root/<split>/<class>/ (or root/<class>/), at most `per_class` a class."""
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    classes = sorted({p.parent.name for p in files})
    rng = np.random.default_rng(seed)
    paths: list[Path] = []
    codes: list[int] = []
    for code, name in enumerate(classes):
        mine = [p for p in files if p.parent.name == name]
        if per_class and len(mine) > per_class:
            mine = [mine[i] for i in sorted(rng.choice(len(mine), per_class, replace=False))]
        paths += mine
        codes += [code] * len(mine)
    return paths, np.asarray(codes, dtype=np.int64), classes


def knn_quality(vectors: np.ndarray, codes: np.ndarray) -> dict[str, float]:
    """Leave-one-out weighted k-NN top-1 (exp(sim / T) votes) and precision@10, exact cosine."""
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argsort(-sims, axis=1)[:, :K]
    weights = np.exp((np.take_along_axis(sims, top, 1) - 1.0) / TEMPERATURE)
    votes = np.zeros((len(codes), codes.max() + 1))
    np.add.at(votes, (np.repeat(np.arange(len(codes)), K), codes[top].ravel()), weights.ravel())
    return {
        "knn_loo_top1": round(float((votes.argmax(1) == codes).mean()), 4),
        "p_at_10": round(float((codes[top[:, :10]] == codes[:, None]).mean()), 4),
    }


def corpus_pseudo_labeller(paths: list[Path], vectors: np.ndarray, labelled: np.ndarray, items: Items,
                           per_class: int) -> PseudoLabeller:
    """search.pseudo_labels' choice from the bench's vectors, for a tune on `items` (as `tune` on a
    library whose labels are `items`): none of the `labelled` rows is given one."""
    row_of = {p: i for i, p in enumerate(paths)}
    free = np.setdiff1d(np.arange(len(paths)), labelled)
    label_codes = np.asarray([c for _, c in items], dtype=np.int64)

    def pseudo(train, n_classes):
        if not per_class:
            return []
        rows = np.asarray([row_of[p] for p, _ in train])
        codes = np.asarray([c for _, c in train], dtype=np.int64)
        chosen = surest(vectors[rows], codes, n_classes, [(free, vectors[free])],
                        pseudo_counts(label_codes, n_classes, per_class))
        return [(paths[k], c) for k, c in chosen]

    return pseudo


def run_setting(paths, codes, n_classes, frozen, frozen_vectors, per_class, seed, config, stages, engine,
                reembed_photos, pseudo_per_class=PER_CLASS) -> dict:
    rng = np.random.default_rng(seed)
    labelled = np.sort(np.concatenate([rng.choice(np.flatnonzero(codes == c), per_class, replace=False)
                                       for c in range(n_classes)]))
    rest = np.setdiff1d(np.arange(len(paths)), labelled)
    load_before = os.getloadavg()[0]
    items = [(paths[i], int(codes[i])) for i in labelled]
    pseudo = corpus_pseudo_labeller(paths, frozen_vectors, labelled, items, pseudo_per_class)
    chosen = pseudo(items, n_classes)
    pseudo_right = float(np.mean([codes[paths.index(p)] == c for p, c in chosen])) if chosen else float("nan")
    with tempfile.TemporaryDirectory() as tmp, Library(tmp, create=True) as lib:
        started = time.perf_counter()
        decision = cross_fit(items, n_classes, frozen, lib, config=config, stages=stages, engine=engine,
                             pseudo=pseudo, seed=seed)
        cross_fit_seconds = time.perf_counter() - started
        started = time.perf_counter()
        result = (refit(items, n_classes, frozen, decision, config=config, pseudo=pseudo, seed=seed)
                  if decision.epochs else None)
        refit_seconds = time.perf_counter() - started
        if result is None:  # every fold's early stopping chose the untouched backbone
            tuned = frozen
        else:
            saved = save_weights(lib, result.state_dict)
            tuned = Backbone(frozen.name, weights=saved.path, device=str(frozen.device))
        files = [paths[i % len(paths)] for i in range(max(reembed_photos, len(paths)))]
        started = time.perf_counter()
        ok, tuned_vectors = embed_files(tuned, files, engine=engine)
        embed_seconds = time.perf_counter() - started
    tuned_vectors = tuned_vectors[: len(paths)]
    frozen_rest = probe_accuracy((frozen_vectors[labelled], codes[labelled]), (frozen_vectors[rest], codes[rest]),
                                 n_classes)
    tuned_rest = probe_accuracy((tuned_vectors[labelled], codes[labelled]), (tuned_vectors[rest], codes[rest]),
                                n_classes)
    kept = decision.kept
    score = decision.score
    return {
        "seed": seed,
        "labels_per_class": per_class,
        "labelled": len(labelled),
        "scored_on": score.n_heldout,
        "pseudo_labelled": len(chosen),  # what the refit trained on beside the labels
        "pseudo_labels_right": round(pseudo_right, 3),
        "stages": decision.stages,
        "best_epoch": decision.epochs,
        "scoring_frozen": round(score.frozen_accuracy, 4),
        "scoring_tuned": round(score.tuned_accuracy, 4),
        "loglik_gain": round(score.loglik_gain, 4),
        "p_value": round(decision.p_value, 4),
        "kept": kept,
        "rest_accuracy_frozen": round(frozen_rest, 4),
        "rest_accuracy_tuned": round(tuned_rest, 4),
        "rest_accuracy_after_tune": round(tuned_rest if kept else frozen_rest, 4),
        "knn_tuned": knn_quality(tuned_vectors, codes),
        "cross_fit_seconds": round(cross_fit_seconds, 1),
        "refit_seconds": round(refit_seconds, 1),
        "reembedded": len(files),
        "reembed_seconds": round(embed_seconds, 1),
        "reembed_images_per_second": round(len(files) / embed_seconds, 1),
        "tune_seconds": round(cross_fit_seconds + (refit_seconds + embed_seconds if kept else 0), 1),
        "precision": result.precision if result else "",
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--per-class", type=int, nargs="+", default=[3, 8, 20])
    ap.add_argument("--photos-per-class", type=int, default=0, help="corpus photos per class at most (0: all)")
    ap.add_argument("--stages", type=int, nargs="+", default=list(DEFAULT_STAGES),
                    help="candidate numbers of unfrozen stages, as `lookalike tune`'s")
    ap.add_argument("--max-epochs", type=int, default=TuneConfig.max_epochs)
    ap.add_argument("--engine", default="auto", help="engine that embeds (auto, torch, openvino)")
    ap.add_argument("--seed", type=int, default=0, help="the first draw's seed (draw d uses seed + d)")
    ap.add_argument("--draws", type=int, default=1, help="draws of labelled photos per setting")
    ap.add_argument("--reembed-photos", type=int, default=5000,
                    help="files re-embedded with the tuned weights (the corpus cycled when smaller)")
    ap.add_argument("--pseudo-per-class", type=int, default=PER_CLASS,
                    help="pseudo-labelled photos a class beside the labels, as `lookalike tune` (0: none)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    from bench.machine import describe

    paths, codes, classes = load_corpus(args.corpus, args.photos_per_class or None, args.seed)
    if len(classes) < 2:
        raise SystemExit(f"no labelled photos (class-per-folder) under {args.corpus}: pass --corpus DIR")
    frozen = Backbone()
    started = time.perf_counter()
    ok, frozen_vectors = embed_files(frozen, paths, engine=args.engine)
    frozen_seconds = time.perf_counter() - started
    paths, codes, frozen_vectors = [p for p, k in zip(paths, ok, strict=True) if k], codes[ok], frozen_vectors[ok]
    report: dict = {
        "command": "python -m bench.tune " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": describe(),
        "cpu_flags": cpu_flags(),
        "corpus": str(args.corpus),
        "photos": len(paths),
        "classes": len(classes),
        "embed_frozen_images_per_second": round(len(paths) / frozen_seconds, 1),
        "knn_frozen": knn_quality(frozen_vectors, codes),
        "settings": [],
    }
    print(f"{len(paths)} photos, {len(classes)} classes; CPU flags {report['cpu_flags']}; "
          f"frozen k-NN {report['knn_frozen']}", flush=True)
    config = TuneConfig(max_epochs=args.max_epochs)
    for draw in range(args.draws):
        for per_class in args.per_class:
            row = run_setting(paths, codes, len(classes), frozen, frozen_vectors, per_class, args.seed + draw,
                              config, args.stages, args.engine, args.reembed_photos, args.pseudo_per_class)
            report["settings"].append(row)
            print(json.dumps(row), flush=True)
            if args.json:  # after every row: a long run that is stopped keeps what it measured
                args.json.write_text(json.dumps({**report, "load_average": os.getloadavg()}, indent=2))
    report["load_average"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
