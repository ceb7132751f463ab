"""Labels that look wrong (issue 18): flip a share of clothing_small's labels, see how many the list finds.

    python -m bench.suspicious [--library DIR] [--corpus DIR] [--rate 0.05] [--seed 0] [--json FILE]

Works on a copy of a library indexed from the corpus (indexes it first when --library does not exist
yet: about a minute for 3,781 photos). Labels every photo by its folder, flips `rate` of them at
random (seed) to another class, runs `search.labelling.suspicious`, then reports how many flipped
labels are in the top `rate` of the list: precision (flipped among the top) and recall (top among
the flipped). A random order scores `rate` on both; the corpus has real label noise of its own, so
precision here is a lower bound. Prints the time with the CPU's bf16 flags.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import select

from bench.corpus import CLOTHING_SMALL
from bench.machine import cpu_flags
from indexer.library import Library
from indexer.schema import Label
from search.labelling.labeller import Labeller
from search.labelling.labels import import_folders
from search.labelling.suspicious import suspicious
from search.searcher import Searcher

DEFAULT_CORPUS = CLOTHING_SMALL
DEFAULT_LIBRARY = Path(tempfile.gettempdir()) / "lookalike-bench" / "clothing_small-library"


def flip(library: Library, rate: float, seed: int) -> set[int]:
    """Give `rate` of the labelled photos another class, drawn at random; returns their ids."""
    rng = np.random.default_rng(seed)
    with library.Session.begin() as s:
        rows = sorted(s.execute(select(Label.image_id, Label.label)).all())
        classes = sorted({label for _, label in rows})
        picked = rng.choice(len(rows), round(rate * len(rows)), replace=False)
        for i in picked:
            image_id, label = rows[i]
            others = [c for c in classes if c != label]
            s.get(Label, image_id).label = others[rng.integers(len(others))]  # type: ignore[union-attr]
    return {rows[i][0] for i in picked}


def measure(library_dir: Path, rate: float, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "library"
        shutil.copytree(library_dir, copy)
        library = Library(copy)
        try:
            labelled = import_folders(library, overwrite=True)
            flipped = flip(library, rate, seed)
            start = time.perf_counter()
            check = suspicious(Labeller(Searcher(library)))
            seconds = time.perf_counter() - start
        finally:
            library.close()
    top = [s.image_id for s in check.suspects[: math.ceil(rate * check.checked)]]
    hits = len(flipped.intersection(top))
    found = len(flipped.intersection(s.image_id for s in check.suspects))
    return {
        "labelled": labelled,
        "checked": check.checked,
        "flipped": len(flipped),
        "listed": check.found,
        "top": len(top),
        "flipped_in_top": hits,
        "precision_at_top": round(hits / len(top), 4) if top else None,
        "recall_at_top": round(hits / len(flipped), 4) if flipped else None,
        "recall_whole_list": round(found / len(flipped), 4) if flipped else None,
        "random_order": rate,
        "seconds": round(seconds, 1),
        "cpu_flags": cpu_flags(),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--library", type=Path, default=DEFAULT_LIBRARY)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--rate", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if not (args.library / "library.db").exists():
        subprocess.run([sys.executable, "-m", "lookalike.cli", "index", str(args.corpus), "--library",
                        str(args.library), "--quiet"], check=True)
    out = measure(args.library, args.rate, args.seed)
    print(f"{out['flipped']} of {out['labelled']} labels flipped ({args.rate:.0%}, seed {args.seed}); "
          f"{out['listed']} photos listed as suspicious")
    print(f"top {out['top']} of the list ({args.rate:.0%} of {out['checked']} checked): {out['flipped_in_top']} "
          f"flipped, precision {out['precision_at_top']:.3f}, recall {out['recall_at_top']:.3f} "
          f"(random order: {args.rate:.3f}); the whole list finds {out['recall_whole_list']:.3f} of them")
    print(f"{out['seconds']} s to check (CPU flags: {out['cpu_flags']})")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
