"""Fine-tuning the backbone on a few labels (issue 18): accuracy on the unlabelled rest, k-NN quality,
training and re-embedding time, frozen vs tuned.

    python -m bench.tune [--corpus DIR] [--per-class 3 8 20] [--photos-per-class 100] [--json FILE]

For each labels-per-class setting: draw that many labelled photos per class (the rest are the
"unlabelled rest"), fine-tune (indexer.finetune, LP-FT with early stopping on a held-out fold of
those labels), re-embed every photo with the tuned weights, then report:
- accuracy on the unlabelled rest of a linear probe fitted on the labelled photos, frozen vs tuned;
- k-NN leave-one-out top-1 (weighted 20-NN, T = 0.07) and P@10 over all photos, frozen vs tuned;
- training time and re-embedding rate, with the CPU's bf16 flags (or the GPU).

Imports only indexer modules (and bench.machine), so the lead can extend it with search's methods.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from indexer.backbone import Backbone
from indexer.finetune import TuneConfig, embed_files, fine_tune, probe_accuracy, save_weights
from indexer.library import Library

DEFAULT_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpora" / "clothing_small"
K, TEMPERATURE = 20, 0.07


def cpu_flags() -> list[str]:
    """The CPU flags that decide bf16 speed: amx_bf16, avx512_bf16, amx_tile, avx512f, avx2."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    return [f for f in ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2") if re.search(rf"\b{f}\b", text)]


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


def run_setting(paths, codes, n_classes, frozen, frozen_vectors, per_class, seed, config, engine) -> dict:
    rng = np.random.default_rng(seed)
    labelled = np.sort(np.concatenate([rng.choice(np.flatnonzero(codes == c), per_class, replace=False)
                                       for c in range(n_classes)]))
    rest = np.setdiff1d(np.arange(len(paths)), labelled)
    started = time.perf_counter()
    result = fine_tune([(paths[i], int(codes[i])) for i in labelled], n_classes, frozen, config=config, seed=seed)
    train_seconds = time.perf_counter() - started

    with tempfile.TemporaryDirectory() as tmp, Library(tmp, create=True) as lib:
        saved = save_weights(lib, result.state_dict)
        tuned = Backbone(frozen.name, weights=saved.path, device=str(frozen.device))
        started = time.perf_counter()
        ok, tuned_vectors = embed_files(tuned, paths, engine=engine)
        embed_seconds = time.perf_counter() - started
    return {
        "labels_per_class": per_class,
        "labelled": len(labelled),
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "heldout_probe": round(result.probe_accuracy, 4),
        "heldout_tuned": round(result.tuned_accuracy, 4),
        "rest_accuracy_frozen": round(probe_accuracy((frozen_vectors[labelled], codes[labelled]),
                                                     (frozen_vectors[rest], codes[rest]), n_classes), 4),
        "rest_accuracy_tuned": round(probe_accuracy((tuned_vectors[labelled], codes[labelled]),
                                                    (tuned_vectors[rest], codes[rest]), n_classes), 4),
        "knn_tuned": knn_quality(tuned_vectors, codes),
        "train_seconds": round(train_seconds, 1),
        "reembed_seconds": round(embed_seconds, 1),
        "reembed_images_per_second": round(len(paths) / embed_seconds, 1),
        "precision": result.precision,
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--per-class", type=int, nargs="+", default=[3, 8, 20])
    ap.add_argument("--photos-per-class", type=int, default=100, help="corpus photos per class (0: all)")
    ap.add_argument("--stages", type=int, default=TuneConfig.stages)
    ap.add_argument("--max-epochs", type=int, default=TuneConfig.max_epochs)
    ap.add_argument("--engine", default="auto", help="engine that embeds (auto, torch, openvino)")
    ap.add_argument("--seed", type=int, default=0)
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
        "machine": describe(),
        "cpu_flags": cpu_flags(),
        "corpus": str(args.corpus),
        "photos": len(paths),
        "classes": len(classes),
        "embed_frozen_images_per_second": round(len(paths) / frozen_seconds, 1),
        "knn_frozen": knn_quality(frozen_vectors, codes),
        "settings": [],
    }
    print(f"{len(paths)} photos, {len(classes)} classes; CPU flags {' '.join(report['cpu_flags'])}; "
          f"frozen k-NN {report['knn_frozen']}", flush=True)
    config = TuneConfig(stages=args.stages, max_epochs=args.max_epochs)
    for per_class in args.per_class:
        row = run_setting(paths, codes, len(classes), frozen, frozen_vectors, per_class, args.seed, config,
                          args.engine)
        report["settings"].append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
