"""`python -m bench.gpu`: the GPU path in one short run (issues 18 and 20).

Prepared on a CPU so that one call of a lent GPU machine answers: `bench/gpu.sh` (run there) installs
the carried wheels and runs this; `bench/gpu_prepare.sh` (run here) fetches the wheels and copies a
class-per-folder subset of clothing_small. What it measures, on the device `auto` picks:

    model only     the engine `lookalike index` uses there, on ready uint8 batches (host to device
                   copy included), at the index's batch size and at a large one
    end to end     `index_folder` on N photos (the corpus cycled through hard links), decoding worker
                   processes feeding the model, at the default worker count and at one per spare core
    CPU stages     read + decode, crop and the duplicate signals per photo on one core, which bound
                   how fast the workers can feed the model
    tune           `python -m bench.tune` at 20 labels a class, re-embedding `--reembed` photos

and writes gpu.json and gpu.md (a BENCHMARKS.md section) to --out.

    python -m bench.gpu --corpus .gpu/corpus --out "$OUT"
    python -m bench.gpu --device cpu --photos 64 --reembed 64 --per-class 3 --out /tmp/gpu   # a dry run
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from bench.corpus import CLOTHING_SMALL


def cycled(files: list[Path], n: int, dst: Path) -> Path:
    """n photos in dst: the corpus's files hard-linked over and over (copied where links fail)."""
    import shutil

    dst.mkdir(parents=True)
    for i in range(n):
        src, target = files[i % len(files)], dst / f"{i // 1000:03d}" / f"{i:06d}{files[i % len(files)].suffix}"
        target.parent.mkdir(exist_ok=True)
        try:
            os.link(src, target)
        except OSError:
            shutil.copyfile(src, target)
    return dst


def model_rate(engine, batch: int, seconds: float = 3.0) -> float:  # type: ignore[no-untyped-def]
    """Images a second through `engine.embed_uint8` on a ready host batch, after a warm-up."""
    import numpy as np

    crop = engine.backbone.preprocess.crop
    x = np.random.default_rng(0).integers(0, 256, (batch, 3, crop, crop), dtype=np.uint8)
    for _ in range(3):
        engine.embed_uint8(x)  # compiled kernels chosen, memory pools filled
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        engine.embed_uint8(x)  # returns host vectors: the device work is finished
        n += batch
    return n / (time.perf_counter() - started)


def cpu_stages(files: list[Path], preprocess) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """CPU ms per photo, one core: read + decode, crop, the duplicate signals."""
    from indexer.hashes import compute_signals
    from indexer.imageio import load_image

    spent = {"read + decode": 0.0, "crop": 0.0, "duplicate signals": 0.0}
    for f in files:
        t = time.process_time()
        img, _ = load_image(f, min_side=preprocess.resize)
        t1 = time.process_time()
        preprocess.crop_array(img)
        t2 = time.process_time()
        compute_signals(img)
        t3 = time.process_time()
        spent["read + decode"] += t1 - t
        spent["crop"] += t2 - t1
        spent["duplicate signals"] += t3 - t2
    return {k: round(1e3 * v / len(files), 2) for k, v in spent.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=CLOTHING_SMALL, help="class-per-folder photos")
    ap.add_argument("--photos", type=int, default=5000, help="photos indexed end to end (the corpus cycled)")
    ap.add_argument("--batch-size", type=int, default=32, help="the index's batch size (lookalike's default)")
    ap.add_argument("--large-batch", type=int, default=256, help="the model alone at this batch too")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--per-class", type=int, default=20, help="labels a class for the tune (0: no tune)")
    ap.add_argument("--reembed", type=int, default=5000, help="photos the tune re-embeds")
    ap.add_argument("--model-seconds", type=float, default=3.0, help="how long each model-only rate is timed")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    from bench.indexing import index_once
    from bench.machine import describe
    from indexer.backbone import Backbone
    from indexer.engines import describe as engine_name
    from indexer.engines import make_engine
    from indexer.runners.cores import cores, default_workers

    def say(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    report: dict = {"command": "python -m bench.gpu " + " ".join(argv if argv is not None else sys.argv[1:]),
                    "started": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": describe()}
    backbone = Backbone(device=args.device)
    engine = make_engine(backbone, "auto")
    report["engine"] = engine_name(engine)
    report["duplicate_signals"] = importlib.util.find_spec("pdqhash") is not None  # gpu.sh may fail to build it
    files = sorted(p for p in args.corpus.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not files:
        raise SystemExit(f"no JPEG photos under {args.corpus}")
    say(f"{report['machine']['device']}, {report['engine']}; {len(files)} corpus photos")

    report["model_only"] = {str(b): round(model_rate(engine, b, args.model_seconds), 1)
                            for b in (args.batch_size, args.large_batch)}
    say(f"model only: {report['model_only']} img/s (by batch size)")
    report["cpu_stages_ms"] = cpu_stages(files[:200], backbone.preprocess)
    say(f"CPU ms a photo, one core: {report['cpu_stages_ms']}")

    worker_counts = sorted({default_workers(backbone.device.type), max(1, cores() - 1)})
    report["end_to_end"] = []
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        photos = cycled(files, args.photos, Path(tmp) / "photos")
        for workers in worker_counts:
            run = index_once(photos, backbone, args.batch_size, workers)
            after = model_rate(engine, args.batch_size, args.model_seconds)
            bound = statistics.mean([report["model_only"][str(args.batch_size)], after])
            row = {"workers": workers, "images": run["images"], "failed": run["failed"],
                   "seconds": round(run["seconds"], 2), "rate": round(run["rate"], 1),
                   "model_only_rate": round(bound, 1), "ratio": round(run["rate"] / bound, 3),
                   "engine": run["engine"]}
            report["end_to_end"].append(row)
            say(f"end to end, {workers} workers: {row['rate']} img/s, {row['ratio']} x the model alone")
    if args.per_class:
        from bench import tune

        tune_json = args.out / "tune.json"
        tune.main(["--corpus", str(args.corpus), "--per-class", str(args.per_class), "--draws", "1",
                   "--reembed-photos", str(args.reembed), "--json", str(tune_json)])
        report["tune"] = json.loads(tune_json.read_text())["settings"]
    report["seconds"] = round(time.perf_counter() - began, 1)
    (args.out / "gpu.json").write_text(json.dumps(report, indent=2))
    (args.out / "gpu.md").write_text(markdown(report, args))
    print(markdown(report, args))
    return 0


def markdown(report: dict, args: argparse.Namespace) -> str:
    machine = report["machine"]
    lines = [
        "## `python -m bench.gpu`: indexing and `tune` on a GPU",
        "",
        f"Written by `{report['command']}` on {report['started']} ({report['seconds'] / 60:.0f} min). "
        f"Engine: {report['engine']}."
        + ("" if report["duplicate_signals"] else " pdqhash was missing: indexed without the duplicate signals."),
        "",
        "| | |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in machine.items()],
        "",
        "| measurement | result | goal |",
        "|---|---|---|",
        *[f"| model only, batch {b} (host uint8 batch in, vectors out) | {r} img/s | |"
          for b, r in report["model_only"].items()],
        *[f"| CPU ms a photo, one core: {k} | {v} | |" for k, v in report["cpu_stages_ms"].items()],
        *[f"| end to end, {row['images']} photos, {row['workers']} decoding workers, batch {args.batch_size} | "
          f"{row['rate']} img/s = **{row['ratio']:.2f} x** the model alone at that batch "
          f"({row['model_only_rate']} img/s, measured before and after) | ≥ 0.8 |"
          for row in report["end_to_end"]],
    ]
    for row in report.get("tune", []):
        lines.append(
            f"| `tune`, {row['labelled']} labels ({row['labels_per_class']} a class) + "
            f"{row['pseudo_labelled']} pseudo-labels, re-embedding {row['reembedded']} | "
            f"{row['tune_seconds']} s (cross-fit {row['cross_fit_seconds']} s, refit {row['refit_seconds']} s, "
            f"re-embed {row['reembed_seconds']} s = {row['reembed_images_per_second']} img/s; "
            f"{'kept' if row['kept'] else 'not kept'}); rest accuracy {row['rest_accuracy_frozen']} → "
            f"{row['rest_accuracy_after_tune']} | ≤ 20 s |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
