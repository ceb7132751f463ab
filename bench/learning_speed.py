"""How fast the learned labeller retrains and refreshes: training on 10k labels, suggestions for 100k photos.

python -m bench.learning_speed [--labelled 10000] [--photos 100000] [--library-dir /tmp/...]

Vectors are clothing_small's real ones (from the label simulation's library) repeated with a little
noise, so classes keep their real shape. The 100k-photo library gets its rows, vectors and stored
neighbour lists inserted directly (random neighbours: the refresh reads and tallies them the same).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sqlalchemy import insert

from bench.label_simulation import DEFAULT_LIBRARY, DEFAULT_PHOTOS, load_corpus
from indexer.library import Library
from indexer.schema import INDEXED, Embedding, Image, Label, Meta, utcnow
from indexer.torch_threads import torch_threads
from search.labelling.head_store import HEAD_FILE, save_head
from search.labelling.labeller import Labeller
from search.labelling.learned_head import BLEND, KNN, PROBE, PROJECTION, Head, train_head, train_probe, train_projection
from search.labelling.vote import DEFAULT_K, DEFAULT_TEMPERATURE
from search.neighbour_lists import NEIGHBOURS_STATE
from search.searcher import Searcher


def grow(vectors: np.ndarray, truth: np.ndarray, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pick = rng.integers(len(truth), size=n)
    v = vectors[pick] + 0.02 * rng.standard_normal((n, vectors.shape[1]), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float32), truth[pick]


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def training(vectors, truth, classes, n: int) -> dict:
    v, t = grow(vectors, truth, n, seed=1)
    labels = [classes[c] for c in t]
    train_head(v[:200], labels[:200], DEFAULT_K, DEFAULT_TEMPERATURE)  # torch's one-off start-up
    seconds, head = timed(lambda: train_head(v, labels, DEFAULT_K, DEFAULT_TEMPERATURE))
    with torch_threads():
        codes = np.array([classes.index(lab) for lab in labels])
        probe_s, _ = timed(lambda: train_probe(v, codes, len(classes)))
        projection_s, _ = timed(lambda: train_projection(v, codes))
    return {"labelled": n, "train_head_seconds": round(seconds, 2), "chosen": head.method,
            "probe_fit_seconds": round(probe_s, 2), "projection_fit_seconds": round(projection_s, 2)}


def make_big_library(path: Path, vectors, truth, classes, n: int, labelled: int) -> Library:
    v, t = grow(vectors, truth, n, seed=2)
    lib = Library(path, create=True)
    now = utcnow()
    rng = np.random.default_rng(3)
    with lib.Session.begin() as s:
        lib.set_meta(s, root=str(path / "photos"), backbone="bench", weights="none", preprocessing="none",
                     dim=str(v.shape[1]))
    for start in range(0, n, 20_000):
        stop = min(n, start + 20_000)
        with lib.Session.begin() as s:
            s.execute(insert(Image), [dict(id=i + 1, path=f"p/{i:07d}.jpg", folder="p", size=1, mtime=0.0,
                                           status=INDEXED, added_at=now, indexed_at=now) for i in range(start, stop)])
            s.execute(insert(Embedding), [dict(image_id=i + 1, vector=v[i].tobytes()) for i in range(start, stop)])
            if start < labelled:
                s.execute(insert(Label), [dict(image_id=i + 1, label=classes[t[i]], source="imported", set_at=now)
                                          for i in range(start, min(stop, labelled))])
    for start in range(0, n, 20_000):  # every image exists now: neighbour rows may point anywhere
        stop = min(n, start + 20_000)
        nb = rng.integers(1, n + 1, size=(stop - start, DEFAULT_K))
        sc = np.sort(rng.uniform(0.5, 0.95, size=(stop - start, DEFAULT_K)), axis=1)[:, ::-1]
        with lib.Session.begin() as s:
            s.connection().exec_driver_sql(
                "INSERT INTO neighbours (image_id, rank, neighbour_id, score) VALUES (?, ?, ?, ?)",
                [(start + r + 1, j, int(nb[r, j]), float(sc[r, j]))
                 for r in range(stop - start) for j in range(DEFAULT_K)],
            )
    lib.save_vectors(lib.build_vectors(), clean=True)
    with lib.Session.begin() as s:
        s.merge(Meta(key=NEIGHBOURS_STATE, value=json.dumps({"k": DEFAULT_K, "vectors": lib.vectors_fingerprint()})))
    return lib


def refresh(lib: Library, vectors, truth, classes) -> dict:
    """Seconds to rewrite every photo's suggestion from a stored head of each kind."""
    labeller = Labeller(Searcher(lib))
    v, t = grow(vectors, truth, 2000, seed=4)
    base = train_head(v, [classes[c] for c in t], DEFAULT_K, DEFAULT_TEMPERATURE, methods=(KNN,))
    with torch_threads():
        probe = train_probe(v, t, len(classes))
        projection = train_projection(v, t)
    out = {}
    for method in (KNN, PROBE, PROJECTION, BLEND):
        head = Head(method, tuple(classes), 1.0, base.accuracy, None, None, 0, DEFAULT_K, DEFAULT_TEMPERATURE,
                    probe=probe, projection=projection)
        save_head(lib.path / HEAD_FILE, head, labeller.fingerprint())
        seconds, _ = timed(lambda: labeller._write(labeller.predict_all()))
        out[method] = round(seconds, 2)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labelled", type=int, default=10_000)
    parser.add_argument("--photos", type=int, default=100_000)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--library-dir", type=Path, default=Path("/tmp/lookalike-bench/learning-speed"))
    args = parser.parse_args(argv)
    vectors, truth, classes, _ = load_corpus(DEFAULT_LIBRARY, DEFAULT_PHOTOS)
    out = {} if args.skip_training else {"training": training(vectors, truth, classes, args.labelled)}
    print(json.dumps(out), flush=True)
    path = args.library_dir / f"library-{args.photos}"
    if not (path / "library.db").exists():
        make_big_library(path, vectors, truth, classes, args.photos, args.labelled).close()
    with Library(path) as lib:
        out["refresh_seconds"] = {"photos": args.photos, **refresh(lib, vectors, truth, classes)}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
