"""Where an indexed photo's time goes: each stage of the pipeline alone, per photo, in CPU time.

Every stage runs on the same photos in this process, one after the other, on one thread (the
model: on its own engine's threads), and is timed by the CPU time of the whole process, so other
jobs on the machine do not count in it. The stages, as `indexer/decode.py` and the runners run them:

    read + decode     `load_image` (JPEGs at reduced scale with Pillow's `draft` where they are large)
    crop              `Preprocess.crop_array` (resize of the centre crop's box) to uint8
    duplicate signals `compute_signals`: the PDQ hashes (whole, mirror, 3 turns, 10 regions,
                      trimmed if bordered) and the stored 320-px grayscale JPEG (indexer/hashes.py, features.py)
    file hash         blake2b of the file's bytes (the plan's move detection)
    model             the engine's `embed_uint8` on stacked batches, one batch per stream
    transfer          what the process layout adds: pickling a decoded batch and reading it back
                      (the threads layout hands batches over in memory, free)
    write             SQLite rows + vectors + signals, FAISS add (`indexer.write.write_batch`)

and start-up, in a fresh interpreter each: importing the indexer, building the engine (the
compiled model read from OpenVINO's cache, or compiled when it is not there).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# Start-up in a fresh interpreter: imports, the engine ready (compiled model cached or not), one batch.
STARTUP = """
import sys, time
t0 = time.perf_counter()
import numpy as np
from indexer.backbone import Backbone
from indexer.engines import make_engine
from indexer.pipeline import index_folder
t1 = time.perf_counter()
backbone = Backbone(device="cpu")
engine = make_engine(backbone, "auto")
engine.prepare()
if hasattr(engine, "compiled"):
    engine.compiled
t2 = time.perf_counter()
engine.embed_uint8(np.zeros((1, 3, backbone.preprocess.crop, backbone.preprocess.crop), np.uint8))
t3 = time.perf_counter()
print(t1 - t0, t2 - t1, t3 - t2, "torch" in sys.modules)
"""


def _cpu() -> float:
    return time.process_time()


def profile(files: list[Path], batch_size: int = 32) -> dict[str, float]:
    """CPU milliseconds per photo of each stage on `files` (their first decode is a warm-up)."""
    from indexer.backbone import Backbone
    from indexer.decode import hash_file, stack_batch
    from indexer.engines import make_engine
    from indexer.hashes import compute_signals
    from indexer.imageio import load_image

    backbone = Backbone(device="auto")
    pre = backbone.preprocess
    n = len(files)
    out: dict[str, float] = {}
    load_image(files[0], min_side=pre.resize)  # warm-up: Pillow's plugins, OpenCV, PDQ
    compute_signals(load_image(files[0], min_side=pre.resize)[0])

    t = _cpu()
    images = [load_image(f, min_side=pre.resize)[0] for f in files]
    out["read + decode"] = _cpu() - t
    t = _cpu()
    crops = [pre.crop_array(img) for img in images]
    out["crop"] = _cpu() - t
    t = _cpu()
    for img in images:
        compute_signals(img)
    out["duplicate signals (PDQ hashes, gray copy)"] = _cpu() - t
    t = _cpu()
    for f in files:
        hash_file(f)
    out["file hash"] = _cpu() - t

    from indexer.decode import Decoded

    engine = make_engine(backbone, "auto")
    group = batch_size * int(getattr(engine, "streams", 1))  # as the threads runner hands batches over
    decoded = [Decoded(i, c, {"hash": None}) for i, c in enumerate(crops)]
    batches = [stack_batch(decoded[i : i + group], 0.0) for i in range(0, n, group)]
    engine.embed_uint8(batches[0].pixels)  # compiled, warmed
    t = _cpu()
    vectors = [engine.embed_uint8(b.pixels) for b in batches]
    out["model"] = _cpu() - t
    t = _cpu()
    for b in batches:
        pickle.loads(pickle.dumps(b, protocol=pickle.HIGHEST_PROTOCOL))
    out["transfer (process layout only)"] = _cpu() - t
    out["write"] = _write_cpu(files, vectors, backbone)
    ms = {k: 1e3 * v / n for k, v in out.items()}
    ms["all but the model"] = sum(v for k, v in ms.items() if k not in ("model", "transfer (process layout only)"))
    return {**ms, "photos": n, "engine": _describe(engine)}  # type: ignore[dict-item]


def _describe(engine) -> str:  # type: ignore[no-untyped-def]
    from indexer.engines import describe

    return describe(engine)


def _write_cpu(files: list[Path], vectors: list[np.ndarray], backbone) -> float:  # type: ignore[no-untyped-def]
    """CPU seconds of `write_batch` for these photos' rows into a fresh library."""
    from indexer.decode import Decoded, PhotoTask
    from indexer.embed import EmbeddedBatch
    from indexer.hashes import compute_signals
    from indexer.imageio import load_image
    from indexer.library import Library
    from indexer.plan import check_library, plan_run
    from indexer.report import IndexReport
    from indexer.scan import scan
    from indexer.write import write_batch

    signals = compute_signals(load_image(files[0], min_side=256)[0])
    with tempfile.TemporaryDirectory(prefix="bench-stages-") as tmp:
        root = Path(tmp) / "photos"
        root.mkdir()
        for i in range(len(files)):  # rows to write: the files themselves are never read here
            (root / f"{i:05d}.jpg").write_bytes(b"")
        with Library(Path(tmp) / "library", create=True) as library:
            with library.writer_lock():
                check_library(library, root, backbone, False)  # as index_folder: root, backbone, dim
                library.record_representation(backbone.identity(), backbone.weights)
                report = IndexReport()
                scanned = scan(root)
                plan = plan_run(library, root, scanned.files, report, folders=scanned.folders)
                index = library.load_vectors()
                todo: list[PhotoTask] = list(plan.todo)
                t = _cpu()
                start = 0
                for v in vectors:
                    items = tuple(Decoded(task.image_id, None, {"hash": f"{task.image_id:032x}", "width": 1,
                                                                "height": 1, "format": "JPEG"}, None, signals)
                                  for task in todo[start : start + len(v)])
                    write_batch(library, index, plan, EmbeddedBatch(items, v), report)
                    start += len(v)
                return _cpu() - t


def startup(reps: int = 3) -> dict[str, float]:
    """Seconds in a fresh interpreter: imports, engine ready (its compiled model cached), first batch.
    Medians of `reps`, after one run that fills the caches."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    runs = []
    for _ in range(reps + 1):
        done = subprocess.run([sys.executable, "-c", STARTUP], capture_output=True, text=True, cwd=REPO, env=env,
                              check=True)
        imports, engine, first, torch = done.stdout.split()
        runs.append((float(imports), float(engine), float(first), torch == "True"))
    runs = runs[1:]
    med = [sorted(r[i] for r in runs)[len(runs) // 2] for i in range(3)]
    return {"imports": med[0], "engine ready": med[1], "first batch": med[2], "torch imported": any(r[3] for r in runs)}


if __name__ == "__main__":  # python -m bench.stages [CORPUS [N]]: the breakdown alone
    from bench.__main__ import CORPUS
    from bench.indexing import photo_files
    from bench.machine import describe

    corpus = Path(sys.argv[1]) if len(sys.argv) > 1 else CORPUS
    files = photo_files(corpus, int(sys.argv[2]) if len(sys.argv) > 2 else 600)
    print(describe(), "load average", os.getloadavg())
    for k, v in profile(files).items():
        print(f"{k:>32}: {v:.2f}" if isinstance(v, float) else f"{k:>32}: {v}")
    print(startup())
