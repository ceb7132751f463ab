"""Re-embedding a whole library into tuned weights through the product's path (indexer.reembed: the
normal runner and engine, staged vectors, the switch, the FAISS rebuild), timed: the second half of
issue 18's goal "tuning on 200 labelled photos plus re-embedding 5,000".

    python -m bench.reembed [--corpus DIR] [--photos 5000] [--json FILE]

The corpus's photos are copied into a scratch folder (cycled, under new names, when the corpus has
fewer than --photos) and indexed with the default settings; the tuned weights are the backbone's
own with conv_head nudged (the timing does not depend on their values, only their shape: the
OpenVINO model is converted again for them, as after a real tune).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from bench.machine import cpu_flags
from bench.tune import DEFAULT_CORPUS, load_corpus


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    ap.add_argument("--photos", type=int, default=5000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    from indexer.backbone import Backbone
    from indexer.finetune import save_weights
    from indexer.library import Library
    from indexer.pipeline import index_folder
    from indexer.reembed import reembed

    paths, _, classes = load_corpus(args.corpus, None, 0)
    if not paths:
        raise SystemExit(f"no photos under {args.corpus}: pass --corpus DIR")
    report: dict = {
        "command": "python -m bench.reembed " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu_flags": cpu_flags(),
        "load_average_start": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="bench-reembed-") as tmp:
        photos, library_dir = Path(tmp) / "photos", Path(tmp) / "library"
        for i in range(args.photos):
            source = paths[i % len(paths)]
            target = photos / source.parent.name / f"{i:06d}{source.suffix.lower()}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        backbone = Backbone()
        with Library(library_dir, create=True) as library:
            started = time.perf_counter()
            indexed = index_folder(photos, library, backbone)
            report["index_seconds"] = round(time.perf_counter() - started, 1)
            report["indexed"] = indexed.indexed
            report["index_engine"] = indexed.engine
            state = {k: v.detach().clone() for k, v in backbone.model.state_dict().items()}
            weight = state["conv_head.weight"]
            state["conv_head.weight"] = weight + 0.1 * weight.std() * torch.randn(
                weight.shape, generator=torch.Generator().manual_seed(0))
            saved = save_weights(library, state)
            current = library.current_representation()
            assert current is not None
            rep = library.add_representation(backbone=current.backbone, weights_file=saved.path,
                                             weights=saved.identity, weights_sha256=saved.sha256,
                                             parent_id=current.id)
            started = time.perf_counter()
            done = reembed(library, rep.id)
            report["reembed_seconds"] = round(time.perf_counter() - started, 1)
            report["reembedded"] = done.embedded
            report["reembed_engine"] = done.engine
            report["reembed_images_per_second"] = round(done.embedded / report["reembed_seconds"], 1)
    report["load_average_end"] = os.getloadavg()
    print(json.dumps(report), flush=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
