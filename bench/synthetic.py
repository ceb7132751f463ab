"""Libraries made without running the model: real schema, rows inserted directly, given vectors.

    python -m bench.synthetic --size 1000000 --library /data/lib1m --photos /data/photos1m

builds a library of N indexed photos whose photo root holds N small real JPEG files (hard links
to a few dozen downscaled sample photos kept in ROOT/.templates, so a million files cost a few MB),
with vectors shaped like real embeddings (`bench.index_types.synthetic`). The rows carry each
file's real size, mtime and hash, so `lookalike index ROOT --library DIR` re-scans it as unchanged
and adds real photos dropped into ROOT, and `lookalike serve` shows thumbnails. The FAISS file and
the k-NN neighbour lists are then built from scratch, timed, with the peak resident memory.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from sqlalchemy import insert

from indexer.backbone import Backbone
from indexer.hashes import HASH_BYTES, ImageSignals, write_signals
from indexer.library import Library
from indexer.schema import INDEXED, Embedding, Image, utcnow

CHUNK = 20_000
PER_FOLDER = 1000
TEMPLATES = ".templates"  # hidden: the scanner skips it
THUMB_SIDE = 160
SAMPLES = Path(__file__).resolve().parents[1] / "lookalike" / "samples"


def random_unit(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = rng.standard_normal((n, dim), dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v


def fill_library(
    path: Path,
    root: Path,
    files: list[tuple[str, int, float]],
    backbone: Backbone,
    vectors: Callable[[int, int], np.ndarray],
    facts: Callable[[int], dict] | None = None,
) -> Library:
    """A new library at `path` for `root` whose indexed rows are `files` (path, size, mtime).

    `vectors(start, count)` gives the unit vectors of rows start..start+count; ids are 1..n.
    `facts(i)` may give row i's hash, width, height. The caller builds the FAISS file and closes the library.
    """
    library = Library(path, create=True)
    with library.Session.begin() as s:
        library.set_meta(s, root=str(Path(root).resolve()), **backbone.identity())
    now = utcnow()
    for start in range(0, len(files), CHUNK):
        part = files[start : start + CHUNK]
        vecs = vectors(start, len(part))
        with library.Session.begin() as s:
            s.execute(
                insert(Image),
                [
                    {"id": start + i + 1, "path": rel, "folder": rel.rsplit("/", 1)[0] if "/" in rel else "",
                     "size": size, "mtime": mtime, "hash": f"{start + i:032x}", "width": 400, "height": 533,
                     "format": "JPEG", "status": INDEXED, "added_at": now, "indexed_at": now,
                     **(facts(start + i) if facts else {})}
                    for i, (rel, size, mtime) in enumerate(part)
                ],
            )
            s.execute(
                insert(Embedding),
                [dict(image_id=start + i + 1, vector=v.tobytes()) for i, v in enumerate(vecs)],
            )
            write_signals(s, synthetic_signals(start + 1, len(part)))
    return library


def synthetic_signals(first_id: int, count: int, seed: int = 7) -> list[tuple[int, ImageSignals]]:
    """Duplicate signals as synthetic as the vectors: random 256-bit hashes (any two ~128 bits
    apart, so no copies among them), as a real collection has few. Without them `lookalike index`
    would compute every row's signals from its file on its first run (indexed before they existed)."""
    rng = np.random.default_rng(seed + first_id)
    codes = rng.integers(0, 256, size=(count, 2, HASH_BYTES), dtype=np.uint8)
    return [(first_id + i, ImageSignals(codes[i, 0].tobytes(), codes[i, 1].tobytes(), 100))
            for i in range(count)]


def make_templates(root: Path, count: int = 48) -> list[dict]:
    """Small real JPEGs (downscaled sample photos) in ROOT/.templates; their facts as rows store them."""
    from PIL import Image as PILImage

    from indexer.decode import file_hash

    sources = sorted(SAMPLES.rglob("*.jpg"))[:count]
    if not sources:
        raise SystemExit(f"no sample photos under {SAMPLES}")
    folder = root / TEMPLATES
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, src in enumerate(sources):
        with PILImage.open(src) as opened:
            im = opened.convert("RGB")
        im.thumbnail((THUMB_SIDE, THUMB_SIDE))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=80)
        size = im.size
        path = folder / f"t{i:03d}.jpg"
        path.write_bytes(buf.getvalue())
        out.append({"path": path, "hash": file_hash(buf.getvalue()), "width": size[0], "height": size[1]})
    return out


def make_photo_tree(root: Path, n: int, say=print) -> tuple[list[tuple[str, int, float]], list[dict]]:
    """n files under ROOT, folders of PER_FOLDER, file i a hard link to template i % T (a copy where
    the file system cannot link). Returns (path, size, mtime) of each file and each template's facts."""
    templates = make_templates(root)
    files = []
    stats = [t["path"].stat() for t in templates]
    for i in range(n):
        t = i % len(templates)
        rel = f"{i // (PER_FOLDER * 100):03d}/{(i // PER_FOLDER) % 100:02d}/synthetic_{i:07d}.jpg"
        dst = root / rel
        if i % PER_FOLDER == 0:
            dst.parent.mkdir(parents=True, exist_ok=True)
        if not dst.exists():
            try:
                os.link(templates[t]["path"], dst)
            except OSError:
                dst.write_bytes(templates[t]["path"].read_bytes())
                os.utime(dst, ns=(stats[t].st_atime_ns, stats[t].st_mtime_ns))
        files.append((rel, stats[t].st_size, stats[t].st_mtime))
        if i and i % 100_000 == 0:
            say(f"  {i:,} files")
    return files, [{"hash": t["hash"], "width": t["width"], "height": t["height"]} for t in templates]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(size: int, library: Path, photos: Path, *, seed: int = 1000, lists: bool = True,
          memory_budget: int | None = None, say=print) -> dict:
    """Files, rows and vectors, then the FAISS file and neighbour lists from scratch; timings."""
    from bench.index_types import synthetic

    if (library / "library.db").exists():
        raise SystemExit(f"{library} already holds a library: choose a new --library")
    backbone = Backbone(device="cpu")
    timings: dict[str, float] = {"size": size}
    started = time.perf_counter()
    photos.mkdir(parents=True, exist_ok=True)
    files, facts = make_photo_tree(photos, size, say)
    timings["files_s"] = time.perf_counter() - started
    say(f"{size:,} photo files in {timings['files_s']:.0f}s")
    started = time.perf_counter()
    lib = fill_library(library, photos, files, backbone,
                       lambda start, count: synthetic(count, seed=seed + start),
                       facts=lambda i: facts[i % len(facts)])
    del files
    timings["rows_s"] = time.perf_counter() - started
    say(f"rows and vectors in {timings['rows_s']:.0f}s")
    try:
        timings.update(build_derived(lib, lists=lists, memory_budget=memory_budget, say=say))
    finally:
        lib.close()
    return timings


def build_derived(lib: Library, *, lists: bool = True, memory_budget: int | None = None, say=print) -> dict:
    """The FAISS file, then the neighbour lists and votes, from scratch: seconds and peak RSS."""
    out: dict[str, float] = {}
    started = time.perf_counter()
    index = lib.build_vectors(memory_budget=memory_budget)
    lib.save_vectors(index, clean=True, memory_budget=memory_budget)
    out["index_s"] = time.perf_counter() - started
    say(f"{index.describe()['index_type']} index in {out['index_s']:.0f}s (peak RSS {peak_rss_mb():,.0f} MB)")
    del index
    if lists:
        from search.labelling.labeller import Labeller
        from search.searcher import Searcher

        started = time.perf_counter()
        Labeller(Searcher(lib), k=20).refresh(progress=True)  # what `lookalike index` runs
        out["lists_s"] = time.perf_counter() - started
        say(f"neighbour lists and votes in {out['lists_s']:.0f}s")
    out["peak_rss_mb"] = peak_rss_mb()
    say(f"peak RSS {out['peak_rss_mb']:,.0f} MB")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, required=True, help="photos in the library")
    parser.add_argument("--library", type=Path, required=True, help="new library folder")
    parser.add_argument("--photos", type=Path, required=True, help="photo root to create (small real JPEGs)")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--no-lists", action="store_true", help="skip the k-NN neighbour lists")
    args = parser.parse_args(argv)
    if args.size < 1:
        parser.error("--size must be at least 1")
    from indexer.settings import Settings

    budget = Settings.from_env().memory_budget
    timings = build(args.size, args.library.resolve(), args.photos.resolve(), seed=args.seed,
                    lists=not args.no_lists, memory_budget=budget,
                    say=lambda m: print(m, file=sys.stderr, flush=True))
    print(" ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
