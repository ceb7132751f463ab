"""The Ray runner's overhead: the same photos indexed by the local runner and by Ray Data on this machine.

    python -m bench.ray_runner [--photos 400] [--reps 3]

Ray is started once (its start-up is reported apart: a fixed cost that a long run amortises), with
as many CPUs as the local runner has workers; runs alternate local, ray, local, ray so a busy machine
slows both alike, and the ratio of the medians is the figure.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.corpus import CLOTHING_SMALL
from bench.indexing import copy_tree, photo_files
from bench.machine import describe
from indexer.backbone import Backbone
from indexer.library import Library
from indexer.pipeline import index_folder
from indexer.runners import get_runner

CORPUS = CLOTHING_SMALL


class Timed:
    """A runner wrapped to note when its first batch and its last batch reached the writer."""

    def __init__(self, runner) -> None:
        self.runner = runner
        self.first: float | None = None
        self.last: float | None = None
        self.photos_after_first = 0

    def __call__(self, *args, **kwargs):
        for batch in self.runner(*args, **kwargs):
            now = time.perf_counter()
            if self.first is None:
                self.first = now
            else:
                self.photos_after_first += len(batch.items)
            self.last = now
            yield batch


def index_once(photos: Path, work: Path, backbone: Backbone, runner: str, workers: int,
               batch_size: int) -> tuple[float, float, float]:
    """One full run into a fresh library: photos/s over the whole run, photos/s once the first
    batch is in (the steady state, without the start of workers and models), seconds to the first batch."""
    path = work / f"library-{runner}"
    shutil.rmtree(path, ignore_errors=True)
    timed = Timed(get_runner(runner))
    with Library(path, create=True) as library:
        started = time.perf_counter()
        report = index_folder(photos, library, backbone, batch_size=batch_size, workers=workers, runner=timed)
        seconds = time.perf_counter() - started
    assert timed.first is not None and timed.last is not None
    steady = timed.photos_after_first / max(timed.last - timed.first, 1e-9)
    return (report.indexed + sum(report.failed.values())) / seconds, steady, timed.first - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ray_runner", description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    import ray

    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    backbone = Backbone(device="cpu")
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        work = Path(tmp)
        files = photo_files(args.corpus, None)[:: max(1, len(photo_files(args.corpus, None)) // args.photos)]
        photos = copy_tree(files[: args.photos], args.corpus, work / "photos")
        started = time.perf_counter()
        for attempt in range(3):  # Ray gives its raylet 30 s to start: not always enough on a busy machine
            try:
                ray.init(num_cpus=args.workers, include_dashboard=False, _node_ip_address="127.0.0.1",
                         log_to_driver=False, object_store_memory=512 << 20)
                break
            except Exception as e:
                say(f"ray.init failed ({e}); retrying")
                ray.shutdown()
                if attempt == 2:
                    raise
        startup = time.perf_counter() - started
        runs: dict[str, list[tuple[float, float, float]]] = {"local": [], "ray": []}
        index_once(photos, work, backbone, "ray", args.workers, args.batch_size)  # warm: imports, caches
        for rep in range(args.reps):
            for runner in ("local", "ray"):
                runs[runner].append(index_once(photos, work, backbone, runner, args.workers, args.batch_size))
                whole, steady, first = runs[runner][-1]
                say(f"rep {rep + 1} {runner}: {whole:.1f} photos/s, {steady:.1f} once the first batch was in "
                    f"({first:.1f}s)")
        ray.shutdown()

    def median(runner: str, i: int) -> float:
        return statistics.median(r[i] for r in runs[runner])

    machine = describe()
    print(f"{args.photos} photos, {args.workers} workers / Ray CPUs, batch {args.batch_size}, {args.reps} reps; "
          + " ".join(f"{k}={v}" for k, v in machine.items()))
    print(f"whole run: local {median('local', 0):.1f} photos/s, ray {median('ray', 0):.1f}, "
          f"ratio {median('ray', 0) / median('local', 0):.2f}")
    print(f"after the first batch: local {median('local', 1):.1f} photos/s, ray {median('ray', 1):.1f}, "
          f"ratio {median('ray', 1) / median('local', 1):.2f}")
    print(f"first batch after: local {median('local', 2):.1f}s, ray {median('ray', 2):.1f}s; "
          f"Ray start-up {startup:.1f}s (not counted)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
